//! `cargo xtask demo [--keep]`: the konnector binding an example provider API, end to end, in
//! both modes, on in-memory clusters — nothing outside the repository is needed.
//!
//! For each mode it starts two fresh clusters, plays the provider side in-process (see
//! [`world`]), runs the real `konnector` binary, and prints each step with the time it took:
//! the konnector ready, the binding Ready, the CRD in the app cluster, an instance reaching the
//! provider, its status flowing back, and its deletion on both sides. Every wait is bounded; a
//! timeout fails the demo with the konnector's last log lines.
//!
//! With `--keep`, the control-plane run keeps its clusters, konnector and instance until Ctrl-C
//! and prints kubeconfig paths for `kubectl`.

mod example;
pub(crate) mod konnector;
mod world;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use konnector_api::conditions::{self, ConditionStatus};
use konnector_api::v1alpha1::APIServiceBinding;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::json;

use e2e::TempDir;
use e2e::backend::is_established;
use konnector::Konnector;
use world::{BACKEND, Label, Mode, PROVIDER_NAMESPACE, World};

/// Upper bound of every wait.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the konnector gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a step re-checks its condition.
const POLL: Duration = Duration::from_millis(20);
/// The namespace and name of the example instance in the app cluster.
const CONSUMER_NAMESPACE: &str = "default";
const INSTANCE: &str = "my-db";
/// Width of the step text (padded with dots) before the timing.
const WIDTH: usize = 66;

/// Builds the release konnector (for the benchmark) and returns the binary's path.
pub fn build_release(repo: &Path) -> Result<std::path::PathBuf> {
    konnector::build_profile(repo, true)
}

/// The default-mode scenario with the binary `bin` (e.g. the one extracted from the image).
pub fn run_default_mode(bin: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let dir = TempDir::new("konnector-image-check")?;
        run_mode(bin, &dir, Mode::Default, false).await
    })
}

/// Runs the demo; `--keep` keeps the last mode running until Ctrl-C.
pub fn run(repo: &Path, args: &[String]) -> Result<()> {
    let keep = match args {
        [] => false,
        [flag] if flag == "--keep" => true,
        _ => bail!("usage: cargo xtask demo [--keep]"),
    };
    println!("konnector demo: binds the example provider API in examples/provider-api/ into an");
    println!(
        "app cluster, first in default mode, then in control-plane mode (in-memory clusters)."
    );
    println!();
    println!("building the konnector: cargo build -p konnector");
    let bin = konnector::build(repo)?;
    println!("konnector binary: {}", bin.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let dir = TempDir::new("konnector-demo")?;
        run_mode(&bin, &dir, Mode::Default, false).await?;
        run_mode(&bin, &dir, Mode::ControlPlane, keep).await?;
        if !keep {
            println!();
            println!(
                "demo finished: in both modes the konnector installed the CRD, synced the spec up,"
            );
            println!("the status back, and the deletion through to the provider.");
        }
        Ok(())
    })
}

/// One mode on fresh clusters.
async fn run_mode(bin: &Path, dir: &TempDir, mode: Mode, keep: bool) -> Result<()> {
    println!();
    match mode {
        Mode::Default => {
            println!(
                "== default mode: the konnector runs in the app cluster; the provider kubeconfig"
            );
            println!("   comes from a Secret that `kubectl bind` left there.");
        }
        Mode::ControlPlane => {
            println!(
                "== control-plane mode: the konnector runs on the control plane (which is the"
            );
            println!("   provider) and reaches the app cluster through a kubeconfig Secret.");
        }
    }
    let mut run = Run {
        mode,
        konnector: None,
    };
    let mode_started = Instant::now();
    let started = Instant::now();
    let mut world = World::start(mode, dir).await?;
    let (app_url, provider_url) = world.urls();
    let provider_role = match mode {
        Mode::Default => "provider",
        Mode::ControlPlane => "control plane",
    };
    run.done(
        &format!(
            "clusters up: app {}, {provider_role} {}",
            host_port(&app_url),
            host_port(&provider_url)
        ),
        started,
    );

    let started = Instant::now();
    world.set_up_provider().await?;
    world.start_provider_loops();
    let export = world.crd.metadata.name.clone().unwrap_or_default();
    run.done(
        "provider backend: ClusterBinding, APIServiceExport, Secret",
        started,
    );
    if mode == Mode::ControlPlane {
        // The backend creates bindings on the control plane; the konnector picks them up.
        let started = Instant::now();
        world.create_binding().await?;
        run.done(
            &format!("APIServiceBinding created in {PROVIDER_NAMESPACE} on the control plane"),
            started,
        );
    }

    let started = Instant::now();
    let health = konnector::free_local_addr()?;
    let metrics = konnector::free_local_addr()?;
    let mut args = world.konnector_args();
    args.extend([
        "--health-probe-bind-address".to_string(),
        health.to_string(),
        "--metrics-bind-address".to_string(),
        metrics.to_string(),
    ]);
    run.konnector = Some(Konnector::spawn(bin, &args, dir.path())?);
    for line in wrap("konnector", &args, 88) {
        run.detail(&line);
    }
    run.wait(
        "konnector started, /healthz answers 200",
        started,
        async || Ok(konnector::healthy(health).await.then_some(())),
    )
    .await?;

    if mode == Mode::Default {
        // What `kubectl bind` does once the konnector has installed the APIServiceBinding CRD
        // (it does so after /healthz answers: liveness does not wait for it).
        let started = Instant::now();
        let crds: Api<CustomResourceDefinition> = Api::all(world.app_admin.clone());
        run.wait(
            "APIServiceBinding CRD installed by the konnector",
            started,
            async || {
                Ok(crds
                    .get_opt("apiservicebindings.klutch.anynines.com")
                    .await?
                    .filter(is_established)
                    .map(|_| ()))
            },
        )
        .await?;
        let started = Instant::now();
        world.create_binding().await?;
        run.done("APIServiceBinding created in the app cluster", started);
    }

    let (binding_client, binding_ns) = world.binding_cluster();
    let bindings: Api<APIServiceBinding> = Api::namespaced(binding_client.clone(), binding_ns);
    let started = Instant::now();
    run.wait("APIServiceBinding Ready", started, async || {
        let Some(status) = bindings.get(&export).await?.status else {
            return Ok(None);
        };
        Ok(conditions::get(&status.conditions, "Ready")
            .is_some_and(|c| c.status == ConditionStatus::True)
            .then_some(()))
    })
    .await?;

    let crds: Api<CustomResourceDefinition> = Api::all(world.app_admin.clone());
    let started = Instant::now();
    run.wait(
        &format!("CRD {export} Established in the app cluster"),
        started,
        async || {
            Ok(crds
                .get_opt(&export)
                .await?
                .filter(is_established)
                .map(|_| ()))
        },
    )
    .await?;

    let kind = world.resource.kind.clone();
    let down: Api<DynamicObject> =
        Api::namespaced_with(world.app_admin.clone(), CONSUMER_NAMESPACE, &world.resource);
    let service_ns = BACKEND.service_namespace(CONSUMER_NAMESPACE);
    let up: Api<DynamicObject> =
        Api::namespaced_with(world.provider_admin.clone(), &service_ns, &world.resource);
    let started = Instant::now();
    let instance: DynamicObject = serde_json::from_value(json!({
        "apiVersion": world.resource.api_version, "kind": kind,
        "metadata": {"name": INSTANCE},
        "spec": {"engine": "postgresql"},
    }))?;
    down.create(&PostParams::default(), &instance)
        .await
        .context("creating the instance in the app cluster")?;
    run.done(
        &format!("{kind} {CONSUMER_NAMESPACE}/{INSTANCE} created in the app cluster"),
        started,
    );

    let started = Instant::now();
    let copy = run
        .wait(
            &format!("... spec synced to the provider: {service_ns}/{INSTANCE}"),
            started,
            async || up.get_opt(INSTANCE).await.map_err(Into::into),
        )
        .await?;
    run.detail(&format!(
        "spec there: {} (defaults applied)",
        copy.data["spec"]
    ));

    let started = Instant::now();
    let status = run
        .wait(
            &format!(
                "... status.phase={} synced back to the app cluster",
                example::RUNNING
            ),
            started,
            async || {
                let obj = down.get(INSTANCE).await?;
                Ok((obj.data["status"]["phase"] == example::RUNNING)
                    .then(|| obj.data["status"].clone()))
            },
        )
        .await?;
    run.detail(&format!("status here: {status}"));

    if keep {
        return keep_running(run, world).await;
    }

    let started = Instant::now();
    down.delete(INSTANCE, &DeleteParams::default())
        .await
        .context("deleting the instance in the app cluster")?;
    run.done(
        &format!("{kind} {CONSUMER_NAMESPACE}/{INSTANCE} deleted in the app cluster"),
        started,
    );
    let started = Instant::now();
    run.wait("... gone on the provider", started, async || {
        Ok(up.get_opt(INSTANCE).await?.is_none().then_some(()))
    })
    .await?;
    let started = Instant::now();
    run.wait(
        "... gone in the app cluster (finalizer released)",
        started,
        async || Ok(down.get_opt(INSTANCE).await?.is_none().then_some(())),
    )
    .await?;

    let started = Instant::now();
    let (status, on_its_own) = run
        .konnector
        .take()
        .context("konnector not running")?
        .stop(STOP_GRACE)
        .await?;
    let how = if on_its_own {
        format!("konnector stopped by SIGTERM ({status})")
    } else {
        format!(
            "konnector killed: still running {} s after SIGTERM",
            STOP_GRACE.as_secs()
        )
    };
    run.done(&how, started);
    run.done(&format!("{} mode done", mode.label()), mode_started);
    Ok(())
}

/// `program args...` as lines of at most about `width` characters, a flag and its value kept
/// together.
fn wrap(program: &str, args: &[String], width: usize) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for arg in args {
        match words.last_mut() {
            Some(last)
                if last.starts_with("--") && !last.contains(' ') && !arg.starts_with("--") =>
            {
                last.push(' ');
                last.push_str(arg);
            }
            _ => words.push(arg.clone()),
        }
    }
    let mut lines = vec![program.to_string()];
    for word in words {
        let Some(line) = lines.last_mut() else {
            break;
        };
        if line.len() + 1 + word.len() > width && line.len() > 2 {
            lines.push(format!("  {word}"));
        } else {
            line.push(' ');
            line.push_str(&word);
        }
    }
    lines
}

/// `127.0.0.1:PORT` out of a server URL, for short output lines.
fn host_port(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

/// `--keep`: leave everything running and tell the user how to look at it.
async fn keep_running(run: Run, world: World) -> Result<()> {
    let app = world.app_kubeconfig.display().to_string();
    let provider = world.provider_kubeconfig.display().to_string();
    let pid = run
        .konnector
        .as_ref()
        .and_then(Konnector::pid)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let plural = &world.resource.plural;
    println!();
    println!(
        "--keep: clusters and konnector (pid {pid}) keep running; {INSTANCE} is left in place."
    );
    println!("  app cluster kubeconfig:   {app}");
    println!("  control plane kubeconfig: {provider}");
    println!("try:");
    println!("  kubectl --kubeconfig {app} get {plural} -A");
    println!("  kubectl --kubeconfig {provider} get {plural} -A");
    println!(
        "  kubectl --kubeconfig {provider} -n {PROVIDER_NAMESPACE} get apiservicebindings,apiserviceexports,clusterbindings"
    );
    println!(
        "  kubectl --kubeconfig {app} -n {CONSUMER_NAMESPACE} patch {} {INSTANCE} --type merge -p '{{\"spec\":{{\"plan\":\"large\"}}}}'",
        world.resource.kind.to_lowercase()
    );
    println!("press Ctrl-C to stop.");
    let mut konnector = run.konnector;
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                break;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some(status) = konnector.as_mut().and_then(Konnector::exited) {
                    let tail = konnector.as_ref().map(|k| k.last_lines(30)).unwrap_or_default();
                    bail!("the konnector exited ({status})\nlast konnector log lines:\n  {}", tail.join("\n  "));
                }
            }
        }
    }
    println!();
    if let Some(k) = konnector {
        let (status, _) = k.stop(STOP_GRACE).await?;
        println!("konnector stopped ({status}); clusters and kubeconfig files removed.");
    }
    drop(world);
    Ok(())
}

/// Output and bounded waits for one mode; holds the konnector so that a failed step can show
/// what it logged.
struct Run {
    mode: Mode,
    konnector: Option<Konnector>,
}

impl Run {
    /// Prints a finished step with the milliseconds since `started`.
    fn done(&self, what: &str, started: Instant) {
        let label = format!("[{}]", self.mode.label());
        let what = format!("{what} ");
        let ms = started.elapsed().as_millis();
        println!("{label:<15} {what:.<WIDTH$} {ms:>5} ms");
    }

    /// Prints a line of detail under the last step.
    fn detail(&self, text: &str) {
        println!("{:<15}     {text}", "");
    }

    /// Polls `check` until it yields a value, then prints the step. Errors from `check` count as
    /// "not yet" (the last one is reported on timeout); the konnector exiting fails at once.
    async fn wait<T>(
        &mut self,
        what: &str,
        started: Instant,
        mut check: impl AsyncFnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = started + STEP_TIMEOUT;
        let mut last_error = None;
        loop {
            match check().await {
                Ok(Some(value)) => {
                    self.done(what, started);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => last_error = Some(format!("{e:#}")),
            }
            if let Some(status) = self.konnector.as_mut().and_then(Konnector::exited) {
                bail!(
                    "[{}] the konnector exited ({status}) while waiting for: {what}{}",
                    self.mode.label(),
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                let error = last_error
                    .map(|e| format!("\nlast error: {e}"))
                    .unwrap_or_default();
                bail!(
                    "[{}] timed out after {} s waiting for: {what}{error}{}",
                    self.mode.label(),
                    STEP_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn log_tail(&self) -> String {
        let Some(k) = &self.konnector else {
            return String::new();
        };
        let lines = k.last_lines(30);
        if lines.is_empty() {
            return "\n(the konnector printed nothing)".to_string();
        }
        format!("\nlast konnector log lines:\n  {}", lines.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_flags_with_their_values() {
        let args: Vec<String> = [
            "--kubeconfig",
            "/tmp/x/konnector.kubeconfig",
            "--control-plane-mode",
            "--a",
            "b",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            wrap("konnector", &args, 40),
            [
                "konnector",
                "  --kubeconfig /tmp/x/konnector.kubeconfig",
                "  --control-plane-mode --a b",
            ]
        );
        assert_eq!(host_port("https://127.0.0.1:1234"), "127.0.0.1:1234");
    }
}
