//! The whole engine in default mode against two in-memory API servers: an app cluster (which is
//! also the binding cluster) and a provider, with the test playing the provider backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
mod common;

use common::{WAIT, client, install_crd, mangodb, wait_for};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use konnector_api::conditions::{self, ConditionStatus};
use konnector_api::strings::finalizers::SYNCER;
use konnector_api::v1alpha1::{
    APIServiceBinding, APIServiceExport, APIServiceNamespace, ClusterBinding,
};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use sync_engine::engine::{Engine, EngineMode, EngineOptions};
use sync_engine::runtime::Cluster;
use test_apiserver::{ADMIN, Options, TestApiServer, User};

const P: &str = "kube-bind-p";

async fn apply<K>(api: &Api<K>, obj: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap();
}

async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    apply(
        &api,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await;
}

fn mangodb_schema() -> serde_json::Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"tier": {"type": "string", "default": "Shared"}}},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}})
}

/// A provider kubeconfig for `user` whose context namespace is `P`.
fn provider_kubeconfig(provider: &TestApiServer, user: &str) -> String {
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&provider.kubeconfig(user).unwrap()).unwrap();
    kc["contexts"][0]["context"]["namespace"] = serde_yaml::Value::String(P.into());
    serde_yaml::to_string(&kc).unwrap()
}

struct World {
    /// Where bindings and their Secrets live (default mode: the app cluster; CP mode: the
    /// control plane, which is also the provider).
    binding_admin: kube::Client,
    /// Namespace of bindings and their Secrets.
    binding_ns: String,
    app_admin: kube::Client,
    provider_admin: kube::Client,
    engine_binding: Cluster,
    engine_app: Cluster,
    mode: EngineMode,
    _servers: Vec<TestApiServer>,
}

async fn world(control_plane: bool) -> World {
    let options = || {
        Options::default()
            .http()
            .user(User::new("konnector", &["system:masters"]))
    };
    let app = TestApiServer::start(options()).await.unwrap();
    let provider = TestApiServer::start(options()).await.unwrap();
    let app_admin = client(&app, ADMIN).await;
    let provider_admin = client(&provider, ADMIN).await;
    let app_konnector = client(&app, "konnector").await;
    let provider_konnector = client(&provider, "konnector").await;
    let (binding_admin, binding_ns) = if control_plane {
        (provider_admin.clone(), P.to_string())
    } else {
        (app_admin.clone(), "klutch-bind".to_string())
    };
    // The binary installs the binding CRD at startup in default mode; the backend does in CP mode.
    install_crd(&binding_admin, konnector_api::crds::api_service_binding()).await;
    for crd in [
        konnector_api::crds::cluster_binding(),
        konnector_api::crds::api_service_export(),
        konnector_api::crds::api_service_namespace(),
    ] {
        install_crd(&provider_admin, crd).await;
    }
    let provider_crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "mangodbs.mangodb.com"},
        "spec": {"group": "mangodb.com", "scope": "Namespaced", "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": mangodb_schema()}}]}})).unwrap();
    install_crd(&provider_admin, provider_crd).await;
    namespace(&provider_admin, P).await;
    namespace(&provider_admin, &format!("{P}-default")).await;
    namespace(&binding_admin, &binding_ns).await;
    // Backend objects: ClusterBinding, its kubeconfig Secret, the export. In CP mode the
    // kubeconfig Secret holds the app cluster's kubeconfig (mirrored by the backend).
    let kubeconfig = if control_plane {
        app.kubeconfig("konnector").unwrap()
    } else {
        provider_kubeconfig(&provider, "konnector")
    };
    let secret_data = |yaml: &str| {
        BTreeMap::from([(
            "kubeconfig".to_string(),
            ByteString(yaml.as_bytes().to_vec()),
        )])
    };
    let provider_secrets: Api<Secret> = Api::namespaced(provider_admin.clone(), P);
    provider_secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("kubeconfig".into()),
                    ..Default::default()
                },
                data: Some(secret_data(&kubeconfig)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    apply(&Api::<ClusterBinding>::namespaced(provider_admin.clone(), P), json!({
        "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "ClusterBinding", "metadata": {"name": "cluster"},
        "spec": {"kubeconfigSecretRef": {"name": "kubeconfig", "key": "kubeconfig"}, "providerPrettyName": "anynines"}})).await;
    apply(&Api::<APIServiceExport>::namespaced(provider_admin.clone(), P), json!({
        "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport", "metadata": {"name": "mangodbs.mangodb.com"},
        "spec": {"group": "mangodb.com", "scope": "Namespaced", "informerScope": "Namespaced",
            "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": mangodb_schema()}}]}})).await;
    if !control_plane {
        // What `kubectl bind` leaves in the app cluster: the kubeconfig Secret.
        let app_secrets: Api<Secret> = Api::namespaced(app_admin.clone(), &binding_ns);
        app_secrets
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some("kubeconfig".into()),
                        ..Default::default()
                    },
                    data: Some(secret_data(&kubeconfig)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let (engine_binding, mode) = if control_plane {
        (
            Cluster::Fixed(provider_konnector),
            EngineMode::ControlPlane {
                binding_root_namespace: P.to_string(),
            },
        )
    } else {
        (Cluster::Fixed(app_konnector.clone()), EngineMode::Default)
    };
    World {
        binding_admin,
        binding_ns,
        app_admin,
        provider_admin,
        engine_binding,
        engine_app: Cluster::Fixed(app_konnector),
        mode,
        _servers: vec![app, provider],
    }
}

fn binding(name: &str, secret: &str, namespace: &str) -> serde_json::Value {
    json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding", "metadata": {"name": name},
        "spec": {"kubeconfigSecretRef": {"name": secret, "namespace": namespace, "key": "kubeconfig"},
            "permissionClaims": [
                {"group": "", "resource": "secrets", "version": "v1", "selector": {"owner": "Provider"}, "state": "Accepted"},
                {"group": "", "resource": "configmaps", "version": "v1", "state": "Rejected"}]}})
}

async fn condition(
    api: &Api<APIServiceBinding>,
    name: &str,
    type_: &str,
) -> Option<conditions::Condition> {
    let b = api.get(name).await.ok()?;
    conditions::get(&b.status?.conditions, type_).cloned()
}

#[tokio::test]
async fn default_mode_binding_installs_crd_heartbeats_syncs_and_unbinds_safely() {
    scenario(world(false).await).await;
}

#[tokio::test]
async fn control_plane_mode_binding_installs_crd_heartbeats_syncs_and_unbinds_safely() {
    scenario(world(true).await).await;
}

async fn scenario(w: World) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let control_plane = w.mode != EngineMode::Default;
    let engine = Engine::new(
        w.engine_binding.clone(),
        w.engine_app.clone(),
        EngineOptions {
            mode: w.mode.clone(),
        },
    );
    let readiness = engine.readiness();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(engine.run(async move {
        let _ = stop_rx.await;
    }));
    wait_for("engine ready", || {
        let r = readiness.clone();
        async move { r.is_ready().then_some(()) }
    })
    .await;

    let bindings: Api<APIServiceBinding> = Api::namespaced(w.binding_admin.clone(), &w.binding_ns);
    apply(
        &bindings,
        binding("mangodbs.mangodb.com", "kubeconfig", &w.binding_ns),
    )
    .await;
    apply(
        &bindings,
        binding("missing.example.com", "nope", &w.binding_ns),
    )
    .await;

    // A healthy binding: every condition True, Ready True, the provider's pretty name.
    wait_for("binding Ready and Connected", || {
        let b = bindings.clone();
        async move {
            let ready = condition(&b, "mangodbs.mangodb.com", "Ready").await?;
            let connected = condition(&b, "mangodbs.mangodb.com", "Connected").await?;
            (ready.status == ConditionStatus::True && connected.status == ConditionStatus::True)
                .then_some(())
        }
    })
    .await;
    let b = bindings.get("mangodbs.mangodb.com").await.unwrap();
    let status = b.status.unwrap();
    assert_eq!(status.provider_pretty_name, "anynines", "{status:#?}");
    for t in [
        "SecretValid",
        "Connected",
        "SchemaInSync",
        "InformersSynced",
        "Heartbeating",
    ] {
        assert!(
            conditions::is_true(&status.conditions, t),
            "{t} not True: {:?}",
            status.conditions
        );
    }
    // A binding whose Secret is missing.
    let missing = wait_for("SecretValid=False", || {
        let b = bindings.clone();
        async move { condition(&b, "missing.example.com", "SecretValid").await }
    })
    .await;
    assert_eq!(missing.reason, "KubeconfigSecretNotFound");
    assert_eq!(
        missing.message,
        format!(
            "Kubeconfig secret {}/nope not found. Rerun kubectl bind for repair.",
            w.binding_ns
        )
    );

    // The CRD is installed in the app cluster, owned by the binding.
    let crds: Api<CustomResourceDefinition> = Api::all(w.app_admin.clone());
    let crd = crds.get("mangodbs.mangodb.com").await.unwrap();
    let owner = &crd.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("APIServiceBinding", "mangodbs.mangodb.com", Some(true))
    );

    // Heartbeat and version on the ClusterBinding.
    let cbs: Api<ClusterBinding> = Api::namespaced(w.provider_admin.clone(), P);
    let cb_status = wait_for("heartbeat", || {
        let cbs = cbs.clone();
        async move {
            let s = cbs.get("cluster").await.ok()?.status?;
            s.last_heartbeat_time.is_some().then_some(s)
        }
    })
    .await;
    assert_eq!(cb_status.heartbeat_interval.as_deref(), Some("5m0s"));
    assert!(conditions::is_true(&cb_status.conditions, "ValidVersion"));
    // Default mode mirrors the provider kubeconfig Secret and reports it; CP mode does not.
    assert_eq!(
        conditions::is_true(&cb_status.conditions, "SecretValid"),
        !control_plane
    );

    // An instance syncs up once the backend maps the namespace; the export's status is written.
    let down: Api<DynamicObject> = Api::namespaced_with(w.app_admin.clone(), "default", &mangodb());
    let up: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        &format!("{P}-default"),
        &mangodb(),
    );
    down.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB", "metadata": {"name": "db"}, "spec": {}})).unwrap()).await.unwrap();
    let sns: Api<APIServiceNamespace> = Api::namespaced(w.provider_admin.clone(), P);
    wait_for("APIServiceNamespace", || {
        let sns = sns.clone();
        async move { sns.get("default").await.ok() }
    })
    .await;
    sns.patch_status(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"namespace": format!("{P}-default")}})),
    )
    .await
    .unwrap();
    let copy = wait_for("upstream copy", || {
        let up = up.clone();
        async move { up.get("db").await.ok() }
    })
    .await;
    assert_eq!(
        copy.data["spec"]["tier"], "Shared",
        "defaulted by the CRD the konnector installed"
    );
    let exports: Api<APIServiceExport> = Api::namespaced(w.provider_admin.clone(), P);
    wait_for("export status", || {
        let e = exports.clone();
        async move {
            let s = e.get("mangodbs.mangodb.com").await.ok()?.status?;
            (conditions::is_true(&s.conditions, "Connected")
                && conditions::is_true(&s.conditions, "ConsumerInSync")
                && conditions::is_true(&s.conditions, "Established")
                && s.accepted_names.plural == "mangodbs")
                .then_some(())
        }
    })
    .await;

    // Claimed Secrets created by the provider in the service namespace are mirrored down; edits
    // downstream are reverted; deleting the provider's copy deletes the mirror. Rejected claims
    // (configmaps) sync nothing.
    let up_secrets: Api<Secret> =
        Api::namespaced(w.provider_admin.clone(), &format!("{P}-default"));
    let down_secrets: Api<Secret> = Api::namespaced(w.app_admin.clone(), "default");
    up_secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"password": "dummy"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mirrored = wait_for("claimed secret mirrored", || {
        let d = down_secrets.clone();
        async move { d.get("creds").await.ok() }
    })
    .await;
    assert_eq!(
        mirrored.metadata.annotations.unwrap()["klutch.anynines.com/resource-owner"],
        "Provider"
    );
    assert_eq!(mirrored.data.unwrap()["password"].0, b"dummy");
    down_secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "edited"}})),
        )
        .await
        .unwrap();
    wait_for("downstream edit reverted", || { let d = down_secrets.clone(); async move {
        (d.get("creds").await.ok()?.data?.get("password")?.0 == b"dummy").then_some(()) } }).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(w.provider_admin.clone(), &format!("{P}-default"));
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "not-claimed"}, "data": {"a": "b"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    up_secrets
        .delete("creds", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("mirror deleted", || {
        let d = down_secrets.clone();
        async move { d.get("creds").await.err().map(|_| ()) }
    })
    .await;
    let down_cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(w.app_admin.clone(), "default");
    assert!(
        down_cms.get("not-claimed").await.is_err(),
        "a rejected claim must not sync"
    );

    // Deleting the binding stops syncing, releases downstream finalizers, keeps the CRD and
    // leaves the provider object alone.
    bindings
        .delete("mangodbs.mangodb.com", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("finalizer released", || {
        let down = down.clone();
        async move {
            let o = down.get("db").await.ok()?;
            (!o.metadata
                .finalizers
                .unwrap_or_default()
                .contains(&SYNCER.to_string()))
            .then_some(())
        }
    })
    .await;
    down.delete("db", &DeleteParams::default()).await.unwrap();
    wait_for("downstream deletable", || {
        let down = down.clone();
        async move { down.get("db").await.err().map(|_| ()) }
    })
    .await;
    assert!(
        up.get("db").await.is_ok(),
        "provider object must be orphaned, not deleted"
    );
    assert!(
        crds.get("mangodbs.mangodb.com").await.is_ok(),
        "the CRD is never deleted"
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
