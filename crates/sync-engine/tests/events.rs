//! The Event recorder (`runtime::events::EventSink`) against `test-apiserver` and against a real
//! kube-apiserver (skipped with `real control plane not found: ...` without the binaries): a
//! repeated event is one Event with a series count; 100 distinct failures of one object write
//! at most the spam filter's burst of 25 (nine Events, one combined Event and its series
//! updates); the Events read back through core `v1` (as `kubectl describe` reads them, selected
//! by the object's uid) and through `kubectl describe` itself when `/usr/bin/kubectl` exists; a
//! note carrying a token is stored redacted. The real server validates every Event the
//! recorder writes (required fields, name, namespace, note size, series).
//!
//! And what a `WatchForbidden` Event reports: a shared watch the server refuses (403) exposes
//! the server's error, counts it, backs off by seconds and recovers once RBAC allows it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{client, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace};
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube_control_plane::{Binaries, ControlPlane};
use serde_json::json;
use sync_engine::metrics::RelistLabels;
use sync_engine::runtime::events::{EventSink, EventType};
use sync_engine::runtime::leadership::Leadership;
use sync_engine::runtime::{Cluster, Scope, WatchHub};
use test_apiserver::{ADMIN, Options, TestApiServer, User};

const NS: &str = "events-test";
const KUBECTL: &str = "/usr/bin/kubectl";

async fn create_namespace(client: &kube::Client) {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn config_map(client: &kube::Client, name: &str) -> ConfigMap {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await.unwrap()
}

/// The Events about `obj`, as `kubectl describe` selects them (core v1, by uid).
async fn core_events(client: &kube::Client, obj: &ConfigMap) -> Vec<CoreEvent> {
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), NS);
    let selector = format!(
        "involvedObject.name={},involvedObject.namespace={NS},involvedObject.kind=ConfigMap,involvedObject.uid={}",
        obj.metadata.name.as_deref().unwrap(),
        obj.metadata.uid.as_deref().unwrap()
    );
    api.list(&ListParams::default().fields(&selector))
        .await
        .unwrap()
        .items
}

/// The `events.k8s.io/v1` Events about `obj`.
async fn events(client: &kube::Client, obj: &ConfigMap) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    let selector = format!(
        "regarding.name={},regarding.uid={}",
        obj.metadata.name.as_deref().unwrap(),
        obj.metadata.uid.as_deref().unwrap()
    );
    api.list(&ListParams::default().fields(&selector))
        .await
        .unwrap()
        .items
}

fn series_count(e: &Event) -> i32 {
    e.series.as_ref().map_or(1, |s| s.count)
}

async fn scenario(client: kube::Client, kubeconfig: &Path) {
    create_namespace(&client).await;
    let target = config_map(&client, "target").await;
    let flood = config_map(&client, "flood").await;
    let sink = EventSink::start(Cluster::Fixed(client.clone()), Leadership::always());

    // A repeated event: one Event, counted five times.
    for _ in 0..5 {
        sink.resource(
            &target,
            EventType::Warning,
            "SyncFailed",
            "Sync",
            "cannot be synced: boom",
        );
    }
    let event = wait_for("one SyncFailed Event counted five times", || async {
        let found = events(&client, &target).await;
        match found.as_slice() {
            [e] if series_count(e) == 5 => Some(e.clone()),
            _ => None,
        }
    })
    .await;
    assert_eq!(event.reason.as_deref(), Some("SyncFailed"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.action.as_deref(), Some("Sync"));
    assert_eq!(event.note.as_deref(), Some("cannot be synced: boom"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("klutch.anynines.com/konnector")
    );
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.uid.clone()),
        target.metadata.uid
    );
    let stats = sink.stats();
    assert_eq!((stats.created, stats.patched), (1, 4), "{stats:?}");

    // Read as `kubectl describe` does: core v1, selected by the object's uid.
    let core = core_events(&client, &target).await;
    assert_eq!(core.len(), 1, "{core:#?}");
    assert_eq!(core[0].reason.as_deref(), Some("SyncFailed"));
    assert_eq!(core[0].message.as_deref(), Some("cannot be synced: boom"));
    assert_eq!(core[0].series.as_ref().and_then(|s| s.count), Some(5));

    // 100 distinct failures of one object: at most 25 writes.
    let flood_sink = EventSink::start(Cluster::Fixed(client.clone()), Leadership::always());
    for i in 0..100 {
        flood_sink.resource(
            &flood,
            EventType::Warning,
            "SyncFailed",
            "Sync",
            format!("cannot be synced: error {i}"),
        );
    }
    wait_for("all 100 events handled", || async {
        let s = flood_sink.stats();
        (s.created + s.patched + s.dropped_spam + s.failed == 100).then_some(())
    })
    .await;
    let stats = flood_sink.stats();
    assert_eq!(stats.created + stats.patched, 25, "{stats:?}");
    assert_eq!((stats.dropped_spam, stats.failed), (75, 0), "{stats:?}");
    let written = events(&client, &flood).await;
    assert_eq!(
        written.len(),
        10,
        "nine Events and one combined: {written:#?}"
    );
    let combined: Vec<&Event> = written
        .iter()
        .filter(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.starts_with("(combined from similar events): "))
        })
        .collect();
    assert_eq!(combined.len(), 1, "{written:#?}");
    assert_eq!(
        combined[0].note.as_deref(),
        Some("(combined from similar events): cannot be synced: error 9")
    );
    // Its series counts the 16 writes that got through (the tenth event and 15 more).
    assert_eq!(series_count(combined[0]), 16);

    // A note with credentials in it is stored redacted.
    let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQzEyMyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlMTIzNDU2Nzg5MEFCQ0RFRg";
    sink.resource(
        &target,
        EventType::Warning,
        "CredentialRejected",
        "ReloadCredentials",
        format!("request with Authorization: Bearer {jwt} failed; kubeconfig had token: abc123 and password=hunter2"),
    );
    let redacted = wait_for("the redacted Event", || async {
        events(&client, &target)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("CredentialRejected"))
    })
    .await;
    let note = redacted.note.unwrap_or_default();
    for secret in [jwt, "abc123", "hunter2"] {
        assert!(!note.contains(secret), "{secret} in {note:?}");
    }
    assert_eq!(
        note,
        "request with Authorization: Bearer [redacted] failed; kubeconfig had token: [redacted] and password=[redacted]"
    );

    // `kubectl describe` shows them under the object.
    if Path::new(KUBECTL).exists() {
        let out = tokio::process::Command::new(KUBECTL)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["describe", "configmap", "target", "-n", NS])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl describe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for expected in ["SyncFailed", "cannot be synced: boom", "CredentialRejected"] {
            assert!(stdout.contains(expected), "{expected} not in\n{stdout}");
        }
    }
    // The object reference works for other kinds too.
    assert_eq!(
        target.object_ref(&()).uid,
        target.metadata.uid,
        "events regard objects by uid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_test_apiserver() {
    // TLS: kubectl sends its token over https only.
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let admin = client(&server, ADMIN).await;
    let dir = std::env::temp_dir().join(format!("konnector-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig(ADMIN).unwrap()).unwrap();
    scenario(admin, &kubeconfig).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the engine reports before this replica holds the lease (its first observations come
/// a moment before the lease is taken, and each is reported once) is written when it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_before_leading_are_written_once_leading() {
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let admin = client(&server, ADMIN).await;
    create_namespace(&admin).await;
    let target = config_map(&admin, "early").await;
    let (leading, rx) = tokio::sync::watch::channel(None);
    let sink = EventSink::start(
        Cluster::Fixed(admin.clone()),
        Leadership::from_deadlines(rx),
    );
    sink.resource(
        &target,
        EventType::Warning,
        "SecretInvalid",
        "ReadSecret",
        "early",
    );
    // Not leading: nothing is written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events(&admin, &target).await.is_empty());
    leading.send_replace(Some(Instant::now() + Duration::from_secs(60)));
    wait_for("the held event written once leading", || async {
        (events(&admin, &target).await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(sink.stats().created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_a_real_kube_apiserver() {
    if let Err(e) = Binaries::find() {
        eprintln!("real control plane not found: {e}");
        return;
    }
    let cp = ControlPlane::start(
        kube_control_plane::Options::default()
            .name("events")
            .controller_manager(false),
    )
    .await
    .unwrap();
    let admin = cp.admin_client().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(120),
        scenario(admin, &cp.admin_kubeconfig_path()),
    )
    .await
    .unwrap();
}

async fn grant_config_maps(admin: &kube::Client, user: &str) {
    let rbac = |kind: &str| ApiResource {
        group: "rbac.authorization.k8s.io".into(),
        version: "v1".into(),
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    for (kind, obj) in [
        (
            "Role",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "read-config-maps"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}),
        ),
        (
            "RoleBinding",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "read-config-maps"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config-maps"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        ),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), NS, &rbac(kind));
        api.patch(
            "read-config-maps",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_watch_exposes_the_servers_error_backs_off_and_recovers() {
    let server = TestApiServer::start(
        Options::default()
            .http()
            .rbac()
            .user(User::new("nobody", &[])),
    )
    .await
    .unwrap();
    let admin = client(&server, ADMIN).await;
    let nobody = client(&server, "nobody").await;
    create_namespace(&admin).await;

    let hub = WatchHub::new();
    let started = Instant::now();
    let watch = hub.watch(
        "app",
        &Cluster::Fixed(nobody),
        &ApiResource::erase::<ConfigMap>(&()),
        Scope::Namespace(NS.into()),
        None,
    );
    // Three refused attempts: exposed with the server's answer, seconds apart.
    let mut errors = watch.errors();
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        errors.wait_for(|e| e.as_ref().is_some_and(|e| e.attempts >= 3)),
    )
    .await
    .expect("three refused attempts")
    .unwrap()
    .clone()
    .unwrap();
    let elapsed = started.elapsed();
    assert!(error.is_denied());
    assert_eq!(
        (error.code, error.reason.as_str()),
        (Some(403), "Forbidden")
    );
    assert!(
        error.message.contains(&format!(
            "User \"nobody\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"{NS}\""
        )),
        "{}",
        error.message
    );
    assert_eq!(error.request, "list");
    // 1 s, then 2 s (each at least three quarters of that): not the 200 ms of a transient
    // failure.
    assert!(
        elapsed >= Duration::from_millis(2200),
        "three attempts within {elapsed:?}"
    );
    assert!(!watch.is_ready());
    assert_eq!(watch.last_error().map(|e| e.code), Some(Some(403)));
    let forbidden = hub
        .metrics()
        .watch_relists
        .get_or_create(&RelistLabels {
            cluster: "app".into(),
            resource: "/v1/configmaps".into(),
            reason: "forbidden".into(),
        })
        .get();
    assert!(forbidden >= 3, "{forbidden} forbidden relists counted");
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.user == "nobody" && r.resource == "configmaps")
        .count();
    assert!((3..=4).contains(&lists), "{lists} requests");

    // Allowed now: the next attempt lists, the error is gone.
    grant_config_maps(&admin, "nobody").await;
    tokio::time::timeout(Duration::from_secs(20), watch.ready())
        .await
        .expect("the watch lists once allowed");
    assert_eq!(watch.last_error(), None);
}
