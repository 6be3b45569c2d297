//! A shared watch on a real kube-apiserver whose etcd compacts every 2 s: a watch resumed from a
//! compacted resourceVersion gets `410 Gone`, and the watch relists instead of losing what
//! changed. `test-apiserver` answers 410 too, but only the real server decides when a revision
//! is gone. Skips (with `real control plane not found: ...`) without the binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ApiResource, PostParams};
use kube_control_plane::{Binaries, ControlPlane, Options};
use sync_engine::metrics::RelistLabels;
use sync_engine::runtime::watch::Change;
use sync_engine::runtime::{Cluster, Scope, WatchHub};

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_from_a_compacted_revision_relists() {
    if let Err(e) = Binaries::find() {
        eprintln!("real control plane not found: {e}");
        return;
    }
    // No watch cache: with it, kube-apiserver keeps serving compacted revisions from memory.
    let cp = ControlPlane::start(
        Options::default()
            .name("real-watch")
            .controller_manager(false)
            .watch_cache(false)
            .etcd_compaction_interval(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let client = cp.admin_client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["watched", "busy"] {
        let n = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces.create(&PostParams::default(), &n).await.unwrap();
    }
    let watched: Api<ConfigMap> = Api::namespaced(client.clone(), "watched");
    let busy: Api<ConfigMap> = Api::namespaced(client.clone(), "busy");
    watched
        .create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();

    // Each watch request ends after 6 s and is then resumed from the last revision it saw.
    let timeout = Duration::from_secs(6);
    let hub = WatchHub::new().with_watch_timeout(timeout);
    let watch = hub.watch(
        "real",
        &Cluster::Fixed(client.clone()),
        &ApiResource::erase::<ConfigMap>(&()),
        Scope::Namespace("watched".into()),
        None,
    );
    watch.ready().await;
    let mut changes = watch.subscribe();
    let listed = Instant::now();
    assert!(watch.get(Some("watched"), "a").is_some());

    // Nothing happens in the watched namespace while revisions move on elsewhere and etcd
    // compacts them: the revision the watch will resume from is gone by then.
    let deadline = listed + timeout + Duration::from_secs(20);
    let mut i = 0;
    let relisted = loop {
        assert!(
            Instant::now() < deadline,
            "no relist after the watch timeout"
        );
        busy.create(&PostParams::default(), &config_map(&format!("cm-{i}")))
            .await
            .unwrap();
        i += 1;
        match tokio::time::timeout(Duration::from_millis(200), changes.recv()).await {
            Ok(Ok(Change::Resync)) => break Instant::now(),
            Ok(Ok(other)) => panic!("unexpected change in the watched namespace: {other:?}"),
            Ok(Err(e)) => panic!("change channel: {e}"),
            Err(_) => {}
        }
    };
    // Not an early end (the server kept the stream for the whole timeout): the resume got 410.
    assert!(
        relisted.duration_since(listed) >= timeout - Duration::from_millis(500),
        "relisted after {:?}, before the watch timeout",
        relisted.duration_since(listed)
    );
    // And the watch goes on from the new list: a change is seen, once.
    watched
        .create(&PostParams::default(), &config_map("b"))
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        change,
        Change::Object {
            namespace: Some("watched".into()),
            name: "b".into()
        }
    );
    assert_eq!(watch.list().len(), 2);
    let gone = hub
        .metrics()
        .watch_relists
        .get_or_create(&RelistLabels {
            cluster: "real".into(),
            resource: "/v1/configmaps".into(),
            reason: "gone".into(),
        })
        .get();
    assert_eq!(gone, 1, "konnector_watch_relists{{reason=\"gone\"}}");
}
