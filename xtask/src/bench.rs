//! `cargo xtask bench [--real] [--mode default|control-plane] [--objects N] [--workers N]
//! [--bin FILE] [--json FILE] [--svg FILE]`: the konnector's performance, measured end to end
//! on the release binary (or the one `--bin` names).
//!
//! It builds a world as the end-to-end tests do (`e2e::World`: two in-memory API servers, or two
//! real control planes with `--real`), binds the MangoDB export, and runs phases, each measured
//! by watching the other side:
//!
//! - **baseline**: the API server's own create-to-watch latency (objects created on the
//!   provider by a plain client, seen by a watch), the unit every latency is also given in;
//! - **first object in a new namespace**: ten namespaces, one at a time, from the namespace's
//!   `APIServiceNamespace` getting its `status.namespace` (the backend's part) to the object on
//!   the provider;
//! - **burst**: N creates over 10 namespaces, all upstream;
//! - **status back**: N provider status changes, all downstream;
//! - **trickle**: 20 creates per second for 10 s;
//! - **restart**: the konnector restarted over the synced world, its writes counted;
//! - **plain client**: with the konnector stopped, a plain client does its writes for a burst
//!   and a trickle: what the servers allow on this machine, in the same run.
//!
//! For each phase: wall time, the driving client's send time, throughput, latency p50/p99 (also
//! as multiples of the baseline), the konnector's CPU time and RSS (from `/proc`), the CPU time
//! of the servers and the driving client, and the write requests per object as the server
//! counted them (test-apiserver's request record, the real server's audit log); then the
//! caches' size from the konnector's metrics and the RSS per synced object. Progress goes to
//! stderr, the table to stdout, the latency plot to `--svg`; everything it started is stopped
//! at the end. It is a benchmark: nothing here asserts a timing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use e2e::world::{Mode, World, WorldOptions, mangodb};
use e2e::{Backend, Konnector};

const USAGE: &str = "usage: cargo xtask bench [--real] [--mode default|control-plane] [--objects N] \
     [--workers N] [--bin KONNECTOR] [--json FILE] [--svg FILE]\n       \
     cargo xtask bench --fleet N [--bin KONNECTOR] [--json FILE]";
/// Namespaces the burst is spread over.
const NAMESPACES: usize = 10;
/// Creates in flight during the burst (the client side's own limit).
const CONCURRENCY: usize = 64;
/// Upper bound of every wait.
const TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Args {
    real: bool,
    mode: Mode,
    objects: usize,
    /// `--sync-workers` of the konnector (its default when `None`).
    workers: Option<usize>,
    /// A konnector binary to measure instead of building one.
    bin: Option<PathBuf>,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    /// `--fleet N`: the fleet bench (`bench_fleet.rs`) over N app clusters instead.
    fleet: Option<usize>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        real: false,
        mode: Mode::Default,
        objects: 1000,
        workers: None,
        bin: None,
        json: None,
        svg: None,
        fleet: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--real" => out.real = true,
            "--mode" => {
                out.mode = match it.next().map(String::as_str) {
                    Some("default") => Mode::Default,
                    Some("control-plane") => Mode::ControlPlane,
                    other => bail!("--mode takes default or control-plane, not {other:?}\n{USAGE}"),
                }
            }
            "--objects" => {
                out.objects = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= NAMESPACES)
                    .with_context(|| format!("--objects takes a number >= {NAMESPACES}\n{USAGE}"))?
            }
            "--workers" => {
                out.workers = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n >= 1)
                        .with_context(|| format!("--workers takes a number >= 1\n{USAGE}"))?,
                )
            }
            "--json" => {
                out.json = Some(
                    it.next()
                        .map(PathBuf::from)
                        .with_context(|| format!("--json takes a file\n{USAGE}"))?,
                )
            }
            "--bin" => {
                out.bin = Some(
                    it.next()
                        .map(PathBuf::from)
                        .with_context(|| format!("--bin takes a file\n{USAGE}"))?,
                )
            }
            "--svg" => {
                out.svg = Some(
                    it.next()
                        .map(PathBuf::from)
                        .with_context(|| format!("--svg takes a file\n{USAGE}"))?,
                )
            }
            "--fleet" => {
                out.fleet = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n >= 2)
                        .with_context(|| format!("--fleet takes a number >= 2\n{USAGE}"))?,
                )
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    // The fleet bench runs on in-memory clusters and measures what its own table says.
    if out.fleet.is_some()
        && (out.real || out.mode != Mode::Default || out.workers.is_some() || out.svg.is_some())
    {
        bail!("--fleet takes only --bin and --json\n{USAGE}");
    }
    Ok(out)
}

/// Runs the benchmark.
pub fn run(repo: &Path, args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => {
            eprintln!("building the konnector: cargo build --release -p konnector");
            crate::demo::build_release(repo)?
        }
    };
    if let Some(apps) = args.fleet {
        return crate::bench_fleet::run(&bin, apps, args.json.as_deref());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(bench(&bin, &args))?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcStats {
    pub(crate) cpu: Duration,
    pub(crate) rss_kib: u64,
    pub(crate) peak_kib: u64,
    /// Of the RSS: heap and stacks.
    pub(crate) anon_kib: u64,
    /// Of the RSS: pages of the binary and libraries.
    pub(crate) file_kib: u64,
}

pub(crate) fn proc_stats(pid: u32) -> Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (indices 11 and 12 here), in clock ticks of 10 ms.
    let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 10);
    Ok(ProcStats {
        cpu,
        rss_kib: kib("VmRSS:"),
        peak_kib: kib("VmHWM:"),
        anon_kib: kib("RssAnon:"),
        file_kib: kib("RssFile:"),
    })
}

/// Processes started by `pid`, recursively.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// CPU time of everything but the konnector: this process (the in-memory servers, the
/// driving clients and watches) and the processes it started (the real servers).
fn others_cpu(konnector: Option<u32>) -> Duration {
    let me = std::process::id();
    std::iter::once(me)
        .chain(descendants(me))
        .filter(|p| Some(*p) != konnector)
        .filter_map(|p| proc_stats(p).ok())
        .map(|s| s.cpu)
        .sum()
}

/// When each object name was first seen by a watch, with a predicate on the object.
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<HashMap<String, Instant>>>);

impl Seen {
    pub(crate) fn get(&self, name: &str) -> Option<Instant> {
        self.0.lock().ok().and_then(|m| m.get(name).copied())
    }

    pub(crate) fn count(&self, prefix: &str) -> usize {
        self.0
            .lock()
            .map(|m| m.keys().filter(|k| k.starts_with(prefix)).count())
            .unwrap_or(0)
    }
}

/// Watches `api` and records when each object matching `pred` is first seen.
pub(crate) fn watch_seen(
    api: Api<DynamicObject>,
    pred: fn(&DynamicObject) -> bool,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen = Seen::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(obj)) = stream.try_next().await {
            if pred(&obj)
                && let (Some(name), Ok(mut m)) = (obj.metadata.name.clone(), record.0.lock())
            {
                m.entry(name).or_insert_with(Instant::now);
            }
        }
    });
    (seen, task)
}

/// Waits until `seen` holds `n` names starting with `prefix`.
pub(crate) async fn wait_seen(seen: &Seen, prefix: &str, n: usize, what: &str) -> Result<()> {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let have = seen.count(prefix);
        if have >= n {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            bail!("{what}: only {have} of {n} after {TIMEOUT:?}");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {what}: {have}/{n}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// p50 and p99 of `samples`.
pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    (at(0.50), at(0.99))
}

/// One measured phase.
#[derive(Debug, Clone, Default)]
struct Phase {
    name: &'static str,
    objects: usize,
    wall: Duration,
    /// Until the driving client's last request returned.
    sent_in: Duration,
    p50: Duration,
    p99: Duration,
    /// The konnector's CPU time (zero when it did not run).
    cpu: Duration,
    /// CPU time of the servers and the driving client.
    others_cpu: Duration,
    writes: usize,
    rss_after_kib: u64,
    /// (seconds from the phase's start to the send, latency in ms) per object.
    samples: Vec<(f64, f64)>,
}

/// When a phase started, and the CPU figures then.
#[derive(Clone, Copy)]
struct Start {
    at: Instant,
    konnector: ProcStats,
    others_cpu: Duration,
}

impl Start {
    fn now(pid: Option<u32>) -> Result<Start> {
        Ok(Start {
            at: Instant::now(),
            konnector: pid.map(proc_stats).transpose()?.unwrap_or_default(),
            others_cpu: others_cpu(pid),
        })
    }
}

/// What the konnector's watch caches held, from its metrics.
#[derive(Debug, Clone, Default)]
struct CacheFigures {
    /// (cluster id, objects, bytes of text) of the synced resource.
    per_cluster: Vec<(String, u64, u64)>,
}

struct Report {
    backend: &'static str,
    mode: Mode,
    baseline: (Duration, Duration),
    /// p50 and max over the namespaces.
    first_in_namespace: (Duration, Duration),
    idle: ProcStats,
    peak_kib: u64,
    phases: Vec<Phase>,
    restart_writes: usize,
    machine: String,
    workers: Option<usize>,
    caches: CacheFigures,
    /// RSS after the synced world settled, and how many objects it holds per side.
    settled: (ProcStats, usize),
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl Report {
    fn multiple(&self, d: Duration, p99: bool) -> String {
        let base = if p99 {
            self.baseline.1
        } else {
            self.baseline.0
        };
        if base.is_zero() {
            return "-".into();
        }
        format!("{:.0}x", d.as_secs_f64() / base.as_secs_f64())
    }

    fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "konnector bench: {} servers, {:?} mode, {}, sync workers {}\n\n",
            self.backend,
            self.mode,
            self.machine,
            self.workers
                .map_or_else(|| "default".to_string(), |w| w.to_string())
        ));
        out.push_str(&format!(
            "server create-to-watch baseline: p50 {} / p99 {}\n",
            ms(self.baseline.0),
            ms(self.baseline.1)
        ));
        out.push_str(&format!(
            "first object in a new namespace (after its APIServiceNamespace is filled): p50 {} / max {} over {NAMESPACES} namespaces\n",
            ms(self.first_in_namespace.0),
            ms(self.first_in_namespace.1)
        ));
        let mib = |kib: u64| kib as f64 / 1024.0;
        out.push_str(&format!(
            "RSS idle {:.1} MiB (heap and stacks {:.1}, binary {:.1}), peak {:.1} MiB\n",
            mib(self.idle.rss_kib),
            mib(self.idle.anon_kib),
            mib(self.idle.file_kib),
            mib(self.peak_kib)
        ));
        let (settled, per_side) = self.settled;
        out.push_str(&format!(
            "RSS with {per_side} objects synced: {:.1} MiB (heap and stacks {:.1}), {:.0} bytes per object pair over idle\n",
            mib(settled.rss_kib),
            mib(settled.anon_kib),
            (settled.anon_kib.saturating_sub(self.idle.anon_kib) * 1024) as f64
                / per_side.max(1) as f64
        ));
        for (cluster, objects, bytes) in &self.caches.per_cluster {
            // Provider ids carry a hash of the endpoint.
            let cluster = cluster.split(':').next().unwrap_or(cluster);
            out.push_str(&format!(
                "cache of the {cluster} side: {objects} objects, {bytes} bytes of text ({:.0} per object)\n",
                *bytes as f64 / (*objects).max(1) as f64
            ));
        }
        out.push('\n');
        out.push_str(
            "| phase | objects | wall | sent in | obj/s | p50 | p99 | konnector CPU | servers+client CPU | writes/object | RSS after |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for p in &self.phases {
            let cpu = if p.cpu.is_zero() {
                "-".to_string()
            } else {
                format!("{:.2} s", p.cpu.as_secs_f64())
            };
            let rss = if p.rss_after_kib == 0 {
                "-".to_string()
            } else {
                format!("{:.1} MiB", mib(p.rss_after_kib))
            };
            out.push_str(&format!(
                "| {} | {} | {:.2} s | {:.2} s | {:.0} | {} ({}) | {} ({}) | {cpu} | {:.2} s | {:.2} | {rss} |\n",
                p.name,
                p.objects,
                p.wall.as_secs_f64(),
                p.sent_in.as_secs_f64(),
                p.objects as f64 / p.wall.as_secs_f64().max(1e-9),
                ms(p.p50),
                self.multiple(p.p50, false),
                ms(p.p99),
                self.multiple(p.p99, true),
                p.others_cpu.as_secs_f64(),
                p.writes as f64 / p.objects.max(1) as f64,
            ));
        }
        out.push_str(&format!(
            "\nwrites after a restart over the synced world: {}\n",
            self.restart_writes
        ));
        out
    }

    /// Latency of every object over its phase (burst, status, the plain client's burst): when
    /// its write was sent against how long until the other side saw it.
    fn svg(&self) -> String {
        let series: Vec<(&Phase, &str)> = self
            .phases
            .iter()
            .filter(|p| !p.name.contains("trickle"))
            .zip(["#1f77b4", "#d62728", "#7f7f7f"])
            .collect();
        let max_x = nice_ceiling(
            series
                .iter()
                .flat_map(|(p, _)| p.samples.iter().map(|s| s.0))
                .fold(0.1f64, f64::max),
        );
        let max_y = nice_ceiling(
            series
                .iter()
                .flat_map(|(p, _)| p.samples.iter().map(|s| s.1))
                .fold(1.0f64, f64::max),
        );
        // The legend sits between the title and the plot.
        let legend_top = 36.0;
        let top = legend_top + 18.0 * series.len() as f64 + 10.0;
        let (w, h, left, bottom, right) = (900.0, 420.0 + top, 70.0, 50.0, 20.0);
        let x = |v: f64| left + v / max_x * (w - left - right);
        let y = |v: f64| h - bottom - v / max_y * (h - bottom - top);
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"20\" font-size=\"14\">konnector bench: latency of each of {} objects over the phase ({} servers, {:?} mode, {})</text>\n",
            series.first().map_or(0, |(p, _)| p.objects),
            self.backend,
            self.mode,
            self.machine
        );
        for i in 0..=5 {
            let (vx, vy) = (max_x * i as f64 / 5.0, max_y * i as f64 / 5.0);
            out.push_str(&format!(
                "<line x1=\"{left}\" x2=\"{x2}\" y1=\"{gy:.1}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/>\n\
                 <text x=\"{lx}\" y=\"{ly:.1}\" text-anchor=\"end\">{vy:.0} ms</text>\n\
                 <text x=\"{tx:.1}\" y=\"{ty}\" text-anchor=\"middle\">{vx:.1} s</text>\n",
                x2 = w - right,
                gy = y(vy),
                lx = left - 6.0,
                ly = y(vy) + 4.0,
                tx = x(vx),
                ty = h - bottom + 18.0
            ));
        }
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">time the write was sent, from the start of the phase</text>\n",
            (left + w - right) / 2.0,
            h - 10.0
        ));
        for (i, (p, color)) in series.iter().enumerate() {
            for (sx, sy) in &p.samples {
                out.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"{color}\"/>\n",
                    x(*sx),
                    y(*sy)
                ));
            }
            out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}: all after {:.2} s, p50 {:.0} ms, p99 {:.0} ms</text>\n",
                left + 10.0,
                legend_top + 18.0 * i as f64,
                left + 20.0,
                legend_top + 4.0 + 18.0 * i as f64,
                p.name,
                p.wall.as_secs_f64(),
                p.p50.as_secs_f64() * 1e3,
                p.p99.as_secs_f64() * 1e3
            ));
        }
        out.push_str("</svg>\n");
        out
    }

    fn json(&self) -> serde_json::Value {
        let phases: Vec<serde_json::Value> = self
            .phases
            .iter()
            .map(|p| {
                json!({"phase": p.name, "objects": p.objects, "wall_s": p.wall.as_secs_f64(),
                    "sent_in_s": p.sent_in.as_secs_f64(),
                    "p50_ms": p.p50.as_secs_f64() * 1e3, "p99_ms": p.p99.as_secs_f64() * 1e3,
                    "cpu_s": p.cpu.as_secs_f64(), "others_cpu_s": p.others_cpu.as_secs_f64(),
                    "writes": p.writes, "rss_after_mib": p.rss_after_kib as f64 / 1024.0})
            })
            .collect();
        json!({
            "backend": self.backend, "mode": format!("{:?}", self.mode), "machine": self.machine,
            "baseline_p50_ms": self.baseline.0.as_secs_f64() * 1e3,
            "baseline_p99_ms": self.baseline.1.as_secs_f64() * 1e3,
            "first_in_namespace_p50_ms": self.first_in_namespace.0.as_secs_f64() * 1e3,
            "first_in_namespace_max_ms": self.first_in_namespace.1.as_secs_f64() * 1e3,
            "rss_idle_mib": self.idle.rss_kib as f64 / 1024.0,
            "rss_idle_anon_mib": self.idle.anon_kib as f64 / 1024.0,
            "rss_idle_file_mib": self.idle.file_kib as f64 / 1024.0,
            "rss_peak_mib": self.peak_kib as f64 / 1024.0,
            "rss_settled_mib": self.settled.0.rss_kib as f64 / 1024.0,
            "rss_settled_anon_mib": self.settled.0.anon_kib as f64 / 1024.0,
            "objects_per_side": self.settled.1,
            "caches": self.caches.per_cluster.iter().map(|(c, o, b)| json!({"cluster": c, "objects": o, "text_bytes": b})).collect::<Vec<_>>(),
            "workers": self.workers,
            "phases": phases, "writes_after_restart": self.restart_writes,
        })
    }
}

pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024 / 1024);
    format!("{cpus} CPUs, {mem} GiB")
}

pub(crate) fn instance(name: &str) -> DynamicObject {
    DynamicObject::new(name, &mangodb()).data(json!({"spec": {"tier": "Dedicated"}}))
}

/// Runs `op` for each of `names` (namespace, name), `CONCURRENCY` at a time; returns when
/// each request was sent.
async fn timed_all<F, Fut>(names: &[(String, String)], op: F) -> Result<HashMap<String, Instant>>
where
    F: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter(names.iter().cloned())
        .map(|(ns, name)| {
            let request = op(ns, name.clone());
            async move {
                let at = Instant::now();
                request.await?;
                anyhow::Ok((name, at))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

/// Creates `names` (namespace, name) through `client`; returns when each create was sent.
async fn create_all(
    client: &kube::Client,
    names: &[(String, String)],
) -> Result<HashMap<String, Instant>> {
    timed_all(names, |ns, name| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &mangodb());
        async move {
            api.create(&PostParams::default(), &instance(&name))
                .await
                .with_context(|| format!("creating {ns}/{name}"))?;
            Ok(())
        }
    })
    .await
}

fn latencies(sent: &HashMap<String, Instant>, seen: &Seen) -> Vec<Duration> {
    sent.iter()
        .filter_map(|(name, at)| seen.get(name).map(|s| s.saturating_duration_since(*at)))
        .collect()
}

/// Closes a konnector phase: wall time, latencies of `sent` as `seen`, CPU, RSS and the
/// writes the servers recorded.
async fn phase(
    name: &'static str,
    w: &World,
    pid: u32,
    start: Start,
    sent_in: Duration,
    sent: &HashMap<String, Instant>,
    seen: &Seen,
) -> Result<Phase> {
    let mut p = close(name, Some(pid), start, sent_in, sent, seen)?;
    p.writes = konnector_writes(w).await;
    Ok(p)
}

/// The figures of a phase that are measured the same way with or without the konnector.
fn close(
    name: &'static str,
    pid: Option<u32>,
    start: Start,
    sent_in: Duration,
    sent: &HashMap<String, Instant>,
    seen: &Seen,
) -> Result<Phase> {
    let wall = start.at.elapsed();
    let after = pid.map(proc_stats).transpose()?.unwrap_or_default();
    let (p50, p99) = percentiles(latencies(sent, seen));
    let mut samples: Vec<(f64, f64)> = sent
        .iter()
        .filter_map(|(name, at)| {
            let latency = seen.get(name)?.saturating_duration_since(*at);
            Some((
                at.saturating_duration_since(start.at).as_secs_f64(),
                latency.as_secs_f64() * 1e3,
            ))
        })
        .collect();
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Phase {
        name,
        objects: sent.len(),
        wall,
        sent_in,
        p50,
        p99,
        cpu: after.cpu.saturating_sub(start.konnector.cpu),
        others_cpu: others_cpu(pid).saturating_sub(start.others_cpu),
        writes: 0,
        rss_after_kib: after.rss_kib,
        samples,
    })
}

async fn konnector_writes(w: &World) -> usize {
    w.app.konnector_writes().await.len() + w.provider.konnector_writes().await.len()
}

async fn clear(w: &World) -> Result<()> {
    w.app.clear_requests().await?;
    w.provider.clear_requests().await?;
    Ok(())
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &ns).await?;
    }
    Ok(())
}

async fn bench(bin: &Path, args: &Args) -> Result<Report> {
    let backend = if args.real {
        Backend::real().context("--real needs the control plane binaries (KUBEBUILDER_ASSETS or ../shared/k8s-control-plane)")?
    } else {
        Backend::Memory
    };
    eprintln!("starting the clusters ({backend:?}, {:?} mode)", args.mode);
    let w = World::build(
        backend,
        args.mode,
        WorldOptions {
            provider: Some(e2e::ClusterOptions::default()),
            ..WorldOptions::default()
        },
    )
    .await?;
    let port = e2e::free_port()?;
    let metrics_port = e2e::free_port()?;
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    // The default verbosity, as deployed (the tests' -v=4 logs every write).
    let mut konnector_args: Vec<String> = w
        .konnector_args(port)?
        .into_iter()
        .map(|a| {
            if a.starts_with("-v=") {
                "-v=2".to_string()
            } else if a.starts_with("--metrics-bind-address=") {
                format!("--metrics-bind-address={metrics_addr}")
            } else {
                a
            }
        })
        .collect();
    if let Some(workers) = args.workers {
        konnector_args.push(format!("--sync-workers={workers}"));
    }
    let mut k = Konnector::spawn(bin, &konnector_args, &w.dir)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    k.wait_http_ok(addr, "/readyz", Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("konnector not ready: {e}"))?;
    w.bind().await?;
    e2e::wait_until("binding Ready", Duration::from_secs(60), || async {
        w.wait_bound().await.is_ok()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pid = k.pid().context("the konnector exited")?;

    // Baseline: the provider's own create-to-watch latency, seen by a plain client.
    eprintln!("baseline: 200 creates on the provider, one at a time");
    ensure_namespace(&w.provider_admin, "bench-baseline").await?;
    let (base_seen, base_task) = watch_seen(
        Api::namespaced_with(w.provider_admin.clone(), "bench-baseline", &mangodb()),
        |_| true,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut base_sent = HashMap::new();
    for i in 0..200 {
        let name = format!("base-{i}");
        base_sent.extend(create_all(&w.provider_admin, &[("bench-baseline".into(), name)]).await?);
    }
    wait_seen(&base_seen, "base-", 200, "baseline").await?;
    base_task.abort();
    let baseline = percentiles(latencies(&base_sent, &base_seen));

    // Upstream and downstream watches over all namespaces.
    let (up_seen, up_task) =
        watch_seen(Api::all_with(w.provider_admin.clone(), &mangodb()), |_| {
            true
        });
    let (down_status, down_task) =
        watch_seen(Api::all_with(w.app_admin.clone(), &mangodb()), |o| {
            o.data["status"]["phase"] == "Bench"
        });

    // Ten namespaces, each mapped by a first object, measuring the round trip through its
    // APIServiceNamespace.
    eprintln!("first objects in {NAMESPACES} new namespaces");
    let sn_api: Api<DynamicObject> = Api::namespaced_with(
        w.provider_admin.clone(),
        w.p,
        &kube::core::ApiResource::erase::<konnector_api::v1alpha1::APIServiceNamespace>(&()),
    );
    let (sn_seen, sn_task) = watch_seen(sn_api, |o| {
        o.data["status"]["namespace"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    });
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("bench-{i}")).collect();
    for ns in &namespaces {
        ensure_namespace(&w.app_admin, ns).await?;
    }
    // One namespace at a time, as users add them.
    for (i, ns) in namespaces.iter().enumerate() {
        create_all(&w.app_admin, &[(ns.clone(), format!("first-{ns}"))]).await?;
        wait_seen(&up_seen, "first-", i + 1, "first objects").await?;
    }
    let firsts: Vec<Duration> = namespaces
        .iter()
        .filter_map(|ns| {
            let filled = sn_seen.get(ns)?;
            Some(
                up_seen
                    .get(&format!("first-{ns}"))?
                    .saturating_duration_since(filled),
            )
        })
        .collect();
    let first_in_namespace = (
        percentiles(firsts.clone()).0,
        firsts.iter().max().copied().unwrap_or_default(),
    );
    sn_task.abort();

    let idle = proc_stats(pid)?;
    let mut phases = Vec::new();

    // Burst.
    let n = args.objects;
    eprintln!("burst: {n} creates over {NAMESPACES} namespaces");
    clear(&w).await?;
    let names: Vec<(String, String)> = (0..n)
        .map(|i| (namespaces[i % NAMESPACES].clone(), format!("burst-{i}")))
        .collect();
    let started = Start::now(Some(pid))?;
    let sent = create_all(&w.app_admin, &names).await?;
    let sent_in = started.at.elapsed();
    wait_seen(&up_seen, "burst-", n, "burst upstream").await?;
    phases.push(
        phase(
            "burst (spec up)",
            &w,
            pid,
            started,
            sent_in,
            &sent,
            &up_seen,
        )
        .await?,
    );

    // Status back.
    eprintln!("status: {n} provider status changes");
    clear(&w).await?;
    let started = Start::now(Some(pid))?;
    let status_sent = timed_all(&names, |ns, name| {
        // The object's copy in the service namespace of `ns`.
        let api = w.upstream(&ns);
        async move {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bench"}})),
            )
            .await
            .with_context(|| format!("status of the provider's copy of {ns}/{name}"))?;
            Ok(())
        }
    })
    .await?;
    let sent_in = started.at.elapsed();
    wait_seen(&down_status, "burst-", n, "status downstream").await?;
    phases.push(
        phase(
            "status back",
            &w,
            pid,
            started,
            sent_in,
            &status_sent,
            &down_status,
        )
        .await?,
    );

    // Trickle: 20 per second for 10 s.
    eprintln!("trickle: 20 creates per second for 10 s");
    clear(&w).await?;
    let started = Start::now(Some(pid))?;
    let mut trickle_sent = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0..200 {
        tick.tick().await;
        let one = [(namespaces[i % NAMESPACES].clone(), format!("trickle-{i}"))];
        trickle_sent.extend(create_all(&w.app_admin, &one).await?);
    }
    let sent_in = started.at.elapsed();
    wait_seen(&up_seen, "trickle-", 200, "trickle upstream").await?;
    phases.push(
        phase(
            "trickle 20/s",
            &w,
            pid,
            started,
            sent_in,
            &trickle_sent,
            &up_seen,
        )
        .await?,
    );
    let peak_kib = proc_stats(pid)?.peak_kib;
    // The synced world at rest: what the caches hold, and what that costs.
    let per_side = n + NAMESPACES + 200;
    let caches = cache_figures(metrics_addr).await;
    let settled = (proc_stats(pid)?, per_side);

    // Restart over the synced world: writes other than a marker's sync, the Lease and a due
    // heartbeat.
    eprintln!("restart over the synced world");
    k.terminate().await?;
    k.wait_exit(Duration::from_secs(15)).await?;
    clear(&w).await?;
    let mut k = Konnector::spawn(bin, &konnector_args, &w.dir)?;
    k.wait_http_ok(addr, "/readyz", Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("konnector not ready after the restart: {e}"))?;
    create_all(
        &w.app_admin,
        &[(namespaces[0].clone(), "restart-marker".into())],
    )
    .await?;
    wait_seen(&up_seen, "restart-marker", 1, "marker after the restart").await?;
    let restart_writes = w.restart_writes("restart-marker").await.len();
    k.terminate().await?;
    let _ = k.wait_exit(Duration::from_secs(15)).await;
    up_task.abort();
    down_task.abort();

    // The servers' own limit: the same writes by a plain client, the konnector stopped.
    eprintln!("plain client: the konnector's writes for {n} creates, without the konnector");
    phases.extend(plain_client(&w, n).await?);

    Ok(Report {
        backend: if args.real { "real" } else { "in-memory" },
        mode: args.mode,
        baseline,
        first_in_namespace,
        idle,
        peak_kib,
        phases,
        restart_writes,
        machine: machine(),
        workers: args.workers,
        caches,
        settled,
    })
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v`, so that five grid
/// steps fall on round numbers.
fn nice_ceiling(v: f64) -> f64 {
    let step = v / 5.0;
    let magnitude = 10f64.powf(step.log10().floor());
    let nice = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= step)
        .unwrap_or(10.0 * magnitude);
    nice * 5.0
}

/// The synced resource's cache sizes per cluster, from the konnector's metrics.
async fn cache_figures(metrics: std::net::SocketAddr) -> CacheFigures {
    let resource = format!(
        "resource=\"{}/{}/{}\"",
        mangodb().group,
        mangodb().version,
        mangodb().plural
    );
    let lines = e2e::steps::metric_lines(metrics, &["konnector_watch_cache_"]).await;
    let mut per_cluster: Vec<(String, u64, u64)> = Vec::new();
    for line in lines.iter().filter(|l| l.contains(&resource)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(cluster) = labels
            .split("cluster=\"")
            .nth(1)
            .and_then(|c| c.split('"').next())
        else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        let i = match per_cluster.iter().position(|(c, _, _)| c == cluster) {
            Some(i) => i,
            None => {
                per_cluster.push((cluster.to_string(), 0, 0));
                per_cluster.len() - 1
            }
        };
        if line.starts_with("konnector_watch_cache_objects") {
            per_cluster[i].1 = value;
        } else if line.starts_with("konnector_watch_cache_bytes") {
            per_cluster[i].2 = value;
        }
    }
    CacheFigures { per_cluster }
}

/// Requests of the plain client in flight at once (the konnector's default
/// `--max-concurrent-requests`).
const PLAIN_CONCURRENCY: usize = 32;

/// What the konnector does for a burst and a trickle, done by a plain client while the
/// konnector is stopped: `n` creates on the app cluster over 10 new namespaces (then 20 per
/// second for 10 s); for each object a watch sees, a finalizer patch on the app cluster and an
/// apply of its copy on the provider, sent together. Its figures are the servers' limit for
/// the konnector's work on this machine.
async fn plain_client(w: &World, n: usize) -> Result<Vec<Phase>> {
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("plain-{i}")).collect();
    for ns in &namespaces {
        ensure_namespace(&w.app_admin, ns).await?;
        ensure_namespace(&w.provider_admin, ns).await?;
    }
    let (seen, seen_task) = watch_seen(Api::all_with(w.provider_admin.clone(), &mangodb()), |o| {
        o.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("plain"))
    });
    // The plain "controller": one watch of the app cluster, a bounded pool of workers.
    let app = w.app_admin.clone();
    let provider = w.provider_admin.clone();
    let controller = tokio::spawn(async move {
        let stream = watcher(
            Api::<DynamicObject>::all_with(app.clone(), &mangodb()),
            watcher::Config::default(),
        )
        .applied_objects()
        .try_filter(|o| {
            std::future::ready(
                o.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("plain"))
                    && o.metadata.finalizers.is_none(),
            )
        });
        stream
            .map(|o| {
                let (app, provider) = (app.clone(), provider.clone());
                async move {
                    let o = o?;
                    let (ns, name) = (
                        o.metadata.namespace.clone().unwrap_or_default(),
                        o.metadata.name.clone().unwrap_or_default(),
                    );
                    let down: Api<DynamicObject> = Api::namespaced_with(app, &ns, &mangodb());
                    let up: Api<DynamicObject> = Api::namespaced_with(provider, &ns, &mangodb());
                    let owner = json!({"metadata": {"finalizers": ["bench.konnector/plain"]}});
                    let copy = json!({
                        "apiVersion": mangodb().api_version,
                        "kind": mangodb().kind,
                        "metadata": {
                            "name": name,
                            "annotations": {"klutch.anynines.com/bound": "true"},
                        },
                        "spec": o.data["spec"].clone(),
                    });
                    let (merge, apply) = (
                        PatchParams::default(),
                        PatchParams::apply("bench-plain").force(),
                    );
                    let (owner, copy) = (Patch::Merge(owner), Patch::Apply(copy));
                    let (owned, applied) = futures::join!(
                        down.patch(&name, &merge, &owner),
                        up.patch(&name, &apply, &copy)
                    );
                    owned?;
                    applied?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(PLAIN_CONCURRENCY)
            .for_each(|r| async move {
                if let Err(e) = r {
                    eprintln!("  plain client: {e:#}");
                }
            })
            .await;
    });
    // Let the controller's watch list first, as the konnector's had.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<(String, String)> = (0..n)
        .map(|i| (namespaces[i % NAMESPACES].clone(), format!("plain-{i}")))
        .collect();
    let started = Start::now(None)?;
    let sent = create_all(&w.app_admin, &names).await?;
    let sent_in = started.at.elapsed();
    let done = wait_seen(&seen, "plain-", n, "plain client upstream").await;
    if done.is_err() {
        controller.abort();
        seen_task.abort();
    }
    done?;
    let mut burst = close(
        "plain client, same writes",
        None,
        started,
        sent_in,
        &sent,
        &seen,
    )?;
    // Two per object, the konnector's: the ownership patch and the apply.
    burst.writes = 2 * n;
    // The same trickle as the konnector's.
    let started = Start::now(None)?;
    let mut trickle_sent = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0..200 {
        tick.tick().await;
        let one = [(
            namespaces[i % NAMESPACES].clone(),
            format!("plaintrickle-{i}"),
        )];
        trickle_sent.extend(create_all(&w.app_admin, &one).await?);
    }
    let sent_in = started.at.elapsed();
    let done = wait_seen(&seen, "plaintrickle-", 200, "plain client trickle").await;
    controller.abort();
    seen_task.abort();
    done?;
    let mut trickle = close(
        "plain client, trickle 20/s",
        None,
        started,
        sent_in,
        &trickle_sent,
        &seen,
    )?;
    trickle.writes = 2 * trickle.objects;
    Ok(vec![burst, trickle])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let a = parse(&[]).unwrap();
        assert!(!a.real && a.objects == 1000 && a.mode == Mode::Default && a.json.is_none());
        let a = parse(
            &[
                "--real",
                "--mode",
                "control-plane",
                "--objects",
                "50",
                "--json",
                "x.json",
            ]
            .map(String::from),
        )
        .unwrap();
        assert!(a.real && a.objects == 50 && a.mode == Mode::ControlPlane);
        assert_eq!(a.json.as_deref(), Some(Path::new("x.json")));
        let a = parse(&["--workers", "64", "--svg", "l.svg"].map(String::from)).unwrap();
        assert_eq!(a.workers, Some(64));
        assert_eq!(a.svg.as_deref(), Some(Path::new("l.svg")));
        assert!(parse(&["--workers".into(), "0".into()]).is_err());
        let a = parse(&["--bin", "/x/konnector"].map(String::from)).unwrap();
        assert_eq!(a.bin.as_deref(), Some(Path::new("/x/konnector")));
        assert!(parse(&["--objects".into(), "3".into()]).is_err());
        assert!(parse(&["--mode".into(), "x".into()]).is_err());
        assert!(parse(&["--fast".into()]).is_err());
        let a = parse(&["--fleet", "100", "--json", "f.json"].map(String::from)).unwrap();
        assert_eq!(a.fleet, Some(100));
        assert!(parse(&[]).unwrap().fleet.is_none());
        assert!(parse(&["--fleet".into()]).is_err());
        assert!(parse(&["--fleet".into(), "1".into()]).is_err());
        assert!(parse(&["--fleet", "10", "--real"].map(String::from)).is_err());
    }

    #[test]
    fn percentiles_of_samples() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(
            percentiles(samples),
            (Duration::from_millis(50), Duration::from_millis(99))
        );
        assert_eq!(percentiles(Vec::new()), (Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn grid_steps_are_round() {
        assert_eq!(nice_ceiling(461.0), 500.0);
        assert_eq!(nice_ceiling(0.86), 1.0);
        assert_eq!(nice_ceiling(2145.0), 2500.0);
        assert_eq!(nice_ceiling(9.0), 10.0);
    }

    #[test]
    fn own_process_figures() {
        let s = proc_stats(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.peak_kib >= s.rss_kib, "{s:?}");
    }
}
