//! End to end: objects the provider cannot take are reported on the object (a Kubernetes
//! Event with the API server's message), retried with backoff instead of in a loop, and the
//! other objects keep syncing; once the user fixes the object it syncs (issue 9, bad input).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::steps::{events_about, exists, mango, step, tail};
use e2e::world::{Mode, World, WorldOptions};
use e2e::{Backend, ClusterOptions};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

/// etcd's default request limit, which the real provider's etcd has (and `test-apiserver`
/// is given); the in-memory app cluster takes larger objects.
const LIMIT: usize = 1536 * 1024;

async fn object_too_large(backend: Backend) {
    let options = WorldOptions {
        provider: Some(ClusterOptions {
            max_object_bytes: Some(LIMIT),
            ..ClusterOptions::default()
        }),
        app_backend: Some(Backend::Memory),
        ..WorldOptions::default()
    };
    let w = World::build(backend, Mode::Default, options).await.unwrap();
    let mut k = e2e::steps::start(BIN, &w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));

    let big = DynamicObject::new("big", &e2e::world::mangodb())
        .data(json!({"spec": {"blob": "x".repeat(LIMIT + 64 * 1024)}}));
    down.create(&PostParams::default(), &big).await.unwrap();
    let created = Instant::now();
    // Reported on the object, with the server's message.
    step(&k, "a SyncFailed event on the object", || async {
        events_about(&w.app_admin, "default", "big")
            .await
            .iter()
            .any(|e| {
                e["reason"] == "SyncFailed"
                    && e["type"] == "Warning"
                    && e["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("request is too large"))
            })
    })
    .await;
    // The others keep syncing meanwhile.
    for i in 0..5 {
        down.create(&PostParams::default(), &mango(&format!("small-{i}"), None))
            .await
            .unwrap();
    }
    step(&k, "small objects upstream", || async {
        let mut all = true;
        for i in 0..5 {
            all &= exists(&up, &format!("small-{i}")).await;
        }
        all
    })
    .await;
    // Backoff, not a loop: over about 20 s, a handful of attempts.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(created.elapsed())).await;
    let attempts = w
        .provider
        .konnector_requests()
        .await
        .iter()
        .filter(|r| r.name == "big" && r.is_write())
        .count();
    let events = events_about(&w.app_admin, "default", "big").await;
    let count: u64 = events
        .iter()
        .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
        .sum();
    println!(
        "bad input: object over the provider's limit: {attempts} write attempts in {:?}, {} Event objects ({count} occurrences)",
        created.elapsed(),
        events.len()
    );
    assert!(
        (2..=8).contains(&attempts),
        "{attempts} attempts in 20 s: expected a few retries with backoff\n{}",
        tail(&k.stderr())
    );
    assert!(
        events.len() <= 2,
        "one aggregated event, not one per attempt: {events:?}"
    );
    assert!(!exists(&up, "big").await);

    // The user fixes the object: it syncs without waiting out its backoff.
    down.patch(
        "big",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"blob": "small now"}})),
    )
    .await
    .unwrap();
    step(&k, "fixed object upstream", || async {
        exists(&up, "big").await
    })
    .await;
    assert!(k.is_running());
}

e2e::on_both_backends!(object_too_large);

/// An export whose new schema the app cluster refuses (here: it drops a version that objects
/// are stored in) leaves `SchemaInSync=False` with the server's message and a Warning Event on
/// the binding, syncing of that resource pauses, and the binding recovers when the export is
/// fixed.
/// Sets the name of the export's first version (the stored one is `v1`).
async fn set_export_version(
    exports: &Api<DynamicObject>,
    versions: &mut serde_json::Value,
    name: &str,
) {
    versions[0]["name"] = json!(name);
    exports
        .patch(
            e2e::world::EXPORT,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"versions": versions}})),
        )
        .await
        .unwrap();
}

async fn export_schema_rejected(backend: Backend) {
    let w = World::new(backend, Mode::Default, &[]).await.unwrap();
    let mut k = e2e::steps::start(BIN, &w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let exports: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &kube::core::ApiResource::erase::<konnector_api::v1alpha1::APIServiceExport>(&()),
    );
    let export = exports.get(e2e::world::EXPORT).await.unwrap();
    let mut versions = export.data["spec"]["versions"].clone();
    set_export_version(&exports, &mut versions, "v2").await;
    step(
        &k,
        "SchemaInSync=False with the server's message",
        || async {
            w.binding_condition("SchemaInSync").await.is_some_and(|c| {
                c["status"] == "False"
                    && c["reason"] == "SchemaOutOfSync"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("storedVersions") && m.contains("v1"))
            })
        },
    )
    .await;
    let connected = w.binding_condition("Connected").await.unwrap();
    assert_eq!(
        connected["reason"], "CustomResourceDefinitionUpdateFailed",
        "{connected}"
    );
    let binding_ns = e2e::world::BIND_NS;
    step(&k, "a Warning Event on the binding", || async {
        events_about(&w.app_admin, binding_ns, e2e::world::EXPORT)
            .await
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "SchemaOutOfSync")
    })
    .await;
    let events = events_about(&w.app_admin, binding_ns, e2e::world::EXPORT).await;
    println!(
        "bad input: rejected export schema: SchemaInSync {:?}; events {:?}",
        w.binding_condition("SchemaInSync")
            .await
            .map(|c| c["message"].clone()),
        events
            .iter()
            .map(|e| format!("{} {}", e["type"], e["reason"]))
            .collect::<Vec<_>>()
    );
    // Fixed: back to Ready.
    set_export_version(&exports, &mut versions, "v1").await;
    step(&k, "binding Ready again", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    assert!(k.is_running());
}

e2e::on_both_backends!(export_schema_rejected);
