//! End to end under the Helm chart's RBAC (default mode): the RBAC objects and container args the
//! chart renders with default values (`charts/konnector/ci/rendered/default.yaml`, kept current by
//! `charts/konnector/ci/check.sh`) are loaded into an app cluster with RBAC on, and the real binary
//! runs the happy path as the chart's ServiceAccount: the rights are enough (no request is
//! denied) and not too many (Secrets outside the bindings' namespace, cluster-wide Secret lists
//! and other writes are denied).
//!
//! test-apiserver does not implement ClusterRole aggregation, so the test does what the
//! controller manager does for the chart's aggregated ClusterRole: it copies in the rules of the
//! ClusterRoles carrying the aggregation label (here the one granting the bound resource, as
//! the chart's README tells users to ship).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use e2e::world::{P, install_crd, kubeconfig_in, mangodb, map_namespaces};
use e2e::{Cluster, KONNECTOR_USER, Konnector, STARTUP_TIMEOUT, TempDir, free_port, wait_until};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use test_apiserver::{Options, TestApiServer, User};

const BIN: &str = env!("CARGO_BIN_EXE_konnector");
const RENDERED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/konnector/ci/rendered/"
);
/// The chart's ServiceAccount for release `konnector` in namespace `klutch-bind`.
const SA: &str = "system:serviceaccount:klutch-bind:konnector";
const BIND_NS: &str = "klutch-bind";
const EXPORT: &str = "mangodbs.mangodb.com";
const STEP: Duration = Duration::from_secs(30);
const AGGREGATE_LABEL: &str = "klutch.anynines.com/aggregate-to-konnector";

fn rendered(scenario: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{RENDERED}{scenario}.yaml"))
        .expect("rendered chart (run charts/konnector/ci/check.sh --update)");
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("rendered YAML"))
        .filter(|v| v.is_object())
        .collect()
}

fn rbac_resource(kind: &str) -> ApiResource {
    ApiResource {
        group: "rbac.authorization.k8s.io".into(),
        version: "v1".into(),
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    }
}

async fn client_of(server: &TestApiServer, user: &str) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&server.kubeconfig(user).unwrap()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn kubeconfig_secret(name: &str, kubeconfig: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            [(
                "kubeconfig".to_string(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

async fn create_dynamic(client: &kube::Client, resource: &ApiResource, obj: Value) {
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    let api: Api<DynamicObject> = match &obj.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {:?}: {e}", obj.metadata.name));
}

/// The ClusterRole a user ships next to a bound API so that the chart's aggregated ClusterRole
/// picks it up (chart README, "Bound and claimed resources"), with the verbs of the mode.
fn labelled_bound_role(control_plane: bool) -> Value {
    let rules = if control_plane {
        json!([{"apiGroups": ["mangodb.com"], "resources": ["mangodbs"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"]}])
    } else {
        json!([
            {"apiGroups": ["mangodb.com"], "resources": ["mangodbs"],
             "verbs": ["get", "list", "watch", "create", "patch"]},
            {"apiGroups": ["mangodb.com"], "resources": ["mangodbs/status"], "verbs": ["update"]}])
    };
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "konnector-mangodbs", "labels": {AGGREGATE_LABEL: "true"}},
        "rules": rules})
}

/// Loads the chart's RBAC objects and `bound_role`, and fills the aggregated ClusterRole the way
/// the controller manager would.
async fn load_chart_rbac(admin: &kube::Client, docs: &[Value], bound_role: Value) {
    let mut objects: Vec<Value> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding")
            )
        })
        .cloned()
        .collect();
    let labelled: Vec<Value> = objects
        .iter()
        .chain(std::iter::once(&bound_role))
        .filter(|o| o["kind"] == "ClusterRole")
        .cloned()
        .collect();
    let mut aggregated = 0;
    for o in objects.iter_mut() {
        let Some(selectors) = o["aggregationRule"]["clusterRoleSelectors"]
            .as_array()
            .cloned()
        else {
            continue;
        };
        let mut rules = Vec::new();
        for role in &labelled {
            let labels = &role["metadata"]["labels"];
            let selected = selectors.iter().any(|s| {
                s["matchLabels"]
                    .as_object()
                    .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v))
            });
            if selected {
                rules.extend(role["rules"].as_array().cloned().unwrap_or_default());
            }
        }
        o["rules"] = Value::Array(rules);
        aggregated += 1;
    }
    assert_eq!(
        aggregated, 1,
        "the chart renders one aggregated ClusterRole"
    );
    objects.push(bound_role);
    for o in objects {
        let kind = o["kind"].as_str().unwrap().to_string();
        create_dynamic(admin, &rbac_resource(&kind), o).await;
    }
}

/// The provider as the backend leaves it (e2e::world): CRDs, namespace `p`, the ClusterBinding
/// with its kubeconfig Secret `secret` (holding `kubeconfig`), the export.
async fn provider_world(admin: &kube::Client, p: &str, secret: &str, kubeconfig: &str) {
    for crd in [
        konnector_api::crds::cluster_binding(),
        konnector_api::crds::api_service_export(),
        konnector_api::crds::api_service_namespace(),
    ] {
        install_crd(admin, crd).await.unwrap();
    }
    let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}});
    let names = json!({"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"});
    let versions = json!([{"name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}}, "schema": {"openAPIV3Schema": schema}}]);
    install_crd(
        admin,
        serde_json::from_value(json!({"apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition", "metadata": {"name": EXPORT},
            "spec": {"group": "mangodb.com", "scope": "Namespaced", "names": names, "versions": versions}}))
        .unwrap(),
    )
    .await
    .unwrap();
    create_namespace(admin, p).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), p);
    secrets
        .create(
            &PostParams::default(),
            &kubeconfig_secret(secret, kubeconfig),
        )
        .await
        .unwrap();
    let cb = ApiResource::erase::<konnector_api::v1alpha1::ClusterBinding>(&());
    create_dynamic(admin, &cb, json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "ClusterBinding",
        "metadata": {"name": "cluster", "namespace": p},
        "spec": {"kubeconfigSecretRef": {"name": secret, "key": "kubeconfig"}, "providerPrettyName": "anynines"}})).await;
    let export = ApiResource::erase::<konnector_api::v1alpha1::APIServiceExport>(&());
    create_dynamic(
        admin,
        &export,
        json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport",
        "metadata": {"name": EXPORT, "namespace": p},
        "spec": {"group": "mangodb.com", "scope": "Namespaced", "informerScope": "Namespaced",
            "names": names, "versions": versions}}),
    )
    .await;
}

fn binding(namespace: &str, secret: &str) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "klutch.anynines.com/v1alpha1",
        "kind": "APIServiceBinding", "metadata": {"name": EXPORT, "namespace": namespace},
        "spec": {"kubeconfigSecretRef": {"name": secret, "namespace": namespace, "key": "kubeconfig"}}}))
    .unwrap()
}

fn bindings_api(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&()),
    )
}

/// Waits for the binding to be Ready and Connected, then syncs an instance up, its status down,
/// and deletes it on both sides.
async fn happy_path(
    k: &Konnector,
    bindings: &Api<DynamicObject>,
    down: &Api<DynamicObject>,
    up: &Api<DynamicObject>,
) {
    step(k, "binding Ready and Connected", || async {
        let b = bindings.get(EXPORT).await.ok();
        let conditions = b
            .map(|b| b.data["status"]["conditions"].clone())
            .unwrap_or_default();
        ["Ready", "Connected"].iter().all(|t| {
            conditions
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == *t && c["status"] == "True"))
        })
    })
    .await;
    let db: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
        "metadata": {"name": "db"}, "spec": {"tier": "Dedicated"}}))
        .unwrap();
    down.create(&PostParams::default(), &db).await.unwrap();
    step(k, "instance on the provider", || async {
        field(up, "db", "/spec/tier").await == Some(json!("Dedicated"))
    })
    .await;
    up.patch_status(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    step(k, "status downstream", || async {
        field(down, "db", "/status/phase").await == Some(json!("Running"))
    })
    .await;
    down.delete("db", &DeleteParams::default()).await.unwrap();
    step(k, "deleted on both sides", || async {
        down.get_opt("db").await.ok().flatten().is_none()
            && up.get_opt("db").await.ok().flatten().is_none()
    })
    .await;
}

/// Requests of `user` that were denied.
fn denied(server: &TestApiServer, user: &str) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.user == user && r.code == 403)
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect()
}

/// The chart's container args, with the listen addresses moved to a free local port and the
/// kubeconfig of the ServiceAccount (in a pod: the in-cluster config).
fn konnector_args(docs: &[Value], kubeconfig: &std::path::Path, health_port: u16) -> Vec<String> {
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| {
            if a.starts_with("--health-probe-bind-address=") {
                format!("--health-probe-bind-address=127.0.0.1:{health_port}")
            } else if a.starts_with("--metrics-bind-address=") {
                "--metrics-bind-address=0".to_string()
            } else {
                a
            }
        })
        .collect();
    args.push(format!("--kubeconfig={}", kubeconfig.display()));
    args
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn step<F, Fut>(k: &Konnector, what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if let Err(e) = wait_until(what, STEP, condition).await {
        panic!("{e}\n--- konnector stderr ---\n{}", tail(&k.stderr()));
    }
}

async fn field(api: &Api<DynamicObject>, name: &str, pointer: &str) -> Option<Value> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()?
        .data
        .pointer(pointer)
        .cloned()
}

fn is_forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_happy_path_under_the_charts_rbac() {
    let docs = rendered("default");
    let app = TestApiServer::start(Options::default().rbac().user(User::new(SA, &[])))
        .await
        .unwrap();
    let app_admin = client_of(&app, "admin").await;
    let provider = Cluster::start("provider").await.unwrap();
    let provider_admin = provider.client().await.unwrap();

    // What `kubectl bind` and `helm install -n klutch-bind` leave in the app cluster.
    create_namespace(&app_admin, BIND_NS).await;
    load_chart_rbac(&app_admin, &docs, labelled_bound_role(false)).await;
    let provider_kubeconfig = kubeconfig_in(&provider, KONNECTOR_USER, P).unwrap();
    provider_world(&provider_admin, P, "kubeconfig", &provider_kubeconfig).await;
    let app_secrets: Api<Secret> = Api::namespaced(app_admin.clone(), BIND_NS);
    app_secrets
        .create(
            &PostParams::default(),
            &kubeconfig_secret("kubeconfig", &provider_kubeconfig),
        )
        .await
        .unwrap();
    let backend = tokio::spawn(map_namespaces(provider_admin.clone(), P));

    let dir = TempDir::new("konnector-chart-rbac").unwrap();
    let kubeconfig = dir
        .write("app-sa.kubeconfig", &app.kubeconfig(SA).unwrap())
        .unwrap();
    let port = free_port().unwrap();
    let args = konnector_args(&docs, &kubeconfig, port);
    let mut k = Konnector::spawn_with_env(
        BIN,
        &args,
        &dir,
        &[("POD_NAME", "konnector-0"), ("POD_NAMESPACE", BIND_NS)],
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if let Err(e) = k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT).await {
        panic!("konnector not ready under the chart's RBAC: {e}");
    }

    // Bind (the konnector bootstrapped the APIServiceBinding CRD with the chart's rights), then
    // sync an instance both ways and delete it.
    let bindings = bindings_api(&app_admin, BIND_NS);
    bindings
        .create(&PostParams::default(), &binding(BIND_NS, "kubeconfig"))
        .await
        .unwrap();
    create_namespace(&app_admin, "team-a").await;
    let down: Api<DynamicObject> = Api::namespaced_with(app_admin.clone(), "team-a", &mangodb());
    let up: Api<DynamicObject> =
        Api::namespaced_with(provider_admin.clone(), &format!("{P}-team-a"), &mangodb());
    happy_path(&k, &bindings, &down, &up).await;

    // Enough: nothing the konnector asked the app cluster for was denied.
    let denials = denied(&app, SA);
    assert!(
        denials.is_empty(),
        "denied under the chart's RBAC: {denials:#?}"
    );
    let verbs: std::collections::BTreeSet<(String, String)> = app
        .requests()
        .into_iter()
        .filter(|r| r.user == SA && !r.resource.is_empty())
        .map(|r| (r.verb, r.resource))
        .collect();
    for expected in [
        ("list", "apiservicebindings"),
        ("patch", "apiservicebindings"),
        ("watch", "secrets"),
        ("create", "customresourcedefinitions"),
        ("patch", "mangodbs"),
        ("update", "mangodbs"),
    ] {
        assert!(
            verbs.contains(&(expected.0.to_string(), expected.1.to_string())),
            "the happy path did not exercise {expected:?}: {verbs:?}"
        );
    }

    // Not too many: the ServiceAccount cannot read Secrets no binding points at, nor write
    // what the konnector never writes.
    let sa = client_of(&app, SA).await;
    let other: Api<Secret> = Api::namespaced(app_admin.clone(), "team-a");
    other
        .create(&PostParams::default(), &kubeconfig_secret("unrelated", "x"))
        .await
        .unwrap();
    let sa_team_a: Api<Secret> = Api::namespaced(sa.clone(), "team-a");
    assert!(
        is_forbidden(sa_team_a.get("unrelated").await),
        "Secret outside the bindings' namespaces"
    );
    assert!(is_forbidden(sa_team_a.list(&ListParams::default()).await));
    let sa_all_secrets: Api<Secret> = Api::all(sa.clone());
    assert!(
        is_forbidden(sa_all_secrets.list(&ListParams::default()).await),
        "cluster-wide Secret list"
    );
    let sa_namespaces: Api<Namespace> = Api::all(sa.clone());
    assert!(is_forbidden(
        sa_namespaces
            .delete("team-a", &DeleteParams::default())
            .await
    ));
    let sa_crds: Api<CustomResourceDefinition> = Api::all(sa.clone());
    assert!(is_forbidden(
        sa_crds.delete(EXPORT, &DeleteParams::default()).await
    ));
    let sa_bindings: Api<DynamicObject> = Api::namespaced_with(
        sa,
        BIND_NS,
        &ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&()),
    );
    assert!(is_forbidden(
        sa_bindings.delete(EXPORT, &DeleteParams::default()).await
    ));

    backend.abort();
    k.terminate().await.unwrap();
}

/// Control-plane mode: the chart's rendering of `ci/control-plane-values.yaml` (release
/// `konnector` in the binding root namespace, app kubeconfig Secret `app-1-kubeconfig`).
const ROOT: &str = "klutch-bind-team-a-app-1";
const CP_SA: &str = "system:serviceaccount:klutch-bind-team-a-app-1:konnector";
const APP_SECRET: &str = "app-1-kubeconfig";
/// The user of the app cluster kubeconfig.
const APP_USER: &str = "konnector-app";

/// What the chart README says the app cluster kubeconfig's user needs, for the bound MangoDBs.
fn app_user_rbac() -> Vec<Value> {
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "klutch-konnector-app-cluster"},
            "rules": [
                {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                 "verbs": ["get", "list", "watch", "create", "update"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["mangodb.com"], "resources": ["mangodbs"],
                 "verbs": ["get", "list", "watch", "create", "patch"]},
                {"apiGroups": ["mangodb.com"], "resources": ["mangodbs/status"], "verbs": ["update"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "klutch-konnector-app-cluster"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "klutch-konnector-app-cluster"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": APP_USER}]}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_mode_happy_path_under_the_charts_rbac() {
    let docs = rendered("control-plane");
    let cp = TestApiServer::start(Options::default().rbac().user(User::new(CP_SA, &[])))
        .await
        .unwrap();
    let cp_admin = client_of(&cp, "admin").await;
    let app = TestApiServer::start(Options::default().rbac().user(User::new(APP_USER, &[])))
        .await
        .unwrap();
    let app_admin = client_of(&app, "admin").await;
    for o in app_user_rbac() {
        let kind = o["kind"].as_str().unwrap().to_string();
        create_dynamic(&app_admin, &rbac_resource(&kind), o).await;
    }

    // What the backend leaves on the control plane (reference 10.2): the root namespace with
    // the mirrored app kubeconfig Secret, the ClusterBinding pointing at it, the export, the
    // binding CRD and the binding; then `helm install -n <root>`.
    let app_kubeconfig = app.kubeconfig(APP_USER).unwrap();
    provider_world(&cp_admin, ROOT, APP_SECRET, &app_kubeconfig).await;
    install_crd(&cp_admin, konnector_api::crds::api_service_binding())
        .await
        .unwrap();
    let bindings = bindings_api(&cp_admin, ROOT);
    bindings
        .create(&PostParams::default(), &binding(ROOT, APP_SECRET))
        .await
        .unwrap();
    load_chart_rbac(&cp_admin, &docs, labelled_bound_role(true)).await;
    let backend = tokio::spawn(map_namespaces(cp_admin.clone(), ROOT));

    let dir = TempDir::new("konnector-chart-rbac-cp").unwrap();
    let kubeconfig = dir
        .write("cp-sa.kubeconfig", &cp.kubeconfig(CP_SA).unwrap())
        .unwrap();
    let port = free_port().unwrap();
    let args = konnector_args(&docs, &kubeconfig, port);
    let mut k = Konnector::spawn_with_env(
        BIN,
        &args,
        &dir,
        &[("POD_NAME", "konnector-0"), ("POD_NAMESPACE", ROOT)],
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if let Err(e) = k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT).await {
        panic!("konnector not ready under the chart's RBAC: {e}");
    }

    create_namespace(&app_admin, "team-a").await;
    let down: Api<DynamicObject> = Api::namespaced_with(app_admin.clone(), "team-a", &mangodb());
    let up: Api<DynamicObject> =
        Api::namespaced_with(cp_admin.clone(), &format!("{ROOT}-team-a"), &mangodb());
    happy_path(&k, &bindings, &down, &up).await;

    // Enough: nothing was denied, on the control plane (the chart) or in the app cluster (the
    // README's rights for the app kubeconfig's user).
    let denials = denied(&cp, CP_SA);
    assert!(
        denials.is_empty(),
        "denied on the control plane: {denials:#?}"
    );
    let denials = denied(&app, APP_USER);
    assert!(
        denials.is_empty(),
        "denied in the app cluster: {denials:#?}"
    );

    // Not too many: only the app kubeconfig Secret is readable, and only in the root namespace.
    let sa = client_of(&cp, CP_SA).await;
    let root_secrets: Api<Secret> = Api::namespaced(cp_admin.clone(), ROOT);
    root_secrets
        .create(&PostParams::default(), &kubeconfig_secret("unrelated", "x"))
        .await
        .unwrap();
    let sa_root_secrets: Api<Secret> = Api::namespaced(sa.clone(), ROOT);
    assert!(sa_root_secrets.get(APP_SECRET).await.is_ok());
    assert!(
        is_forbidden(sa_root_secrets.get("unrelated").await),
        "a Secret no binding references"
    );
    assert!(
        is_forbidden(sa_root_secrets.list(&ListParams::default()).await),
        "listing every Secret of the root namespace"
    );
    let sa_all_secrets: Api<Secret> = Api::all(sa.clone());
    assert!(is_forbidden(
        sa_all_secrets.list(&ListParams::default()).await
    ));
    let sa_bindings = bindings_api(&sa, ROOT);
    assert!(is_forbidden(
        sa_bindings.delete(EXPORT, &DeleteParams::default()).await
    ));
    let sa_namespaces: Api<Namespace> = Api::all(sa);
    assert!(is_forbidden(sa_namespaces.get("kube-system").await));

    backend.abort();
    k.terminate().await.unwrap();
}
