//! End to end: the real konnector binary syncing between in-memory clusters, in default mode
//! and in control-plane mode (reference 11.3 items 14-37 where they apply, decisions.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::steps::{create_synced, exists, field, mango, step, tail};
use e2e::world::{EXPORT, Mode, World, mangodb};
use e2e::{Backend, Cluster, KONNECTOR_USER, Konnector};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

async fn start(w: &World) -> Konnector {
    e2e::steps::start(BIN, w).await
}

/// Stops `k`, starts the konnector again over the synced world and checks that it writes
/// nothing but its Lease and a due heartbeat. A marker instance, created after the restart, is
/// synced after every earlier key was looked at. Returns the new konnector.
async fn restart_writes_nothing(w: &World, mut k: Konnector) -> Konnector {
    k.terminate().await.unwrap();
    assert!(
        k.wait_exit(Duration::from_secs(10))
            .await
            .unwrap()
            .success()
    );
    w.app.clear_requests().await.unwrap();
    w.provider.clear_requests().await.unwrap();
    let k = start(w).await;
    step(&k, "binding still Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("marker", None)).await;
    let unexpected: Vec<String> = w
        .restart_writes("marker")
        .await
        .into_iter()
        .map(|r| format!("{} {} {:?}/{:?}", r.verb, r.resource, r.namespace, r.name))
        .collect();
    assert!(
        unexpected.is_empty(),
        "writes after a restart over a synced world: {unexpected:?}\n--- konnector stderr ---\n{}",
        tail(&k.stderr())
    );
    k
}

/// Takes the old credentials of [`KONNECTOR_USER`] away in `cluster` (on a real server: deletes
/// the Secret its token is bound to, and waits until the server rejects it) and checks that
/// syncing goes on: after a rotation the konnector must not depend on them. Nothing to take
/// away on `test-apiserver`, whose users are fixed.
async fn revoke_old_credentials_and_keep_syncing(w: &World, k: &Konnector, cluster: &Cluster) {
    let old = cluster.kubeconfig(KONNECTOR_USER).unwrap();
    if !cluster.revoke(KONNECTOR_USER).await.unwrap() {
        return;
    }
    let old = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&old).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let old: Api<Namespace> = Api::all(kube::Client::try_from(old).unwrap());
    // kube-apiserver caches a token it accepted for 10 s.
    step(k, "the old token is rejected", || async {
        matches!(old.list(&Default::default()).await, Err(kube::Error::Api(s)) if s.code == 401)
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(k, &down, &up, &mango("after-revocation", None)).await;
}

async fn happy_path(backend: Backend, mode: Mode) {
    let w = World::new(backend, mode, &[]).await.unwrap();
    let mut k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let pretty =
        w.bindings().get(EXPORT).await.unwrap().data["status"]["providerPrettyName"].clone();
    assert_eq!(pretty, "anynines");

    // The export's CRD is installed in the app cluster, owned by the binding.
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    let crd = crds.get(EXPORT).await.unwrap();
    assert_eq!(
        crd.metadata.owner_references.unwrap()[0].kind,
        "APIServiceBinding"
    );

    // An instance syncs up (defaulted by the installed CRD) and gets the finalizer.
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("db", None)).await;
    assert_eq!(field(&up, "db", "/spec/tier").await.unwrap(), "Shared");
    assert_eq!(
        up.get("db").await.unwrap().metadata.annotations.unwrap()["klutch.anynines.com/bound"],
        "true"
    );
    let finalizers = down.get("db").await.unwrap().metadata.finalizers.unwrap();
    assert!(finalizers.contains(&"klutch.anynines.com/syncer".to_string()));

    // Status flows down, spec flows up, drift upstream is reverted.
    up.patch_status(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    step(&k, "status downstream", || async {
        field(&down, "db", "/status/phase").await == Some(json!("Running"))
    })
    .await;
    down.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
    )
    .await
    .unwrap();
    step(&k, "spec upstream", || async {
        field(&up, "db", "/spec/tier").await == Some(json!("Dedicated"))
    })
    .await;
    up.patch(
        "db",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"tier": "drifting"}})),
    )
    .await
    .unwrap();
    step(&k, "drift reverted", || async {
        field(&up, "db", "/spec/tier").await == Some(json!("Dedicated"))
    })
    .await;

    // A provider controller's own spec fields survive (no fight).
    up.patch(
        "db",
        &PatchParams::apply("crossplane").force(),
        &Patch::Apply(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
        "metadata": {"name": "db"}, "spec": {"resourceRef": {"name": "xr"}}})),
    )
    .await
    .unwrap();
    down.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": "Small"}})),
    )
    .await
    .unwrap();
    step(&k, "spec upstream again", || async {
        field(&up, "db", "/spec/tier").await == Some(json!("Small"))
    })
    .await;
    assert_eq!(
        field(&up, "db", "/spec/resourceRef/name").await.unwrap(),
        "xr"
    );

    // Deleted upstream: recreated. Created upstream: adopted.
    up.delete("db", &DeleteParams::default()).await.unwrap();
    step(&k, "upstream recreated", || async {
        field(&up, "db", "/spec/tier").await == Some(json!("Small"))
    })
    .await;
    up.create(&PostParams::default(), &mango("test2", Some("Provider")))
        .await
        .unwrap();
    step(&k, "adopted downstream", || async {
        exists(&down, "test2").await
    })
    .await;

    // Claimed Secrets created by the provider are mirrored down.
    let up_secrets: Api<Secret> =
        Api::namespaced(w.provider_admin.clone(), &format!("{}-default", w.p));
    let down_secrets: Api<Secret> = Api::namespaced(w.app_admin.clone(), "default");
    up_secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    step(&k, "claimed secret mirrored", || async {
        down_secrets.get_opt("creds").await.ok().flatten().is_some()
    })
    .await;

    // Deleting downstream deletes upstream.
    for name in ["db", "test2"] {
        down.delete(name, &DeleteParams::default()).await.unwrap();
    }
    step(&k, "upstream deleted", || async {
        !exists(&up, "db").await && !exists(&up, "test2").await
    })
    .await;
    step(&k, "downstream released", || async {
        !exists(&down, "db").await && !exists(&down, "test2").await
    })
    .await;

    // A consumer namespace that goes away takes its APIServiceNamespace with it.
    let namespaces: Api<Namespace> = Api::all(w.app_admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    w.downstream("team")
        .create(&PostParams::default(), &mango("t", None))
        .await
        .unwrap();
    let team_up = w.upstream("team");
    step(&k, "team instance upstream", || async {
        exists(&team_up, "t").await
    })
    .await;
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let sns: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &kube::core::ApiResource::erase::<konnector_api::v1alpha1::APIServiceNamespace>(&()),
    );
    step(
        &k,
        "team namespace gone and its APIServiceNamespace deleted",
        || async {
            namespaces.get_opt("team").await.ok().flatten().is_none() && !exists(&sns, "team").await
        },
    )
    .await;
    assert!(
        !exists(&team_up, "t").await,
        "the instance was deleted upstream before its namespace went"
    );

    k.terminate().await.unwrap();
    assert!(
        k.wait_exit(Duration::from_secs(10))
            .await
            .unwrap()
            .success()
    );
}

async fn default_mode_binds_syncs_both_ways_and_cleans_up(backend: Backend) {
    happy_path(backend, Mode::Default).await;
}

async fn control_plane_mode_binds_syncs_both_ways_and_cleans_up(backend: Backend) {
    happy_path(backend, Mode::ControlPlane).await;
}

async fn control_plane_mode_rotates_app_credentials_without_restart(backend: Backend) {
    let w = World::new(backend, Mode::ControlPlane, &["konnector-rotated"])
        .await
        .unwrap();
    let k = start(&w).await;
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("before", None)).await;

    // Rotate: the app cluster kubeconfig Secret now names another user.
    let secrets: Api<Secret> = Api::namespaced(w.provider_admin.clone(), w.p);
    let rotated = w.app.kubeconfig("konnector-rotated").unwrap();
    secrets
        .patch(
            "app-kubeconfig",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"kubeconfig": rotated}})),
        )
        .await
        .unwrap();
    let app = &w.app;
    step(
        &k,
        "app cluster requests made with the new credentials",
        || async {
            app.requests()
                .await
                .unwrap()
                .iter()
                .any(|r| r.user == "konnector-rotated")
        },
    )
    .await;
    // Syncing goes on, with nothing lost.
    create_synced(&k, &down, &up, &mango("after", None)).await;
    up.patch_status(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    step(&k, "status downstream after rotation", || async {
        field(&down, "before", "/status/phase").await == Some(json!("Running"))
    })
    .await;
    let late_writes_by_old_user: Vec<_> = app
        .requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.user == "konnector" && r.is_write() && r.name == "after")
        .collect();
    assert!(
        late_writes_by_old_user.is_empty(),
        "writes with the old credentials after rotation: {late_writes_by_old_user:?}"
    );
    revoke_old_credentials_and_keep_syncing(&w, &k, &w.app).await;

    // Invalid new content keeps the last good credentials working.
    secrets
        .patch(
            "app-kubeconfig",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"kubeconfig": "not-a-kubeconfig"}})),
        )
        .await
        .unwrap();
    down.create(&PostParams::default(), &mango("during-bad-secret", None))
        .await
        .unwrap();
    step(
        &k,
        "instance synced while the Secret is invalid",
        || async { exists(&up, "during-bad-secret").await },
    )
    .await;
    // The bindings say that the rotated kubeconfig was rejected (a warning: syncing goes on).
    step(&k, "AppKubeconfigValid=False on the binding", || async {
        w.binding_condition("AppKubeconfigValid")
            .await
            .is_some_and(|c| {
                c["status"] == "False"
                    && c["reason"] == "AppKubeconfigRejected"
                    && c["severity"] == "Warning"
            })
    })
    .await;
    assert!(
        k.stderr().contains("konnector-rotated") || !k.stderr().contains("not-a-kubeconfig"),
        "kubeconfig contents in logs"
    );
}

async fn restart_over_a_synced_world_makes_no_writes_and_sigkill_mid_sync_converges(
    backend: Backend,
) {
    let w = World::new(backend, Mode::Default, &[]).await.unwrap();
    let mut k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    // Killed mid-sync: some instances are synced, some not.
    for i in 0..20 {
        down.create(&PostParams::default(), &mango(&format!("db-{i:02}"), None))
            .await
            .unwrap();
    }
    step(&k, "a few instances upstream", || async {
        exists(&up, "db-00").await
    })
    .await;
    k.kill().await.unwrap();
    let mut k = start(&w).await;
    step(&k, "all 20 instances upstream exactly once", || async {
        up.list(&Default::default())
            .await
            .map(|l| l.items.len() == 20)
            .unwrap_or(false)
    })
    .await;
    step(&k, "all 20 downstream hold the finalizer", || async {
        down.list(&Default::default())
            .await
            .map(|l| {
                l.items.iter().all(|o| {
                    o.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| f.iter().any(|x| x == "klutch.anynines.com/syncer"))
                })
            })
            .unwrap_or(false)
    })
    .await;

    // An instance deleted while the konnector is down (its finalizer removed by hand) has its
    // provider copy deleted after the restart: the safety net for missed deletions.
    k.terminate().await.unwrap();
    assert!(
        k.wait_exit(Duration::from_secs(10))
            .await
            .unwrap()
            .success()
    );
    down.patch(
        "db-19",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    down.delete("db-19", &DeleteParams::default())
        .await
        .unwrap();
    let k = start(&w).await;
    step(&k, "orphaned provider copy deleted", || async {
        !exists(&up, "db-19").await
    })
    .await;
    assert!(exists(&up, "db-18").await);

    let _k = restart_writes_nothing(&w, k).await;
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    assert!(crds.get(EXPORT).await.is_ok());
    let _ = mangodb();
}

async fn deleting_the_binding_releases_finalizers_and_orphans_provider_objects(backend: Backend) {
    let w = World::new(backend, Mode::Default, &[]).await.unwrap();
    let k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("db", None)).await;
    w.bindings()
        .delete(EXPORT, &DeleteParams::default())
        .await
        .unwrap();
    step(&k, "downstream finalizer released", || async {
        down.get_opt("db").await.ok().flatten().is_some_and(|o| {
            !o.metadata
                .finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f == "klutch.anynines.com/syncer")
        })
    })
    .await;
    down.delete("db", &DeleteParams::default()).await.unwrap();
    step(&k, "downstream deletable after unbinding", || async {
        !exists(&down, "db").await
    })
    .await;
    assert!(
        exists(&up, "db").await,
        "provider object must be orphaned, not deleted"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    assert!(crds.get(EXPORT).await.is_ok(), "the CRD is never deleted");
    // New objects after unbinding are plain local objects.
    down.create(&PostParams::default(), &mango("local", None))
        .await
        .unwrap();
    let obj = down.get("local").await.unwrap();
    assert!(obj.metadata.finalizers.unwrap_or_default().is_empty());
}

async fn default_mode_follows_a_rotated_provider_kubeconfig_without_restart(backend: Backend) {
    let w = World::new(backend, Mode::Default, &["konnector-rotated"])
        .await
        .unwrap();
    let k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("before", None)).await;

    // The provider rotates its kubeconfig Secret; the konnector mirrors it into the binding's
    // Secret and reconnects with it.
    let rotated = e2e::world::kubeconfig_in(&w.provider, "konnector-rotated", w.p).unwrap();
    let provider_secrets: Api<Secret> = Api::namespaced(w.provider_admin.clone(), w.p);
    provider_secrets
        .patch(
            "kubeconfig",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"kubeconfig": rotated.clone()}})),
        )
        .await
        .unwrap();
    let app_secrets: Api<Secret> = Api::namespaced(w.app_admin.clone(), e2e::world::BIND_NS);
    step(
        &k,
        "binding Secret mirrors the rotated kubeconfig",
        || async {
            app_secrets
                .get("kubeconfig")
                .await
                .ok()
                .and_then(|s| s.data)
                .and_then(|d| d.get("kubeconfig").cloned())
                .is_some_and(|b| b.0 == rotated.as_bytes())
        },
    )
    .await;
    let provider = &w.provider;
    step(
        &k,
        "provider requests made with the rotated credentials",
        || async {
            provider
                .requests()
                .await
                .unwrap()
                .iter()
                .any(|r| r.user == "konnector-rotated")
        },
    )
    .await;
    create_synced(&k, &down, &up, &mango("after", None)).await;
    up.patch_status(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    step(
        &k,
        "status of an older instance still flows down",
        || async { field(&down, "before", "/status/phase").await == Some(json!("Running")) },
    )
    .await;
    step(&k, "binding Ready after rotation", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    revoke_old_credentials_and_keep_syncing(&w, &k, &w.provider).await;
}

async fn export_schema_change_updates_the_crd_and_new_fields_sync(backend: Backend) {
    let w = World::new(backend, Mode::Default, &[]).await.unwrap();
    let k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    down.create(&PostParams::default(), &mango("db", Some("Shared")))
        .await
        .unwrap();
    step(&k, "instance upstream", || async {
        exists(&up, "db").await
    })
    .await;

    // The provider adds a field to the exported schema (generation bump).
    let exports: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &kube::core::ApiResource::erase::<konnector_api::v1alpha1::APIServiceExport>(&()),
    );
    let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"tier": {"type": "string", "default": "Shared"}, "size": {"type": "integer"}}},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}});
    exports
        .patch(
            EXPORT,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}}, "schema": {"openAPIV3Schema": schema}}]}}),
            ),
        )
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    step(&k, "CRD in the app cluster has the new field", || async {
        crds.get(EXPORT)
            .await
            .ok()
            .and_then(|c| serde_json::to_value(c.spec).ok())
            .is_some_and(|s| {
                s.pointer("/versions/0/schema/openAPIV3Schema/properties/spec/properties/size")
                    .is_some()
            })
    })
    .await;
    step(&k, "binding SchemaInSync", || async {
        w.binding_condition("SchemaInSync")
            .await
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    // The new field is kept by the app cluster and synced up; nothing was cut from the object.
    down.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 3}})),
    )
    .await
    .unwrap();
    step(&k, "new field upstream", || async {
        field(&up, "db", "/spec/size").await == Some(json!(3))
    })
    .await;
    assert_eq!(field(&down, "db", "/spec/size").await, Some(json!(3)));
    assert_eq!(field(&up, "db", "/spec/tier").await, Some(json!("Shared")));
}

/// Sets the schema of the provider's CRD and of its export to `spec_properties` (no unknown
/// fields kept), as a provider changing its API does.
async fn set_provider_schema(w: &World, spec_properties: serde_json::Value) {
    let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": spec_properties},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}});
    let versions = json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}}, "schema": {"openAPIV3Schema": schema}}]}});
    let crds: Api<CustomResourceDefinition> = Api::all(w.provider_admin.clone());
    crds.patch(EXPORT, &PatchParams::default(), &Patch::Merge(&versions))
        .await
        .unwrap();
    let exports: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &kube::core::ApiResource::erase::<konnector_api::v1alpha1::APIServiceExport>(&()),
    );
    exports
        .patch(EXPORT, &PatchParams::default(), &Patch::Merge(&versions))
        .await
        .unwrap();
}

/// Whether the app cluster's CRD has `spec.<property>` in its schema.
async fn app_crd_has(w: &World, property: &str) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    crds.get(EXPORT)
        .await
        .ok()
        .and_then(|c| serde_json::to_value(c.spec).ok())
        .is_some_and(|s| {
            s.pointer(&format!(
                "/versions/0/schema/openAPIV3Schema/properties/spec/properties/{property}"
            ))
            .is_some()
        })
}

/// An export gains `spec.color`; an object created with it right after the konnector updated
/// the app cluster's CRD reaches the provider with it, and a restart afterwards writes nothing.
///
/// The API server serves a CRD's old schema for a moment after an update (and watches opened
/// then keep decoding with it until the old storage is torn down, a second or more later):
/// whatever the konnector lists or watches in that window comes without the new field. On
/// `test-apiserver` the app cluster's window is made 800 ms long, so that every run goes through
/// it.
async fn schema_gains_a_field_and_an_object_created_at_once_keeps_it(backend: Backend, mode: Mode) {
    let options = e2e::ClusterOptions {
        crd_storage_switch_delay: Some(Duration::from_millis(800)),
        ..Default::default()
    };
    // The provider's CRD changes too: a provider of its own.
    let w = World::isolated(backend, mode, &[], options).await.unwrap();
    let k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    // A schema that keeps no unknown fields (the world's keeps them, which hides pruning), and
    // served by the app cluster before the next change: the API server switches storages in
    // order, so the field added next is visible only once its own schema serves.
    set_provider_schema(&w, json!({"tier": {"type": "string", "default": "Shared"}})).await;
    step(&k, "strict schema served by the app cluster", || async {
        w.binding_condition("SchemaInSync")
            .await
            .is_some_and(|c| c["status"] == "True")
            && !crds_preserve_unknown(&w).await
            && app_serves(&w, json!({"junk": "x"})).await == Some(json!({"tier": "Shared"}))
    })
    .await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("plain", None)).await;

    set_provider_schema(
        &w,
        json!({"tier": {"type": "string", "default": "Shared"}, "color": {"type": "string"}}),
    )
    .await;
    step(&k, "app CRD updated with spec.color", || async {
        app_crd_has(&w, "color").await
    })
    .await;
    // At once, as a user would. The app cluster itself may still prune the field for a moment
    // (its own switch window); the user then sets it again, until it is kept.
    let mut painted = mango("painted", None);
    painted.data["spec"]["color"] = json!("red");
    down.create(&PostParams::default(), &painted).await.unwrap();
    step(&k, "spec.color kept by the app cluster", || async {
        if field(&down, "painted", "/spec/color").await == Some(json!("red")) {
            return true;
        }
        let _ = down
            .patch(
                "painted",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"color": "red"}})),
            )
            .await;
        false
    })
    .await;
    step(&k, "spec.color upstream", || async {
        field(&up, "painted", "/spec/color").await == Some(json!("red"))
    })
    .await;
    // A restart once the app cluster serves the new schema (as it does after a moment on a real
    // server) reads every object with the field and has nothing to write.
    step(&k, "new schema served by the app cluster", || async {
        app_serves(&w, json!({"color": "red"})).await
            == Some(json!({"color": "red", "tier": "Shared"}))
    })
    .await;
    let k = restart_writes_nothing(&w, k).await;
    assert_eq!(
        field(&up, "painted", "/spec/color").await,
        Some(json!("red")),
        "--- konnector stderr ---\n{}",
        k.stderr()
    );
}

/// The spec a dry-run create of `spec` in the app cluster comes back with: what the schema the
/// API server serves right now keeps (`None` if the request fails).
async fn app_serves(w: &World, spec: serde_json::Value) -> Option<serde_json::Value> {
    let mut probe = mango("probe", None);
    probe.data["spec"] = spec;
    w.downstream("default")
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &probe,
        )
        .await
        .ok()
        .map(|o| o.data["spec"].clone())
}

/// Whether the app cluster's CRD keeps unknown fields under `spec`.
async fn crds_preserve_unknown(w: &World) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    crds.get(EXPORT)
        .await
        .ok()
        .and_then(|c| serde_json::to_value(c.spec).ok())
        .is_some_and(|s| {
            s.pointer("/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-preserve-unknown-fields")
                == Some(&json!(true))
        })
}

async fn default_mode_schema_gains_a_field_and_an_object_created_at_once_keeps_it(
    backend: Backend,
) {
    schema_gains_a_field_and_an_object_created_at_once_keeps_it(backend, Mode::Default).await;
}

async fn control_plane_mode_schema_gains_a_field_and_an_object_created_at_once_keeps_it(
    backend: Backend,
) {
    schema_gains_a_field_and_an_object_created_at_once_keeps_it(backend, Mode::ControlPlane).await;
}

/// A binding on the export's name with `secret` in the bind namespace (default mode).
fn named_binding(name: &str, secret: &str) -> serde_json::Value {
    let mut b = e2e::world::binding(e2e::world::BIND_NS, secret);
    b["metadata"]["name"] = json!(name);
    b
}

async fn condition_of(w: &World, binding: &str, type_: &str) -> Option<serde_json::Value> {
    let b = w.bindings().get(binding).await.ok()?;
    b.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

async fn binding_conditions_report_each_problem_and_bindings_share_one_provider_session(
    backend: Backend,
) {
    let w = World::new(backend, Mode::Default, &[]).await.unwrap();
    let k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let ns = e2e::world::BIND_NS;
    let secrets: Api<Secret> = Api::namespaced(w.app_admin.clone(), ns);
    let no_ns_kubeconfig = {
        let mut kc: serde_yaml::Value =
            serde_yaml::from_str(&w.provider.kubeconfig(e2e::KONNECTOR_USER).unwrap()).unwrap();
        if let Some(ctx) = kc["contexts"][0]["context"].as_mapping_mut() {
            ctx.remove("namespace");
        }
        serde_yaml::to_string(&kc).unwrap()
    };
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "wrong-key"}, "stringData": {"config": "x"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    secrets.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "no-namespace"}, "stringData": {"kubeconfig": no_ns_kubeconfig}})).unwrap()).await.unwrap();
    // A CRD someone else installed in the app cluster, and an export of that name.
    let foreign: CustomResourceDefinition = serde_json::from_value(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    let foreign_spec = crds
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap()
        .spec;
    let exports: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &kube::core::ApiResource::erase::<konnector_api::v1alpha1::APIServiceExport>(&()),
    );
    exports.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "informerScope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).unwrap()).await.unwrap();
    let bindings = w.bindings();
    for (name, secret) in [
        ("a.example.com", "wrong-key"),
        ("b.example.com", "no-namespace"),
        ("nothere.example.com", "kubeconfig"),
        ("widgets.example.com", "kubeconfig"),
    ] {
        bindings
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(named_binding(name, secret)),
            )
            .await
            .unwrap();
    }
    let expect = |binding: &'static str,
                  type_: &'static str,
                  reason: &'static str,
                  message: String| {
        let w = &w;
        async move {
            condition_of(w, binding, type_).await.is_some_and(|c| {
                c["status"] == "False" && c["reason"] == reason && c["message"] == message.as_str()
            })
        }
    };
    step(&k, "missing key reported", || {
        expect(
            "a.example.com",
            "SecretValid",
            "KubeconfigSecretInvalid",
            format!("Kubeconfig secret {ns}/wrong-key is missing \"kubeconfig\" string key."),
        )
    })
    .await;
    step(&k, "kubeconfig without namespace reported (default mode)", || async {
        condition_of(&w, "b.example.com", "SecretValid").await.is_some_and(|c| c["reason"] == "KubeconfigSecretInvalid"
            && c["message"].as_str().is_some_and(|m| m.starts_with(&format!("Kubeconfig secret {ns}/no-namespace has an invalid kubeconfig: current context")) && m.ends_with("has no namespace set")))
    }).await;
    step(&k, "missing export reported", || expect("nothere.example.com", "Connected", "APIServiceExportNotFound",
        "APIServiceExport nothere.example.com not found on the service provider cluster. Rerun kubectl bind for repair.".to_string())).await;
    step(&k, "foreign CRD reported", || {
        expect(
            "widgets.example.com",
            "Connected",
            "ForeignCustomResourceDefinition",
            "CustomResourceDefinition widgets.example.com is not owned by klutch.anynines.com."
                .to_string(),
        )
    })
    .await;
    // The API server itself updates a new CRD's status (names accepted, established), so the
    // resourceVersion may move; the konnector's own requests say whether it wrote.
    assert_eq!(
        crds.get("widgets.example.com").await.unwrap().spec,
        foreign_spec
    );
    let foreign_writes: Vec<_> = w
        .app
        .konnector_writes()
        .await
        .into_iter()
        .filter(|r| r.resource == "customresourcedefinitions" && r.name == "widgets.example.com")
        .collect();
    assert!(
        foreign_writes.is_empty(),
        "a foreign CRD must not be touched: {foreign_writes:?}"
    );
    let ready = condition_of(&w, "nothere.example.com", "Ready")
        .await
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("APIServiceExportNotFound"))
    );
    // Three bindings use the same kubeconfig: one provider session, one ClusterBinding watch.
    let cluster_binding_lists = w
        .provider
        .konnector_requests()
        .await
        .into_iter()
        .filter(|r| r.resource == "clusterbindings" && r.verb == "list")
        .count();
    assert_eq!(
        cluster_binding_lists, 1,
        "bindings with the same kubeconfig must share one provider session"
    );
    // A restart over several bindings of one provider session (handed to the session one by
    // one) writes nothing either: no export is reported unbound for a moment. (An instance
    // first, so that the marker's namespace is mapped already.)
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("db", None)).await;
    restart_writes_nothing(&w, k).await;
}

/// Binds the cluster-scoped `foos.bar.io` (the reference fixture's shape) with `isolation` next
/// to the world's export and syncs one object through it.
async fn cluster_scoped_resource(backend: Backend, isolation: &str) {
    // Cluster-scoped CRD and objects on the provider: a provider of its own.
    let w = World::isolated(backend, Mode::Default, &[], Default::default())
        .await
        .unwrap();
    let k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "first binding Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let provider_scope = if isolation == "Namespaced" {
        "Namespaced"
    } else {
        "Cluster"
    };
    let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"deploymentName": {"type": "string"}}},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}});
    let crd = |scope: &str| -> CustomResourceDefinition {
        serde_json::from_value(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "foos.bar.io"},
            "spec": {"group": "bar.io", "scope": scope, "names": {"kind": "Foo", "plural": "foos", "singular": "foo", "listKind": "FooList"},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": schema}}]}})).unwrap()
    };
    Api::<CustomResourceDefinition>::all(w.provider_admin.clone())
        .create(&PostParams::default(), &crd(provider_scope))
        .await
        .unwrap();
    let exports: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &kube::core::ApiResource::erase::<konnector_api::v1alpha1::APIServiceExport>(&()),
    );
    exports.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport",
        "metadata": {"name": "foos.bar.io"},
        "spec": {"group": "bar.io", "scope": "Cluster", "informerScope": "Cluster", "clusterScopedIsolation": isolation,
            "names": {"kind": "Foo", "plural": "foos", "singular": "foo", "listKind": "FooList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": schema}}]}})).unwrap()).await.unwrap();
    w.bindings()
        .patch(
            "foos.bar.io",
            &PatchParams::apply("test").force(),
            &Patch::Apply(named_binding("foos.bar.io", "kubeconfig")),
        )
        .await
        .unwrap();
    step(&k, "foos binding Connected", || async {
        condition_of(&w, "foos.bar.io", "Connected")
            .await
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    let foos = kube::core::ApiResource {
        group: "bar.io".into(),
        version: "v1alpha1".into(),
        api_version: "bar.io/v1alpha1".into(),
        kind: "Foo".into(),
        plural: "foos".into(),
    };
    let down: Api<DynamicObject> = Api::all_with(w.app_admin.clone(), &foos);
    let (up, up_name): (Api<DynamicObject>, String) = match isolation {
        "Prefixed" => (
            Api::all_with(w.provider_admin.clone(), &foos),
            format!("{}-test", w.p),
        ),
        "Namespaced" => (
            Api::namespaced_with(w.provider_admin.clone(), w.p, &foos),
            "test".to_string(),
        ),
        _ => (
            Api::all_with(w.provider_admin.clone(), &foos),
            "test".to_string(),
        ),
    };
    step(&k, "Foo CRD in the app cluster", || async {
        Api::<CustomResourceDefinition>::all(w.app_admin.clone())
            .get("foos.bar.io")
            .await
            .is_ok_and(|c| c.spec.scope == "Cluster")
    })
    .await;
    step(&k, "Foo served in the app cluster", || async {
        down.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "bar.io/v1alpha1", "kind": "Foo",
            "metadata": {"name": "test"}, "spec": {"deploymentName": "tested"}}))
            .unwrap(),
        )
        .await
        .is_ok()
    })
    .await;
    step(&k, "Foo upstream", || async { exists(&up, &up_name).await }).await;
    let copy = up.get(&up_name).await.unwrap();
    assert_eq!(copy.data["spec"]["deploymentName"], "tested");
    assert_eq!(
        copy.metadata.annotations.as_ref().unwrap()["klutch.anynines.com/cluster-namespace"],
        w.p
    );
    up.patch_status(
        &up_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    step(&k, "Foo status downstream", || async {
        field(&down, "test", "/status/phase").await == Some(json!("Running"))
    })
    .await;
    down.delete("test", &DeleteParams::default()).await.unwrap();
    step(&k, "Foo deleted upstream and downstream", || async {
        !exists(&up, &up_name).await && !exists(&down, "test").await
    })
    .await;

    // The provider removes the consumer's namespace (as the backend does when it unbinds a
    // cluster): its copies go with it, cluster-scoped ones through their owner reference to the
    // namespace. On a real server the namespace controller and the garbage collector do it.
    let gc_name = up_name.replace("test", "gc");
    down.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "bar.io/v1alpha1", "kind": "Foo",
            "metadata": {"name": "gc"}, "spec": {"deploymentName": "collected"}}))
        .unwrap(),
    )
    .await
    .unwrap();
    step(&k, "second Foo upstream", || async {
        exists(&up, &gc_name).await
    })
    .await;
    let mut k = k;
    k.terminate().await.unwrap();
    k.wait_exit(Duration::from_secs(10)).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(w.provider_admin.clone());
    namespaces
        .delete(w.p, &DeleteParams::default())
        .await
        .unwrap();
    step(
        &k,
        "the provider namespace and what it owns are gone",
        || async {
            namespaces.get_opt(w.p).await.ok().flatten().is_none() && !exists(&up, &gc_name).await
        },
    )
    .await;
}

async fn cluster_scoped_resource_with_prefixed_isolation_syncs_as_p_dash_name(backend: Backend) {
    cluster_scoped_resource(backend, "Prefixed").await;
}

async fn cluster_scoped_resource_with_namespaced_isolation_syncs_into_the_provider_namespace(
    backend: Backend,
) {
    cluster_scoped_resource(backend, "Namespaced").await;
}

async fn cluster_scoped_resource_without_isolation_keeps_its_name(backend: Backend) {
    cluster_scoped_resource(backend, "None").await;
}

e2e::on_both_backends!(
    default_mode_schema_gains_a_field_and_an_object_created_at_once_keeps_it,
    control_plane_mode_schema_gains_a_field_and_an_object_created_at_once_keeps_it,
    default_mode_binds_syncs_both_ways_and_cleans_up,
    control_plane_mode_binds_syncs_both_ways_and_cleans_up,
    control_plane_mode_rotates_app_credentials_without_restart,
    restart_over_a_synced_world_makes_no_writes_and_sigkill_mid_sync_converges,
    deleting_the_binding_releases_finalizers_and_orphans_provider_objects,
    default_mode_follows_a_rotated_provider_kubeconfig_without_restart,
    export_schema_change_updates_the_crd_and_new_fields_sync,
    binding_conditions_report_each_problem_and_bindings_share_one_provider_session,
    cluster_scoped_resource_with_prefixed_isolation_syncs_as_p_dash_name,
    cluster_scoped_resource_with_namespaced_isolation_syncs_into_the_provider_namespace,
    cluster_scoped_resource_without_isolation_keeps_its_name,
);
