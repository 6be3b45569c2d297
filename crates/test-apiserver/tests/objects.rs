//! Object semantics: CRDs and custom resources (status subresource, generation, validation,
//! pruning, defaulting), finalizers, owner-reference garbage collection and namespace
//! termination.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, PropagationPolicy,
};
use kube::{Api, ResourceExt};
use serde_json::json;
use test_apiserver::Options;

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// `widgets.example.com`, with a status subresource and a schema using enum, default, minimum
/// and required.
pub fn widget_crd(scope: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["tier"],
                            "properties": {
                                "tier": {"type": "string", "enum": ["a", "b"]},
                                "replicas": {"type": "integer", "minimum": 0, "default": 1},
                                "resourceRef": {"type": "object", "properties": {"name": {"type": "string"}}},
                                "a": {"type": "string"},
                            },
                        },
                        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                    },
                }},
            }],
        },
    }))
    .unwrap()
}

/// Creates the widget CRD, waits for Established and returns the dynamic API resource.
pub async fn install_widgets(client: &kube::Client, scope: &str) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd(scope))
        .await
        .unwrap();
    wait_for("Established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("widgets.example.com").await.unwrap();
            let conds = crd.status?.conditions?;
            conds
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn crd_is_served_with_status_subresource_and_generation() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    install_widgets(&client, "Namespaced").await;
    let crd = crds.get("widgets.example.com").await.unwrap();
    let status = crd.status.unwrap();
    assert_eq!(status.stored_versions.unwrap(), ["v1"]);
    assert_eq!(status.accepted_names.unwrap().kind, "Widget");
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );

    // Discovery finds it; the dynamic API works with the discovered ApiResource.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .unwrap();
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);

    let mut w = widget("w", json!({"tier": "a"}));
    w.data["status"] = json!({"ready": true});
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );

    // The main endpoint ignores status; spec changes bump generation.
    let p = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "b"}, "status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    assert!(p.data.get("status").is_none());
    // Metadata changes do not bump generation.
    let p = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    // /status changes only status and does not bump generation.
    let p = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "a"}, "status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data["status"]["ready"], true);
    assert_eq!(p.data["spec"]["tier"], "b");
    assert_eq!(p.metadata.generation, Some(2));
    let mut got = widgets.get_status("w").await.unwrap();
    assert_eq!(got.data["status"]["ready"], true);
    // PUT /status: the spec in the body is ignored, a stale resourceVersion is a conflict.
    got.data["status"]["ready"] = json!(false);
    got.data["spec"]["tier"] = json!("a");
    let put = widgets
        .replace_status("w", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_eq!(put.data["status"]["ready"], false);
    assert_eq!(put.data["spec"]["tier"], "b");
    let err = api_err(
        widgets
            .replace_status("w", &PostParams::default(), &got)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on widgets.example.com \"w\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Deleting the CRD deletes its objects and stops serving the resource.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("CRD gone", || {
        let crds = crds.clone();
        async move {
            crds.get_opt("widgets.example.com")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    let err = api_err(widgets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn custom_resources_are_validated_pruned_and_defaulted() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let ar = install_widgets(&client, "Namespaced").await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);

    let err = api_err(
        widgets
            .create(&PostParams::default(), &widget("bad", json!({"tier": "x"})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Widget.example.com \"bad\" is invalid: spec.tier: Unsupported value: \"x\": supported values: \"a\", \"b\""
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.tier");

    let err = api_err(
        widgets
            .create(&PostParams::default(), &widget("bad", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.tier: Required value"),
        "{}",
        err.message
    );

    let w = widgets
        .create(
            &PostParams::default(),
            &widget("ok", json!({"tier": "a", "unknown": 1})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["replicas"], 1, "defaulted");
    assert!(w.data["spec"].get("unknown").is_none(), "pruned");

    // Updating the CRD changes the schema at once: "c" becomes a valid tier.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "widgets.example.com",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "add",
                "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/tier/enum/-",
                "value": "c"}]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    widgets
        .create(&PostParams::default(), &widget("c", json!({"tier": "c"})))
        .await
        .unwrap();
}

#[tokio::test]
async fn cluster_scoped_custom_resources() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let ar = install_widgets(&client, "Cluster").await;
    let widgets: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let w = widgets
        .create(&PostParams::default(), &widget("cw", json!({"tier": "a"})))
        .await
        .unwrap();
    assert!(w.metadata.namespace.is_none());
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut c = ConfigMap::default();
    c.metadata.name = Some("f".into());
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let res = cms.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = res.left().expect("a pending deletion returns the object");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    // Still there; no new finalizers may be added.
    let err = api_err(
        cms.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "other"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(cms.get("f").await.is_ok());
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_err(cms.get("f").await.unwrap_err()).code, 404);
}

fn owner_ref(owner: &ConfigMap, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap(),
        controller: None,
        block_owner_deletion: Some(block),
    }
}

async fn owner_and_dependent(
    cms: &Api<ConfigMap>,
    secrets: &Api<Secret>,
    name: &str,
    finalizer: bool,
) -> ConfigMap {
    let mut o = ConfigMap::default();
    o.metadata.name = Some(name.into());
    let owner = cms.create(&PostParams::default(), &o).await.unwrap();
    let mut d = Secret::default();
    d.metadata.name = Some(format!("{name}-dep"));
    d.metadata.owner_references = Some(vec![owner_ref(&owner, true)]);
    if finalizer {
        d.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    }
    secrets.create(&PostParams::default(), &d).await.unwrap();
    owner
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    owner_and_dependent(&cms, &secrets, "fg", true).await;
    cms.delete(
        "fg",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let owner = cms.get("fg").await.unwrap();
    assert!(owner.metadata.deletion_timestamp.is_some());
    assert_eq!(owner.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    wait_for("dependent marked", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get("fg-dep")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .map(|_| ())
        }
    })
    .await;
    // The owner waits while the dependent exists.
    assert!(cms.get_opt("fg").await.unwrap().is_some());
    secrets
        .patch(
            "fg-dep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    wait_for("owner gone", || {
        let cms = cms.clone();
        async move { cms.get_opt("fg").await.unwrap().is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_owner_refs() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    owner_and_dependent(&cms, &secrets, "or", false).await;
    cms.delete(
        "or",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    wait_for("owner gone", || {
        let cms = cms.clone();
        async move { cms.get_opt("or").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let dep = secrets.get("or-dep").await.unwrap();
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
    assert!(dep.metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn namespace_termination() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("doomed".into());
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(created.spec.unwrap().finalizers.unwrap(), ["kubernetes"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    let mut s = Secret::default();
    s.metadata.name = Some("held".into());
    s.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    secrets.create(&PostParams::default(), &s).await.unwrap();
    s.metadata.name = Some("plain".into());
    s.metadata.finalizers = None;
    secrets.create(&PostParams::default(), &s).await.unwrap();

    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = nss.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    s.metadata.name = Some("late".into());
    let err = api_err(
        secrets
            .create(&PostParams::default(), &s)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "secrets \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    wait_for("contents deleted", || {
        let secrets = secrets.clone();
        async move {
            let l = secrets.list(&ListParams::default()).await.unwrap();
            (l.items.len() == 1 && l.items[0].metadata.deletion_timestamp.is_some()).then_some(())
        }
    })
    .await;
    assert!(
        nss.get_opt("doomed").await.unwrap().is_some(),
        "held by the finalizer of its content"
    );
    secrets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    wait_for("namespace gone", || {
        let nss = nss.clone();
        async move { nss.get_opt("doomed").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let err = api_err(
        nss.delete("default", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
}

#[tokio::test]
async fn generation_without_status_subresource_and_multiple_versions() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": schema},
                {"name": "v2", "served": true, "storage": false, "schema": schema},
            ]},
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = |v: &str| {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("example.com", v, "Thing"),
            "things",
        )
    };
    let v1: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar("v1"));
    let v2: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar("v2"));
    let mut t: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v2", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"x": 1}}))
    .unwrap();
    t.data["status"] = json!({"s": 1});
    let created = v2.create(&PostParams::default(), &t).await.unwrap();
    assert_eq!(created.types.unwrap().api_version, "example.com/v2");
    // Without a status subresource, status is ordinary content: kept, and its changes bump
    // generation like any non-metadata change.
    assert_eq!(created.data["status"]["s"], 1);
    let read = v1.get("t").await.unwrap();
    assert_eq!(read.types.unwrap().api_version, "example.com/v1");
    let p = v1
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"s": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    let p = v1
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    assert_eq!(api_err(v1.get_status("t").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn deleting_a_crd_ends_its_watches() {
    use futures::TryStreamExt;
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let ar = install_widgets(&client, "Namespaced").await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    widgets
        .create(&PostParams::default(), &widget("w", json!({"tier": "a"})))
        .await
        .unwrap();
    let rv = server.resource_version().to_string();
    let mut stream = Box::pin(
        widgets
            .watch(&kube::api::WatchParams::default().timeout(60), &rv)
            .await
            .unwrap(),
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let mut deleted = 0;
    bounded("watch to end", async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let kube::api::WatchEvent::Deleted(_) = ev {
                deleted += 1;
            }
        }
    })
    .await;
    assert_eq!(
        deleted, 1,
        "the object's deletion is delivered before the watch ends"
    );
}

#[tokio::test]
async fn dependents_with_a_remaining_owner_only_lose_the_dangling_reference() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut owners = Vec::new();
    for n in ["o1", "o2"] {
        let mut o = ConfigMap::default();
        o.metadata.name = Some(n.into());
        owners.push(cms.create(&PostParams::default(), &o).await.unwrap());
    }
    let mut d = Secret::default();
    d.metadata.name = Some("shared".into());
    d.metadata.owner_references = Some(vec![
        owner_ref(&owners[0], false),
        owner_ref(&owners[1], false),
    ]);
    secrets.create(&PostParams::default(), &d).await.unwrap();
    cms.delete("o1", &DeleteParams::default()).await.unwrap();
    wait_for("dangling reference removed", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get("shared").await.unwrap();
            let refs = s.metadata.owner_references.unwrap_or_default();
            (refs.len() == 1 && refs[0].name == "o2").then_some(())
        }
    })
    .await;
    cms.delete("o2", &DeleteParams::default()).await.unwrap();
    wait_for("dependent collected with its last owner", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("shared")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn namespace_finalizers_change_only_through_finalize() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("stuck".into());
    nss.create(&PostParams::default(), &ns).await.unwrap();
    // The main endpoint ignores spec.finalizers.
    let p = nss
        .patch(
            "stuck",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"finalizers": []}})),
        )
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().finalizers.unwrap(), ["kubernetes"]);
    // Content held by a finalizer keeps a terminating namespace...
    let cms: Api<ConfigMap> = Api::namespaced(client, "stuck");
    let mut c = ConfigMap::default();
    c.metadata.name = Some("held".into());
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    nss.delete("stuck", &DeleteParams::default()).await.unwrap();
    let mut current = nss.get("stuck").await.unwrap();
    // ...until someone force-finalizes it through /finalize.
    current.spec.as_mut().unwrap().finalizers = Some(Vec::new());
    nss.replace_subresource("finalize", "stuck", &PostParams::default(), &current)
        .await
        .unwrap();
    assert!(nss.get_opt("stuck").await.unwrap().is_none());
}

#[tokio::test]
async fn dependents_of_missing_owners_are_collected() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut d = Secret::default();
    d.metadata.name = Some("orphaned".into());
    d.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "never-existed".into(),
        uid: "00000000-0000-0000-0000-000000000000".into(),
        controller: None,
        block_owner_deletion: None,
    }]);
    secrets.create(&PostParams::default(), &d).await.unwrap();
    wait_for("dangling dependent collected", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("orphaned")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
}
