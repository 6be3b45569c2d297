//! End to end, on a real control plane only: what `test-apiserver` cannot show. A watch that
//! resumes after etcd compaction (`410 Gone`, relist), and a kube-apiserver restarted in the
//! middle of a sync (same etcd). Each ends with the same check: every app-cluster object exists
//! exactly once on the provider with the right spec, the binding is Ready, the process alive.
//! Without the binaries, each test says `real control plane not found: ...` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::steps::{exists, mango, start, step};
use e2e::world::{Mode, World};
use e2e::{Backend, ClusterOptions, Konnector};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::params::VersionMatch;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

/// `name -> spec` of every instance in `api`'s namespace.
async fn specs(api: &Api<DynamicObject>) -> BTreeMap<String, serde_json::Value> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| (o.metadata.name.unwrap_or_default(), o.data["spec"].clone()))
        .collect()
}

/// Waits until the provider holds exactly the app cluster's instances of namespace `default`,
/// with the same specs, and the binding is Ready; the konnector is still running.
async fn converged(w: &World, k: &mut Konnector) {
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    step(
        k,
        "provider holds exactly the app cluster's instances",
        || async {
            let (d, u) = (specs(&down).await, specs(&up).await);
            !d.is_empty() && d == u
        },
    )
    .await;
    step(k, "binding Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    assert!(k.is_running(), "the konnector exited:\n{}", k.stderr());
}

/// The app cluster's API server crashes under a frozen konnector and comes back; by the time
/// the konnector runs again, etcd has compacted the revisions its watches had reached. The
/// konnector must relist (a watch ended before its timeout is never resumed; one resumed from a
/// compacted revision gets `410 Gone`, covered in sync-engine's `real_watch` test): changes,
/// creations and deletions made meanwhile all arrive, nothing twice. The app cluster runs
/// without the watch cache (with it, kube-apiserver keeps serving compacted revisions from
/// memory for a while) and compacts every 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_apiserver_crash_past_etcd_compaction_relists_and_loses_nothing() {
    let Some(backend) = Backend::real() else {
        return;
    };
    let app = ClusterOptions {
        real: e2e::kube_control_plane::Options::default()
            .watch_cache(false)
            .etcd_compaction_interval(Duration::from_secs(2)),
        ..Default::default()
    };
    let w = World::isolated(backend, Mode::ControlPlane, &[], app)
        .await
        .unwrap();
    let mut k = start(BIN, &w).await;
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let down = w.downstream("default");
    for i in 0..5 {
        down.create(&PostParams::default(), &mango(&format!("db-{i}"), None))
            .await
            .unwrap();
    }
    converged(&w, &mut k).await;

    // Freeze the konnector, crash and restart the app cluster's API server under it, change
    // things, and wait until etcd has compacted past the konnector's revisions.
    let before = down
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    k.pause().await.unwrap();
    let real = w.app.real().unwrap();
    real.kill_apiserver().await.unwrap();
    real.start_apiserver().await.unwrap();
    down.patch(
        "db-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
    )
    .await
    .unwrap();
    down.delete("db-1", &DeleteParams::default()).await.unwrap();
    for i in 5..8 {
        down.create(&PostParams::default(), &mango(&format!("db-{i}"), None))
            .await
            .unwrap();
    }
    e2e::wait_until(
        "etcd compacted past the konnector's revision",
        Duration::from_secs(60),
        || async {
            let exact = ListParams::default()
                .at(&before)
                .matching(VersionMatch::Exact);
            matches!(down.list(&exact).await, Err(kube::Error::Api(s)) if s.code == 410)
        },
    )
    .await
    .unwrap();
    k.resume().await.unwrap();

    let up = w.upstream("default");
    step(&k, "db-1's deletion reached the provider", || async {
        !exists(&up, "db-1").await
    })
    .await;
    converged(&w, &mut k).await;
    assert_eq!(
        specs(&up).await.get("db-0"),
        Some(&json!({"tier": "Dedicated"}))
    );
    assert!(
        k.stderr().contains("relisting"),
        "the konnector should have relisted:\n{}",
        k.stderr()
    );
}

/// The provider's API server goes away in the middle of a sync of 40 instances and comes back
/// on the same etcd after the rest were created: nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_apiserver_restart_mid_sync_loses_nothing() {
    let Some(backend) = Backend::real() else {
        return;
    };
    // Its API server is restarted: a provider of its own.
    let w = World::isolated(backend, Mode::Default, &[], Default::default())
        .await
        .unwrap();
    let mut k = start(BIN, &w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready and Connected", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let down = w.downstream("default");
    for i in 0..20 {
        down.create(&PostParams::default(), &mango(&format!("db-{i}"), None))
            .await
            .unwrap();
    }
    let real = w.provider.real().unwrap();
    real.stop_apiserver().await.unwrap();
    for i in 20..40 {
        down.create(&PostParams::default(), &mango(&format!("db-{i}"), None))
            .await
            .unwrap();
    }
    down.patch(
        "db-3",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
    )
    .await
    .unwrap();
    real.start_apiserver().await.unwrap();
    converged(&w, &mut k).await;
    let up = specs(&w.upstream("default")).await;
    assert_eq!(up.len(), 40);
    assert_eq!(up.get("db-3"), Some(&json!({"tier": "Dedicated"})));
}
