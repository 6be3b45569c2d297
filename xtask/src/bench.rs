//! `cargo xtask bench [--real] [--mode default|control-plane] [--objects N] [--json FILE]`: the
//! konnector's performance, measured end to end on the release binary.
//!
//! It builds a world as the end-to-end tests do (`e2e::World`: two in-memory API servers, or two
//! real control planes with `--real`), binds the MangoDB export, and runs phases, each measured
//! by watching the other side:
//!
//! - **baseline**: the API server's own create-to-watch latency (objects created on the
//!   provider by a plain client, seen by a watch), the unit every latency is also given in;
//! - **first object in a new namespace**: from the namespace's `APIServiceNamespace` getting its
//!   `status.namespace` (the backend's part) to the object on the provider;
//! - **burst**: N creates over 10 namespaces, all upstream;
//! - **status back**: N provider status changes, all downstream;
//! - **trickle**: 20 creates per second for 10 s;
//! - **restart**: the konnector restarted over the synced world, its writes counted.
//!
//! For each phase: wall time, throughput, latency p50/p99 (also as multiples of the baseline),
//! the konnector's CPU time and RSS (from `/proc`), and its write requests per object as the
//! server counted them (test-apiserver's request record, the real server's audit log). Progress
//! goes to stderr, the table to stdout; everything it started is stopped at the end.
//! It is a benchmark: nothing here asserts a timing.

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

const USAGE: &str =
    "usage: cargo xtask bench [--real] [--mode default|control-plane] [--objects N] [--json FILE]";
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
    json: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        real: false,
        mode: Mode::Default,
        objects: 1000,
        json: None,
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
            "--json" => {
                out.json = Some(
                    it.next()
                        .map(PathBuf::from)
                        .with_context(|| format!("--json takes a file\n{USAGE}"))?,
                )
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(out)
}

/// Runs the benchmark.
pub fn run(repo: &Path, args: &[String]) -> Result<()> {
    let args = parse(args)?;
    eprintln!("building the konnector: cargo build --release -p konnector");
    let bin = crate::demo::build_release(repo)?;
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
    Ok(())
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    cpu: Duration,
    rss_kib: u64,
    peak_kib: u64,
}

fn proc_stats(pid: u32) -> Result<ProcStats> {
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
    })
}

/// When each object name was first seen by a watch, with a predicate on the object.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Instant>>>);

impl Seen {
    fn get(&self, name: &str) -> Option<Instant> {
        self.0.lock().ok().and_then(|m| m.get(name).copied())
    }

    fn count(&self, prefix: &str) -> usize {
        self.0
            .lock()
            .map(|m| m.keys().filter(|k| k.starts_with(prefix)).count())
            .unwrap_or(0)
    }
}

/// Watches `api` and records when each object matching `pred` is first seen.
fn watch_seen(
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
async fn wait_seen(seen: &Seen, prefix: &str, n: usize, what: &str) -> Result<()> {
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
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
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
    p50: Duration,
    p99: Duration,
    cpu: Duration,
    writes: usize,
    rss_after_kib: u64,
}

struct Report {
    backend: &'static str,
    mode: Mode,
    baseline: (Duration, Duration),
    first_in_namespace: Duration,
    idle: ProcStats,
    peak_kib: u64,
    phases: Vec<Phase>,
    restart_writes: usize,
    machine: String,
}

fn ms(d: Duration) -> String {
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
            "konnector bench: {} servers, {:?} mode, {}\n\n",
            self.backend, self.mode, self.machine
        ));
        out.push_str(&format!(
            "server create-to-watch baseline: p50 {} / p99 {}\n",
            ms(self.baseline.0),
            ms(self.baseline.1)
        ));
        out.push_str(&format!(
            "first object in a new namespace (after its APIServiceNamespace is filled): {}\n",
            ms(self.first_in_namespace)
        ));
        out.push_str(&format!(
            "RSS idle {:.1} MiB, peak {:.1} MiB\n\n",
            self.idle.rss_kib as f64 / 1024.0,
            self.peak_kib as f64 / 1024.0
        ));
        out.push_str(
            "| phase | objects | wall | obj/s | p50 | p99 | CPU | writes/object | RSS after |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for p in &self.phases {
            out.push_str(&format!(
                "| {} | {} | {:.2} s | {:.0} | {} ({}) | {} ({}) | {:.2} s | {:.2} | {:.1} MiB |\n",
                p.name,
                p.objects,
                p.wall.as_secs_f64(),
                p.objects as f64 / p.wall.as_secs_f64().max(1e-9),
                ms(p.p50),
                self.multiple(p.p50, false),
                ms(p.p99),
                self.multiple(p.p99, true),
                p.cpu.as_secs_f64(),
                p.writes as f64 / p.objects.max(1) as f64,
                p.rss_after_kib as f64 / 1024.0,
            ));
        }
        out.push_str(&format!(
            "\nwrites after a restart over the synced world: {}\n",
            self.restart_writes
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        let phases: Vec<serde_json::Value> = self
            .phases
            .iter()
            .map(|p| {
                json!({"phase": p.name, "objects": p.objects, "wall_s": p.wall.as_secs_f64(),
                    "p50_ms": p.p50.as_secs_f64() * 1e3, "p99_ms": p.p99.as_secs_f64() * 1e3,
                    "cpu_s": p.cpu.as_secs_f64(), "writes": p.writes,
                    "rss_after_mib": p.rss_after_kib as f64 / 1024.0})
            })
            .collect();
        json!({
            "backend": self.backend, "mode": format!("{:?}", self.mode), "machine": self.machine,
            "baseline_p50_ms": self.baseline.0.as_secs_f64() * 1e3,
            "baseline_p99_ms": self.baseline.1.as_secs_f64() * 1e3,
            "first_in_namespace_ms": self.first_in_namespace.as_secs_f64() * 1e3,
            "rss_idle_mib": self.idle.rss_kib as f64 / 1024.0,
            "rss_peak_mib": self.peak_kib as f64 / 1024.0,
            "phases": phases, "writes_after_restart": self.restart_writes,
        })
    }
}

fn machine() -> String {
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

fn instance(name: &str) -> DynamicObject {
    DynamicObject::new(name, &mangodb()).data(json!({"spec": {"tier": "Dedicated"}}))
}

/// Creates `names` (namespace, name) through `client`, `CONCURRENCY` at a time; returns when
/// each create was sent.
async fn create_all(
    client: &kube::Client,
    names: &[(String, String)],
) -> Result<HashMap<String, Instant>> {
    let sent = Arc::new(Mutex::new(HashMap::new()));
    futures::stream::iter(names.iter().cloned())
        .map(|(ns, name)| {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &mangodb());
            let sent = sent.clone();
            async move {
                let at = Instant::now();
                api.create(&PostParams::default(), &instance(&name))
                    .await
                    .with_context(|| format!("creating {ns}/{name}"))?;
                if let Ok(mut s) = sent.lock() {
                    s.insert(name, at);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let out = sent.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(out)
}

fn latencies(sent: &HashMap<String, Instant>, seen: &Seen) -> Vec<Duration> {
    sent.iter()
        .filter_map(|(name, at)| seen.get(name).map(|s| s.saturating_duration_since(*at)))
        .collect()
}

/// Closes a phase started at `start` with the konnector's figures `before` it: wall time,
/// latencies of `sent` as `seen`, CPU, RSS and the writes the servers recorded.
async fn phase(
    name: &'static str,
    w: &World,
    pid: u32,
    (start, before): (Instant, ProcStats),
    sent: &HashMap<String, Instant>,
    seen: &Seen,
) -> Result<Phase> {
    let wall = start.elapsed();
    let after = proc_stats(pid)?;
    let (p50, p99) = percentiles(latencies(sent, seen));
    Ok(Phase {
        name,
        objects: sent.len(),
        wall,
        p50,
        p99,
        cpu: after.cpu.saturating_sub(before.cpu),
        writes: konnector_writes(w).await,
        rss_after_kib: after.rss_kib,
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
    // The default verbosity, as deployed (the tests' -v=4 logs every write).
    let konnector_args: Vec<String> = w
        .konnector_args(port)?
        .into_iter()
        .map(|a| {
            if a.starts_with("-v=") {
                "-v=2".to_string()
            } else {
                a
            }
        })
        .collect();
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

    // Ten namespaces, each mapped by a first object; the first of them measures the round trip
    // through its APIServiceNamespace.
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
    let firsts: Vec<(String, String)> = namespaces
        .iter()
        .map(|ns| (ns.clone(), format!("first-{ns}")))
        .collect();
    create_all(&w.app_admin, &firsts).await?;
    wait_seen(&up_seen, "first-", NAMESPACES, "first objects").await?;
    let first_in_namespace = namespaces
        .iter()
        .filter_map(|ns| {
            let filled = sn_seen.get(ns)?;
            Some(
                up_seen
                    .get(&format!("first-{ns}"))?
                    .saturating_duration_since(filled),
            )
        })
        .max()
        .unwrap_or_default();
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
    let started = (Instant::now(), proc_stats(pid)?);
    let sent = create_all(&w.app_admin, &names).await?;
    wait_seen(&up_seen, "burst-", n, "burst upstream").await?;
    phases.push(phase("burst (spec up)", &w, pid, started, &sent, &up_seen).await?);

    // Status back.
    eprintln!("status: {n} provider status changes");
    clear(&w).await?;
    let started = (Instant::now(), proc_stats(pid)?);
    let status_sent = Arc::new(Mutex::new(HashMap::new()));
    futures::stream::iter(names.iter().cloned())
        .map(|(ns, name)| {
            // The object's copy in the service namespace of `ns`.
            let api = w.upstream(&ns);
            let status_sent = status_sent.clone();
            async move {
                let at = Instant::now();
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Bench"}})),
                )
                .await
                .with_context(|| format!("status of the provider's copy of {ns}/{name}"))?;
                if let Ok(mut s) = status_sent.lock() {
                    s.insert(name, at);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    wait_seen(&down_status, "burst-", n, "status downstream").await?;
    let status_sent = status_sent.lock().map(|s| s.clone()).unwrap_or_default();
    phases.push(phase("status back", &w, pid, started, &status_sent, &down_status).await?);

    // Trickle: 20 per second for 10 s.
    eprintln!("trickle: 20 creates per second for 10 s");
    clear(&w).await?;
    let started = (Instant::now(), proc_stats(pid)?);
    let mut trickle_sent = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0..200 {
        tick.tick().await;
        let one = [(namespaces[i % NAMESPACES].clone(), format!("trickle-{i}"))];
        trickle_sent.extend(create_all(&w.app_admin, &one).await?);
    }
    wait_seen(&up_seen, "trickle-", 200, "trickle upstream").await?;
    phases.push(phase("trickle 20/s", &w, pid, started, &trickle_sent, &up_seen).await?);
    let peak_kib = proc_stats(pid)?.peak_kib;

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
    let restart_writes = w
        .app
        .konnector_writes()
        .await
        .into_iter()
        .chain(w.provider.konnector_writes().await)
        .filter(|r| {
            r.name != "restart-marker"
                && r.resource != "leases"
                && !(r.resource == "clusterbindings" && r.subresource == "status")
        })
        .count();
    k.terminate().await?;
    let _ = k.wait_exit(Duration::from_secs(15)).await;
    up_task.abort();
    down_task.abort();

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
    })
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
        assert!(parse(&["--objects".into(), "3".into()]).is_err());
        assert!(parse(&["--mode".into(), "x".into()]).is_err());
        assert!(parse(&["--fast".into()]).is_err());
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
    fn own_process_figures() {
        let s = proc_stats(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.peak_kib >= s.rss_kib, "{s:?}");
    }
}
