//! End to end: the servers fail and the konnector keeps every object (issue 9's fault suite).
//! Each scenario ends with the same check ([`e2e::steps::converged`]): every app-cluster
//! instance exists exactly once on the provider with its spec, every provider status is back
//! in the app cluster, the binding is `Ready=True` again, and the process is alive.
//!
//! Timings are printed (`fault: ...` lines); the bounds asserted are the goals with
//! room for a loaded 2-core machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::proxy::ProxyMode;
use e2e::steps::{mango, step, tail, wait_converged};
use e2e::world::{Mode, World, WorldOptions};
use e2e::{Backend, ClusterOptions, Konnector};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

/// How long a convergence after a fault may take at most before the scenario fails. The goal
/// is 10 s after the server is back; the rest is room for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(30);

/// Creates `names` in `api`, 16 at a time.
async fn create_all(api: &Api<DynamicObject>, names: impl IntoIterator<Item = String>) {
    let names: Vec<String> = names.into_iter().collect();
    for chunk in names.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for name in chunk {
            let api = api.clone();
            let obj = mango(name, Some("Shared"));
            set.spawn(async move { api.create(&PostParams::default(), &obj).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    }
}

/// Merge-patches each of `names` in `api` (the status subresource when `status`), tolerating
/// objects that do not exist yet upstream.
async fn patch_all(
    api: &Api<DynamicObject>,
    names: &[String],
    patch: serde_json::Value,
    status: bool,
) {
    for chunk in names.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for name in chunk {
            let (api, name, patch) = (api.clone(), name.clone(), patch.clone());
            set.spawn(async move {
                let pp = PatchParams::default();
                if status {
                    api.patch_status(&name, &pp, &Patch::Merge(&patch)).await
                } else {
                    api.patch(&name, &pp, &Patch::Merge(&patch)).await
                }
            });
        }
        while let Some(r) = set.join_next().await {
            let _ = r.unwrap();
        }
    }
}

/// Changes both sides while the konnector cannot act: `new` created in the app cluster, the
/// spec of the first half of `existing` changed there, the status of the other half set on the
/// provider.
async fn change_both_sides(
    down: &Api<DynamicObject>,
    up: &Api<DynamicObject>,
    new: Vec<String>,
    existing: &[String],
) {
    create_all(down, new).await;
    let half = existing.len() / 2;
    patch_all(
        down,
        &existing[..half],
        json!({"spec": {"tier": "Dedicated"}}),
        false,
    )
    .await;
    patch_all(
        up,
        &existing[half..],
        json!({"status": {"phase": "Ready"}}),
        true,
    )
    .await;
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

async fn bound(options: WorldOptions, backend: Backend, mode: Mode) -> (World, Konnector) {
    let w = World::build(backend, mode, options).await.unwrap();
    let k = e2e::steps::start(BIN, &w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    (w, k)
}

/// The konnector's remote cluster (the provider in default mode, the app cluster in
/// control-plane mode) is unreachable for 30 s while both sides change: the binding says so
/// within the heartbeat interval (in seconds, not minutes) with the error, and everything
/// converges soon after the cluster is back.
async fn remote_unreachable(backend: Backend, mode: Mode, how: ProxyMode) {
    let options = WorldOptions {
        proxy_remote: true,
        ..WorldOptions::default()
    };
    let (w, mut k) = bound(options, backend, mode).await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    let before = names("before", 20);
    create_all(&down, before.clone()).await;
    wait_converged(&k, &w, "default", CONVERGE).await;

    let cut = Instant::now();
    w.proxy.as_ref().unwrap().set(how);
    let (reason, heartbeat) = match mode {
        Mode::Default => ("ProviderUnreachable", true),
        Mode::ControlPlane => ("AppClusterUnreachable", false),
    };
    let connected_false = || async {
        w.binding_condition("Connected").await.is_some_and(|c| {
            c["status"] == "False"
                && c["reason"] == reason
                && c["message"].as_str().is_some_and(|m| m.len() > 40)
        })
    };
    if let Err(e) = e2e::wait_until(
        "binding says the cluster is unreachable",
        Duration::from_secs(30),
        connected_false,
    )
    .await
    {
        panic!(
            "{e}: {:?}\n--- konnector stderr ---\n{}",
            w.binding_condition("Connected").await,
            tail(&k.stderr())
        );
    }
    let detected = cut.elapsed();
    if heartbeat {
        let hb = w.binding_condition("Heartbeating").await.unwrap();
        assert_eq!(hb["status"], "False", "{hb}");
        assert_eq!(hb["reason"], "ClusterBindingUpdateFailed", "{hb}");
    }
    let ready = w.binding_condition("Ready").await.unwrap();
    assert_eq!(ready["status"], "False", "{ready}");

    // Both sides change during the outage.
    change_both_sides(&down, &up, names("during", 10), &before).await;
    let outage = Duration::from_secs(30);
    tokio::time::sleep(outage.saturating_sub(cut.elapsed())).await;

    w.proxy.as_ref().unwrap().set(ProxyMode::Pass);
    let took = wait_converged(&k, &w, "default", CONVERGE).await;
    println!(
        "fault: {mode:?} {how:?} remote for {:?}: reported after {detected:?}, converged {took:?} after it was back",
        cut.elapsed() - took
    );
    assert!(
        took <= Duration::from_secs(15),
        "converged {took:?} after the cluster was back (goal 10 s)\n{}",
        tail(&k.stderr())
    );
    assert!(k.is_running());
    let stderr = k.stderr();
    let noisy: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let mut by_message: std::collections::BTreeMap<String, usize> = Default::default();
    for l in &noisy {
        // The message is the text after the target, before the fields.
        let key: String = l
            .split_whitespace()
            .skip(2)
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        *by_message.entry(key).or_default() += 1;
    }
    println!(
        "fault: {} warning or error log lines in all: {by_message:?}",
        noisy.len()
    );
}

async fn provider_unreachable(backend: Backend) {
    remote_unreachable(backend, Mode::Default, ProxyMode::Refuse).await
}

async fn provider_blackholed(backend: Backend) {
    remote_unreachable(backend, Mode::Default, ProxyMode::Blackhole).await
}

async fn app_cluster_unreachable(backend: Backend) {
    remote_unreachable(backend, Mode::ControlPlane, ProxyMode::Refuse).await
}

e2e::on_both_backends!(
    provider_unreachable,
    provider_blackholed,
    app_cluster_unreachable
);

/// Which API server a scenario kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Provider,
    App,
}

/// A real API server is killed in the middle of a 250-object sync and stays down for 10 s
/// while objects are created and changed on the other side, then comes back on the same etcd.
async fn apiserver_killed(backend: Backend, victim: Victim) {
    let options = WorldOptions {
        provider: Some(ClusterOptions::default()),
        ..WorldOptions::default()
    };
    let (w, mut k) = bound(options, backend, Mode::Default).await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    let burst = names("burst", 250);
    let creating = {
        let down = down.clone();
        let burst = burst.clone();
        tokio::spawn(async move { create_all(&down, burst).await })
    };
    // Kill once some of the burst is upstream.
    step(&k, "part of the burst upstream", || async {
        up.list_metadata(&Default::default())
            .await
            .is_ok_and(|l| l.items.len() >= 20)
    })
    .await;
    let plane = match victim {
        Victim::Provider => w.provider.real(),
        Victim::App => w.app.real(),
    }
    .expect("a real control plane");
    plane.kill_apiserver().await.unwrap();
    let killed = Instant::now();
    // The other side changes while the server is down.
    match victim {
        Victim::Provider => {
            creating.await.unwrap();
            patch_all(
                &down,
                &burst[..50],
                json!({"spec": {"tier": "Dedicated"}}),
                false,
            )
            .await;
        }
        Victim::App => {
            creating.abort(); // The app server is gone: its creates fail.
            let synced: Vec<String> = up
                .list_metadata(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect();
            patch_all(&up, &synced, json!({"status": {"phase": "Ready"}}), true).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed())).await;
    plane.start_apiserver().await.unwrap();
    let back = Instant::now();
    if matches!(victim, Victim::App) {
        // The creates that failed while it was down.
        let existing: std::collections::BTreeSet<String> = down
            .list_metadata(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect();
        create_all(
            &down,
            burst.iter().filter(|n| !existing.contains(*n)).cloned(),
        )
        .await;
    }
    let took = wait_converged(&k, &w, "default", CONVERGE).await;
    let count = down
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, 250);
    println!(
        "fault: {victim:?} API server killed for 10 s in a 250-object sync: converged {took:?} after it was back ({:?} after the restart began)",
        back.elapsed()
    );
    assert!(k.is_running());
}

async fn provider_apiserver_killed(backend: Backend) {
    if backend == Backend::Real {
        apiserver_killed(backend, Victim::Provider).await
    }
}

async fn app_apiserver_killed(backend: Backend) {
    if backend == Backend::Real {
        apiserver_killed(backend, Victim::App).await
    }
}

e2e::on_both_backends!(provider_apiserver_killed, app_apiserver_killed);

/// 429 with `Retry-After` and 500 storms on the provider's writes (test-apiserver injection):
/// the world converges, and the konnector retries with backoff instead of a hot loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_storms_back_off_and_converge() {
    let w = World::build(Backend::Memory, Mode::Default, WorldOptions::default())
        .await
        .unwrap();
    let (mut k, metrics) = e2e::steps::start_with_metrics(BIN, &w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let (down, _up) = (w.downstream("default"), w.upstream("default"));
    let provider = w.provider.memory().unwrap();
    let objects = names("storm", 100);
    // Provider writes of the resource: answered 429 with `Retry-After: 1` for 5 s, then 500
    // for 5 s.
    provider.inject(test_apiserver::Fault::fail(
        "patch", "mangodbs", 100_000, 429,
    ));
    provider.clear_requests();
    let storm = Instant::now();
    create_all(&down, objects.clone()).await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(storm.elapsed())).await;
    provider.clear_faults();
    let writes_429 = provider
        .requests()
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "mangodbs")
        .count();
    provider.inject(test_apiserver::Fault::fail(
        "patch", "mangodbs", 100_000, 500,
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    provider.clear_faults();
    let failed_500 = provider
        .requests()
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "mangodbs")
        .count()
        - writes_429;
    let took = wait_converged(&k, &w, "default", CONVERGE).await;
    let writes = provider
        .requests()
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "mangodbs")
        .count();
    let per_object = writes as f64 / objects.len() as f64;
    println!(
        "fault: 429 storm (Retry-After: 1) for 5 s then 500 storm for 5 s on 100 objects: {writes_429} writes in the 429 storm, {failed_500} in the 500 storm ({:.1}/s, {:.1} per object), {writes} in all ({per_object:.1} per object), converged {took:?} after the storms ({:?} in all)",
        failed_500 as f64 / 5.0,
        failed_500 as f64 / objects.len() as f64,
        storm.elapsed()
    );
    // Per object, exponential backoff from 200 ms allows about 5 attempts in 5 s; a hot loop
    // would make hundreds.
    for line in e2e::steps::metric_lines(
        metrics,
        &[
            "konnector_retries_total",
            "konnector_api_writes_total",
            "konnector_client_throttled_total",
            "konnector_client_throttle_retries_total",
            "konnector_client_gate_wait_seconds_total",
            "konnector_client_concurrency_limit",
        ],
    )
    .await
    {
        println!("fault: metric {line}");
    }
    // Retry-After holds every request for a second after each 429.
    assert!(writes_429 <= 200, "{writes_429} writes in a 5 s 429 storm");
    assert!(
        failed_500 <= objects.len() * 10,
        "{failed_500} writes in a 5 s 500 storm for {} objects: not backing off",
        objects.len()
    );
    assert!(k.is_running());
}

/// The servers drop every watch every 2 s during a 200-object burst: nothing is lost and no
/// object is written twice for the same change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_dropped_during_a_burst() {
    let (w, mut k) = bound(WorldOptions::default(), Backend::Memory, Mode::Default).await;
    let down = w.downstream("default");
    let objects = names("dropped", 200);
    w.provider.memory().unwrap().clear_requests();
    let dropping = async {
        let mut drops = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            w.app.memory().unwrap().drop_watches();
            w.provider.memory().unwrap().drop_watches();
            drops += 1;
            if drops > 60 {
                return drops;
            }
        }
    };
    let work = async {
        create_all(&down, objects.clone()).await;
        wait_converged(&k, &w, "default", CONVERGE).await
    };
    let took = tokio::select! {
        took = work => took,
        drops = dropping => panic!("not converged after {drops} watch drops"),
    };
    let applies = w
        .provider
        .memory()
        .unwrap()
        .requests()
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "mangodbs" && r.is_write())
        .count();
    println!(
        "fault: watches dropped every 2 s during a 200-object burst: converged in {took:?}, {applies} applies upstream"
    );
    assert!(
        applies <= objects.len() + objects.len() / 10,
        "{applies} applies upstream for {} objects: duplicate writes",
        objects.len()
    );
    assert!(k.is_running());
}

/// Real control planes that compact etcd every 2 s and serve watches from etcd (no watch
/// cache), so that a watch resumed after a pause gets `410 Gone`.
fn compacting() -> ClusterOptions {
    ClusterOptions {
        real: e2e::kube_control_plane::Options::default()
            .etcd_compaction_interval(Duration::from_secs(2))
            .watch_cache(false),
        ..ClusterOptions::default()
    }
}

/// The konnector is stopped (SIGSTOP) for longer than its 15 s lease while both sides change
/// and etcd compacts: after SIGCONT its first write is the lease, its watches relist after
/// `410 Gone`, and everything converges.
async fn stopped_past_its_lease(backend: Backend) {
    if backend != Backend::Real {
        return; // Compaction and 410 are the real server's; the leader suite covers memory.
    }
    let options = WorldOptions {
        app: compacting(),
        provider: Some(compacting()),
        proxy_remote: true,
        ..WorldOptions::default()
    };
    // Control-plane mode: the lease and the upstream writes are on the same server, so the
    // order of its audit log shows what came first.
    let (w, mut k) = bound(options, backend, Mode::ControlPlane).await;
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    let before = names("paused", 20);
    create_all(&down, before.clone()).await;
    wait_converged(&k, &w, "default", CONVERGE).await;

    k.pause().await.unwrap();
    let paused = Instant::now();
    // Its connections to the app cluster break meanwhile (a network blip): on SIGCONT its
    // watches resume from resourceVersions etcd has compacted.
    let proxy = w.proxy.as_ref().unwrap();
    proxy.set(ProxyMode::Refuse);
    change_both_sides(&down, &up, names("while-paused", 10), &before).await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(paused.elapsed())).await;
    w.provider.clear_requests().await.unwrap();
    proxy.set(ProxyMode::Pass);
    k.resume().await.unwrap();
    let took = wait_converged(&k, &w, "default", CONVERGE).await;
    let writes = w.provider.konnector_writes().await;
    let first = writes.first().map(|r| r.resource.clone());
    assert_eq!(
        first.as_deref(),
        Some("leases"),
        "first write after SIGCONT: {:?}",
        writes
            .iter()
            .take(5)
            .map(|r| format!("{} {}", r.verb, r.resource))
            .collect::<Vec<_>>()
    );
    let stderr = k.stderr();
    // kube-rs reports a broken watch stream as a clean end, and a stream that ends before its
    // timeout is relisted, never resumed: so the watches relist without even needing the
    // `410 Gone` that resuming from a compacted resourceVersion would get (that path is
    // sync-engine's real_watch test).
    let relists: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("relisting"))
        .filter_map(|l| l.split("reason=").nth(1))
        .collect();
    println!(
        "fault: konnector stopped for 20 s (lease 15 s) with etcd compacting every 2 s and its app-cluster connections broken: first write after SIGCONT the lease, converged {took:?} after SIGCONT; relists {relists:?}"
    );
    assert!(
        !relists.is_empty(),
        "no relist after the pause\n{}",
        tail(&stderr)
    );
    assert!(k.is_running());
}

/// The provider's real API server under API Priority and Fairness with small inflight limits
/// during a 300-object burst: everything converges, the konnector's watches are not restarted
/// in a tight loop, and it keeps to its `--max-concurrent-requests`.
async fn throttled_by_apf(backend: Backend) {
    if backend != Backend::Real {
        return; // APF is the real server's.
    }
    let provider = ClusterOptions {
        real: e2e::kube_control_plane::Options::default()
            .extra_apiserver_flag("--max-requests-inflight=5")
            .extra_apiserver_flag("--max-mutating-requests-inflight=1"),
        ..ClusterOptions::default()
    };
    let options = WorldOptions {
        provider: Some(provider),
        ..WorldOptions::default()
    };
    let w = World::build(backend, Mode::Default, options).await.unwrap();
    let (mut k, metrics) = e2e::steps::start_with_metrics(BIN, &w).await;
    w.bind().await.unwrap();
    step(&k, "binding Ready", || async {
        w.wait_bound().await.is_ok()
    })
    .await;
    let down = w.downstream("default");
    w.provider.clear_requests().await.unwrap();
    let start = Instant::now();
    create_all(&down, names("apf", 300)).await;
    let took = wait_converged(&k, &w, "default", Duration::from_secs(180)).await;
    let requests = w.provider.konnector_requests().await;
    let throttled = requests.iter().filter(|r| r.code == 429).count();
    let watches = requests.iter().filter(|r| r.verb == "watch").count();
    println!(
        "fault: 300 objects against a provider with --max-requests-inflight=5 --max-mutating-requests-inflight=1: converged in {:?} ({took:?} after the last create), {} konnector requests, {throttled} audited as 429 (the throttled requests seen by the client are in the metrics below), {watches} watches ended",
        start.elapsed(),
        requests.len()
    );
    for line in e2e::steps::metric_lines(
        metrics,
        &[
            "konnector_client_throttled_total",
            "konnector_client_concurrency_limit",
            "konnector_client_requests_total",
            "konnector_watch_relists_total",
        ],
    )
    .await
    {
        println!("fault: metric {line}");
    }
    // The audit log records a watch when it ends: one restarted about once a second (the
    // behaviour before) would be hundreds; a healthy one has not ended yet.
    assert!(
        watches <= 60,
        "{watches} watch requests: watches restart in a loop"
    );
    assert!(k.is_running());
}

e2e::on_both_backends!(stopped_past_its_lease, throttled_by_apf);
