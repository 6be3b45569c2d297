//! `cargo xtask bench --fleet N [--bin FILE] [--json FILE]`: what one fleet-mode konnector
//! (`--control-plane-mode --fleet`, issue 12) costs per app cluster, on in-memory clusters.
//!
//! It starts a fleet world (`e2e::fleet::FleetWorld`: a control plane and app clusters, all
//! `test-apiserver`s in this process) and one konnector replica, then:
//!
//! - **one app cluster**: waits until its Lease is held and an object is synced both ways, lets
//!   the process settle and takes its RSS and the watches it opened;
//! - **N app clusters**: adds the other N-1, waits until all Leases are held and an object is
//!   synced both ways in each, lets it settle again: the RSS per idle app cluster is the
//!   difference over the N-1 added, and the control plane's watches are counted again;
//! - **latency**: `SAMPLE` creates at 20 per second spread over the app clusters, each timed
//!   from the create to a control-plane watch seeing it, and as many on a single-cluster
//!   control-plane-mode konnector (`e2e::world::World`) running beside it, the two taking
//!   turns: both see the same load of this shared machine over the same seconds (measured one
//!   after the other, the p99 ratio went from 1.5x to 3.4x between two runs).
//!
//! Every app cluster also holds `FOREIGN_CRDS` CRDs of about 50 KB that no export defines, as
//! real clusters do (Crossplane providers, cert-manager, ...): what a konnector caches of them
//! is part of its cost per app cluster.
//!
//! Watches are counted from the servers' request records: the konnector user's `watch`
//! requests, distinct by resource, namespace, name and selectors (a re-watch after a timeout
//! counts once). It prints a table and the goals; everything it started is stopped at
//! the end (the konnectors are terminated, the servers and loops dropped).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;
use test_apiserver::RecordedRequest;

use crate::bench::{
    ProcStats, Seen, instance, machine, ms, percentiles, proc_stats, wait_seen, watch_seen,
};
use e2e::fleet::{FleetWorld, TEAM};
use e2e::world::{Mode, World, WorldOptions, mangodb};
use e2e::{Backend, Cluster, KONNECTOR_USER, Konnector};

/// Objects of the latency sample, on each side.
const SAMPLE: usize = 400;
/// Pace of the latency sample's creates on each side (20 per second).
const PACE: Duration = Duration::from_millis(50);
/// Upper bound of a whole-fleet wait.
const FLEET_TIMEOUT: Duration = Duration::from_secs(600);
/// Upper bound of a single wait (readiness, one cluster's sync).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// RSS samples, one a second, that must lie within the tolerance for the process to count as
/// settled.
const SETTLE_WINDOW: usize = 8;
/// How long to wait for the RSS to settle before taking it as it is.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Creates in flight while the fleet's first objects are made.
const CONCURRENCY: usize = 16;
/// The replica's identity.
const POD: &str = "konnector-bench-0";
/// CRDs in each app cluster that no export defines.
const FOREIGN_CRDS: usize = 10;
/// Properties of each foreign CRD's schema (about 160 bytes each: some 50 KB a CRD).
const FOREIGN_PROPERTIES: usize = 300;
/// The goals.
const GOAL_APPS: usize = 100;
const GOAL_KIB_PER_APP: f64 = 3.0 * 1024.0;
const GOAL_LATENCY_RATIO: f64 = 2.0;

/// Runs the fleet bench over `apps` app clusters with the konnector `bin`.
pub fn run(bin: &Path, apps: usize, json: Option<&Path>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(bench(bin, apps))?;
    // Dropping the runtime stops the servers' tasks.
    drop(runtime);
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// RSS of the settled process, and whether it did settle within [`SETTLE_TIMEOUT`].
#[derive(Debug, Clone, Copy, Default)]
struct Settled {
    stats: ProcStats,
    settled: bool,
    /// How long it took.
    after: Duration,
    /// The konnector's CPU use per second of wall time while settling (idle load).
    cpu_share: f64,
    /// The konnector's writes per second on the control plane while settling.
    cp_writes: f64,
    /// The konnector's writes per second on all app clusters while settling.
    app_writes: f64,
}

/// Watches the konnector opened on one cluster.
#[derive(Debug, Clone, Default)]
struct Watches {
    /// Distinct by [`watch_key`].
    distinct: BTreeSet<String>,
    /// All watch requests, re-watches included.
    requests: usize,
}

struct Report {
    apps: usize,
    machine: String,
    /// Time from the konnector's start to its first app cluster synced both ways.
    first_synced: Duration,
    /// Time from adding the other N-1 app clusters to all held and synced.
    all_synced: Duration,
    one: Settled,
    all: Settled,
    peak_kib: u64,
    cp_watches_one: Watches,
    cp_watches_all: Watches,
    /// Distinct watches on each app cluster (min, max) with N app clusters.
    app_watches: (usize, usize),
    /// The watches on the first app cluster.
    app_watch_keys: BTreeSet<String>,
    fleet_latency: (Duration, Duration),
    single_latency: (Duration, Duration),
    single_rss: Settled,
}

impl Report {
    fn per_app_kib(&self) -> f64 {
        self.all
            .stats
            .rss_kib
            .saturating_sub(self.one.stats.rss_kib) as f64
            / (self.apps - 1) as f64
    }

    fn per_app_anon_kib(&self) -> f64 {
        self.all
            .stats
            .anon_kib
            .saturating_sub(self.one.stats.anon_kib) as f64
            / (self.apps - 1) as f64
    }

    fn ratio(&self) -> (f64, f64) {
        let r = |f: Duration, s: Duration| f.as_secs_f64() / s.as_secs_f64().max(1e-9);
        (
            r(self.fleet_latency.0, self.single_latency.0),
            r(self.fleet_latency.1, self.single_latency.1),
        )
    }

    /// (goal, measured, met) rows.
    fn goals(&self) -> Vec<(String, String, bool)> {
        let (r50, r99) = self.ratio();
        vec![
            (
                format!("{GOAL_APPS} app clusters from one process"),
                format!("{} held and synced by one replica", self.apps),
                self.apps >= GOAL_APPS,
            ),
            (
                "<= 3 MiB RSS per idle app cluster".into(),
                format!("{:.2} MiB", self.per_app_kib() / 1024.0),
                self.per_app_kib() <= GOAL_KIB_PER_APP,
            ),
            (
                "control-plane watches independent of N".into(),
                format!(
                    "{} with 1 app cluster, {} with {}",
                    self.cp_watches_one.distinct.len(),
                    self.cp_watches_all.distinct.len(),
                    self.apps
                ),
                self.cp_watches_one.distinct == self.cp_watches_all.distinct,
            ),
            (
                "sync latency within 2x of one cluster's".into(),
                format!("p50 {r50:.2}x, p99 {r99:.2}x"),
                r50 <= GOAL_LATENCY_RATIO && r99 <= GOAL_LATENCY_RATIO,
            ),
        ]
    }

    fn table(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let settled = |s: &Settled| {
            if s.settled {
                format!("settled after {:.0} s", s.after.as_secs_f64())
            } else {
                format!("NOT settled after {:.0} s", s.after.as_secs_f64())
            }
        };
        let mut out = format!(
            "konnector fleet bench: one replica, {} in-memory app clusters (each with {FOREIGN_CRDS} CRDs of ~50 KB no export defines), {}\n\n",
            self.apps, self.machine
        );
        out.push_str(&format!(
            "first app cluster synced both ways {:.1} s after the start; the other {} held and synced {:.1} s after they were added\n",
            self.first_synced.as_secs_f64(),
            self.apps - 1,
            self.all_synced.as_secs_f64()
        ));
        out.push_str(&format!(
            "RSS with 1 app cluster: {:.1} MiB (heap and stacks {:.1}), {}, idle CPU {:.1}%, idle writes {:.1}/s on the control plane, {:.1}/s on the app cluster\n",
            mib(self.one.stats.rss_kib),
            mib(self.one.stats.anon_kib),
            settled(&self.one),
            self.one.cpu_share * 100.0,
            self.one.cp_writes,
            self.one.app_writes
        ));
        out.push_str(&format!(
            "RSS with {} app clusters: {:.1} MiB (heap and stacks {:.1}), {}, idle CPU {:.1}%, idle writes {:.1}/s on the control plane, {:.1}/s on all app clusters; peak {:.1} MiB\n",
            self.apps,
            mib(self.all.stats.rss_kib),
            mib(self.all.stats.anon_kib),
            settled(&self.all),
            self.all.cpu_share * 100.0,
            self.all.cp_writes,
            self.all.app_writes,
            mib(self.peak_kib)
        ));
        out.push_str(&format!(
            "RSS per idle app cluster: {:.2} MiB (heap and stacks {:.2} MiB), over the {} added\n",
            self.per_app_kib() / 1024.0,
            self.per_app_anon_kib() / 1024.0,
            self.apps - 1
        ));
        out.push_str(&format!(
            "single-cluster control-plane-mode konnector, settled after the sample: {:.1} MiB (heap and stacks {:.1})\n",
            mib(self.single_rss.stats.rss_kib),
            mib(self.single_rss.stats.anon_kib)
        ));
        out.push_str(&format!(
            "control-plane watches: {} distinct ({} requests) with 1 app cluster, {} distinct ({} requests) with {}\n",
            self.cp_watches_one.distinct.len(),
            self.cp_watches_one.requests,
            self.cp_watches_all.distinct.len(),
            self.cp_watches_all.requests,
            self.apps
        ));
        let added: Vec<&String> = self
            .cp_watches_all
            .distinct
            .difference(&self.cp_watches_one.distinct)
            .collect();
        for w in self.cp_watches_all.distinct.iter() {
            let mark = if added.contains(&w) {
                " (added with N)"
            } else {
                ""
            };
            out.push_str(&format!("  {w}{mark}\n"));
        }
        out.push_str(&format!(
            "watches on each app cluster: {} to {} distinct; on the first:\n",
            self.app_watches.0, self.app_watches.1
        ));
        for w in &self.app_watch_keys {
            out.push_str(&format!("  {w}\n"));
        }
        let (r50, r99) = self.ratio();
        out.push_str(&format!(
            "\n| sync latency, create in the app cluster to the control plane ({SAMPLE} objects a side, 20/s a side, taking turns) | p50 | p99 |\n|---|---|---|\n\
             | fleet, over {} app clusters | {} | {} |\n\
             | single cluster, control-plane mode | {} | {} |\n\
             | ratio | {r50:.2}x | {r99:.2}x |\n",
            self.apps,
            ms(self.fleet_latency.0),
            ms(self.fleet_latency.1),
            ms(self.single_latency.0),
            ms(self.single_latency.1),
        ));
        out.push_str("\n| goal | measured | met |\n|---|---|---|\n");
        for (goal, measured, met) in self.goals() {
            out.push_str(&format!(
                "| {goal} | {measured} | {} |\n",
                if met { "yes" } else { "no" }
            ));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (r50, r99) = self.ratio();
        json!({
            "apps": self.apps, "machine": self.machine,
            "first_synced_s": self.first_synced.as_secs_f64(),
            "all_synced_s": self.all_synced.as_secs_f64(),
            "rss_one_mib": mib(self.one.stats.rss_kib),
            "rss_one_anon_mib": mib(self.one.stats.anon_kib),
            "rss_one_settled": self.one.settled,
            "rss_all_mib": mib(self.all.stats.rss_kib),
            "rss_all_anon_mib": mib(self.all.stats.anon_kib),
            "rss_all_settled": self.all.settled,
            "rss_peak_mib": mib(self.peak_kib),
            "rss_per_app_mib": self.per_app_kib() / 1024.0,
            "rss_per_app_anon_mib": self.per_app_anon_kib() / 1024.0,
            "idle_cpu_one": self.one.cpu_share, "idle_cpu_all": self.all.cpu_share,
            "idle_cp_writes_per_s_one": self.one.cp_writes,
            "idle_cp_writes_per_s_all": self.all.cp_writes,
            "idle_app_writes_per_s_one": self.one.app_writes,
            "idle_app_writes_per_s_all": self.all.app_writes,
            "app_watches": self.app_watch_keys,
            "rss_single_mib": mib(self.single_rss.stats.rss_kib),
            "cp_watches_one": self.cp_watches_one.distinct,
            "cp_watches_all": self.cp_watches_all.distinct,
            "cp_watch_requests_one": self.cp_watches_one.requests,
            "cp_watch_requests_all": self.cp_watches_all.requests,
            "app_watches_min": self.app_watches.0, "app_watches_max": self.app_watches.1,
            "fleet_p50_ms": ms(self.fleet_latency.0), "fleet_p99_ms": ms(self.fleet_latency.1),
            "single_p50_ms": ms(self.single_latency.0), "single_p99_ms": ms(self.single_latency.1),
            "ratio_p50": r50, "ratio_p99": r99,
            "goals": self.goals().into_iter().map(|(g, m, met)| json!({"goal": g, "measured": m, "met": met})).collect::<Vec<_>>(),
        })
    }
}

/// What makes one watch distinct: resource, namespace, name and selectors (not the
/// `resourceVersion` or timeout a re-watch carries).
fn watch_key(r: &RecordedRequest) -> String {
    let mut selectors: Vec<&str> = r
        .query
        .split('&')
        .filter(|kv| kv.starts_with("labelSelector=") || kv.starts_with("fieldSelector="))
        .collect();
    selectors.sort_unstable();
    let resource = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    let mut key = resource;
    if !r.namespace.is_empty() {
        key.push_str(&format!(" ns={}", r.namespace));
    }
    if !r.name.is_empty() {
        key.push_str(&format!(" name={}", r.name));
    }
    for s in selectors {
        key.push(' ');
        key.push_str(s);
    }
    key
}

/// The konnector user's watches among `requests`.
fn watches(requests: &[RecordedRequest]) -> Watches {
    let mut out = Watches::default();
    for r in requests
        .iter()
        .filter(|r| r.user == KONNECTOR_USER && r.verb == "watch")
    {
        out.requests += 1;
        out.distinct.insert(watch_key(r));
    }
    out
}

async fn cluster_watches(cluster: &Cluster) -> Result<Watches> {
    Ok(watches(&cluster.requests().await?))
}

/// How many requests `cluster` recorded so far (the record is never cleared here).
async fn recorded(cluster: &Cluster) -> Result<usize> {
    Ok(cluster.requests().await?.len())
}

/// The konnector's writes among the requests `cluster` recorded after the first `from`.
async fn writes_since(cluster: &Cluster, from: usize) -> Result<usize> {
    Ok(cluster
        .requests()
        .await?
        .iter()
        .skip(from)
        .filter(|r| r.user == KONNECTOR_USER && r.is_write())
        .count())
}

/// [`settle`], counting the konnector's writes per second on the fleet's clusters meanwhile.
async fn settle_fleet(w: &FleetWorld, pid: u32, what: &str) -> Result<Settled> {
    let cp_from = recorded(&w.cp).await?;
    let mut app_from = Vec::new();
    for a in &w.apps {
        app_from.push(recorded(&a.cluster).await?);
    }
    let mut s = settle(pid, what).await?;
    let secs = s.after.as_secs_f64().max(1e-9);
    s.cp_writes = writes_since(&w.cp, cp_from).await? as f64 / secs;
    let mut app = 0;
    for (a, from) in w.apps.iter().zip(app_from) {
        app += writes_since(&a.cluster, from).await?;
    }
    s.app_writes = app as f64 / secs;
    Ok(s)
}

/// Whether the last `window` RSS samples (KiB) lie within `tolerance_kib` of each other.
fn is_settled(samples: &[u64], window: usize, tolerance_kib: u64) -> bool {
    if samples.len() < window {
        return false;
    }
    let last = &samples[samples.len() - window..];
    let (min, max) = last
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    max - min <= tolerance_kib
}

/// Samples the konnector's RSS once a second until it stops changing (within 0.5% or 256 KiB
/// over [`SETTLE_WINDOW`] samples), at most [`SETTLE_TIMEOUT`].
async fn settle(pid: u32, what: &str) -> Result<Settled> {
    let start = Instant::now();
    let first = proc_stats(pid)?;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = proc_stats(pid)?;
        samples.push(now.rss_kib);
        let tolerance = (now.rss_kib / 200).max(256);
        let settled = is_settled(&samples, SETTLE_WINDOW, tolerance);
        if settled || start.elapsed() >= SETTLE_TIMEOUT {
            let after = start.elapsed();
            eprintln!(
                "  {what}: RSS {:.1} MiB, {} after {:.0} s",
                now.rss_kib as f64 / 1024.0,
                if settled { "settled" } else { "still moving" },
                after.as_secs_f64()
            );
            return Ok(Settled {
                stats: now,
                settled,
                after,
                cpu_share: now.cpu.saturating_sub(first.cpu).as_secs_f64()
                    / after.as_secs_f64().max(1e-9),
                ..Settled::default()
            });
        }
    }
}

/// Creates MangoDB `name` in `ns` through `api`'s client once its CRD is there (the konnector
/// installs it in each app cluster it serves); returns when the create was sent.
async fn create_when_served(api: &Api<DynamicObject>, name: &str, what: &str) -> Result<Instant> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let at = Instant::now();
        match api.create(&PostParams::default(), &instance(name)).await {
            Ok(_) => return Ok(at),
            Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {name} in {what}")),
        }
    }
}

/// Whether `name` of app cluster `i` reached the control plane and its status came back.
async fn synced(w: &FleetWorld, i: usize, name: &str) -> bool {
    w.synced(i, TEAM, name).await
}

/// Waits until the replica holds every app cluster's Lease.
async fn wait_held(w: &FleetWorld, k: &Konnector) -> Result<()> {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let holders = w.holders().await;
        let held = holders
            .values()
            .filter(|h| h.as_deref() == Some(POD))
            .count();
        if held == holders.len() {
            return Ok(());
        }
        if start.elapsed() > FLEET_TIMEOUT {
            bail!(
                "only {held} of {} app clusters held after {FLEET_TIMEOUT:?}; konnector log:\n{}",
                holders.len(),
                e2e::steps::tail(&k.stderr())
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  held: {held}/{}", holders.len());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates `name` in app clusters `apps` and waits until each is synced both ways.
async fn sync_in(w: &FleetWorld, k: &Konnector, apps: &[usize], name: &str) -> Result<()> {
    futures::stream::iter(apps.iter().copied())
        .map(|i| async move {
            create_when_served(&w.apps[i].downstream(TEAM), name, &w.apps[i].name).await
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut pending: Vec<usize> = apps.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for i in pending {
            if !synced(w, i, name).await {
                still.push(i);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if start.elapsed() > FLEET_TIMEOUT {
            bail!(
                "{name} not synced both ways in {} of {} app clusters after {FLEET_TIMEOUT:?}; konnector log:\n{}",
                pending.len(),
                apps.len(),
                e2e::steps::tail(&k.stderr())
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {name} synced: {}/{}",
                apps.len() - pending.len(),
                apps.len()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One side of the latency sample: the app clusters its objects are created in, and the watch
/// of its control plane that sees them arrive.
struct Side<'a> {
    apis: Vec<Api<DynamicObject>>,
    prefix: &'static str,
    seen: &'a Seen,
    sent: HashMap<String, Instant>,
}

/// Creates [`SAMPLE`] objects `<prefix><i>` on each of `sides`, each side at [`PACE`] and the
/// sides taking turns, so that all see the same load of this (shared) machine over the same
/// time; object `i` of a side goes to its app cluster `i % len`. Waits until each side's watch
/// saw them all; their latencies' p50 and p99, per side.
async fn latencies(sides: &mut [Side<'_>]) -> Result<Vec<(Duration, Duration)>> {
    let turns = u32::try_from(sides.len().max(1)).unwrap_or(u32::MAX);
    let mut tick = tokio::time::interval(PACE / turns);
    for i in 0..SAMPLE {
        for side in sides.iter_mut() {
            tick.tick().await;
            let name = format!("{}{i}", side.prefix);
            let api = &side.apis[i % side.apis.len()];
            let at = Instant::now();
            api.create(&PostParams::default(), &instance(&name))
                .await
                .with_context(|| format!("creating {name} in the latency sample"))?;
            side.sent.insert(name, at);
        }
    }
    let mut out = Vec::new();
    for side in sides.iter() {
        wait_seen(side.seen, side.prefix, SAMPLE, side.prefix).await?;
        let samples = side
            .sent
            .iter()
            .filter_map(|(name, at)| {
                side.seen
                    .get(name)
                    .map(|s| s.saturating_duration_since(*at))
            })
            .collect();
        out.push(percentiles(samples));
    }
    Ok(out)
}

async fn wait_ready(k: &mut Konnector, port: u16, what: &str) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    k.wait_http_ok(addr, "/readyz", STEP_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("{what} not ready: {e}"))
}

async fn stop(k: &mut Konnector) {
    if k.terminate().await.is_err() || k.wait_exit(Duration::from_secs(15)).await.is_err() {
        let _ = k.kill().await;
    }
}

async fn bench(bin: &Path, apps: usize) -> Result<Report> {
    eprintln!("starting the control plane and the first app cluster");
    let mut w = FleetWorld::new(Backend::Memory).await?;
    w.add_apps(&[(Backend::Memory, "b0".to_string())], &[])
        .await?;
    add_foreign_crds(&w, 0..1).await?;
    let port = e2e::free_port()?;
    let args = w.replica_args(port)?;
    let started = Instant::now();
    let mut k = Konnector::spawn_with_env(bin, &args, &w.dir, &[("POD_NAME", POD)])?;
    let result = async {
        let mut report = fleet_phases(&mut w, &mut k, port, apps, started).await?;
        let pid = k.pid().context("the fleet replica exited")?;
        eprintln!("starting a single-cluster control-plane-mode konnector for comparison");
        let single = World::build(
            Backend::Memory,
            Mode::ControlPlane,
            WorldOptions {
                provider: Some(e2e::ClusterOptions::default()),
                ..WorldOptions::default()
            },
        )
        .await?;
        let single_port = e2e::free_port()?;
        // The default verbosity, as the fleet replica's.
        let single_args: Vec<String> = single
            .konnector_args(single_port)?
            .into_iter()
            .filter(|a| !a.starts_with("-v="))
            .collect();
        let mut single_k = Konnector::spawn(bin, &single_args, &single.dir)?;
        let compared = compare(&w, pid, &single, &mut single_k, single_port, &mut report).await;
        stop(&mut single_k).await;
        compared?;
        anyhow::Ok(report)
    }
    .await;
    stop(&mut k).await;
    result
}

/// The latency sample on the fleet (replica `pid`) and on the single-cluster konnector `k` of
/// world `single`, side by side.
async fn compare(
    w: &FleetWorld,
    pid: u32,
    single: &World,
    k: &mut Konnector,
    port: u16,
    report: &mut Report,
) -> Result<()> {
    wait_ready(k, port, "the single-cluster konnector").await?;
    let single_pid = k.pid().context("the single-cluster konnector exited")?;
    single.wait_bound().await?;
    e2e::backend::ensure_namespace(&single.app_admin, TEAM).await?;
    let (fleet_seen, fleet_task) =
        watch_seen(Api::all_with(w.cp_admin.clone(), &mangodb()), |_| true);
    let (single_seen, single_task) = watch_seen(
        Api::all_with(single.provider_admin.clone(), &mangodb()),
        |_| true,
    );
    let measured = async {
        // As in the fleet: the namespace mapped and synced once, and both watches listed.
        let down = single.downstream(TEAM);
        create_when_served(&down, "warm-0", "the single app cluster").await?;
        wait_seen(&single_seen, "warm-", 1, "the single cluster's first object").await?;
        wait_seen(&fleet_seen, "idle-", 1, "the fleet's control-plane watch").await?;
        eprintln!(
            "latency: {SAMPLE} creates at 20/s over the fleet's {} app clusters and {SAMPLE} on the single cluster, taking turns",
            w.apps.len()
        );
        let mut sides = [
            Side {
                apis: w.apps.iter().map(|a| a.downstream(TEAM)).collect(),
                prefix: "lat-",
                seen: &fleet_seen,
                sent: HashMap::new(),
            },
            Side {
                apis: vec![down],
                prefix: "slat-",
                seen: &single_seen,
                sent: HashMap::new(),
            },
        ];
        latencies(&mut sides).await
    }
    .await;
    fleet_task.abort();
    single_task.abort();
    let measured = measured?;
    report.fleet_latency = measured[0];
    report.single_latency = measured[1];
    report.peak_kib = proc_stats(pid)?.peak_kib;
    report.single_rss = settle(single_pid, "single cluster").await?;
    Ok(())
}

/// The fleet's phases, with the replica `k` started over the world's first app cluster.
async fn fleet_phases(
    w: &mut FleetWorld,
    k: &mut Konnector,
    port: u16,
    apps: usize,
    started: Instant,
) -> Result<Report> {
    wait_ready(k, port, "the fleet replica").await?;
    let pid = k.pid().context("the fleet replica exited")?;
    wait_held(w, k).await?;
    sync_in(w, k, &[0], "idle-0").await?;
    let first_synced = started.elapsed();
    eprintln!(
        "1 app cluster synced after {:.1} s; letting it settle",
        first_synced.as_secs_f64()
    );
    let one = settle_fleet(w, pid, "1 app cluster").await?;
    let cp_watches_one = cluster_watches(&w.cp).await?;

    eprintln!("adding {} app clusters", apps - 1);
    let added = Instant::now();
    let names: Vec<(Backend, String)> = (1..apps)
        .map(|i| (Backend::Memory, format!("b{i}")))
        .collect();
    w.add_apps(&names, &[]).await?;
    add_foreign_crds(w, 1..apps).await?;
    wait_held(w, k).await?;
    eprintln!(
        "all {apps} held after {:.1} s; syncing an object in each",
        added.elapsed().as_secs_f64()
    );
    let rest: Vec<usize> = (1..apps).collect();
    sync_in(w, k, &rest, "idle-0").await?;
    let all_synced = added.elapsed();
    eprintln!(
        "all {apps} synced both ways after {:.1} s; letting it settle",
        all_synced.as_secs_f64()
    );
    let all = settle_fleet(w, pid, &format!("{apps} app clusters")).await?;
    let cp_watches_all = cluster_watches(&w.cp).await?;
    let mut per_app = Vec::new();
    for a in &w.apps {
        per_app.push(cluster_watches(&a.cluster).await?.distinct.len());
    }
    let app_watches = (
        per_app.iter().copied().min().unwrap_or(0),
        per_app.iter().copied().max().unwrap_or(0),
    );
    let app_watch_keys = match w.apps.first() {
        Some(a) => cluster_watches(&a.cluster).await?.distinct,
        None => BTreeSet::new(),
    };

    Ok(Report {
        apps,
        machine: machine(),
        first_synced,
        all_synced,
        one,
        all,
        peak_kib: 0,
        cp_watches_one,
        cp_watches_all,
        app_watches,
        app_watch_keys,
        fleet_latency: Default::default(),
        single_latency: Default::default(),
        single_rss: Settled::default(),
    })
}

/// A CRD no export defines, of about 50 KB, as the CRDs of other operators are.
fn foreign_crd(i: usize) -> serde_json::Value {
    let properties: serde_json::Map<String, serde_json::Value> = (0..FOREIGN_PROPERTIES)
        .map(|p| {
            (
                format!("field{p}"),
                json!({"type": "string", "description": format!("Field {p} of a CRD the konnector has no business with; its text is there to weigh what a real operator's CRD weighs.")}),
            )
        })
        .collect();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("things{i}.foreign.example.com")},
        "spec": {"group": "foreign.example.com", "scope": "Namespaced",
            "names": {"kind": format!("Thing{i}"), "plural": format!("things{i}"), "singular": format!("thing{i}"), "listKind": format!("Thing{i}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": properties}}}}}]}})
}

/// Installs the foreign CRDs in the app clusters `apps` of `w`.
async fn add_foreign_crds(w: &FleetWorld, apps: std::ops::Range<usize>) -> Result<()> {
    let crds: Vec<_> = (0..FOREIGN_CRDS).map(foreign_crd).collect();
    let creates = apps.flat_map(|i| {
        let api: Api<DynamicObject> = Api::all_with(
            w.apps[i].admin.clone(),
            &kube::core::ApiResource::erase::<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >(&()),
        );
        crds.iter().map(move |crd| {
            let api = api.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(crd.clone())?;
                api.create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("create a foreign CRD in app cluster {i}"))?;
                anyhow::Ok(())
            }
        })
    });
    let results: Vec<Result<()>> = futures::stream::iter(creates)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, namespace: &str, query: &str) -> RecordedRequest {
        RecordedRequest {
            user: KONNECTOR_USER.into(),
            verb: verb.into(),
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: String::new(),
            path: "/apis/coordination.k8s.io/v1/leases".into(),
            query: query.into(),
            code: 200,
        }
    }

    #[test]
    fn rewatches_count_once() {
        let reqs = [
            request(
                "watch",
                "",
                "watch=true&fieldSelector=metadata.name%3Dklutch-bind&resourceVersion=5&timeoutSeconds=290",
            ),
            request(
                "watch",
                "",
                "timeoutSeconds=290&fieldSelector=metadata.name%3Dklutch-bind&watch=true&resourceVersion=9",
            ),
            request("watch", "r1", "watch=true&labelSelector=a%3Db"),
            request("list", "", "fieldSelector=metadata.name%3Dklutch-bind"),
            RecordedRequest {
                user: "admin".into(),
                ..request("watch", "r2", "watch=true")
            },
        ];
        let w = watches(&reqs);
        assert_eq!(w.requests, 3);
        assert_eq!(
            w.distinct.into_iter().collect::<Vec<_>>(),
            [
                "leases.coordination.k8s.io fieldSelector=metadata.name%3Dklutch-bind",
                "leases.coordination.k8s.io ns=r1 labelSelector=a%3Db",
            ]
        );
    }

    #[test]
    fn settling() {
        assert!(!is_settled(&[100, 100], 3, 10));
        assert!(is_settled(&[50, 100, 105, 101], 3, 10));
        assert!(!is_settled(&[100, 105, 120], 3, 10));
        // Falling counts as moving too.
        assert!(!is_settled(&[120, 105, 100], 3, 10));
    }
}
