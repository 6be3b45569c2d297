//! A CRD update that changes its spec replaces the storage of its custom resources, as the real
//! apiextensions-apiserver does: requests after the switch use the new schema, watches opened
//! on the old storage keep reading events through the old schema and end cleanly when it is torn
//! down; objects are stored as written and pruned on read by the storage that serves them.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{Stream, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use test_apiserver::{Options, TestApiServer};

const CRD: &str = "gadgets.example.com";
/// Where the `spec` properties of the only version's schema are.
const SPEC_PROPERTIES: &str = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties";

/// `gadgets.example.com`: `spec.size` only, no `x-kubernetes-preserve-unknown-fields`.
async fn install_gadgets(client: &kube::Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "string"}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                }}},
            }],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Gadget"),
        "gadgets",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

/// Adds (`true`) or removes `spec.color` to/from the CRD's schema.
async fn set_color_property(client: &kube::Client, present: bool) {
    let op = if present {
        json!({"op": "add", "path": format!("{SPEC_PROPERTIES}/color"), "value": {"type": "string"}})
    } else {
        json!({"op": "remove", "path": format!("{SPEC_PROPERTIES}/color")})
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        CRD,
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(json!([op])).unwrap()),
    )
    .await
    .unwrap();
}

fn gadget(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Gadget",
        "metadata": {"name": name}, "spec": {"size": "m", "color": "red"},
    }))
    .unwrap()
}

fn color(o: &DynamicObject) -> Option<&Value> {
    o.data.pointer("/spec/color")
}

async fn watch(
    gadgets: &Api<DynamicObject>,
    server: &TestApiServer,
) -> impl Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + use<> {
    let rv = server.resource_version().to_string();
    Box::pin(
        gadgets
            .watch(&WatchParams::default().timeout(60), &rv)
            .await
            .unwrap(),
    )
}

/// The next ADDED/MODIFIED/DELETED object of a watch (bookmarks skipped; errors and the end of
/// the stream fail the test).
async fn next_object(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Unpin),
) -> DynamicObject {
    loop {
        match bounded("watch event", stream.try_next()).await {
            Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o))) => {
                return o;
            }
            Ok(Some(WatchEvent::Bookmark(_))) => {}
            other => panic!("expected an object event, got {other:?}"),
        }
    }
}

/// Waits (at most `within`) for the watch to end and checks that it ended cleanly: no ERROR
/// event, no transport error. Object events before the end are returned.
async fn clean_end(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Unpin),
    within: Duration,
) -> Vec<DynamicObject> {
    let mut seen = Vec::new();
    tokio::time::timeout(within, async {
        loop {
            match stream.try_next().await {
                Ok(None) => return,
                Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o))) => seen.push(o),
                Ok(Some(WatchEvent::Bookmark(_))) => {}
                other => panic!("the watch must end cleanly, got {other:?}"),
            }
        }
    })
    .await
    .expect("the watch ends");
    seen
}

/// Checks that the watch is still open: the next event is the creation of `name`.
async fn still_open(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Unpin),
    gadgets: &Api<DynamicObject>,
    name: &str,
) {
    gadgets
        .create(&PostParams::default(), &gadget(name))
        .await
        .unwrap();
    assert_eq!(next_object(stream).await.name_any(), name);
}

#[tokio::test]
async fn spec_update_switches_storage_and_old_watches_end_after_teardown() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let gadgets = install_gadgets(&client).await;
    let mut old_watch = watch(&gadgets, &server).await;

    set_color_property(&client, true).await;
    let updated = Instant::now();
    let mut new_watch = watch(&gadgets, &server).await;

    // A fresh request is served by the new storage: color is kept and stored.
    let created = gadgets
        .create(&PostParams::default(), &gadget("g1"))
        .await
        .unwrap();
    assert_eq!(color(&created), Some(&json!("red")));
    assert_eq!(
        color(&gadgets.get("g1").await.unwrap()),
        Some(&json!("red"))
    );
    // The watch opened before the update reads the event through the old schema.
    let old_event = next_object(&mut old_watch).await;
    assert_eq!(old_event.name_any(), "g1");
    assert_eq!(old_event.data.pointer("/spec/size"), Some(&json!("m")));
    assert_eq!(color(&old_event), None, "pruned by the old schema");
    // The watch opened after the update reads it through the new one.
    let new_event = next_object(&mut new_watch).await;
    assert_eq!(color(&new_event), Some(&json!("red")));

    // The old storage is torn down about 1 s after the switch: its watch just ends.
    clean_end(&mut old_watch, Duration::from_secs(5)).await;
    let ended = updated.elapsed();
    assert!(
        ended >= Duration::from_millis(500),
        "the old watch ended {ended:?} after the update, before the teardown delay"
    );
    assert!(ended < Duration::from_secs(5), "ended after {ended:?}");
    // The new storage's watch lives on.
    still_open(&mut new_watch, &gadgets, "g2").await;
}

#[tokio::test]
async fn requests_in_the_switch_window_use_the_old_schema() {
    let delay = Duration::from_millis(500);
    let server = start(Options::default().crd_storage_switch_delay(delay)).await;
    let client = admin(&server).await;
    // A new CRD is served at once.
    let gadgets = install_gadgets(&client).await;
    gadgets
        .create(&PostParams::default(), &gadget("before"))
        .await
        .unwrap();

    // color added: until the switch, creates prune it and lists do not show it.
    set_color_property(&client, true).await;
    let updated = Instant::now();
    let early = gadgets
        .create(&PostParams::default(), &gadget("early"))
        .await
        .unwrap();
    let listed = gadgets.list(&ListParams::default()).await.unwrap();
    let took = updated.elapsed();
    assert_eq!(
        color(&early),
        None,
        "created through the old schema ({took:?})"
    );
    assert_eq!(listed.items.len(), 2);
    assert!(listed.items.iter().all(|o| color(o).is_none()), "{took:?}");
    tokio::time::sleep(delay.saturating_sub(updated.elapsed()) + Duration::from_millis(100)).await;
    let late = gadgets
        .create(&PostParams::default(), &gadget("late"))
        .await
        .unwrap();
    assert_eq!(
        color(&late),
        Some(&json!("red")),
        "created through the new schema"
    );

    // color removed: in the window the old storage still shows it, after the switch the new
    // one prunes it on read; the stored object keeps it.
    set_color_property(&client, false).await;
    let updated = Instant::now();
    let shown = gadgets.get("late").await.unwrap();
    let took = updated.elapsed();
    assert_eq!(
        color(&shown),
        Some(&json!("red")),
        "read through the old schema ({took:?})"
    );
    wait_for("the list read through the new schema", || {
        let gadgets = gadgets.clone();
        async move {
            let list = gadgets.list(&ListParams::default()).await.unwrap();
            list.items.iter().all(|o| color(o).is_none()).then_some(())
        }
    })
    .await;
    assert!(updated.elapsed() >= delay - Duration::from_millis(50));

    // color added again: in the window the list is read through the old schema (no color);
    // after the switch the stored color is back.
    set_color_property(&client, true).await;
    let updated = Instant::now();
    let listed = gadgets.list(&ListParams::default()).await.unwrap();
    let took = updated.elapsed();
    assert_eq!(listed.items.len(), 3);
    assert!(
        listed.items.iter().all(|o| color(o).is_none()),
        "read through the old schema ({took:?})"
    );
    let late = wait_for("the stored color read through the new schema", || {
        let gadgets = gadgets.clone();
        async move {
            let late = gadgets.get("late").await.unwrap();
            color(&late).is_some().then_some(late)
        }
    })
    .await;
    assert_eq!(color(&late), Some(&json!("red")));
    assert!(updated.elapsed() >= delay - Duration::from_millis(50));
}

#[tokio::test]
async fn metadata_and_status_updates_keep_the_storage_and_its_watches() {
    let server =
        start(Options::default().crd_storage_teardown_delay(Duration::from_millis(200))).await;
    let client = admin(&server).await;
    let gadgets = install_gadgets(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut stream = watch(&gadgets, &server).await;

    let before = crds.get(CRD).await.unwrap().resource_version();
    crds.patch(
        CRD,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}, "annotations": {"x": "y"}}})),
    )
    .await
    .unwrap();
    crds.patch_status(
        CRD,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"storedVersions": ["v1"]}})),
    )
    .await
    .unwrap();
    // A dry-run spec change is not a change either.
    crds.patch(
        CRD,
        &PatchParams::default().dry_run(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "add",
                "path": format!("{SPEC_PROPERTIES}/color"), "value": {"type": "string"}}]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_ne!(crds.get(CRD).await.unwrap().resource_version(), before);
    tokio::time::sleep(Duration::from_millis(600)).await;
    still_open(&mut stream, &gadgets, "g1").await;

    // A spec change (here only a short name, not the schema) ends it after the teardown delay.
    crds.patch(
        CRD,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"names": {"shortNames": ["gd"]}}})),
    )
    .await
    .unwrap();
    clean_end(&mut stream, Duration::from_secs(5)).await;
}
