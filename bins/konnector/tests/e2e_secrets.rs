//! End to end, the real binary on both servers: a binding whose kubeconfig Secret goes wrong is
//! told so on the binding (`SecretValid=False` with the reason and what is wrong) and in an
//! Event `kubectl describe` shows (events.k8s.io Events regarding the binding's uid), and
//! recovers when the Secret is fixed; nothing of the kubeconfig's credentials reaches an Event.
//!
//! - default mode: the Secret deleted, then recreated; malformed kubeconfigs of every kind
//!   (not YAML, empty, no server, a context naming a missing user, bad CA data, the data key
//!   missing), each then fixed; syncing works afterwards;
//! - control-plane mode: the app cluster kubeconfig rejected, then rotated (CredentialRejected,
//!   CredentialReloaded); the binding's Secret deleted and recreated;
//! - a Secret the konnector may not read under RBAC: `SecretValid=False` with the API server's
//!   own message, a `WatchForbidden` Event, few log lines while the watch backs off, and
//!   recovery once a Role allows the read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use e2e::backend::{KUBECONFIG_SECRET, apply, ensure_namespace};
use e2e::steps::{create_synced, mango, step, tail};
use e2e::world::{BIND_NS, EXPORT, Mode, STEP, World};
use e2e::{Backend, Cluster, Konnector, STARTUP_TIMEOUT, TempDir, free_port, wait_until};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use test_apiserver::{Options, User};

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

async fn start(w: &World) -> Konnector {
    e2e::steps::start(BIN, w).await
}

/// The Events regarding the object with `uid` in namespace `ns`, as `kubectl describe` finds
/// them.
async fn events_of(client: &kube::Client, ns: &str, uid: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().fields(&format!("regarding.uid={uid}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Waits for an Event `reason` of `type_` whose note contains `note`, regarding `uid`.
async fn expect_event(
    k: &Konnector,
    client: &kube::Client,
    ns: &str,
    uid: &str,
    (type_, reason): (&str, &str),
    note: &str,
) {
    step(
        k,
        &format!("{type_} Event {reason} saying {note:?}"),
        || async {
            events_of(client, ns, uid).await.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some(type_)
                    && e.note.as_deref().is_some_and(|n| n.contains(note))
                    && e.reporting_controller.as_deref() == Some("klutch.anynines.com/konnector")
            })
        },
    )
    .await;
}

/// Waits until the binding's `SecretValid` is False with `reason` and a message containing
/// `message`.
async fn expect_secret_invalid(k: &Konnector, w: &World, reason: &str, message: &str) {
    step(
        k,
        &format!("SecretValid=False {reason} saying {message:?}"),
        || async {
            w.binding_condition("SecretValid").await.is_some_and(|c| {
                c["status"] == "False"
                    && c["reason"] == reason
                    && c["message"].as_str().is_some_and(|m| m.contains(message))
            })
        },
    )
    .await;
    // Not Ready meanwhile.
    let ready = w.binding_condition("Ready").await;
    assert!(
        ready.as_ref().is_some_and(|c| c["status"] == "False"),
        "Ready while the Secret is invalid: {ready:?}"
    );
}

async fn expect_valid(k: &Konnector, w: &World) {
    step(k, "SecretValid=True and the binding Ready", || async {
        w.binding_condition("SecretValid")
            .await
            .is_some_and(|c| c["status"] == "True")
            && w.wait_bound().await.is_ok()
    })
    .await;
}

/// Writes Secret `ns/name` with exactly `data` (created if missing).
async fn put_secret(client: &kube::Client, ns: &str, name: &str, data: BTreeMap<String, String>) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let data: BTreeMap<String, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    match api.get_opt(name).await.unwrap() {
        Some(mut s) => {
            s.data = Some(data);
            s.string_data = None;
            api.replace(name, &PostParams::default(), &s).await.unwrap();
        }
        None => {
            let s = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &s).await.unwrap();
        }
    }
}

fn kubeconfig_data(text: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(KUBECONFIG_SECRET.to_string(), text.to_string())])
}

/// `kubeconfig` changed by `edit` (on its YAML).
fn edited(kubeconfig: &str, edit: impl FnOnce(&mut serde_yaml::Value)) -> String {
    let mut kc: serde_yaml::Value = serde_yaml::from_str(kubeconfig).unwrap();
    edit(&mut kc);
    serde_yaml::to_string(&kc).unwrap()
}

async fn binding_uid(w: &World) -> String {
    w.bindings()
        .get(EXPORT)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// No Event of the binding carries `secret`.
async fn no_event_carries(client: &kube::Client, ns: &str, uid: &str, secret: &str) {
    for e in events_of(client, ns, uid).await {
        let note = e.note.unwrap_or_default();
        assert!(
            !note.contains(secret),
            "an Event carries credentials: {note}"
        );
    }
}

async fn default_mode_binding_secret_deleted_or_malformed_is_reported_and_recovers(
    backend: Backend,
) {
    let w = World::new(backend, Mode::Default, &[]).await.unwrap();
    let k = start(&w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    // In default mode every heartbeat reconcile mirrors the provider-side kubeconfig Secret into
    // the binding's, recreating or repairing it (as the Go konnector does). The provider-side
    // copy goes first, so that what the test does to the binding's Secret stays until it fixes
    // it itself.
    let provider_secrets: Api<Secret> = Api::namespaced(w.provider_admin.clone(), w.p);
    provider_secrets
        .delete(KUBECONFIG_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let cluster_bindings: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &ApiResource::erase::<konnector_api::v1alpha1::ClusterBinding>(&()),
    );
    step(
        &k,
        "the konnector saw the provider-side Secret go",
        || async {
            cluster_bindings.get("cluster").await.is_ok_and(|cb| {
                cb.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c["type"] == "SecretValid" && c["reason"] == "ProviderSecretNotFound"
                        })
                    })
            })
        },
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(w.app_admin.clone(), BIND_NS);
    let good = secrets.get(KUBECONFIG_SECRET).await.unwrap().data.unwrap()[KUBECONFIG_SECRET]
        .0
        .clone();
    let good = String::from_utf8(good).unwrap();
    let uid = binding_uid(&w).await;
    let id = format!("{BIND_NS}/{KUBECONFIG_SECRET}");

    // Deleted while running, then recreated.
    secrets
        .delete(KUBECONFIG_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let not_found = format!("Kubeconfig secret {id} not found. Rerun kubectl bind for repair.");
    expect_secret_invalid(&k, &w, "KubeconfigSecretNotFound", &not_found).await;
    expect_event(
        &k,
        &w.app_admin,
        BIND_NS,
        &uid,
        ("Warning", "SecretInvalid"),
        &not_found,
    )
    .await;
    put_secret(
        &w.app_admin,
        BIND_NS,
        KUBECONFIG_SECRET,
        kubeconfig_data(&good),
    )
    .await;
    expect_valid(&k, &w).await;

    // Each kind of malformed kubeconfig, then fixed.
    let invalid = format!("Kubeconfig secret {id} has an invalid kubeconfig: ");
    let cases: Vec<(&str, BTreeMap<String, String>, String)> = vec![
        (
            "not YAML",
            kubeconfig_data("clusters: [unclosed"),
            format!("{invalid}couldn't parse kubeconfig"),
        ),
        (
            "empty",
            kubeconfig_data(""),
            format!("{invalid}invalid configuration: no configuration has been provided"),
        ),
        (
            "no server",
            kubeconfig_data(&edited(&good, |kc| {
                if let Some(c) = kc["clusters"][0]["cluster"].as_mapping_mut() {
                    c.remove("server");
                }
            })),
            "has no server".to_string(),
        ),
        (
            "a context naming a missing user",
            kubeconfig_data(&edited(&good, |kc| {
                kc["contexts"][0]["context"]["user"] = "nobody".into();
            })),
            format!("{invalid}user \"nobody\" of context"),
        ),
        (
            "bad CA data",
            kubeconfig_data(&edited(&good, |kc| {
                kc["clusters"][0]["cluster"]["certificate-authority-data"] = "%%%".into();
            })),
            "certificate-authority-data of cluster".to_string(),
        ),
        (
            "the data key missing",
            BTreeMap::from([("config".to_string(), good.clone())]),
            format!("Kubeconfig secret {id} is missing \"kubeconfig\" string key."),
        ),
    ];
    for (what, data, message) in cases {
        eprintln!("malformed: {what}");
        put_secret(&w.app_admin, BIND_NS, KUBECONFIG_SECRET, data).await;
        expect_secret_invalid(&k, &w, "KubeconfigSecretInvalid", &message).await;
        expect_event(
            &k,
            &w.app_admin,
            BIND_NS,
            &uid,
            ("Warning", "SecretInvalid"),
            &message,
        )
        .await;
        put_secret(
            &w.app_admin,
            BIND_NS,
            KUBECONFIG_SECRET,
            kubeconfig_data(&good),
        )
        .await;
        expect_valid(&k, &w).await;
    }

    // The binding still syncs, and no Event carries the kubeconfig's credentials.
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("after-repairs", None)).await;
    let token = w.provider.token(e2e::KONNECTOR_USER).unwrap();
    no_event_carries(&w.app_admin, BIND_NS, &uid, &token).await;
}

async fn control_plane_mode_credential_rejected_reloaded_and_secret_deleted_are_events(
    backend: Backend,
) {
    let w = World::new(backend, Mode::ControlPlane, &["konnector-rotated"])
        .await
        .unwrap();
    let k = start(&w).await;
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let uid = binding_uid(&w).await;
    let cp = &w.provider_admin;
    let secrets: Api<Secret> = Api::namespaced(cp.clone(), w.p);

    // The app cluster kubeconfig is replaced by something unusable: rejected, the last good
    // one stays in use.
    secrets
        .patch(
            "app-kubeconfig",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"kubeconfig": "not-a-kubeconfig"}})),
        )
        .await
        .unwrap();
    expect_event(
        &k,
        cp,
        w.p,
        &uid,
        ("Warning", "CredentialRejected"),
        &format!(
            "The app cluster kubeconfig in secret {}/app-kubeconfig was rejected",
            w.p
        ),
    )
    .await;
    // Rotated to another user's kubeconfig: reloaded.
    let rotated = w.app.kubeconfig("konnector-rotated").unwrap();
    secrets
        .patch(
            "app-kubeconfig",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"kubeconfig": rotated}})),
        )
        .await
        .unwrap();
    expect_event(
        &k,
        cp,
        w.p,
        &uid,
        ("Normal", "CredentialReloaded"),
        "the konnector now uses the new credentials",
    )
    .await;

    // The binding's Secret deleted, then recreated.
    let good = secrets.get(KUBECONFIG_SECRET).await.unwrap().data.unwrap()[KUBECONFIG_SECRET]
        .0
        .clone();
    secrets
        .delete(KUBECONFIG_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let not_found = format!(
        "Kubeconfig secret {}/{KUBECONFIG_SECRET} not found. Rerun kubectl bind for repair.",
        w.p
    );
    expect_secret_invalid(&k, &w, "KubeconfigSecretNotFound", &not_found).await;
    expect_event(&k, cp, w.p, &uid, ("Warning", "SecretInvalid"), &not_found).await;
    put_secret(
        cp,
        w.p,
        KUBECONFIG_SECRET,
        kubeconfig_data(&String::from_utf8(good).unwrap()),
    )
    .await;
    expect_valid(&k, &w).await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    create_synced(&k, &down, &up, &mango("after-repairs", None)).await;
    for user in [e2e::KONNECTOR_USER, "konnector-rotated"] {
        let token = w.app.token(user).unwrap();
        no_event_carries(cp, w.p, &uid, &token).await;
    }
}

/// The ServiceAccount the konnector runs as in the forbidden scenario.
const SA_NAME: &str = "konnector-limited";
/// Where the Secret the konnector may not read is.
const LOCKED_NS: &str = "locked";

fn rbac(kind: &str) -> ApiResource {
    ApiResource {
        group: "rbac.authorization.k8s.io".into(),
        version: "v1".into(),
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    }
}

async fn create_rbac(admin: &kube::Client, obj: Value) {
    let kind = obj["kind"].as_str().unwrap().to_string();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &rbac(&kind)),
        None => Api::all_with(admin.clone(), &rbac(&kind)),
    };
    apply(&api, obj).await.unwrap();
}

fn subject() -> Value {
    json!([{"kind": "ServiceAccount", "name": SA_NAME, "namespace": BIND_NS}])
}

async fn a_binding_secret_the_konnector_may_not_read_is_reported_with_the_servers_message(
    backend: Backend,
) {
    let user = format!("system:serviceaccount:{BIND_NS}:{SA_NAME}");
    let app = match backend {
        Backend::Memory => {
            Cluster::start_in_memory("app", Options::default().rbac().user(User::new(&user, &[])))
                .await
        }
        Backend::Real => Cluster::start_on(backend, "app", &[]).await,
    }
    .unwrap();
    let admin = app.client().await.unwrap();
    for ns in [BIND_NS, LOCKED_NS] {
        ensure_namespace(&admin, ns).await.unwrap();
    }
    // What the konnector needs in default mode (as the chart grants it), but no Secrets.
    create_rbac(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": SA_NAME},
        "rules": [
            {"apiGroups": ["klutch.anynines.com"], "resources": ["apiservicebindings"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["klutch.anynines.com"], "resources": ["apiservicebindings/status"], "verbs": ["patch"]},
            {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch", "create", "update"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]})).await;
    create_rbac(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": SA_NAME},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SA_NAME},
        "subjects": subject()})).await;
    create_rbac(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": SA_NAME, "namespace": BIND_NS},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]})).await;
    create_rbac(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": SA_NAME, "namespace": BIND_NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA_NAME},
        "subjects": subject()}),
    )
    .await;
    let kubeconfig = match app.real() {
        None => app.kubeconfig(&user).unwrap(),
        Some(cp) => {
            let token = cp
                .service_account_token(BIND_NS, SA_NAME, None)
                .await
                .unwrap();
            cp.token_kubeconfig(&token, Some(BIND_NS))
        }
    };
    let dir = TempDir::new("konnector-e2e-forbidden").unwrap();
    let path = dir.write("app.kubeconfig", &kubeconfig).unwrap();
    let port = free_port().unwrap();
    let args = vec![
        format!("--kubeconfig={}", path.display()),
        format!("--health-probe-bind-address=127.0.0.1:{port}"),
        "--metrics-bind-address=0".to_string(),
        format!("--lease-namespace={BIND_NS}"),
        "-v=4".to_string(),
    ];
    let mut k = Konnector::spawn(BIN, &args, &dir).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(e) = k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT).await {
        panic!(
            "konnector not ready: {e}\n--- stderr ---\n{}",
            tail(&k.stderr())
        );
    }
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    wait_until("APIServiceBinding CRD installed", STEP, || async {
        crds.get("apiservicebindings.klutch.anynines.com")
            .await
            .is_ok()
    })
    .await
    .unwrap();

    // A Secret in a namespace the konnector has no rights in, and a binding naming it.
    put_secret(
        &admin,
        LOCKED_NS,
        KUBECONFIG_SECRET,
        kubeconfig_data("not a kubeconfig"),
    )
    .await;
    let bindings: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        BIND_NS,
        &ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&()),
    );
    let binding = json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding",
        "metadata": {"name": EXPORT, "namespace": BIND_NS},
        "spec": {"kubeconfigSecretRef": {
            "name": KUBECONFIG_SECRET, "namespace": LOCKED_NS, "key": KUBECONFIG_SECRET}}});
    apply(&bindings, binding).await.unwrap();
    let secret_valid = || async {
        let b = bindings.get(EXPORT).await.ok()?;
        b.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "SecretValid")
            .cloned()
    };
    let prefix = format!("Kubeconfig secret {LOCKED_NS}/{KUBECONFIG_SECRET} cannot be read: ");
    step(
        &k,
        "SecretValid=False with the server's message",
        || async {
            secret_valid().await.is_some_and(|c| {
                c["status"] == "False"
                    && c["reason"] == "KubeconfigSecretUnreadable"
                    && c["message"].as_str().is_some_and(|m| {
                        m.starts_with(&prefix)
                            && m.contains("is forbidden")
                            && m.contains(&format!(
                                "User \"{user}\" cannot list resource \"secrets\""
                            ))
                            && m.contains(&format!("in the namespace \"{LOCKED_NS}\""))
                    })
            })
        },
    )
    .await;
    let uid = bindings.get(EXPORT).await.unwrap().metadata.uid.unwrap();
    expect_event(
        &k,
        &admin,
        BIND_NS,
        &uid,
        ("Warning", "WatchForbidden"),
        &prefix,
    )
    .await;

    // Allowed to read it: the watch, backing off, gets through and the binding says what the
    // Secret really holds.
    create_rbac(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": SA_NAME, "namespace": LOCKED_NS},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]}))
    .await;
    create_rbac(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": SA_NAME, "namespace": LOCKED_NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA_NAME},
        "subjects": subject()}),
    )
    .await;
    step(
        &k,
        "SecretValid=False KubeconfigSecretInvalid once readable",
        || async {
            secret_valid()
                .await
                .is_some_and(|c| c["status"] == "False" && c["reason"] == "KubeconfigSecretInvalid")
        },
    )
    .await;
    // The refused watch was retried with backoff and logged once per step, not per attempt.
    let stderr = k.stderr();
    let lines = stderr
        .lines()
        .filter(|l| l.contains("list failed, retrying") && l.contains(LOCKED_NS))
        .count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} log lines about the refused list\n{}",
        tail(&stderr)
    );
    k.terminate().await.unwrap();
}

e2e::on_both_backends!(
    default_mode_binding_secret_deleted_or_malformed_is_reported_and_recovers,
    control_plane_mode_credential_rejected_reloaded_and_secret_deleted_are_events,
    a_binding_secret_the_konnector_may_not_read_is_reported_with_the_servers_message,
);
