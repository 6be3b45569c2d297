//! Startup in both modes and credential rotation, against in-memory API servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cluster_topology::{
    ClientOptions, ClusterHandle, CredentialEvent, Mode, ModeFlags, NamespaceScope, RejectReason,
    Role, SecretKeyRef, StartupError, Topology, TopologyOptions, build_client, parse_kubeconfig,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use test_apiserver::{ADMIN, Options, TestApiServer, User};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(30);
const SECRET_NS: &str = "klutch-system";
const SECRET_NAME: &str = "app-kubeconfig";
const ROOT_NS: &str = "klutch-bind-root";
/// The user the konnector runs as on the control plane, so its requests can be told apart from
/// the test's own.
const KONNECTOR: &str = "konnector";

async fn server() -> TestApiServer {
    TestApiServer::start(Options::default().user(User::new(KONNECTOR, &["system:masters"])))
        .await
        .unwrap()
}

fn kubeconfig(server: &TestApiServer, user: &str) -> String {
    server.kubeconfig(user).unwrap()
}

async fn admin(server: &TestApiServer) -> kube::Client {
    let parsed = parse_kubeconfig(
        kubeconfig(server, ADMIN).as_bytes(),
        cluster_topology::NamespaceRequirement::Optional,
    )
    .unwrap();
    build_client(parsed.config).unwrap()
}

/// Writes `text` to a fresh file under Cargo's per-target scratch directory (cleaned with the
/// target directory, never left in the system's temp dir) and returns its path.
fn write_temp(text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cluster-topology-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// Creates or replaces `ns/name` with `data`.
async fn put_secret(client: &kube::Client, ns: &str, name: &str, data: &[(&str, &[u8])]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut s = secret(name, data);
    match api.get_opt(name).await.unwrap() {
        Some(existing) => {
            s.metadata.resource_version = existing.metadata.resource_version;
            api.replace(name, &PostParams::default(), &s).await.unwrap();
        }
        None => {
            api.create(&PostParams::default(), &s).await.unwrap();
        }
    }
}

fn cp_mode() -> Mode {
    ModeFlags {
        control_plane_mode: true,
        app_cluster_kubeconfig_secret_name: SECRET_NAME.into(),
        app_cluster_kubeconfig_secret_namespace: SECRET_NS.into(),
        binding_root_namespace: ROOT_NS.into(),
        ..ModeFlags::default()
    }
    .validate()
    .unwrap()
}

fn cp_options(control_plane: &TestApiServer) -> TopologyOptions {
    TopologyOptions {
        kubeconfig: Some(write_temp(&kubeconfig(control_plane, KONNECTOR))),
        mode: cp_mode(),
        client: ClientOptions::default(),
    }
}

async fn namespaces(handle: &ClusterHandle) -> Vec<String> {
    let api: Api<Namespace> = Api::all(handle.client());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect()
}

/// A control plane with the secret namespace, and an app cluster with a marker namespace.
async fn cp_and_app(app_marker: &str) -> (TestApiServer, TestApiServer) {
    let cp = server().await;
    create_namespace(&admin(&cp).await, SECRET_NS).await;
    let app = server().await;
    create_namespace(&admin(&app).await, app_marker).await;
    (cp, app)
}

/// Writes made by the konnector's user (the test's own setup runs as `admin`).
fn konnector_writes(server: &TestApiServer) -> Vec<test_apiserver::RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.is_write() && r.user != ADMIN)
        .collect()
}

async fn connect_err(options: TopologyOptions) -> StartupError {
    match Topology::connect(options).await {
        Ok(t) => panic!("expected a startup error, got {t:?}"),
        Err(e) => e,
    }
}

async fn next_event(
    events: &mut broadcast::Receiver<CredentialEvent>,
    what: &str,
    mut matches: impl FnMut(&CredentialEvent) -> bool,
) -> CredentialEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if matches(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn control_plane_connect_serves_app_role_from_the_secret_and_writes_nothing() {
    let (cp, app) = cp_and_app("only-on-app").await;
    put_secret(
        &admin(&cp).await,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app, ADMIN).as_bytes())],
    )
    .await;
    cp.clear_requests();

    let topology = Topology::connect(cp_options(&cp)).await.unwrap();

    assert!(topology.mode().is_control_plane());
    assert_eq!(topology.binding_root_namespace(), Some(ROOT_NS));
    assert_eq!(
        topology.binding_watch_scope(),
        NamespaceScope::Namespace(ROOT_NS.into())
    );
    assert_eq!(topology.app().role(), Role::App);
    assert_eq!(topology.binding().role(), Role::Binding);
    assert_eq!(topology.app().current().server(), format!("{}/", app.url()));
    assert_eq!(
        topology.binding().current().server(),
        format!("{}/", cp.url())
    );

    let app_namespaces = namespaces(topology.app()).await;
    assert!(app_namespaces.contains(&"only-on-app".to_owned()));
    assert!(
        !namespaces(topology.binding())
            .await
            .contains(&"only-on-app".to_owned())
    );

    // Startup read exactly that Secret, and nothing was written anywhere.
    let konnector_requests: Vec<_> = cp
        .requests()
        .into_iter()
        .filter(|r| r.user == KONNECTOR)
        .collect();
    assert!(
        konnector_requests.iter().any(|r| r.verb == "get"
            && r.resource == "secrets"
            && r.namespace == SECRET_NS
            && r.name == SECRET_NAME),
        "{konnector_requests:?}"
    );
    assert_eq!(cp.write_count(), 0);
    assert_eq!(konnector_writes(&app), vec![]);
}

#[tokio::test]
async fn control_plane_startup_fails_when_the_secret_is_missing() {
    let (cp, _app) = cp_and_app("x").await;
    let e = connect_err(cp_options(&cp)).await;
    assert_eq!(
        e.to_string(),
        "failed to fetch app cluster kubeconfig secret klutch-system/app-kubeconfig: secrets \"app-kubeconfig\" not found"
    );
    assert_eq!(konnector_writes(&cp), vec![]);
}

#[tokio::test]
async fn control_plane_startup_fails_when_the_control_plane_is_unreachable() {
    let mut cp = server().await;
    let options = cp_options(&cp);
    cp.stop().await;
    let msg = connect_err(options).await.to_string();
    assert!(
        msg.starts_with(
            "failed to fetch app cluster kubeconfig secret klutch-system/app-kubeconfig: "
        ),
        "{msg}"
    );
    assert!(msg.contains("Connection refused"), "{msg}");
}

#[tokio::test]
async fn control_plane_startup_fails_when_the_key_is_missing() {
    let (cp, app) = cp_and_app("x").await;
    put_secret(
        &admin(&cp).await,
        SECRET_NS,
        SECRET_NAME,
        &[("other", kubeconfig(&app, ADMIN).as_bytes())],
    )
    .await;
    let e = connect_err(cp_options(&cp)).await;
    assert_eq!(
        e.to_string(),
        "secret klutch-system/app-kubeconfig does not contain key kubeconfig"
    );
}

#[tokio::test]
async fn control_plane_startup_fails_on_a_garbage_kubeconfig() {
    let (cp, _app) = cp_and_app("x").await;
    put_secret(
        &admin(&cp).await,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", b"invalid-yaml-content")],
    )
    .await;
    let e = connect_err(cp_options(&cp)).await;
    let msg = e.to_string();
    assert!(
        msg.starts_with("failed to parse app cluster kubeconfig: couldn't parse kubeconfig: "),
        "{msg}"
    );
    assert!(!msg.contains("invalid-yaml-content"), "{msg}");

    put_secret(
        &admin(&cp).await,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", b"")],
    )
    .await;
    assert_eq!(
        connect_err(cp_options(&cp)).await.to_string(),
        "failed to parse app cluster kubeconfig: invalid configuration: no configuration has been provided"
    );
}

#[tokio::test]
async fn control_plane_startup_fails_on_an_unreadable_kubeconfig_path() {
    let options = TopologyOptions {
        kubeconfig: Some(PathBuf::from("/nonexistent/konnector/kubeconfig")),
        mode: cp_mode(),
        client: ClientOptions::default(),
    };
    assert_eq!(
        connect_err(options).await.to_string(),
        "failed to load control plane kubeconfig: cannot read kubeconfig /nonexistent/konnector/kubeconfig: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn default_mode_uses_the_local_config_for_binding_and_app() {
    let app = server().await;
    create_namespace(&admin(&app).await, "marker").await;
    let topology = Topology::connect(TopologyOptions {
        kubeconfig: Some(write_temp(&kubeconfig(&app, KONNECTOR))),
        mode: Mode::Default,
        client: ClientOptions::default(),
    })
    .await
    .unwrap();
    assert_eq!(topology.mode(), &Mode::Default);
    assert_eq!(topology.binding_root_namespace(), None);
    assert_eq!(topology.binding_watch_scope(), NamespaceScope::All);
    assert_eq!(topology.app().role(), Role::App);
    assert_eq!(
        topology.binding().current().server(),
        topology.app().current().server()
    );
    assert_eq!(topology.binding().current().namespace(), Some("default"));
    assert!(
        namespaces(topology.app())
            .await
            .contains(&"marker".to_owned())
    );
    assert!(
        namespaces(topology.binding())
            .await
            .contains(&"marker".to_owned())
    );

    // The error of default mode is reported unwrapped.
    let e = connect_err(TopologyOptions {
        kubeconfig: Some(PathBuf::from("/nonexistent/kc")),
        mode: Mode::Default,
        client: ClientOptions::default(),
    })
    .await;
    assert_eq!(
        e.to_string(),
        "cannot read kubeconfig /nonexistent/kc: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn insecure_skip_tls_verify_reaches_a_server_with_an_unknown_ca() {
    let app = server().await;
    let with_ca = kubeconfig(&app, ADMIN);
    let without_ca: String = with_ca
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    let insecure = without_ca.replace(
        "    server:",
        "    insecure-skip-tls-verify: true\n    server:",
    );
    let client = |text: &str| {
        let parsed = parse_kubeconfig(
            text.as_bytes(),
            cluster_topology::NamespaceRequirement::Optional,
        )
        .unwrap();
        build_client(parsed.config).unwrap()
    };
    assert!(client(&with_ca).apiserver_version().await.is_ok());
    assert!(client(&insecure).apiserver_version().await.is_ok());
    assert!(client(&without_ca).apiserver_version().await.is_err());
}

#[tokio::test]
async fn app_credentials_rotate_without_restart_and_bad_content_keeps_the_last_good_client() {
    let (cp, app1) = cp_and_app("on-app-1").await;
    let app2 = server().await;
    create_namespace(&admin(&app2).await, "on-app-2").await;
    let cp_admin = admin(&cp).await;
    // An unrelated Secret in the same namespace, changed during the test: it must not matter.
    put_secret(&cp_admin, SECRET_NS, "unrelated", &[("kubeconfig", b"x")]).await;
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app1, ADMIN).as_bytes())],
    )
    .await;

    let topology = Topology::connect(cp_options(&cp)).await.unwrap();
    let mut events = topology.credential_events();
    let mut app = topology.app().clone();
    assert_eq!(app.generation(), 0);
    assert!(namespaces(&app).await.contains(&"on-app-1".to_owned()));

    // Rotate to a kubeconfig of another cluster.
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app2, ADMIN).as_bytes())],
    )
    .await;
    let swapped = tokio::time::timeout(WAIT, app.wait_for(|c| c.generation() >= 1))
        .await
        .expect("the app handle was not swapped");
    assert_eq!(swapped.server(), format!("{}/", app2.url()));
    let reloaded = next_event(&mut events, "Reloaded", |e| {
        matches!(e, CredentialEvent::Reloaded { .. })
    })
    .await;
    match reloaded {
        CredentialEvent::Reloaded {
            role,
            secret,
            generation,
            ..
        } => {
            assert_eq!(role, Role::App);
            assert_eq!(
                secret,
                SecretKeyRef::new(SECRET_NS, SECRET_NAME, "kubeconfig")
            );
            assert_eq!(generation, 1);
        }
        other => panic!("{other:?}"),
    }
    let ns = namespaces(topology.app()).await;
    assert!(ns.contains(&"on-app-2".to_owned()) && !ns.contains(&"on-app-1".to_owned()));

    // Garbage: rejected, the last good client keeps serving.
    put_secret(&cp_admin, SECRET_NS, "unrelated", &[("kubeconfig", b"y")]).await;
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", b"invalid-yaml-content")],
    )
    .await;
    let rejected = next_event(&mut events, "Rejected", |e| {
        matches!(e, CredentialEvent::Rejected { .. })
    })
    .await;
    match rejected {
        CredentialEvent::Rejected { role, reason, .. } => {
            assert_eq!(role, Role::App);
            assert_eq!(reason.metric_label(), "invalid_kubeconfig");
            assert!(!reason.to_string().contains("invalid-yaml-content"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(topology.app().generation(), 1);
    assert!(
        namespaces(topology.app())
            .await
            .contains(&"on-app-2".to_owned())
    );

    // Missing key, then a deleted Secret: both reported, still the last good client.
    put_secret(&cp_admin, SECRET_NS, SECRET_NAME, &[("other", b"x")]).await;
    let e = next_event(&mut events, "Rejected(missing key)", |e| {
        matches!(
            e,
            CredentialEvent::Rejected {
                reason: RejectReason::MissingKey(_),
                ..
            }
        )
    })
    .await;
    assert!(matches!(
        e,
        CredentialEvent::Rejected {
            role: Role::App,
            ..
        }
    ));
    let secrets: Api<Secret> = Api::namespaced(cp_admin.clone(), SECRET_NS);
    secrets
        .delete(SECRET_NAME, &Default::default())
        .await
        .unwrap();
    next_event(&mut events, "Rejected(secret not found)", |e| {
        matches!(
            e,
            CredentialEvent::Rejected {
                reason: RejectReason::SecretNotFound,
                ..
            }
        )
    })
    .await;
    assert_eq!(topology.app().generation(), 1);
    assert!(
        namespaces(topology.app())
            .await
            .contains(&"on-app-2".to_owned())
    );

    // Every request of the konnector to the control plane's Secrets stayed in that one
    // namespace, read-only, and a GET only ever named the app kubeconfig Secret.
    let requests: Vec<_> = cp
        .requests()
        .into_iter()
        .filter(|r| r.user == KONNECTOR)
        .collect();
    let secret_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.resource == "secrets")
        .collect();
    assert!(
        secret_requests.iter().any(|r| r.verb == "watch"),
        "{secret_requests:?}"
    );
    for r in &secret_requests {
        assert_eq!(r.namespace, SECRET_NS, "{r:?}");
        assert!(matches!(r.verb.as_str(), "get" | "list" | "watch"), "{r:?}");
        if r.verb == "get" {
            assert_eq!(r.name, SECRET_NAME, "{r:?}");
        }
    }
    assert!(requests.iter().all(|r| !r.is_write()), "{requests:?}");
    assert_eq!(konnector_writes(&app1), vec![]);
    assert_eq!(konnector_writes(&app2), vec![]);
}

#[tokio::test]
async fn rotation_to_unusable_credentials_is_rejected_then_recovers_when_fixed() {
    let cp = server().await;
    create_namespace(&admin(&cp).await, SECRET_NS).await;
    let app =
        TestApiServer::start(Options::default().user(User::new("second", &["system:masters"])))
            .await
            .unwrap();
    let cp_admin = admin(&cp).await;
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app, ADMIN).as_bytes())],
    )
    .await;
    let topology = Topology::connect(cp_options(&cp)).await.unwrap();
    let mut events = topology.credential_events();

    // A token the app server does not know: parses, but fails the reachability check.
    let revoked = kubeconfig(&app, ADMIN).replace(&app.token(ADMIN).unwrap(), "revoked-token");
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", revoked.as_bytes())],
    )
    .await;
    let e = next_event(&mut events, "Rejected(unreachable)", |e| {
        matches!(e, CredentialEvent::Rejected { .. })
    })
    .await;
    match e {
        CredentialEvent::Rejected { reason, .. } => {
            assert_eq!(reason.metric_label(), "unreachable", "{reason}");
            assert!(!reason.to_string().contains("revoked-token"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(topology.app().generation(), 0);
    assert!(topology.app().client().apiserver_version().await.is_ok());

    // A new, valid token (another user): taken into use.
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app, "second").as_bytes())],
    )
    .await;
    let mut handle = topology.app().clone();
    tokio::time::timeout(WAIT, handle.wait_for(|c| c.generation() == 1))
        .await
        .expect("no swap to the new token");
    let id_new = topology.app().current().endpoint("ns");
    let parsed_new = parse_kubeconfig(
        kubeconfig(&app, "second").as_bytes(),
        cluster_topology::NamespaceRequirement::Optional,
    )
    .unwrap();
    assert_eq!(id_new, parsed_new.endpoint("ns"));
    assert!(
        namespaces(topology.app())
            .await
            .contains(&"default".to_owned())
    );
    let seen_by_app: Vec<_> = app.requests().into_iter().map(|r| r.user).collect();
    assert!(seen_by_app.iter().any(|u| u == "second"), "{seen_by_app:?}");
}

#[tokio::test]
async fn default_mode_provider_from_a_secret_follows_rotation() {
    let app = server().await;
    let provider =
        TestApiServer::start(Options::default().user(User::new("p2", &["system:masters"])))
            .await
            .unwrap();
    let app_admin = admin(&app).await;
    create_namespace(&app_admin, "klutch-bind").await;
    let provider_kc = |user: &str, ns: &str| {
        kubeconfig(&provider, user).replace("namespace: default", &format!("namespace: {ns}"))
    };
    put_secret(
        &app_admin,
        "klutch-bind",
        "kubeconfig-abc",
        &[("kubeconfig", provider_kc(ADMIN, "kube-bind-p").as_bytes())],
    )
    .await;
    let topology = Topology::connect(TopologyOptions {
        kubeconfig: Some(write_temp(&kubeconfig(&app, KONNECTOR))),
        mode: Mode::Default,
        client: ClientOptions::default(),
    })
    .await
    .unwrap();
    let mut events = topology.credential_events();
    let secret_ref = SecretKeyRef::new("klutch-bind", "kubeconfig-abc", "kubeconfig");

    let conn = topology.provider(&secret_ref).await.unwrap();
    assert_eq!(conn.handle().role(), Role::Provider);
    assert_eq!(conn.namespace(), "kube-bind-p");
    let endpoint = conn.endpoint();
    // The session key computed from the Secret bytes alone matches the live connection's.
    let from_bytes = topology
        .provider_endpoint(provider_kc(ADMIN, "kube-bind-p").as_bytes())
        .unwrap();
    assert_eq!(from_bytes, endpoint);
    assert!(
        namespaces(conn.handle())
            .await
            .contains(&"kube-public".to_owned())
    );

    // A namespace-less provider kubeconfig is rejected (default mode requires it).
    put_secret(
        &app_admin,
        "klutch-bind",
        "kubeconfig-abc",
        &[(
            "kubeconfig",
            kubeconfig(&provider, ADMIN)
                .replace("    namespace: default\n", "")
                .as_bytes(),
        )],
    )
    .await;
    let e = next_event(&mut events, "Rejected(no namespace)", |e| {
        matches!(e, CredentialEvent::Rejected { .. })
    })
    .await;
    match e {
        CredentialEvent::Rejected { role, reason, .. } => {
            assert_eq!(role, Role::Provider);
            assert_eq!(
                reason.to_string(),
                "invalid kubeconfig: current context \"test\" has no namespace set"
            );
        }
        other => panic!("{other:?}"),
    }

    // Rotated token: swapped, and the endpoint identity changes with the credentials.
    put_secret(
        &app_admin,
        "klutch-bind",
        "kubeconfig-abc",
        &[("kubeconfig", provider_kc("p2", "kube-bind-p").as_bytes())],
    )
    .await;
    let mut handle = conn.handle().clone();
    tokio::time::timeout(WAIT, handle.wait_for(|c| c.generation() == 1))
        .await
        .expect("provider handle not swapped");
    let rotated = conn.endpoint();
    assert_eq!(rotated.namespace, "kube-bind-p");
    assert_ne!(rotated.id, endpoint.id);

    // Missing Secret at connect time is a Fetch error carrying the API server's message.
    let missing = SecretKeyRef::new("klutch-bind", "nope", "kubeconfig");
    let e = topology.provider(&missing).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to fetch kubeconfig secret klutch-bind/nope: secrets \"nope\" not found"
    );
    assert_eq!(konnector_writes(&app), vec![]);
}

#[tokio::test]
async fn control_plane_provider_is_the_control_plane_in_the_root_namespace() {
    let (cp, app) = cp_and_app("x").await;
    put_secret(
        &admin(&cp).await,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app, ADMIN).as_bytes())],
    )
    .await;
    let topology = Topology::connect(cp_options(&cp)).await.unwrap();
    // Two different binding Secrets (any kubeconfig content) map to the same provider endpoint.
    let a = topology
        .provider_endpoint(kubeconfig(&app, ADMIN).as_bytes())
        .unwrap();
    let b = topology
        .provider_endpoint(kubeconfig(&cp, ADMIN).as_bytes())
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.namespace, ROOT_NS);
    let conn = topology
        .provider(&SecretKeyRef::new(ROOT_NS, "whatever", "kubeconfig"))
        .await
        .unwrap();
    assert_eq!(conn.namespace(), ROOT_NS);
    assert_eq!(conn.endpoint(), a);
    assert_eq!(conn.handle().current().server(), format!("{}/", cp.url()));
    // Garbage still fails validation.
    assert!(topology.provider_endpoint(b"invalid-yaml-content").is_err());
}

/// test-apiserver does not record headers, so a one-shot HTTP listener captures the request a
/// client built from a Secret's kubeconfig sends.
#[tokio::test]
async fn clients_send_user_agent_konnector_and_the_bearer_token() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = format!(
        "clusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: tok-123\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    );
    let parsed = parse_kubeconfig(
        text.as_bytes(),
        cluster_topology::NamespaceRequirement::Optional,
    )
    .unwrap();
    let client = build_client(parsed.config).unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the headers ended");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = br#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(body).await.unwrap();
        String::from_utf8_lossy(&buf).to_lowercase()
    });
    let version = tokio::time::timeout(WAIT, client.apiserver_version())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version.minor, "33");
    let request = server.await.unwrap();
    assert!(request.starts_with("get /version "), "{request}");
    assert!(
        request.contains("\r\nuser-agent: konnector\r\n"),
        "{request}"
    );
    assert!(
        request.contains("\r\nauthorization: bearer tok-123\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn a_new_kubeconfig_for_a_server_that_is_down_is_taken_once_the_server_is_back() {
    let (cp, app1) = cp_and_app("on-app-1").await;
    let mut app2 = server().await;
    create_namespace(&admin(&app2).await, "on-app-2").await;
    let cp_admin = admin(&cp).await;
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app1, ADMIN).as_bytes())],
    )
    .await;
    let topology = Topology::connect(cp_options(&cp)).await.unwrap();
    let mut events = topology.credential_events();

    app2.stop().await;
    put_secret(
        &cp_admin,
        SECRET_NS,
        SECRET_NAME,
        &[("kubeconfig", kubeconfig(&app2, ADMIN).as_bytes())],
    )
    .await;
    let e = next_event(&mut events, "Rejected(unreachable)", |e| {
        matches!(e, CredentialEvent::Rejected { .. })
    })
    .await;
    assert!(
        matches!(&e, CredentialEvent::Rejected { reason, .. } if reason.metric_label() == "unreachable"),
        "{e:?}"
    );
    assert!(
        namespaces(topology.app())
            .await
            .contains(&"on-app-1".to_owned())
    );

    // No further Secret change: the watch re-checks the pending kubeconfig with backoff.
    app2.restart().await.unwrap();
    let mut handle = topology.app().clone();
    let swapped = tokio::time::timeout(WAIT, handle.wait_for(|c| c.generation() == 1))
        .await
        .expect("pending kubeconfig was never taken into use");
    assert_eq!(swapped.server(), format!("{}/", app2.url()));
    next_event(&mut events, "Reloaded", |e| {
        matches!(
            e,
            CredentialEvent::Reloaded {
                role: Role::App,
                generation: 1,
                ..
            }
        )
    })
    .await;
    assert!(
        namespaces(topology.app())
            .await
            .contains(&"on-app-2".to_owned())
    );
}

/// The updater can be driven by a caller's own Secret informer; each observation is judged once.
#[tokio::test]
async fn credential_updater_judges_each_observed_state_once() {
    use cluster_topology::{ClusterHandle, CredentialUpdater, connect_kubeconfig};
    let app1 = server().await;
    let app2 = server().await;
    let first = connect_kubeconfig(
        kubeconfig(&app1, ADMIN).as_bytes(),
        cluster_topology::NamespaceRequirement::Optional,
    )
    .unwrap();
    let handle = ClusterHandle::new(Role::App, first);
    let (events, mut rx) = broadcast::channel(16);
    let secret_ref = SecretKeyRef::new("ns", "s", "kubeconfig");
    let mut updater = CredentialUpdater::new(
        &handle,
        secret_ref.clone(),
        cluster_topology::NamespaceRequirement::Optional,
        events,
    );
    let with = |text: &[u8]| secret("s", &[("kubeconfig", text)]);

    // The content the handle was built from: nothing to do.
    assert_eq!(
        updater
            .observe(Some(&with(kubeconfig(&app1, ADMIN).as_bytes())))
            .await,
        None
    );
    let to_app2 = with(kubeconfig(&app2, ADMIN).as_bytes());
    let e = updater.observe(Some(&to_app2)).await;
    assert!(
        matches!(&e, Some(CredentialEvent::Reloaded { role: Role::App, generation: 1, secret, .. }) if *secret == secret_ref),
        "{e:?}"
    );
    assert_eq!(rx.try_recv().ok(), e);
    assert_eq!(handle.current().server(), format!("{}/", app2.url()));
    // A re-list delivering the same object again changes nothing.
    assert_eq!(updater.observe(Some(&to_app2)).await, None);

    let e = updater.observe(Some(&with(b"invalid-yaml-content"))).await;
    assert!(
        matches!(
            &e,
            Some(CredentialEvent::Rejected {
                reason: RejectReason::Invalid(_),
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(
        updater.observe(Some(&with(b"invalid-yaml-content"))).await,
        None
    );
    let e = updater.observe(None).await;
    assert!(
        matches!(
            &e,
            Some(CredentialEvent::Rejected {
                reason: RejectReason::SecretNotFound,
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(updater.observe(None).await, None);
    // Restored with the content in use: no swap, no report.
    assert_eq!(updater.observe(Some(&to_app2)).await, None);
    assert_eq!(handle.generation(), 1);
    assert_eq!(updater.next_retry(), None);
    assert!(handle.client().apiserver_version().await.is_ok());
}

/// A handle's clients share one health across credential rotations: the rotated client reports
/// to the health the handle had from the start.
#[tokio::test]
async fn rotated_clients_report_to_the_handles_one_health() {
    use cluster_topology::{
        ClientHealth, ClusterHandle, CredentialUpdater, connect_kubeconfig_with_health,
    };
    let app1 = server().await;
    let app2 = server().await;
    let health = ClientHealth::new(ClientOptions::default().with_label("app"));
    let first = connect_kubeconfig_with_health(
        kubeconfig(&app1, ADMIN).as_bytes(),
        cluster_topology::NamespaceRequirement::Optional,
        &health,
    )
    .unwrap();
    let handle = ClusterHandle::with_health(Role::App, first, health.clone());
    assert!(handle.health().same(&health));
    assert!(handle.for_role(Role::Binding).health().same(&health));
    namespaces(&handle).await;
    let before = health.stats().requests;
    assert!(before >= 1);

    let (events, _rx) = broadcast::channel(16);
    let mut updater = CredentialUpdater::new(
        &handle,
        SecretKeyRef::new("ns", "s", "kubeconfig"),
        cluster_topology::NamespaceRequirement::Optional,
        events,
    );
    let e = updater
        .observe(Some(&secret(
            "s",
            &[("kubeconfig", kubeconfig(&app2, ADMIN).as_bytes())],
        )))
        .await;
    assert!(matches!(e, Some(CredentialEvent::Reloaded { .. })), "{e:?}");
    // The verification request went through a client of its own ...
    assert_eq!(health.stats().requests, before);
    // ... the swapped-in client through the shared one.
    namespaces(&handle).await;
    assert_eq!(health.stats().requests, before + 1);
    assert!(handle.health().same(&health));
}
