//! The export syncer against two in-memory API servers (app cluster and provider), with the
//! test playing the provider backend (it fills in `APIServiceNamespace.status.namespace`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, install_crd, mangodb, wait_for};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use konnector_api::strings::annotations::BOUND;
use konnector_api::strings::finalizers::SYNCER;
use konnector_api::v1alpha1::APIServiceNamespace;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::json;
use sync_engine::runtime::{Cluster, Clusters, ExportSyncConfig, ExportSyncer, WatchHub};
use test_apiserver::{ADMIN, Options, TestApiServer, User};

const KONNECTOR: &str = "konnector";

fn mangodb_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "mangodbs.mangodb.com"},
        "spec": {"group": "mangodb.com", "scope": "Namespaced",
            "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                        "tier": {"type": "string"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}
    }))
    .unwrap()
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

struct World {
    app: TestApiServer,
    provider: TestApiServer,
    app_admin: kube::Client,
    provider_admin: kube::Client,
    clusters: Clusters,
}

async fn world() -> World {
    let options = || {
        Options::default()
            .http()
            .user(User::new(KONNECTOR, &["system:masters"]))
    };
    let app = TestApiServer::start(options()).await.unwrap();
    let provider = TestApiServer::start(options()).await.unwrap();
    let app_admin = client(&app, ADMIN).await;
    let provider_admin = client(&provider, ADMIN).await;
    install_crd(&app_admin, mangodb_crd()).await;
    install_crd(&provider_admin, mangodb_crd()).await;
    install_crd(
        &provider_admin,
        konnector_api::crds::api_service_namespace(),
    )
    .await;
    create_namespace(&provider_admin, "p").await;
    create_namespace(&provider_admin, "p-default").await;
    let clusters = Clusters {
        consumer: Cluster::Fixed(client(&app, KONNECTOR).await),
        consumer_id: "app".into(),
        provider: Cluster::Fixed(client(&provider, KONNECTOR).await),
        provider_id: "provider".into(),
    };
    World {
        app,
        provider,
        app_admin,
        provider_admin,
        clusters,
    }
}

fn config() -> ExportSyncConfig {
    ExportSyncConfig {
        provider_namespace: "p".into(),
        provider_namespace_uid: None,
        resource: mangodb(),
        cluster_scoped: None,
        per_namespace_provider_watches: true,
        workers: sync_engine::runtime::export_sync::WORKERS,
    }
}

/// Plays the backend: gives every APIServiceNamespace in `p` the service namespace `p-<name>`.
async fn backend_maps_namespace(provider: &kube::Client, consumer_ns: &str) {
    let api: Api<APIServiceNamespace> = Api::namespaced(provider.clone(), "p");
    wait_for("APIServiceNamespace created by the konnector", || {
        let api = api.clone();
        async move { api.get(consumer_ns).await.ok() }
    })
    .await;
    api.patch_status(
        consumer_ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"namespace": format!("p-{consumer_ns}")}})),
    )
    .await
    .unwrap();
}

fn konnector_writes(server: &TestApiServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.user == KONNECTOR && r.is_write())
        .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
        .collect()
}

#[tokio::test]
async fn consumer_objects_sync_up_status_flows_down_and_deletion_propagates() {
    let w = world().await;
    let hub = std::sync::Arc::new(WatchHub::new());
    let syncer = ExportSyncer::start(&hub, w.clusters.clone(), config());
    let down: Api<DynamicObject> = Api::namespaced_with(w.app_admin.clone(), "default", &mangodb());
    let up: Api<DynamicObject> =
        Api::namespaced_with(w.provider_admin.clone(), "p-default", &mangodb());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mangodb.com/v1", "kind": "MangoDB",
        "metadata": {"name": "db", "labels": {"team": "a"}}, "spec": {"tier": "Shared"}}))
    .unwrap();
    down.create(&PostParams::default(), &obj).await.unwrap();

    // The first object in a namespace creates its APIServiceNamespace; the backend maps it.
    backend_maps_namespace(&w.provider_admin, "default").await;
    let copy = wait_for("upstream copy", || {
        let up = up.clone();
        async move { up.get("db").await.ok() }
    })
    .await;
    assert_eq!(copy.data["spec"]["tier"], "Shared");
    assert_eq!(copy.metadata.annotations.as_ref().unwrap()[BOUND], "true");
    assert_eq!(copy.metadata.labels.as_ref().unwrap()["team"], "a");
    let d = down.get("db").await.unwrap();
    assert!(d.metadata.finalizers.unwrap().contains(&SYNCER.to_string()));

    // Status flows down.
    up.patch_status(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    wait_for("status downstream", || { let down = down.clone(); async move {
        (down.get("db").await.ok()?.data["status"]["phase"] == "Running").then_some(()) } }).await;

    // Spec flows up; drift upstream is reverted.
    down.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
    )
    .await
    .unwrap();
    wait_for("spec upstream", || {
        let up = up.clone();
        async move { (up.get("db").await.ok()?.data["spec"]["tier"] == "Dedicated").then_some(()) }
    })
    .await;
    up.patch(
        "db",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"tier": "Drifting"}})),
    )
    .await
    .unwrap();
    wait_for("drift reverted", || {
        let up = up.clone();
        async move { (up.get("db").await.ok()?.data["spec"]["tier"] == "Dedicated").then_some(()) }
    })
    .await;

    // A provider controller's own spec field survives, and is not fought.
    up.patch(
        "db",
        &PatchParams::apply("crossplane").force(),
        &Patch::Apply(
            json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB", "metadata": {"name": "db"},
            "spec": {"resourceRef": {"name": "xr-1"}}}),
        ),
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
    let synced = wait_for("spec upstream again", || {
        let up = up.clone();
        async move {
            let o = up.get("db").await.ok()?;
            (o.data["spec"]["tier"] == "Small").then_some(o)
        }
    })
    .await;
    assert_eq!(synced.data["spec"]["resourceRef"]["name"], "xr-1");
    let reconciles = syncer.reconciles();
    w.provider.clear_requests();
    up.patch(
        "db",
        &PatchParams::apply("crossplane").force(),
        &Patch::Apply(
            json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB", "metadata": {"name": "db"},
            "spec": {"resourceRef": {"name": "xr-2"}}}),
        ),
    )
    .await
    .unwrap();
    wait_for("konnector saw the provider's change", || {
        let n = syncer.reconciles();
        async move { (n > reconciles).then_some(()) }
    })
    .await;
    assert_eq!(
        konnector_writes(&w.provider),
        Vec::<String>::new(),
        "the konnector fought the provider controller"
    );

    // Deleted upstream: recreated from downstream.
    up.delete("db", &DeleteParams::default()).await.unwrap();
    wait_for("upstream recreated", || {
        let up = up.clone();
        async move {
            let o = up.get("db").await.ok()?;
            (o.data["spec"]["tier"] == "Small").then_some(())
        }
    })
    .await;

    // Created directly upstream: adopted downstream.
    let direct: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
        "metadata": {"name": "test2"}, "spec": {"tier": "Provider"}}))
        .unwrap();
    up.create(&PostParams::default(), &direct).await.unwrap();
    let adopted = wait_for("adopted downstream", || {
        let down = down.clone();
        async move { down.get("test2").await.ok() }
    })
    .await;
    assert_eq!(
        adopted.metadata.annotations.as_ref().unwrap()[BOUND],
        "true"
    );
    assert_eq!(adopted.data["spec"]["tier"], "Provider");
    wait_for("adopted upstream marked bound", || {
        let up = up.clone();
        async move {
            up.get("test2")
                .await
                .ok()?
                .metadata
                .annotations?
                .get(BOUND)
                .map(|_| ())
        }
    })
    .await;

    // Deleting downstream deletes upstream, then releases the downstream object.
    for name in ["db", "test2"] {
        down.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["db", "test2"] {
        wait_for("upstream deleted", || {
            let up = up.clone();
            async move { up.get(name).await.err().map(|_| ()) }
        })
        .await;
        wait_for("downstream released", || {
            let down = down.clone();
            async move { down.get(name).await.err().map(|_| ()) }
        })
        .await;
    }
    assert_eq!(syncer.failures(), 0);
    drop(syncer);
    let _ = w.app;
}

#[tokio::test]
async fn a_restart_over_a_synced_world_writes_nothing() {
    let w = world().await;
    let down: Api<DynamicObject> = Api::namespaced_with(w.app_admin.clone(), "default", &mangodb());
    let up: Api<DynamicObject> =
        Api::namespaced_with(w.provider_admin.clone(), "p-default", &mangodb());
    {
        let hub = std::sync::Arc::new(WatchHub::new());
        let _syncer = ExportSyncer::start(&hub, w.clusters.clone(), config());
        for i in 0..5 {
            let obj: DynamicObject =
                serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
                "metadata": {"name": format!("db-{i}")}, "spec": {"tier": "Shared"}}))
                .unwrap();
            down.create(&PostParams::default(), &obj).await.unwrap();
        }
        backend_maps_namespace(&w.provider_admin, "default").await;
        for i in 0..5 {
            let name = format!("db-{i}");
            wait_for("upstream copy", || {
                let up = up.clone();
                let name = name.clone();
                async move { up.get(&name).await.ok() }
            })
            .await;
            up.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running"}})),
            )
            .await
            .unwrap();
        }
        wait_for("all synced both ways", || {
            let down = down.clone();
            async move {
                let list = down.list(&Default::default()).await.ok()?;
                list.items
                    .iter()
                    .all(|o| o.data["status"]["phase"] == "Running")
                    .then_some(())
            }
        })
        .await;
    }
    w.app.clear_requests();
    w.provider.clear_requests();
    let hub = std::sync::Arc::new(WatchHub::new());
    let syncer = ExportSyncer::start(&hub, w.clusters.clone(), config());
    // Every pair is looked at once (5 pairs, keyed from both sides and coalesced).
    wait_for("restarted syncer reconciled every pair", || {
        let n = syncer.reconciles();
        let d = syncer.queue_depth();
        async move { (n >= 5 && d == 0).then_some(()) }
    })
    .await;
    assert_eq!(konnector_writes(&w.app), Vec::<String>::new());
    assert_eq!(konnector_writes(&w.provider), Vec::<String>::new());
    assert_eq!(hub.len(), 3, "one watch per cluster and resource");
}

fn foo_crd(scope: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "foos.bar.io"},
        "spec": {"group": "bar.io", "scope": scope,
            "names": {"kind": "Foo", "plural": "foos", "singular": "foo", "listKind": "FooList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"deploymentName": {"type": "string"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}
    }))
    .unwrap()
}

fn foos() -> ApiResource {
    ApiResource {
        group: "bar.io".into(),
        version: "v1alpha1".into(),
        api_version: "bar.io/v1alpha1".into(),
        kind: "Foo".into(),
        plural: "foos".into(),
    }
}

/// A cluster-scoped consumer resource under one isolation mode: where the upstream copy lives,
/// how it is marked, and that status and deletion flow as for namespaced resources.
async fn cluster_scoped(isolation: konnector_api::v1alpha1::Isolation) {
    use konnector_api::v1alpha1::Isolation;
    let options = || {
        Options::default()
            .http()
            .user(User::new(KONNECTOR, &["system:masters"]))
    };
    let app = TestApiServer::start(options()).await.unwrap();
    let provider = TestApiServer::start(options()).await.unwrap();
    let app_admin = client(&app, ADMIN).await;
    let provider_admin = client(&provider, ADMIN).await;
    install_crd(&app_admin, foo_crd("Cluster")).await;
    let provider_scope = if isolation == Isolation::Namespaced {
        "Namespaced"
    } else {
        "Cluster"
    };
    install_crd(&provider_admin, foo_crd(provider_scope)).await;
    install_crd(
        &provider_admin,
        konnector_api::crds::api_service_namespace(),
    )
    .await;
    create_namespace(&provider_admin, "p").await;
    let ns_api: Api<Namespace> = Api::all(provider_admin.clone());
    let p_uid = ns_api.get("p").await.unwrap().metadata.uid.unwrap();
    let clusters = Clusters {
        consumer: Cluster::Fixed(client(&app, KONNECTOR).await),
        consumer_id: "app".into(),
        provider: Cluster::Fixed(client(&provider, KONNECTOR).await),
        provider_id: "provider".into(),
    };
    let hub = std::sync::Arc::new(WatchHub::new());
    let syncer = ExportSyncer::start(
        &hub,
        clusters,
        ExportSyncConfig {
            provider_namespace: "p".into(),
            provider_namespace_uid: Some(p_uid.clone()),
            resource: foos(),
            cluster_scoped: Some(sync_engine::mapping::ClusterScopedMapping {
                provider_namespace: "p".into(),
                isolation,
            }),
            per_namespace_provider_watches: false,
            workers: sync_engine::runtime::export_sync::WORKERS,
        },
    );
    let down: Api<DynamicObject> = Api::all_with(app_admin.clone(), &foos());
    let (up, up_name): (Api<DynamicObject>, &str) = match isolation {
        Isolation::Prefixed => (Api::all_with(provider_admin.clone(), &foos()), "p-test"),
        Isolation::Namespaced => (
            Api::namespaced_with(provider_admin.clone(), "p", &foos()),
            "test",
        ),
        Isolation::None => (Api::all_with(provider_admin.clone(), &foos()), "test"),
    };
    down.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "bar.io/v1alpha1", "kind": "Foo",
        "metadata": {"name": "test"}, "spec": {"deploymentName": "d"}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let copy = wait_for("upstream copy", || {
        let up = up.clone();
        async move { up.get(up_name).await.ok() }
    })
    .await;
    assert_eq!(copy.data["spec"]["deploymentName"], "d");
    assert_eq!(
        copy.metadata.annotations.as_ref().unwrap()["klutch.anynines.com/cluster-namespace"],
        "p"
    );
    let owners = copy.metadata.owner_references.clone().unwrap_or_default();
    if isolation == Isolation::Namespaced {
        assert!(owners.is_empty());
    } else {
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str()
            ),
            ("Namespace", "p", p_uid.as_str())
        );
    }
    up.patch_status(
        up_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    wait_for("status downstream", || { let down = down.clone(); async move {
        (down.get("test").await.ok()?.data["status"]["phase"] == "Running").then_some(()) } }).await;
    down.delete("test", &DeleteParams::default()).await.unwrap();
    wait_for("upstream deleted", || {
        let up = up.clone();
        async move { up.get(up_name).await.err().map(|_| ()) }
    })
    .await;
    wait_for("downstream gone", || {
        let down = down.clone();
        async move { down.get("test").await.err().map(|_| ()) }
    })
    .await;
    assert_eq!(syncer.failures(), 0);
}

#[tokio::test]
async fn cluster_scoped_resource_with_prefixed_isolation() {
    cluster_scoped(konnector_api::v1alpha1::Isolation::Prefixed).await;
}

#[tokio::test]
async fn cluster_scoped_resource_with_namespaced_isolation() {
    cluster_scoped(konnector_api::v1alpha1::Isolation::Namespaced).await;
}

#[tokio::test]
async fn cluster_scoped_resource_without_isolation() {
    cluster_scoped(konnector_api::v1alpha1::Isolation::None).await;
}

/// Polling readiness while a syncer waits for its caches must not steal its wake-up.
#[tokio::test]
async fn polling_readiness_does_not_stall_a_starting_syncer() {
    let w = world().await;
    let hub = std::sync::Arc::new(WatchHub::new());
    let syncer = ExportSyncer::start(&hub, w.clusters.clone(), config());
    let _ = syncer.is_synced();
    let down: Api<DynamicObject> = Api::namespaced_with(w.app_admin.clone(), "default", &mangodb());
    let obj: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
        "metadata": {"name": "db"}, "spec": {}}))
        .unwrap();
    down.create(&PostParams::default(), &obj).await.unwrap();
    wait_for("the syncer reconciled", || {
        let n = syncer.reconciles();
        async move { (n > 0).then_some(()) }
    })
    .await;
    assert!(syncer.is_synced());
}
