//! End-to-end harness: clusters on 127.0.0.1, either in memory ([`test_apiserver`]) or real
//! control planes ([`kube_control_plane`]) (see [`Backend`] and [`on_both_backends!`]),
//! kubeconfig files in a temporary directory, the real `konnector` binary as a child process,
//! and a stand-in for the provider backend ([`backend`], [`world`]).
//!
//! # Where the tests are
//!
//! Cargo tells a test where a binary is (`CARGO_BIN_EXE_konnector`) only in the tests of the
//! binary's own package, and only then guarantees that the binary is built and up to date. So
//! the scenarios live in `bins/konnector/tests/e2e_*.rs` and pass that path to
//! [`Konnector::spawn`]; this crate holds everything they share. Run them with
//! `cargo test -p konnector --test 'e2e_*'`.
//!
//! Tests wait on conditions with timeouts ([`wait_until`], [`Konnector::wait_exit`]); nothing
//! sleeps for a fixed time.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use test_apiserver::{Options, RecordedRequest, TestApiServer, User};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The user the konnector authenticates as (in `system:masters`), so that its requests can be
/// told apart from the test's own (which use `admin`).
pub const KONNECTOR_USER: &str = "konnector";

pub mod proxy;
pub mod steps;

/// The real control plane launcher, for scenarios that set its options.
pub use kube_control_plane;
pub mod backend;
pub mod fleet;
pub mod world;

/// How long a konnector gets to start or to fail at startup in tests.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Which API server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `test-apiserver`, in-process: starts in milliseconds, fault injection, request record.
    Memory,
    /// A real etcd + kube-apiserver + kube-controller-manager ([`kube_control_plane`]).
    Real,
}

impl Backend {
    /// The real backend, when its binaries are found (`KUBEBUILDER_ASSETS` or
    /// `../shared/k8s-control-plane`); otherwise says why on stderr, once per test, and `None`.
    pub fn real() -> Option<Backend> {
        match kube_control_plane::Binaries::find() {
            Ok(_) => Some(Backend::Real),
            Err(e) => {
                eprintln!("real control plane not found: {e}");
                None
            }
        }
    }
}

/// Runs the scenario `fn NAME(backend: Backend)` as two tests, `NAME::memory` and `NAME::real`;
/// the second says why and passes when no real control plane is found.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$scenario($crate::Backend::Memory).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real() {
                if let Some(backend) = $crate::Backend::real() {
                    super::$scenario(backend).await
                }
            }
        }
    )+};
}

/// How a cluster is started, beyond its users.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `test-apiserver`: how long requests keep being served by a CRD's old storage after an
    /// update (the real server's window is short and unbounded; a delay makes it certain).
    pub crd_storage_switch_delay: Option<Duration>,
    /// A real control plane's options (its name is set by the cluster).
    pub real: kube_control_plane::Options,
    /// `test-apiserver`: etcd's request size limit, larger objects are refused with a 500 as on
    /// a real server (whose etcd here has its fixed default of 1.5 MiB).
    pub max_object_bytes: Option<usize>,
}

/// Namespace of the ServiceAccounts that stand for the users of a real cluster.
pub const IDENTITY_NAMESPACE: &str = "e2e-identities";

/// One cluster with an `admin` and a [`KONNECTOR_USER`] (in `system:masters` on
/// `test-apiserver`; ServiceAccounts bound to `cluster-admin` on a real control plane).
#[derive(Debug)]
pub struct Cluster {
    inner: Inner,
    name: String,
}

#[derive(Debug)]
enum Inner {
    Memory(TestApiServer),
    Real(Box<RealCluster>),
}

/// A real control plane (its own, or one shared by the scenarios of the test process) and the
/// tokens of its users.
#[derive(Debug)]
struct RealCluster {
    cp: Plane,
    /// On a shared control plane, what this cluster's ServiceAccount names end with
    /// (`-<scenario>`), so that each scenario has users of its own and sees only their requests.
    suffix: String,
    /// User name -> token (of ServiceAccount `IDENTITY_NAMESPACE/<user><suffix>`).
    tokens: Mutex<std::collections::BTreeMap<String, String>>,
    /// Audit events before this index were cleared by [`Cluster::clear_requests`].
    cleared: Mutex<usize>,
}

/// A control plane owned by one cluster, or shared by the test process.
#[derive(Debug)]
enum Plane {
    Own(Box<kube_control_plane::ControlPlane>),
    Shared(&'static kube_control_plane::ControlPlane),
}

impl std::ops::Deref for Plane {
    type Target = kube_control_plane::ControlPlane;

    fn deref(&self) -> &Self::Target {
        match self {
            Plane::Own(cp) => cp,
            Plane::Shared(cp) => cp,
        }
    }
}

/// The control planes shared by the scenarios of this test process, by name. They live as
/// long as the process (statics are never dropped); their watchdog stops them when it ends.
static SHARED_PLANES: std::sync::OnceLock<
    tokio::sync::Mutex<
        std::collections::BTreeMap<String, &'static kube_control_plane::ControlPlane>,
    >,
> = std::sync::OnceLock::new();

/// The shared control plane `name`, started by the first scenario that asks for it. Only
/// processes and files are kept: every client is made anew by whoever uses it, so scenarios
/// running on other tokio runtimes can share it.
async fn shared_plane(name: &str) -> anyhow::Result<&'static kube_control_plane::ControlPlane> {
    let planes = SHARED_PLANES.get_or_init(Default::default);
    let mut planes = planes.lock().await;
    if let Some(cp) = planes.get(name) {
        return Ok(cp);
    }
    remove_stale_shared_dirs();
    let cp = kube_control_plane::ControlPlane::start(
        kube_control_plane::Options::default().name(format!("shared-{name}")),
    )
    .await
    .with_context(|| format!("start shared control plane {name}"))?;
    let cp: &'static kube_control_plane::ControlPlane = Box::leak(Box::new(cp));
    planes.insert(name.to_string(), cp);
    Ok(cp)
}

/// Removes the folders of shared control planes whose test process is gone. A shared control
/// plane is never dropped, so its folder (logs, audit log, about 120 MB of etcd data) outlives
/// the process; the next run cleans up, and the last run's stays there to be looked at.
fn remove_stale_shared_dirs() {
    // Where kube-control-plane puts them.
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `kcp-shared-<plane>-<pid>-<n>`, as kube-control-plane names its folders.
        let Some(rest) = name.strip_prefix("kcp-shared-") else {
            continue;
        };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A name no other scenario of this process has.
pub fn unique_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Cluster {
    /// Starts an in-memory cluster; `name` prefixes its kubeconfig files.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_on(Backend::Memory, name, &[]).await
    }

    /// Starts an in-memory cluster with more users in `system:masters` (for credential
    /// rotation).
    pub async fn start_with_users(name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(Backend::Memory, name, extra).await
    }

    /// Starts a cluster on `backend` with `admin`, [`KONNECTOR_USER`] and `extra` users, all
    /// allowed everything.
    pub async fn start_on(backend: Backend, name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(backend, name, extra, ClusterOptions::default()).await
    }

    /// Like [`Cluster::start_on`], with options.
    pub async fn start_with(
        backend: Backend,
        name: &str,
        extra: &[&str],
        cluster: ClusterOptions,
    ) -> anyhow::Result<Self> {
        let inner = match backend {
            Backend::Memory => {
                let mut options =
                    Options::default().user(User::new(KONNECTOR_USER, &["system:masters"]));
                if let Some(delay) = cluster.crd_storage_switch_delay {
                    options = options.crd_storage_switch_delay(delay);
                }
                if let Some(bytes) = cluster.max_object_bytes {
                    options = options.max_object_bytes(bytes);
                }
                for user in extra {
                    options = options.user(User::new(user, &["system:masters"]));
                }
                Inner::Memory(
                    TestApiServer::start(options)
                        .await
                        .context("start test-apiserver")?,
                )
            }
            Backend::Real => {
                let cp = kube_control_plane::ControlPlane::start(cluster.real.name(name))
                    .await
                    .with_context(|| format!("start control plane {name}"))?;
                let real = RealCluster {
                    cp: Plane::Own(Box::new(cp)),
                    suffix: String::new(),
                    tokens: Mutex::default(),
                    cleared: Mutex::new(0),
                };
                for user in std::iter::once(&KONNECTOR_USER).chain(extra) {
                    real.add_user(user).await?;
                }
                Inner::Real(Box::new(real))
            }
        };
        Ok(Self {
            inner,
            name: name.to_owned(),
        })
    }

    /// A cluster on the real control plane `plane` that the scenarios of this test process
    /// share (started by the first one), with [`KONNECTOR_USER`] and `extra` users of its own:
    /// ServiceAccounts named after this cluster, whose requests alone [`Cluster::requests`]
    /// returns (under the plain user names). Scenarios on it keep to their own namespaces.
    pub async fn start_shared(plane: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let cp = shared_plane(plane).await?;
        let id = unique_id();
        let real = RealCluster {
            cp: Plane::Shared(cp),
            suffix: format!("-s{id}"),
            tokens: Mutex::default(),
            cleared: Mutex::new(cp.audit_events_settled().await?.len()),
        };
        for user in std::iter::once(&KONNECTOR_USER).chain(extra) {
            real.add_user(user).await?;
        }
        Ok(Self {
            inner: Inner::Real(Box::new(real)),
            name: format!("{plane}-s{id}"),
        })
    }

    /// Which backend serves this cluster.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Memory(_) => Backend::Memory,
            Inner::Real(_) => Backend::Real,
        }
    }

    /// The in-memory server (fault injection, restarts), `None` on a real control plane.
    pub fn memory(&self) -> Option<&TestApiServer> {
        match &self.inner {
            Inner::Memory(s) => Some(s),
            Inner::Real(_) => None,
        }
    }

    /// The in-memory server, mutably (stop and restart).
    pub fn memory_mut(&mut self) -> Option<&mut TestApiServer> {
        match &mut self.inner {
            Inner::Memory(s) => Some(s),
            Inner::Real(_) => None,
        }
    }

    /// The real control plane, `None` in memory.
    pub fn real(&self) -> Option<&kube_control_plane::ControlPlane> {
        match &self.inner {
            Inner::Memory(_) => None,
            Inner::Real(r) => Some(&r.cp),
        }
    }

    /// The bearer token of `user`.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        match &self.inner {
            Inner::Memory(s) => s.token(user),
            Inner::Real(r) => r.token(user),
        }
        .with_context(|| format!("no user {user} in cluster {}", self.name))
    }

    /// Adds a user allowed everything (a ServiceAccount bound to `cluster-admin` on a real
    /// control plane); in memory, users are fixed at start.
    pub async fn add_user(&self, user: &str) -> anyhow::Result<()> {
        match &self.inner {
            Inner::Memory(s) => s
                .token(user)
                .map(|_| ())
                .with_context(|| format!("no user {user} in in-memory cluster {}", self.name)),
            Inner::Real(r) => r.add_user(user).await,
        }
    }

    /// Revokes `user`'s token where the server allows it (real: deletes the Secret it is bound
    /// to, so the token dies at once); `false` in memory.
    pub async fn revoke(&self, user: &str) -> anyhow::Result<bool> {
        match &self.inner {
            Inner::Memory(_) => Ok(false),
            Inner::Real(r) => {
                let client = r.cp.admin_client().await?;
                let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(client, IDENTITY_NAMESPACE);
                secrets
                    .delete(&token_secret(&r.account(user)), &Default::default())
                    .await
                    .with_context(|| format!("delete the token Secret of {user}"))?;
                Ok(true)
            }
        }
    }

    /// The kubeconfig YAML of `user` (context namespace `default`).
    pub fn kubeconfig(&self, user: &str) -> anyhow::Result<String> {
        match &self.inner {
            Inner::Memory(s) => s
                .kubeconfig(user)
                .with_context(|| format!("no user {user} in cluster {}", self.name)),
            Inner::Real(r) if user == "admin" => Ok(r.cp.admin_kubeconfig()),
            Inner::Real(r) => {
                let token = self.token(user)?;
                Ok(r.cp.token_kubeconfig(&token, Some("default")))
            }
        }
    }

    /// Writes the konnector's kubeconfig into `dir` and returns its path.
    pub fn konnector_kubeconfig_file(&self, dir: &TempDir) -> anyhow::Result<PathBuf> {
        dir.write(
            &format!("{}-{KONNECTOR_USER}.kubeconfig", self.name),
            &self.kubeconfig(KONNECTOR_USER)?,
        )
    }

    /// A client for the test itself (as `admin`).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let yaml = match &self.inner {
            Inner::Real(r) => r.cp.admin_kubeconfig(),
            Inner::Memory(_) => self.kubeconfig("admin")?,
        };
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        // With TCP_NODELAY, as the konnector's own clients: kube's connector would add Nagle's
        // delays to what the tests and the bench measure.
        Ok(cluster_topology::build_unlayered_client(config)?)
    }

    /// Every request since the last [`Cluster::clear_requests`]: the request record of
    /// `test-apiserver`, the audit log of a real server (user names of our ServiceAccounts
    /// shortened to the user, e.g. `konnector`).
    pub async fn requests(&self) -> anyhow::Result<Vec<RecordedRequest>> {
        match &self.inner {
            Inner::Memory(s) => Ok(s.requests()),
            Inner::Real(r) => {
                let events = r.cp.audit_events_settled().await?;
                let cleared = *r.cleared.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                Ok(events
                    .iter()
                    .skip(cleared)
                    .filter_map(|e| r.recorded(e))
                    .collect())
            }
        }
    }

    /// Forgets the requests so far.
    pub async fn clear_requests(&self) -> anyhow::Result<()> {
        match &self.inner {
            Inner::Memory(s) => s.clear_requests(),
            Inner::Real(r) => {
                let n = r.cp.audit_events_settled().await?.len();
                *r.cleared.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = n;
            }
        }
        Ok(())
    }

    /// Requests the konnector made.
    pub async fn konnector_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .await
            .unwrap_or_else(|e| panic!("requests of cluster {}: {e:#}", self.name))
            .into_iter()
            .filter(|r| r.user == KONNECTOR_USER)
            .collect()
    }

    /// Write requests (create, update, patch, delete) the konnector made.
    pub async fn konnector_writes(&self) -> Vec<RecordedRequest> {
        self.konnector_requests()
            .await
            .into_iter()
            .filter(RecordedRequest::is_write)
            .collect()
    }

    /// Starts an in-memory cluster from `options` as they are (e.g. RBAC on, users outside
    /// `system:masters`); unlike [`Cluster::start_on`], [`KONNECTOR_USER`] exists only if
    /// `options` has it. `name` prefixes its kubeconfig files.
    pub async fn start_in_memory(name: &str, options: Options) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Inner::Memory(
                TestApiServer::start(options)
                    .await
                    .context("start test-apiserver")?,
            ),
            name: name.to_owned(),
        })
    }
}

/// The Secret a user's token is bound to.
fn token_secret(user: &str) -> String {
    format!("{user}-token")
}

impl RealCluster {
    /// The ServiceAccount that stands for `user`.
    fn account(&self, user: &str) -> String {
        format!("{user}{}", self.suffix)
    }

    async fn add_user(&self, user: &str) -> anyhow::Result<()> {
        let account = self.account(user);
        self.cp
            .grant_cluster_admin(IDENTITY_NAMESPACE, &account)
            .await
            .with_context(|| format!("make {account} a cluster admin"))?;
        let token = self
            .cp
            .service_account_token(IDENTITY_NAMESPACE, &account, Some(&token_secret(&account)))
            .await
            .with_context(|| format!("token of {account}"))?;
        self.tokens
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(user.to_string(), token);
        Ok(())
    }

    fn token(&self, user: &str) -> Option<String> {
        self.tokens.lock().ok()?.get(user).cloned()
    }
}

impl RealCluster {
    /// An audit event as a request record of `test-apiserver`, so that scenarios read both
    /// alike: our ServiceAccounts under their user names; `None` for those of another cluster
    /// on the same (shared) control plane.
    fn recorded(&self, e: &kube_control_plane::AuditEvent) -> Option<RecordedRequest> {
        let prefix = format!("system:serviceaccount:{IDENTITY_NAMESPACE}:");
        let user = match e.user.strip_prefix(&prefix) {
            Some(account) if self.suffix.is_empty() => account.to_string(),
            Some(account) => account.strip_suffix(&self.suffix)?.to_string(),
            None => e.user.clone(),
        };
        Some(record(e, user))
    }
}

/// `e` as a request record of `test-apiserver`, made by `user`.
fn record(e: &kube_control_plane::AuditEvent, user: String) -> RecordedRequest {
    let (path, query) = e
        .request_uri
        .split_once('?')
        .unwrap_or((e.request_uri.as_str(), ""));
    RecordedRequest {
        user,
        verb: e.verb.clone(),
        group: e.api_group.clone().unwrap_or_default(),
        resource: e.resource.clone().unwrap_or_default(),
        subresource: e.subresource.clone().unwrap_or_default(),
        namespace: e.namespace.clone().unwrap_or_default(),
        name: e.name.clone().unwrap_or_default(),
        path: path.to_string(),
        query: query.to_string(),
        code: e.code.unwrap_or_default(),
    }
}

/// Output captured from a child process, line by line as it arrives.
#[derive(Debug, Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn push_line(&self, line: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.push_str(line);
            s.push('\n');
        }
    }

    fn get(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A running `konnector` process; killed when dropped.
#[derive(Debug)]
pub struct Konnector {
    child: Child,
    stdout: Captured,
    stderr: Captured,
    status: Option<ExitStatus>,
}

impl Konnector {
    /// Starts `bin` with `args`. The environment is made hermetic: no `KUBECONFIG`, `HOME` in
    /// `home` (so `~/.kube/config` of the developer is never read), no `POD_NAMESPACE` or
    /// `POD_NAME`.
    pub fn spawn(bin: impl AsRef<Path>, args: &[String], home: &TempDir) -> anyhow::Result<Self> {
        Self::spawn_with_env(bin, args, home, &[])
    }

    /// The process id while it runs (for reading its `/proc` figures).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Like [`Konnector::spawn`], with extra environment variables (e.g. `POD_NAME`).
    pub fn spawn_with_env(
        bin: impl AsRef<Path>,
        args: &[String],
        home: &TempDir,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        // Parallel tests would all bind the default metrics port (:8081); a test that wants
        // metrics passes its own address.
        let mut args = args.to_vec();
        if !args.iter().any(|a| a.starts_with("--metrics-bind-address")) {
            args.push("--metrics-bind-address=0".to_string());
        }
        let mut child = Command::new(bin.as_ref())
            .args(&args)
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("HOME", home.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.as_ref().display()))?;
        let stdout = Captured::default();
        let stderr = Captured::default();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(capture(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(capture(err, stderr.clone()));
        }
        Ok(Self {
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// Kills the process with SIGKILL (no chance to clean up), as a crash or an OOM kill would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("SIGKILL konnector")?;
        self.status = Some(
            self.child
                .wait()
                .await
                .context("wait for killed konnector")?,
        );
        Ok(())
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.get()
    }

    /// Everything written to stderr so far (logs and errors).
    pub fn stderr(&self) -> String {
        self.stderr.get()
    }

    /// Waits for the process to exit; an error (with the output so far) if it does not in time.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                self.status = Some(status);
                // The pipes close at exit; give the readers the chance to drain them.
                let _ = tokio::time::timeout(Duration::from_secs(2), self.drained()).await;
                Ok(status)
            }
            Err(_) => bail!(
                "konnector did not exit within {timeout:?}\nstderr:\n{}",
                self.stderr()
            ),
        }
    }

    async fn drained(&self) {
        loop {
            if Arc::strong_count(&self.stderr.0) == 1 && Arc::strong_count(&self.stdout.0) == 1 {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM (via `kill`, to keep the harness free of unsafe code).
    pub async fn terminate(&self) -> anyhow::Result<()> {
        self.signal("TERM").await
    }

    /// Sends SIGSTOP: the process freezes with its connections open, as a node under heavy
    /// pressure or a debugger would leave it.
    pub async fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP").await
    }

    /// Sends SIGCONT after [`Konnector::pause`].
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT").await
    }

    async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("process already exited")?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .await?;
        if !status.success() {
            bail!("kill -{name} {pid} failed: {status}");
        }
        Ok(())
    }

    /// Waits until stderr contains `needle`; fails early if the process exits.
    pub async fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "konnector exited before logging {needle:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{needle:?} not logged within {timeout:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Konnector {
    /// Waits until `GET path` on `addr` answers 200; fails early, with the output, if the
    /// process exits first.
    pub async fn wait_http_ok(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http_get(addr, path).await {
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "konnector exited before {path} answered 200\nstderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{path} did not answer 200 within {timeout:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn capture(reader: impl tokio::io::AsyncRead + Unpin, into: Captured) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        into.push_line(&line);
    }
}

/// Poll interval of the wait helpers.
const POLL: Duration = Duration::from_millis(50);

/// Polls `condition` until it holds; an error naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A minimal HTTP/1.1 GET (the probes need nothing more): status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((code, body.to_owned()))
}

/// The last line of `stderr` that starts with `Error: `, without the prefix: the konnector's
/// startup failure message.
pub fn error_line(stderr: &str) -> Option<&str> {
    stderr.lines().rev().find_map(|l| l.strip_prefix("Error: "))
}
