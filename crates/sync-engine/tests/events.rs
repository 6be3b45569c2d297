//! The Event recorder (`runtime::events::EventSink`) against `test-apiserver` and against a real
//! kube-apiserver (skipped with `real control plane not found: ...` without the binaries): a
//! repeated event is one Event with a series count; 100 distinct failures of one object write
//! at most the spam filter's burst of 25 (nine Events, one combined Event and its series
//! updates); the Events read back through core `v1` (as `kubectl describe` reads them, selected
//! by the object's uid) and through `kubectl describe` itself when `/usr/bin/kubectl` exists; a
//! note carrying a token is stored redacted. The real server validates every Event the
//! recorder writes (required fields, name, namespace, note size, series).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{client, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace};
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{Api, ListParams, PostParams};
use kube_control_plane::{Binaries, ControlPlane};
use sync_engine::runtime::Cluster;
use sync_engine::runtime::events::{EventSink, EventType};
use sync_engine::runtime::leadership::Leadership;
use test_apiserver::{ADMIN, Options, TestApiServer};

const NS: &str = "events-test";
const KUBECTL: &str = "/usr/bin/kubectl";

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
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
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
