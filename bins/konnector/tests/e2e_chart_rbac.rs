//! End to end under the Helm chart's RBAC, on test-apiserver with RBAC on and on a real
//! kube-apiserver with its RBAC authorizer: the RBAC objects, the ServiceAccount and the
//! container args the chart renders (`charts/konnector/ci/rendered/*.yaml`, kept current by
//! `charts/konnector/ci/check.sh`) are loaded as `helm install` would, and the real binary runs
//! the happy path as the chart's ServiceAccount: the rights are enough (no request is denied)
//! and not too many (Secrets outside the bindings' namespace, cluster-wide Secret lists and
//! other writes are denied).
//!
//! Claims (`rbac.claimedResourcesScope=namespaces`, `ci/rendered/*-claims*.yaml`): claimed
//! Secrets sync both ways in the served namespaces, one granted by the chart
//! (`rbac.claimedResourceNamespaces`), one by the README's RoleBinding hook, while every Secret
//! request of the konnector is namespaced and stays in those namespaces. In control-plane mode
//! another tenant shares the control plane, and the konnector's own token is denied its
//! kubeconfig Secret and its service namespace: the cross-tenant reach a cluster-wide claim
//! grant would give is gone.
//!
//! Fleet mode (`ci/rendered/fleet.yaml`): one replica serves two AppClusterBindings' app
//! clusters with the fleet's cluster-wide rights (their root namespaces are not known to the
//! chart); nothing is denied, and Secret writes, Lease deletes and other Leases outside the
//! lease namespace, and unselected cluster-wide Lease lists are forbidden.
//!
//! Identities: in memory the ServiceAccount is a user of that name without groups; on a real
//! control plane the konnector authenticates with a token of the very ServiceAccount the
//! chart's bindings name (TokenRequest API), so it holds exactly what the chart grants plus the
//! defaults every ServiceAccount has (discovery). The test's own clients are the admin.
//!
//! The chart's aggregated ClusterRole: the ClusterRole aggregation controller
//! (kube-controller-manager's on a real control plane, test-apiserver's own in memory) copies in
//! the rules of the ClusterRoles carrying the aggregation label (here the one granting the bound
//! resource, as the chart's README tells users to ship); the test waits until it has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::steps::{field, step, tail};
use e2e::world::{P, install_crd, kubeconfig_in, mangodb, map_namespaces};
use e2e::{
    Backend, Cluster, KONNECTOR_USER, Konnector, STARTUP_TIMEOUT, TempDir, free_port, wait_until,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use test_apiserver::{Options, RecordedRequest, User};

const BIN: &str = env!("CARGO_BIN_EXE_konnector");
const RENDERED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/konnector/ci/rendered/"
);
/// The chart's ServiceAccount (release `konnector`, namespace `klutch-bind`): its name, and the
/// user name it authenticates as.
const SA_NAME: &str = "konnector";
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

/// The resource of a rendered object (the chart's kinds all have the plural `<kind>s`).
fn resource_of(obj: &Value) -> ApiResource {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let kind = obj["kind"].as_str().expect("kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    }
}

async fn client_from(kubeconfig: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A cluster that authorizes with RBAC only. In memory: RBAC on, with `memory_users` as users
/// without groups (a user of test-apiserver exists from the start). A real server always
/// authorizes with RBAC; its users are ServiceAccounts made by [`service_account`].
async fn rbac_cluster(backend: Backend, name: &str, memory_users: &[&str]) -> Cluster {
    let cluster = match backend {
        Backend::Memory => {
            let options = memory_users
                .iter()
                .fold(Options::default().rbac(), |o, u| o.user(User::new(u, &[])));
            Cluster::start_in_memory(name, options).await
        }
        Backend::Real => Cluster::start_on(backend, name, &[]).await,
    };
    cluster.unwrap_or_else(|e| panic!("start {name}: {e:#}"))
}

/// An identity the konnector runs as: the user name requests are recorded under, and its
/// kubeconfig.
struct Identity {
    user: String,
    kubeconfig: String,
}

/// ServiceAccount `namespace/name`: in memory the user of that name (started with the
/// cluster); on a real control plane a token of the ServiceAccount itself, which holds no more
/// than what is bound to it (the ServiceAccount is created when missing).
async fn service_account(cluster: &Cluster, namespace: &str, name: &str) -> Identity {
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let kubeconfig = match cluster.real() {
        None => cluster.kubeconfig(&user).unwrap(),
        Some(cp) => {
            let token = cp
                .service_account_token(namespace, name, None)
                .await
                .unwrap_or_else(|e| panic!("token of ServiceAccount {namespace}/{name}: {e}"));
            cp.token_kubeconfig(&token, Some(namespace))
        }
    };
    Identity { user, kubeconfig }
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

/// Loads what `helm install` creates for the konnector's rights (the chart's ServiceAccount and
/// RBAC objects) and `bound_role`. The chart's aggregated ClusterRoles (bound resources, and
/// claimed resources in namespaces scope) get the rules of the ClusterRoles their selectors
/// match: filled in by the ClusterRole aggregation controller (the test waits until it has
/// them).
async fn load_chart_rbac(admin: &kube::Client, docs: &[Value], bound_role: Value) {
    let mut objects: Vec<Value> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "Role"
                        | "ClusterRole"
                        | "RoleBinding"
                        | "ClusterRoleBinding"
                )
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
    // (name, rules it must end up with) of each aggregated ClusterRole.
    let mut aggregated = Vec::new();
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
        aggregated.push((o["metadata"]["name"].as_str().unwrap().to_string(), rules));
    }
    assert!(
        aggregated.iter().any(|(_, rules)| !rules.is_empty()),
        "the bound role is selected by one of the aggregated ClusterRoles {aggregated:?}"
    );
    objects.push(bound_role);
    for o in objects {
        create_dynamic(admin, &resource_of(&o), o).await;
    }
    let roles: Api<DynamicObject> = Api::all_with(admin.clone(), &rbac_resource("ClusterRole"));
    // An aggregated ClusterRole that selects nothing (the claimed-resources one when no
    // claim is granted) stays empty: nothing to wait for.
    for (name, expected) in aggregated.iter().filter(|(_, r)| !r.is_empty()) {
        let filled = wait_until(
            &format!("the aggregation controller filling ClusterRole {name}"),
            STEP,
            || async {
                let rules = roles
                    .get(name)
                    .await
                    .ok()
                    .and_then(|r| r.data["rules"].as_array().cloned())
                    .unwrap_or_default();
                rules.len() == expected.len() && expected.iter().all(|e| rules.contains(e))
            },
        )
        .await;
        if let Err(e) = filled {
            let now = roles.get(name).await.map(|r| r.data["rules"].clone());
            panic!("{e}: expected {expected:?}, it has {now:?}");
        }
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

/// Waits for the binding to be Ready and Connected (its CRD is then installed in the app cluster).
async fn ready_and_connected(k: &Konnector, bindings: &Api<DynamicObject>) {
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
}

/// Waits for the binding to be Ready and Connected, then syncs an instance up, its status down,
/// and deletes it on both sides.
async fn happy_path(
    k: &Konnector,
    bindings: &Api<DynamicObject>,
    down: &Api<DynamicObject>,
    up: &Api<DynamicObject>,
) {
    ready_and_connected(k, bindings).await;
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

/// Requests of `user` so far: test-apiserver's request record, or a real server's audit log
/// (where a request shows once it has ended, a watch too).
async fn requests_of(cluster: &Cluster, user: &str) -> Vec<RecordedRequest> {
    cluster
        .requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.user == user)
        .collect()
}

/// Requests of `user` that were denied.
async fn denied(cluster: &Cluster, user: &str) -> Vec<String> {
    requests_of(cluster, user)
        .await
        .into_iter()
        .filter(|r| r.code == 403)
        .map(|r| {
            let query = if r.query.is_empty() { "" } else { "?" };
            format!("{} {}{query}{}", r.verb, r.path, r.query)
        })
        .collect()
}

/// Asserts that `user` made each `(verb, resource)` of `expected`, waiting a little for a real
/// server's audit log (a watch is written there when it ends).
async fn assert_exercised(cluster: &Cluster, user: &str, expected: &[(&str, &str)]) {
    let deadline = Instant::now() + STEP;
    loop {
        let made: BTreeSet<(String, String)> = requests_of(cluster, user)
            .await
            .into_iter()
            .filter(|r| !r.resource.is_empty())
            .map(|r| (r.verb, r.resource))
            .collect();
        let missing: Vec<&(&str, &str)> = expected
            .iter()
            .filter(|(verb, resource)| !made.contains(&(verb.to_string(), resource.to_string())))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the happy path did not exercise {missing:?}: {made:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the konnector (a real server's audit log has a watch only once it ended) and checks
/// that it exits cleanly.
async fn stop(mut k: Konnector) {
    k.terminate().await.unwrap();
    let status = k.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(
        status.success(),
        "konnector exited with {status}\n--- konnector stderr ---\n{}",
        tail(&k.stderr())
    );
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

fn is_forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

async fn default_mode_happy_path_under_the_charts_rbac(backend: Backend) {
    let docs = rendered("default");
    let (app, provider) = tokio::join!(
        rbac_cluster(backend, "app", &[SA]),
        Cluster::start_on(backend, "provider", &[])
    );
    let provider = provider.unwrap();
    let app_admin = app.client().await.unwrap();
    let provider_admin = provider.client().await.unwrap();

    // What `kubectl bind` and `helm install -n klutch-bind` leave in the app cluster.
    create_namespace(&app_admin, BIND_NS).await;
    load_chart_rbac(&app_admin, &docs, labelled_bound_role(false)).await;
    let sa = service_account(&app, BIND_NS, SA_NAME).await;
    assert_eq!(sa.user, SA);
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
    let provider_backend = tokio::spawn(map_namespaces(provider_admin.clone(), P));

    let dir = TempDir::new("konnector-chart-rbac").unwrap();
    let kubeconfig = dir.write("app-sa.kubeconfig", &sa.kubeconfig).unwrap();
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
    let stderr = k.stderr();
    stop(k).await;
    provider_backend.abort();

    // Enough: nothing the konnector asked the app cluster for was denied.
    let denials = denied(&app, SA).await;
    assert!(
        denials.is_empty(),
        "denied under the chart's RBAC: {denials:#?}\n--- konnector stderr ---\n{}",
        tail(&stderr)
    );
    assert_exercised(
        &app,
        SA,
        &[
            ("list", "apiservicebindings"),
            ("patch", "apiservicebindings"),
            ("watch", "secrets"),
            ("create", "customresourcedefinitions"),
            ("patch", "mangodbs"),
            ("update", "mangodbs"),
        ],
    )
    .await;

    // Not too many: the ServiceAccount cannot read Secrets no binding points at, nor write
    // what the konnector never writes.
    let sa = client_from(&sa.kubeconfig).await;
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
}

/// Control-plane mode: the chart's rendering of `ci/control-plane-values.yaml` (release
/// `konnector` in the binding root namespace, app kubeconfig Secret `app-1-kubeconfig`).
const ROOT: &str = "klutch-bind-team-a-app-1";
const CP_SA: &str = "system:serviceaccount:klutch-bind-team-a-app-1:konnector";
const APP_SECRET: &str = "app-1-kubeconfig";
/// The user of the app cluster kubeconfig (in memory; on a real server the ServiceAccount of
/// that name in [`APP_SA_NAMESPACE`]).
const APP_USER: &str = "konnector-app";
const APP_SA_NAMESPACE: &str = "klutch-konnector-app";

/// The app cluster kubeconfig's user and the RBAC subject that names it: user [`APP_USER`] in
/// memory; on a real server, whose users come from certificates or tokens, the ServiceAccount
/// `APP_SA_NAMESPACE/APP_USER` (a token the test can mint), holding only what is bound to it.
async fn app_identity(app: &Cluster) -> (Identity, Value) {
    match app.backend() {
        Backend::Memory => (
            Identity {
                user: APP_USER.to_string(),
                kubeconfig: app.kubeconfig(APP_USER).unwrap(),
            },
            json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": APP_USER}),
        ),
        Backend::Real => (
            service_account(app, APP_SA_NAMESPACE, APP_USER).await,
            json!({"kind": "ServiceAccount", "name": APP_USER, "namespace": APP_SA_NAMESPACE}),
        ),
    }
}

/// What the chart README says the app cluster kubeconfig's user needs, for the bound MangoDBs,
/// bound to `subject`.
fn app_user_rbac(subject: Value) -> Vec<Value> {
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "klutch-konnector-app-cluster"},
            "rules": [
                {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                 "verbs": ["get", "list", "watch", "create", "update"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["mangodb.com"], "resources": ["mangodbs"],
                 "verbs": ["get", "list", "watch", "create", "patch"]},
                {"apiGroups": ["mangodb.com"], "resources": ["mangodbs/status"], "verbs": ["update"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "klutch-konnector-app-cluster"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "klutch-konnector-app-cluster"},
            "subjects": [subject]}),
    ]
}

async fn control_plane_mode_happy_path_under_the_charts_rbac(backend: Backend) {
    let docs = rendered("control-plane");
    let (cp, app) = tokio::join!(
        rbac_cluster(backend, "control-plane", &[CP_SA]),
        rbac_cluster(backend, "app", &[APP_USER])
    );
    let cp_admin = cp.client().await.unwrap();
    let app_admin = app.client().await.unwrap();
    let (app_user, subject) = app_identity(&app).await;
    for o in app_user_rbac(subject) {
        create_dynamic(&app_admin, &resource_of(&o), o).await;
    }

    // What the backend leaves on the control plane (reference 10.2): the root namespace with
    // the mirrored app kubeconfig Secret, the ClusterBinding pointing at it, the export, the
    // binding CRD and the binding; then `helm install -n <root>`.
    provider_world(&cp_admin, ROOT, APP_SECRET, &app_user.kubeconfig).await;
    install_crd(&cp_admin, konnector_api::crds::api_service_binding())
        .await
        .unwrap();
    let bindings = bindings_api(&cp_admin, ROOT);
    bindings
        .create(&PostParams::default(), &binding(ROOT, APP_SECRET))
        .await
        .unwrap();
    load_chart_rbac(&cp_admin, &docs, labelled_bound_role(true)).await;
    let cp_sa = service_account(&cp, ROOT, SA_NAME).await;
    assert_eq!(cp_sa.user, CP_SA);
    let cp_backend = tokio::spawn(map_namespaces(cp_admin.clone(), ROOT));

    let dir = TempDir::new("konnector-chart-rbac-cp").unwrap();
    let kubeconfig = dir.write("cp-sa.kubeconfig", &cp_sa.kubeconfig).unwrap();
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
    let stderr = k.stderr();
    stop(k).await;
    cp_backend.abort();

    // Enough: nothing was denied, on the control plane (the chart) or in the app cluster (the
    // README's rights for the app kubeconfig's user).
    let denials = denied(&cp, CP_SA).await;
    assert!(
        denials.is_empty(),
        "denied on the control plane: {denials:#?}\n--- konnector stderr ---\n{}",
        tail(&stderr)
    );
    let denials = denied(&app, &app_user.user).await;
    assert!(
        denials.is_empty(),
        "denied in the app cluster: {denials:#?}\n--- konnector stderr ---\n{}",
        tail(&stderr)
    );

    // Not too many: only the app kubeconfig Secret is readable, and only in the root namespace.
    let sa = client_from(&cp_sa.kubeconfig).await;
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
}

/// The chart's README, whose claimed-resources RoleBinding (the hook for whoever creates a
/// service or consumer namespace) the claims scenarios use as written.
const CHART_README: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/konnector/README.md"
);
/// The other tenant on the control plane (AppClusterBinding `team-b/app-2`): its root namespace
/// with its app cluster kubeconfig Secret, and one of its service namespaces.
const OTHER_ROOT: &str = "klutch-bind-team-b-app-2";
const OTHER_SECRET: &str = "app-2-kubeconfig";
/// Consumer namespaces: `team-a` is listed in `rbac.claimedResourceNamespaces` (its RoleBinding
/// is rendered by the chart), `team-b` gets its RoleBinding from whoever creates it (the
/// README's hook), `team-c` is not served.
const LISTED: &str = "team-a";
const HOOKED: &str = "team-b";
const UNSERVED: &str = "team-c";

/// The APIServiceBinding with an accepted claim on Secrets of either owner.
fn binding_with_claims(namespace: &str, secret: &str) -> DynamicObject {
    let mut b = binding(namespace, secret);
    b.data["spec"]["permissionClaims"] = json!([{"group": "", "resource": "secrets",
        "version": "v1", "state": "Accepted"}]);
    b
}

/// The RoleBinding the chart README tells the creator of a new namespace to add, as written
/// there (`metadata.namespace` set to `namespace`).
fn readme_claims_role_binding(namespace: &str) -> Value {
    let readme = std::fs::read_to_string(CHART_README).expect("chart README");
    let block = readme
        .split("```yaml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("kind: RoleBinding") && b.contains("-konnector-claimed-resources"))
        .expect("the chart README shows the claimed-resources RoleBinding");
    let mut rb: Value = serde_yaml::from_str(block).expect("the README's RoleBinding is YAML");
    rb["metadata"]["namespace"] = json!(namespace);
    rb
}

/// The chart's RoleBinding of the claimed-resources ClusterRole in `listed` (rendered from
/// `rbac.claimedResourceNamespaces`), moved to `namespace` without the chart's labels: what
/// the hook adds to a namespace created later.
fn claims_role_binding(docs: &[Value], listed: &str, namespace: &str) -> Value {
    let mut rb = docs
        .iter()
        .find(|d| {
            d["kind"] == "RoleBinding"
                && d["metadata"]["namespace"] == listed
                && d["roleRef"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-claimed-resources"))
        })
        .unwrap_or_else(|| {
            panic!("the chart renders the claimed-resources RoleBinding in {listed}")
        })
        .clone();
    rb["metadata"] = json!({"name": rb["metadata"]["name"], "namespace": namespace});
    rb
}

/// Waits until `user` may list Secrets in `namespace`. A real API server's authorizer sees a
/// new RoleBinding through an informer, a moment after it was created; asking it (a
/// SubjectAccessReview, made by the admin) before the konnector is pointed at the namespace
/// keeps a denial caused by that lag out of the konnector's record. test-apiserver authorizes
/// from its store at once.
async fn wait_allowed(backend: Backend, admin: &kube::Client, user: &str, namespace: &str) {
    if backend == Backend::Memory {
        return;
    }
    wait_until(
        &format!("{user} allowed to list Secrets in {namespace}"),
        STEP,
        || allowed(admin, user, namespace),
    )
    .await
    .unwrap();
}

async fn allowed(admin: &kube::Client, user: &str, namespace: &str) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {"user": user,
        "resourceAttributes": {"namespace": namespace, "verb": "list", "resource": "secrets"}}}))
    .unwrap();
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

/// The backend of control-plane mode with the README's hook: every APIServiceNamespace `N` in
/// `root` gets service namespace `<root>-N`, and, before the backend reports it in
/// `status.namespace` (so before the konnector looks there), `role_binding` in it; the README
/// asks for that order. Runs until aborted.
async fn map_namespaces_granting_claims(
    backend: Backend,
    admin: kube::Client,
    root: &'static str,
    role_binding: Value,
    konnector: String,
) {
    let api: Api<konnector_api::v1alpha1::APIServiceNamespace> =
        Api::namespaced(admin.clone(), root);
    let role_bindings = rbac_resource("RoleBinding");
    loop {
        for sn in api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let Some(name) = sn.metadata.name.clone() else {
                continue;
            };
            if sn
                .status
                .as_ref()
                .and_then(|s| s.namespace.as_ref())
                .is_some()
            {
                continue;
            }
            let target = format!("{root}-{name}");
            if e2e::backend::ensure_namespace(&admin, &target)
                .await
                .is_err()
            {
                continue;
            }
            let mut rb = role_binding.clone();
            rb["metadata"]["namespace"] = json!(target);
            let rb: DynamicObject = serde_json::from_value(rb).unwrap();
            let created =
                Api::<DynamicObject>::namespaced_with(admin.clone(), &target, &role_bindings)
                    .create(&PostParams::default(), &rb)
                    .await;
            if matches!(&created, Err(e) if !matches!(e, kube::Error::Api(s) if s.code == 409)) {
                continue;
            }
            if backend == Backend::Real && !allowed(&admin, &konnector, &target).await {
                continue;
            }
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"namespace": target}})),
                )
                .await;
        }
        // A backend polls or watches; polling keeps the stand-in small.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn opaque(name: &str, value: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"value": value}}))
        .unwrap()
}

async fn value_of(api: &Api<Secret>, name: &str) -> Option<String> {
    let secret = api.get_opt(name).await.ok().flatten()?;
    let bytes = secret.data?.get("value")?.0.clone();
    String::from_utf8(bytes).ok()
}

/// Claimed Secrets both ways between consumer namespace `consumer` (app cluster) and its service
/// namespace `service` (provider): an instance first (it makes the konnector map the
/// namespace), then a Secret created on each side appears on the other, a change to the
/// owner's copy follows, and deleting the owner's copy deletes the mirror. Each side sees every
/// write verb: create, the owner-annotation patch, update and delete.
async fn claimed_secrets_both_ways(
    k: &Konnector,
    app: &kube::Client,
    provider: &kube::Client,
    consumer: &str,
    service: &str,
) {
    let down: Api<DynamicObject> = Api::namespaced_with(app.clone(), consumer, &mangodb());
    let up: Api<DynamicObject> = Api::namespaced_with(provider.clone(), service, &mangodb());
    let db: DynamicObject = serde_json::from_value(json!({"apiVersion": "mangodb.com/v1",
        "kind": "MangoDB", "metadata": {"name": "db"}, "spec": {"tier": "Dedicated"}}))
    .unwrap();
    down.create(&PostParams::default(), &db).await.unwrap();
    step(k, &format!("instance in {service}"), || async {
        field(&up, "db", "/spec/tier").await == Some(json!("Dedicated"))
    })
    .await;

    let app_secrets: Api<Secret> = Api::namespaced(app.clone(), consumer);
    let provider_secrets: Api<Secret> = Api::namespaced(provider.clone(), service);
    provider_secrets
        .create(&PostParams::default(), &opaque("from-provider", "one"))
        .await
        .unwrap();
    app_secrets
        .create(&PostParams::default(), &opaque("from-app", "one"))
        .await
        .unwrap();
    step(
        k,
        &format!("claimed Secrets mirrored between {consumer} and {service}"),
        || async {
            value_of(&app_secrets, "from-provider").await.as_deref() == Some("one")
                && value_of(&provider_secrets, "from-app").await.as_deref() == Some("one")
        },
    )
    .await;

    let two = Patch::Merge(json!({"stringData": {"value": "two"}}));
    provider_secrets
        .patch("from-provider", &PatchParams::default(), &two)
        .await
        .unwrap();
    app_secrets
        .patch("from-app", &PatchParams::default(), &two)
        .await
        .unwrap();
    step(
        k,
        &format!("owner changes mirrored between {consumer} and {service}"),
        || async {
            value_of(&app_secrets, "from-provider").await.as_deref() == Some("two")
                && value_of(&provider_secrets, "from-app").await.as_deref() == Some("two")
        },
    )
    .await;

    provider_secrets
        .delete("from-provider", &DeleteParams::default())
        .await
        .unwrap();
    app_secrets
        .delete("from-app", &DeleteParams::default())
        .await
        .unwrap();
    step(
        k,
        &format!("mirrors deleted in {consumer} and {service}"),
        || async {
            app_secrets
                .get_opt("from-provider")
                .await
                .ok()
                .flatten()
                .is_none()
                && provider_secrets
                    .get_opt("from-app")
                    .await
                    .ok()
                    .flatten()
                    .is_none()
        },
    )
    .await;
}

/// Asserts that every Secret request `user` made went to one of `namespaces` (none
/// cluster-wide) and that none was denied, and that the claims exercised each verb there.
async fn assert_secrets_only_in(cluster: &Cluster, user: &str, namespaces: &[&str], stderr: &str) {
    let denials = denied(cluster, user).await;
    assert!(
        denials.is_empty(),
        "denied to {user}: {denials:#?}\n--- konnector stderr ---\n{}",
        tail(stderr)
    );
    assert_exercised(
        cluster,
        user,
        &[
            ("list", "secrets"),
            ("watch", "secrets"),
            ("create", "secrets"),
            ("patch", "secrets"),
            ("update", "secrets"),
            ("delete", "secrets"),
        ],
    )
    .await;
    let outside: BTreeSet<String> = requests_of(cluster, user)
        .await
        .into_iter()
        .filter(|r| r.resource == "secrets" && !namespaces.contains(&r.namespace.as_str()))
        .map(|r| format!("{} {}?{}", r.verb, r.path, r.query))
        .collect();
    assert!(
        outside.is_empty(),
        "{user} asked for Secrets outside {namespaces:?}: {outside:#?}"
    );
}

/// Default mode, claimed Secrets per consumer namespace (`ci/default-claims-namespaces-values.yaml`):
/// in the app cluster the chart's ServiceAccount may touch Secrets only in the consumer
/// namespaces it serves, `team-a` (listed in values, bound by the chart) and `team-b` (bound
/// by its creator with the README's RoleBinding), and claims still sync both ways there.
/// Default mode with claims granted per namespace, up to a ready konnector under the chart's
/// RBAC: `team-a` listed in values, `team-b` hooked by its creator, `team-c` not served (it holds
/// a private Secret).
struct ClaimsWorld {
    docs: Vec<Value>,
    app: Cluster,
    app_admin: kube::Client,
    provider_admin: kube::Client,
    sa: Identity,
    provider_backend: tokio::task::JoinHandle<()>,
    k: Konnector,
    // Kept for the konnector's HOME and kubeconfig.
    _dir: TempDir,
    _provider: Cluster,
}

async fn claims_world(backend: Backend) -> ClaimsWorld {
    let docs = rendered("default-claims-namespaces");
    let (app, provider) = tokio::join!(
        rbac_cluster(backend, "app", &[SA]),
        Cluster::start_on(backend, "provider", &[])
    );
    let provider = provider.unwrap();
    let app_admin = app.client().await.unwrap();
    let provider_admin = provider.client().await.unwrap();

    // The listed namespace exists before `helm install` (Helm does not create it).
    for ns in [BIND_NS, LISTED, UNSERVED] {
        create_namespace(&app_admin, ns).await;
    }
    load_chart_rbac(&app_admin, &docs, labelled_bound_role(false)).await;
    let sa = service_account(&app, BIND_NS, SA_NAME).await;
    let provider_kubeconfig = kubeconfig_in(&provider, KONNECTOR_USER, P).unwrap();
    provider_world(&provider_admin, P, "kubeconfig", &provider_kubeconfig).await;
    Api::<Secret>::namespaced(app_admin.clone(), BIND_NS)
        .create(
            &PostParams::default(),
            &kubeconfig_secret("kubeconfig", &provider_kubeconfig),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(app_admin.clone(), UNSERVED)
        .create(&PostParams::default(), &opaque("private", "team-c"))
        .await
        .unwrap();
    let provider_backend = tokio::spawn(map_namespaces(provider_admin.clone(), P));

    // A user creates consumer namespace team-b and grants the konnector its claims there.
    create_namespace(&app_admin, HOOKED).await;
    let rb = claims_role_binding(&docs, LISTED, HOOKED);
    create_dynamic(&app_admin, &rbac_resource("RoleBinding"), rb).await;
    wait_allowed(backend, &app_admin, SA, HOOKED).await;

    let dir = TempDir::new("konnector-claims-rbac").unwrap();
    let kubeconfig = dir.write("app-sa.kubeconfig", &sa.kubeconfig).unwrap();
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
    ClaimsWorld {
        docs,
        app,
        app_admin,
        provider_admin,
        sa,
        provider_backend,
        k,
        _dir: dir,
        _provider: provider,
    }
}

async fn default_mode_claims_only_in_served_namespaces(backend: Backend) {
    let ClaimsWorld {
        app,
        app_admin,
        provider_admin,
        sa,
        provider_backend,
        k,
        // Bound, not `..`: the provider's server and the konnector's HOME live until the end.
        _dir: _keep_dir,
        _provider: _keep_provider,
        docs: _,
    } = claims_world(backend).await;
    let bindings = bindings_api(&app_admin, BIND_NS);
    bindings
        .create(
            &PostParams::default(),
            &binding_with_claims(BIND_NS, "kubeconfig"),
        )
        .await
        .unwrap();
    ready_and_connected(&k, &bindings).await;
    for consumer in [LISTED, HOOKED] {
        let service = format!("{P}-{consumer}");
        claimed_secrets_both_ways(&k, &app_admin, &provider_admin, consumer, &service).await;
    }
    let stderr = k.stderr();
    stop(k).await;
    provider_backend.abort();

    // Secrets only in the bindings' namespace and the served consumer namespaces, all allowed.
    assert_secrets_only_in(&app, SA, &[BIND_NS, LISTED, HOOKED], &stderr).await;

    // Nothing beyond: Secrets of an unserved namespace and every Secret of the cluster.
    let sa = client_from(&sa.kubeconfig).await;
    let unserved: Api<Secret> = Api::namespaced(sa.clone(), UNSERVED);
    assert!(
        is_forbidden(unserved.get("private").await),
        "get in {UNSERVED}"
    );
    assert!(is_forbidden(unserved.list(&ListParams::default()).await));
    assert!(is_forbidden(
        unserved
            .patch(
                "private",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"value": "x"}}))
            )
            .await
    ));
    assert!(is_forbidden(
        unserved.delete("private", &DeleteParams::default()).await
    ));
    assert!(is_forbidden(
        Api::<Secret>::all(sa.clone())
            .list(&ListParams::default())
            .await
    ));
    // The served namespaces remain open to it.
    assert!(
        Api::<Secret>::namespaced(sa, HOOKED)
            .list(&ListParams::default())
            .await
            .is_ok()
    );
}

/// Control-plane mode, claimed Secrets per service namespace (the default there;
/// `ci/control-plane-claims-values.yaml`), on a control plane shared with another tenant: the
/// konnector of app cluster `team-a/app-1` syncs claimed Secrets both ways between its consumer
/// namespaces and its service namespaces (`<root>-team-a` listed in values, `<root>-team-b`
/// bound by the backend with the README's RoleBinding when it creates it), and with its own
/// token it can neither read nor rewrite the other tenant's Secrets: its app cluster
/// kubeconfig in `klutch-bind-team-b-app-2` or anything in that tenant's service namespaces.
/// In the app cluster the kubeconfig's user holds the claimed rights only in the consumer
/// namespaces, as the README shows.
async fn control_plane_mode_claims_do_not_reach_other_tenants(backend: Backend) {
    let docs = rendered("control-plane-claims");
    let (cp, app) = tokio::join!(
        rbac_cluster(backend, "control-plane", &[CP_SA]),
        rbac_cluster(backend, "app", &[APP_USER])
    );
    let cp_admin = cp.client().await.unwrap();
    let app_admin = app.client().await.unwrap();
    let (app_user, subject) = app_identity(&app).await;
    for o in app_user_rbac(subject.clone()) {
        create_dynamic(&app_admin, &resource_of(&o), o).await;
    }
    // App cluster: the claimed rights of the kubeconfig's user only in the consumer namespaces.
    create_dynamic(
        &app_admin,
        &rbac_resource("ClusterRole"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "klutch-konnector-app-claimed"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}),
    )
    .await;
    for ns in [LISTED, HOOKED, UNSERVED] {
        create_namespace(&app_admin, ns).await;
    }
    for ns in [LISTED, HOOKED] {
        create_dynamic(
            &app_admin,
            &rbac_resource("RoleBinding"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "klutch-konnector-app-claimed", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "klutch-konnector-app-claimed"},
                "subjects": [subject.clone()]}),
        )
        .await;
        wait_allowed(backend, &app_admin, &app_user.user, ns).await;
    }
    Api::<Secret>::namespaced(app_admin.clone(), UNSERVED)
        .create(&PostParams::default(), &opaque("private", "team-c"))
        .await
        .unwrap();

    // The other tenant: its root namespace with its app kubeconfig Secret and one service
    // namespace with a claimed Secret of its own.
    let other_service = format!("{OTHER_ROOT}-team-a");
    for ns in [OTHER_ROOT, other_service.as_str()] {
        create_namespace(&cp_admin, ns).await;
    }
    Api::<Secret>::namespaced(cp_admin.clone(), OTHER_ROOT)
        .create(
            &PostParams::default(),
            &kubeconfig_secret(OTHER_SECRET, "the other tenant's app cluster"),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(cp_admin.clone(), &other_service)
        .create(&PostParams::default(), &opaque("creds", "team-b"))
        .await
        .unwrap();

    // This tenant, as the backend leaves it; the listed service namespace exists before
    // `helm install` (Helm does not create it).
    provider_world(&cp_admin, ROOT, APP_SECRET, &app_user.kubeconfig).await;
    install_crd(&cp_admin, konnector_api::crds::api_service_binding())
        .await
        .unwrap();
    let listed_service = format!("{ROOT}-{LISTED}");
    create_namespace(&cp_admin, &listed_service).await;
    load_chart_rbac(&cp_admin, &docs, labelled_bound_role(true)).await;
    let cp_sa = service_account(&cp, ROOT, SA_NAME).await;
    // The hook as the README shows it, for this release, is the chart's own RoleBinding.
    let readme_rb = readme_claims_role_binding(&listed_service);
    let chart_rb = claims_role_binding(&docs, &listed_service, &listed_service);
    assert_eq!(
        (
            &readme_rb["roleRef"],
            &readme_rb["subjects"],
            &readme_rb["metadata"]["name"]
        ),
        (
            &chart_rb["roleRef"],
            &chart_rb["subjects"],
            &chart_rb["metadata"]["name"]
        ),
        "the README's RoleBinding is the chart's"
    );
    let cp_backend = tokio::spawn(map_namespaces_granting_claims(
        backend,
        cp_admin.clone(),
        ROOT,
        readme_rb,
        CP_SA.to_string(),
    ));

    let dir = TempDir::new("konnector-claims-rbac-cp").unwrap();
    let kubeconfig = dir.write("cp-sa.kubeconfig", &cp_sa.kubeconfig).unwrap();
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
    let bindings = bindings_api(&cp_admin, ROOT);
    bindings
        .create(
            &PostParams::default(),
            &binding_with_claims(ROOT, APP_SECRET),
        )
        .await
        .unwrap();
    ready_and_connected(&k, &bindings).await;
    for consumer in [LISTED, HOOKED] {
        let service = format!("{ROOT}-{consumer}");
        claimed_secrets_both_ways(&k, &app_admin, &cp_admin, consumer, &service).await;
    }
    let stderr = k.stderr();
    stop(k).await;
    cp_backend.abort();

    // Enough, and namespaced: on the control plane Secrets only in the root namespace (the app
    // kubeconfig, by name) and the two service namespaces; in the app cluster only in the two
    // consumer namespaces. Nothing was denied.
    let hooked_service = format!("{ROOT}-{HOOKED}");
    assert_secrets_only_in(
        &cp,
        CP_SA,
        &[ROOT, listed_service.as_str(), hooked_service.as_str()],
        &stderr,
    )
    .await;
    assert_secrets_only_in(&app, &app_user.user, &[LISTED, HOOKED], &stderr).await;

    // No reach into the other tenant, with the konnector's own token.
    let sa = client_from(&cp_sa.kubeconfig).await;
    let other_root: Api<Secret> = Api::namespaced(sa.clone(), OTHER_ROOT);
    let theirs = Api::<Secret>::namespaced(cp_admin.clone(), OTHER_ROOT)
        .get(OTHER_SECRET)
        .await
        .unwrap();
    assert!(
        is_forbidden(other_root.get(OTHER_SECRET).await),
        "get of the other tenant's kubeconfig Secret"
    );
    assert!(is_forbidden(other_root.list(&ListParams::default()).await));
    let mut rewritten = theirs.clone();
    rewritten.string_data = Some([("kubeconfig".to_string(), "stolen".to_string())].into());
    assert!(
        is_forbidden(
            other_root
                .replace(OTHER_SECRET, &PostParams::default(), &rewritten)
                .await
        ),
        "update of the other tenant's kubeconfig Secret"
    );
    assert!(is_forbidden(
        other_root
            .patch(
                OTHER_SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"kubeconfig": "stolen"}}))
            )
            .await
    ));
    assert!(is_forbidden(
        other_root
            .delete(OTHER_SECRET, &DeleteParams::default())
            .await
    ));
    let other_claims: Api<Secret> = Api::namespaced(sa.clone(), &other_service);
    assert!(is_forbidden(other_claims.get("creds").await));
    assert!(is_forbidden(
        other_claims.list(&ListParams::default()).await
    ));
    assert!(is_forbidden(
        other_claims
            .create(&PostParams::default(), &opaque("planted", "x"))
            .await
    ));
    assert!(is_forbidden(
        Api::<Secret>::all(sa.clone())
            .list(&ListParams::default())
            .await
    ));
    let after = Api::<Secret>::namespaced(cp_admin.clone(), OTHER_ROOT)
        .get(OTHER_SECRET)
        .await
        .unwrap();
    assert_eq!(
        after.metadata.resource_version, theirs.metadata.resource_version,
        "the other tenant's kubeconfig Secret is untouched"
    );
    // Its own service namespaces remain open to it.
    assert!(
        Api::<Secret>::namespaced(sa, &hooked_service)
            .list(&ListParams::default())
            .await
            .is_ok()
    );

    // In the app cluster: no Secrets outside the served consumer namespaces either.
    let app_client = client_from(&app_user.kubeconfig).await;
    let unserved: Api<Secret> = Api::namespaced(app_client.clone(), UNSERVED);
    assert!(is_forbidden(unserved.get("private").await));
    assert!(is_forbidden(unserved.list(&ListParams::default()).await));
    assert!(is_forbidden(
        Api::<Secret>::all(app_client)
            .list(&ListParams::default())
            .await
    ));
}

/// A claim whose watch the konnector may not open (a consumer namespace that got an instance
/// but nobody granted the claim there) shows on the binding (`InformersSynced=False`,
/// `ClaimWatchForbidden`, with the server's message) and as a Warning Event, is retried with
/// backoff instead of every second, and heals once the RoleBinding is added.
async fn default_mode_forbidden_claim_watch_shows_on_the_binding(backend: Backend) {
    let w = claims_world(backend).await;
    let k = &w.k;
    let bindings = bindings_api(&w.app_admin, BIND_NS);
    bindings
        .create(
            &PostParams::default(),
            &binding_with_claims(BIND_NS, "kubeconfig"),
        )
        .await
        .unwrap();
    ready_and_connected(k, &bindings).await;
    // An instance in team-c maps it, so the claim syncer watches Secrets there: refused.
    let down: Api<DynamicObject> = Api::namespaced_with(w.app_admin.clone(), UNSERVED, &mangodb());
    let db: DynamicObject = serde_json::from_value(json!({"apiVersion": "mangodb.com/v1",
        "kind": "MangoDB", "metadata": {"name": "db"}, "spec": {"tier": "Dedicated"}}))
    .unwrap();
    down.create(&PostParams::default(), &db).await.unwrap();
    let condition = || async {
        bindings.get(EXPORT).await.ok().and_then(|b| {
            b.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "InformersSynced")
                .cloned()
        })
    };
    step(k, "InformersSynced=False ClaimWatchForbidden", || async {
        condition().await.is_some_and(|c| {
            c["status"] == "False"
                && c["reason"] == "ClaimWatchForbidden"
                && c["message"].as_str().is_some_and(|m| {
                    m.contains(UNSERVED) && m.contains("forbidden") && m.contains("secrets")
                })
        })
    })
    .await;
    step(k, "a WatchForbidden Event on the binding", || async {
        e2e::steps::events_about(&w.app_admin, BIND_NS, EXPORT)
            .await
            .iter()
            .any(|e| e["reason"] == "WatchForbidden")
    })
    .await;
    // Backoff: over about 10 s a handful of refused lists, not one a second per watch.
    let since = Instant::now();
    w.app.clear_requests().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let refused = requests_of(&w.app, SA)
        .await
        .into_iter()
        .filter(|r| r.resource == "secrets" && r.namespace == UNSERVED && r.code == 403)
        .count();
    println!(
        "claims: forbidden claim watch: {refused} refused requests in {:?}; condition {:?}",
        since.elapsed(),
        condition().await.map(|c| c["message"].clone())
    );
    assert!(
        refused <= 5,
        "{refused} refused requests in 10 s: no backoff"
    );

    // The namespace's creator adds the RoleBinding: the binding heals.
    let rb = claims_role_binding(&w.docs, LISTED, UNSERVED);
    create_dynamic(&w.app_admin, &rbac_resource("RoleBinding"), rb).await;
    wait_allowed(backend, &w.app_admin, SA, UNSERVED).await;
    let healed = Instant::now();
    if let Err(e) = e2e::wait_until(
        "InformersSynced=True again",
        Duration::from_secs(120),
        || async { condition().await.is_some_and(|c| c["status"] == "True") },
    )
    .await
    {
        panic!("{e}\n{}", tail(&k.stderr()));
    }
    println!(
        "claims: healed {:?} after the RoleBinding",
        healed.elapsed()
    );
    w.provider_backend.abort();
    let _ = &w.provider_admin;
}

/// Fleet mode: the chart's rendering of `ci/fleet-values.yaml` (release `konnector` in
/// [`FLEET_RELEASE_NS`], heartbeat Leases there).
const FLEET_RELEASE_NS: &str = "klutch-fleet";
const FLEET_SA: &str = "system:serviceaccount:klutch-fleet:konnector";
/// The AppClusterBindings (`e2e::fleet::FLEET_NS/<name>`) the fleet serves.
const FLEET_APPS: [&str; 2] = ["app-1", "app-2"];

/// One app cluster of the fleet scenario: what the backend leaves for its AppClusterBinding on
/// the control plane (root namespace `R` with the ClusterBinding, the export, the app
/// kubeconfig Secret and the APIServiceBinding), the app cluster authorized with the README's
/// rights for the kubeconfig's user, and the namespace mapping loop of `R`.
struct FleetApp {
    r: &'static str,
    cluster: Cluster,
    admin: kube::Client,
    user: String,
    backend: tokio::task::JoinHandle<()>,
}

async fn fleet_app(cp_admin: &kube::Client, name: &str, cluster: Cluster) -> FleetApp {
    let admin = cluster.client().await.unwrap();
    let (user, subject) = app_identity(&cluster).await;
    for o in app_user_rbac(subject) {
        create_dynamic(&admin, &resource_of(&o), o).await;
    }
    create_namespace(&admin, "team-a").await;
    let r = e2e::fleet::root(name);
    let provider = e2e::backend::ProviderBackend {
        namespace: r,
        pretty_name: "anynines",
        poll: Duration::from_millis(200),
    };
    provider
        .set_up(
            cp_admin,
            &e2e::world::mangodb_crd().unwrap(),
            &user.kubeconfig,
        )
        .await
        .unwrap();
    let secret = e2e::backend::KUBECONFIG_SECRET;
    bindings_api(cp_admin, r)
        .create(&PostParams::default(), &binding(r, secret))
        .await
        .unwrap();
    let acb = ApiResource::erase::<konnector_api::v1alpha1::AppClusterBinding>(&());
    create_dynamic(
        cp_admin,
        &acb,
        json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "AppClusterBinding",
            "metadata": {"name": name, "namespace": e2e::fleet::FLEET_NS},
            "spec": {"kubeconfigSecretRef": {"name": secret, "namespace": r, "key": secret}}}),
    )
    .await;
    FleetApp {
        r,
        cluster,
        admin,
        user: user.user,
        backend: tokio::spawn(provider.map_namespaces(cp_admin.clone())),
    }
}

/// Fleet mode under the chart's RBAC: one replica running as the chart's ServiceAccount serves
/// two app clusters (each an AppClusterBinding whose root namespace the chart cannot name), an
/// instance syncs both ways in each, and no request is denied on the control plane or in the
/// app clusters. The rights the fleet does not need are absent: Secret writes, Lease deletes
/// outside the lease namespace, Leases other than `klutch-bind` outside it, cluster-wide Lease
/// lists without the name selector, AppClusterBinding writes, namespace lists.
async fn fleet_mode_serves_two_app_clusters_under_the_charts_rbac(backend: Backend) {
    use k8s_openapi::api::coordination::v1::Lease;
    let docs = rendered("fleet");
    let (cp, app_1, app_2) = tokio::join!(
        rbac_cluster(backend, "control-plane", &[FLEET_SA]),
        rbac_cluster(backend, "fleet-app-1", &[APP_USER]),
        rbac_cluster(backend, "fleet-app-2", &[APP_USER])
    );
    let cp_admin = cp.client().await.unwrap();
    for crd in [
        konnector_api::crds::app_cluster_binding(),
        konnector_api::crds::api_service_binding(),
    ] {
        install_crd(&cp_admin, crd).await.unwrap();
    }
    create_namespace(&cp_admin, e2e::fleet::FLEET_NS).await;
    create_namespace(&cp_admin, FLEET_RELEASE_NS).await;
    let mut apps = Vec::new();
    for (name, cluster) in FLEET_APPS.into_iter().zip([app_1, app_2]) {
        apps.push(fleet_app(&cp_admin, name, cluster).await);
    }
    // `helm install -n klutch-fleet` with ci/fleet-values.yaml.
    load_chart_rbac(&cp_admin, &docs, labelled_bound_role(true)).await;
    let cp_sa = service_account(&cp, FLEET_RELEASE_NS, SA_NAME).await;
    assert_eq!(cp_sa.user, FLEET_SA);
    wait_allowed(backend, &cp_admin, FLEET_SA, apps[1].r).await;

    let dir = TempDir::new("konnector-chart-rbac-fleet").unwrap();
    let kubeconfig = dir.write("cp-sa.kubeconfig", &cp_sa.kubeconfig).unwrap();
    let port = free_port().unwrap();
    let args = konnector_args(&docs, &kubeconfig, port);
    assert!(args.iter().any(|a| a == "--fleet=true"), "{args:?}");
    let mut k = Konnector::spawn_with_env(
        BIN,
        &args,
        &dir,
        &[
            ("POD_NAME", "konnector-0"),
            ("POD_NAMESPACE", FLEET_RELEASE_NS),
        ],
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if let Err(e) = k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT).await {
        panic!("fleet not ready under the chart's RBAC: {e}");
    }

    // Both app clusters taken over by the one replica, then an instance synced both ways (and
    // deleted) in each.
    for app in &apps {
        let leases: Api<Lease> = Api::namespaced(cp_admin.clone(), app.r);
        step(
            &k,
            &format!("the fleet holds the Lease in {}", app.r),
            || async {
                leases
                    .get_opt("klutch-bind")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|l| l.spec?.holder_identity)
                    .as_deref()
                    == Some("konnector-0")
            },
        )
        .await;
    }
    for app in &apps {
        let down: Api<DynamicObject> =
            Api::namespaced_with(app.admin.clone(), "team-a", &mangodb());
        let up: Api<DynamicObject> = Api::namespaced_with(
            cp_admin.clone(),
            &e2e::backend::service_namespace(app.r, "team-a"),
            &mangodb(),
        );
        happy_path(&k, &bindings_api(&cp_admin, app.r), &down, &up).await;
    }
    let stderr = k.stderr();
    stop(k).await;
    for app in &apps {
        app.backend.abort();
    }

    // Enough: nothing the fleet asked the control plane or an app cluster for was denied.
    let denials = denied(&cp, FLEET_SA).await;
    assert!(
        denials.is_empty(),
        "denied on the control plane: {denials:#?}\n--- konnector stderr ---\n{}",
        tail(&stderr)
    );
    for app in &apps {
        let denials = denied(&app.cluster, &app.user).await;
        assert!(
            denials.is_empty(),
            "denied in the app cluster of {}: {denials:#?}\n--- konnector stderr ---\n{}",
            app.r,
            tail(&stderr)
        );
    }
    assert_exercised(
        &cp,
        FLEET_SA,
        &[
            ("list", "appclusterbindings"),
            ("watch", "secrets"),
            ("create", "leases"),
            ("update", "leases"),
            ("delete", "leases"),
            ("patch", "apiservicebindings"),
            ("create", "apiservicenamespaces"),
            ("patch", "mangodbs"),
            ("create", "events"),
        ],
    )
    .await;
    let made = requests_of(&cp, FLEET_SA).await;
    let kinds: BTreeSet<String> = made
        .iter()
        .filter(|r| !r.resource.is_empty())
        .map(|r| {
            let scope = if r.namespace.is_empty() { "*" } else { "ns" };
            format!("{} {} ({scope})", r.verb, r.resource)
        })
        .collect();
    println!(
        "fleet: {} requests on the control plane for {} app clusters, none denied: {kinds:?}",
        made.len(),
        apps.len()
    );

    // Not too many. Secrets: read through the one cluster-wide watch, never written.
    let sa = client_from(&cp_sa.kubeconfig).await;
    let r = apps[0].r;
    let sa_r_secrets: Api<Secret> = Api::namespaced(sa.clone(), r);
    assert!(
        is_forbidden(
            sa_r_secrets
                .create(&PostParams::default(), &kubeconfig_secret("planted", "x"))
                .await
        ),
        "creating a Secret"
    );
    assert!(
        is_forbidden(
            sa_r_secrets
                .patch(
                    e2e::backend::KUBECONFIG_SECRET,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
                )
                .await
        ),
        "changing an app cluster's kubeconfig Secret"
    );
    assert!(is_forbidden(
        sa_r_secrets
            .delete(e2e::backend::KUBECONFIG_SECRET, &DeleteParams::default())
            .await
    ));
    // Leases: outside the lease namespace only `klutch-bind`, read and renewed (never deleted);
    // a cluster-wide list needs the name selector.
    let other: Lease = serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    Api::<Lease>::namespaced(cp_admin.clone(), r)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let sa_r_leases: Api<Lease> = Api::namespaced(sa.clone(), r);
    assert!(
        is_forbidden(
            sa_r_leases
                .delete("klutch-bind", &DeleteParams::default())
                .await
        ),
        "deleting an app cluster's Lease"
    );
    assert!(
        is_forbidden(sa_r_leases.get("other").await),
        "another Lease in R"
    );
    assert!(is_forbidden(
        sa_r_leases
            .replace("other", &PostParams::default(), &other)
            .await
    ));
    let sa_all_leases: Api<Lease> = Api::all(sa.clone());
    assert!(
        is_forbidden(sa_all_leases.list(&ListParams::default()).await),
        "listing every Lease"
    );
    assert!(
        sa_all_leases
            .list(&ListParams::default().fields("metadata.name=klutch-bind"))
            .await
            .is_ok(),
        "listing the app clusters' Leases by name"
    );
    // The rest of the control plane: AppClusterBindings and bindings read only; namespaces
    // only by name.
    let sa_acbs: Api<DynamicObject> = Api::namespaced_with(
        sa.clone(),
        e2e::fleet::FLEET_NS,
        &ApiResource::erase::<konnector_api::v1alpha1::AppClusterBinding>(&()),
    );
    assert!(is_forbidden(
        sa_acbs
            .delete(FLEET_APPS[0], &DeleteParams::default())
            .await
    ));
    assert!(is_forbidden(
        bindings_api(&sa, r)
            .delete(EXPORT, &DeleteParams::default())
            .await
    ));
    let sa_namespaces: Api<Namespace> = Api::all(sa);
    assert!(is_forbidden(
        sa_namespaces.list(&ListParams::default()).await
    ));
    assert!(is_forbidden(
        sa_namespaces.delete(r, &DeleteParams::default()).await
    ));
}

e2e::on_both_backends!(
    fleet_mode_serves_two_app_clusters_under_the_charts_rbac,
    default_mode_forbidden_claim_watch_shows_on_the_binding,
    default_mode_happy_path_under_the_charts_rbac,
    control_plane_mode_happy_path_under_the_charts_rbac,
    default_mode_claims_only_in_served_namespaces,
    control_plane_mode_claims_do_not_reach_other_tenants,
);
