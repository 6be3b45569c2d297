//! Starting, restarting and stopping one control plane.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

use crate::binaries::Binaries;
use crate::identity::kubeconfig_yaml;
use crate::pki::{ADMIN_USER, HARNESS_USER, KCM_USER, Pki};
use crate::process::{Proc, Watchdog, kill, tails, terminate};
use crate::{Error, Result, io_err};

const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";
const KCM: &str = "kube-controller-manager";

/// How a control plane is started. Build it from `Options::default()`.
#[derive(Debug, Clone)]
pub struct Options {
    name: String,
    controller_manager: Option<bool>,
    extra_apiserver_flags: Vec<String>,
    extra_etcd_flags: Vec<String>,
    etcd_compaction_interval: Option<Duration>,
    audit: bool,
    watch_cache: bool,
    dir: Option<PathBuf>,
    start_timeout: Duration,
    binaries: Option<Binaries>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            name: "kcp".to_owned(),
            controller_manager: None,
            extra_apiserver_flags: Vec::new(),
            extra_etcd_flags: Vec::new(),
            etcd_compaction_interval: None,
            audit: true,
            watch_cache: true,
            dir: None,
            start_timeout: Duration::from_secs(60),
            binaries: None,
        }
    }
}

impl Options {
    /// Names the control plane in log lines, the temp dir and the kubeconfig (default `kcp`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Whether to run kube-controller-manager (default: when its binary exists). Without it
    /// there is no garbage collection, no namespace deletion and no `default` ServiceAccount,
    /// and the start is about a second faster.
    pub fn controller_manager(mut self, run: bool) -> Self {
        self.controller_manager = Some(run);
        self
    }

    /// Appends a flag (`--name=value`) to the kube-apiserver command line; later flags win.
    pub fn extra_apiserver_flag(mut self, flag: impl Into<String>) -> Self {
        self.extra_apiserver_flags.push(flag.into());
        self
    }

    /// Appends flags to the kube-apiserver command line.
    pub fn extra_apiserver_flags(mut self, flags: impl IntoIterator<Item = String>) -> Self {
        self.extra_apiserver_flags.extend(flags);
        self
    }

    /// Appends a flag to the etcd command line (the etcd here takes only the flags its
    /// `-help` lists; its request size limit is fixed at the default 1.5 MiB).
    pub fn extra_etcd_flag(mut self, flag: impl Into<String>) -> Self {
        self.extra_etcd_flags.push(flag.into());
        self
    }

    /// How often kube-apiserver compacts etcd (`--etcd-compaction-interval`, default 5 minutes).
    /// A few seconds make old resourceVersions expire, so that resumed watches get `410 Gone`.
    pub fn etcd_compaction_interval(mut self, interval: Duration) -> Self {
        self.etcd_compaction_interval = Some(interval);
        self
    }

    /// Whether to write the audit log that [`ControlPlane::audit_events`] reads (default true).
    pub fn audit(mut self, audit: bool) -> Self {
        self.audit = audit;
        self
    }

    /// Whether kube-apiserver serves watches and lists from its watch cache (default true, as
    /// in a real cluster). The cache keeps serving watches from resourceVersions that etcd has
    /// long compacted, as long as they are within its window; `false` sends watches to etcd, so
    /// that with [`Options::etcd_compaction_interval`] a resumed watch gets `410 Gone` within
    /// seconds.
    pub fn watch_cache(mut self, on: bool) -> Self {
        self.watch_cache = on;
        self
    }

    /// Works in `dir` (created if missing) instead of a fresh temp dir; it is kept afterwards.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How long the start may take before it fails with the log tails (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Uses these binaries instead of [`Binaries::find`].
    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.binaries = Some(binaries);
        self
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    apiserver: u16,
    etcd_client: u16,
    etcd_peer: u16,
    kcm: u16,
}

/// Ports handed out in this process; never handed out twice, so that two control planes started
/// at the same time cannot pick the same one between releasing it and the server binding it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn free_ports() -> Result<Ports> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    // Hold every listener until all four ports are known, so the kernel gives four different.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 4 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
        let port = listener
            .local_addr()
            .map_err(io_err("local address of a bound port"))?
            .port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(Ports {
        apiserver: ports[0],
        etcd_client: ports[1],
        etcd_peer: ports[2],
        kcm: ports[3],
    })
}

#[derive(Debug, Default)]
struct Procs {
    etcd: Option<Proc>,
    apiserver: Option<Proc>,
    kcm: Option<Proc>,
    watchdog: Option<Watchdog>,
    /// The servers' process group (etcd leads it).
    pgid: Option<u32>,
}

impl Procs {
    /// The first server that has exited, as a sentence.
    fn exited(&mut self) -> Option<String> {
        [&mut self.etcd, &mut self.apiserver, &mut self.kcm]
            .into_iter()
            .flatten()
            .find_map(|p| {
                let pid = p.pid();
                p.exit_status()
                    .map(|status| format!("{} (pid {pid}) exited: {status}", p.name))
            })
    }

    /// Stops everything: kube-controller-manager and kube-apiserver first, then etcd, then the
    /// watchdog. Blocking.
    fn stop_all(&mut self) {
        let mut kcm = self.kcm.take();
        let mut apiserver = self.apiserver.take();
        let mut first: Vec<&mut Proc> = kcm.iter_mut().chain(apiserver.iter_mut()).collect();
        terminate(&mut first);
        if let Some(mut etcd) = self.etcd.take() {
            terminate(&mut [&mut etcd]);
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.release();
        }
        self.pgid = None;
    }
}

/// A running etcd + kube-apiserver (+ kube-controller-manager) on loopback ports.
///
/// Dropping it stops the servers (SIGTERM, SIGKILL after 3 s; etcd last) and removes its temp
/// dir. When dropped during a panic it prints the last 40 lines of each server's log and keeps
/// the dir. Servers never outlive the test process, even when this is never dropped.
#[derive(Debug)]
pub struct ControlPlane {
    name: String,
    dir: PathBuf,
    remove_dir: bool,
    binaries: Binaries,
    run_kcm: bool,
    audit: bool,
    watch_cache: bool,
    compaction: Option<Duration>,
    extra_apiserver_flags: Vec<String>,
    extra_etcd_flags: Vec<String>,
    timeout: Duration,
    ports: Ports,
    server: String,
    ca_pem: String,
    admin_kubeconfig: String,
    harness_kubeconfig: String,
    procs: Mutex<Procs>,
}

static DIR_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh dir under `CARGO_TARGET_TMPDIR` (when set at run time) or the system temp dir.
fn fresh_dir(name: &str) -> Result<PathBuf> {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).map_err(io_err(format!("create {}", base.display())))?;
    loop {
        let seq = DIR_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("kcp-{name}-{}-{seq}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("create {}", dir.display()))(e)),
        }
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(io_err(format!("write {}", path.display())))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("chmod {}", path.display())))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err(format!("remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Every request at level Metadata; `RequestReceived` events are omitted, each request gets one
/// `ResponseComplete` event (and long-running ones a `ResponseStarted` too).
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
- RequestReceived
rules:
- level: Metadata
";

impl ControlPlane {
    /// Starts a control plane and waits until it serves: `/readyz` answers 200 and, with
    /// kube-controller-manager, the `default` ServiceAccount exists (so namespaces are usable
    /// as in a real cluster). Retries with new ports when one was taken meanwhile.
    pub async fn start(options: Options) -> Result<ControlPlane> {
        let t0 = Instant::now();
        let binaries = match options.binaries.clone() {
            Some(b) => b,
            None => Binaries::find()?,
        };
        let run_kcm = match options.controller_manager {
            Some(false) => false,
            None => binaries.kube_controller_manager.is_some(),
            Some(true) if binaries.kube_controller_manager.is_some() => true,
            Some(true) => {
                return Err(Error::Other(
                    "controller_manager(true), but there is no kube-controller-manager binary"
                        .to_owned(),
                ));
            }
        };
        let name: String = options
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let (dir, remove_dir) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("create {}", dir.display())))?;
                (dir.clone(), false)
            }
            None => (fresh_dir(&name)?, true),
        };
        let pki = Pki::generate(&name)?;
        let p = dir.join("pki");
        std::fs::create_dir_all(&p).map_err(io_err(format!("create {}", p.display())))?;
        write(&p.join("ca.crt"), &pki.ca_crt)?;
        write(&p.join("serving.crt"), &pki.serving_crt)?;
        write_private(&p.join("serving.key"), &pki.serving_key)?;
        write(&p.join("admin.crt"), &pki.admin_crt)?;
        write_private(&p.join("admin.key"), &pki.admin_key)?;
        write(&p.join("sa.pub"), &pki.sa_pub)?;
        write_private(&p.join("sa.key"), &pki.sa_key)?;
        write(&dir.join("audit-policy.yaml"), AUDIT_POLICY)?;

        let mut cp = ControlPlane {
            name,
            dir,
            remove_dir,
            binaries,
            run_kcm,
            audit: options.audit,
            watch_cache: options.watch_cache,
            compaction: options.etcd_compaction_interval,
            extra_apiserver_flags: options.extra_apiserver_flags,
            extra_etcd_flags: options.extra_etcd_flags,
            timeout: options.start_timeout,
            ports: free_ports()?,
            server: String::new(),
            ca_pem: pki.ca_crt.clone(),
            admin_kubeconfig: String::new(),
            harness_kubeconfig: String::new(),
            procs: Mutex::new(Procs::default()),
        };
        let mut attempt = 1;
        loop {
            match cp.boot(&pki, t0 + cp.timeout).await {
                Ok(()) => return Ok(cp),
                Err(e) => {
                    cp.lock().stop_all();
                    let collision = [ETCD, APISERVER, KCM].iter().any(|n| {
                        std::fs::read_to_string(cp.log(n))
                            .is_ok_and(|l| l.to_lowercase().contains("address already in use"))
                    });
                    if collision && attempt < 3 {
                        eprintln!(
                            "[kube-control-plane {}] a port was taken meanwhile; starting again \
                             on new ports",
                            cp.name
                        );
                        attempt += 1;
                        cp.ports = free_ports()?;
                        continue;
                    }
                    // Keep the logs to look at, not etcd's data (its WAL alone is 64 MB).
                    let _ = remove_if_exists(&cp.dir.join("etcd"));
                    cp.remove_dir = false;
                    return Err(e);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, process: &str) -> PathBuf {
        self.dir.join(format!("{process}.log"))
    }

    fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// One start attempt on `self.ports`.
    async fn boot(&mut self, pki: &Pki, deadline: Instant) -> Result<()> {
        for n in [ETCD, APISERVER, KCM] {
            remove_if_exists(&self.log(n))?;
        }
        remove_if_exists(&self.audit_log())?;
        let etcd_dir = self.dir.join("etcd");
        remove_if_exists(&etcd_dir)?;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&etcd_dir)
                .map_err(io_err(format!("create {}", etcd_dir.display())))?;
        }
        let kcm_certs = self.dir.join("kcm-certs");
        std::fs::create_dir_all(&kcm_certs)
            .map_err(io_err(format!("create {}", kcm_certs.display())))?;

        self.server = format!("https://127.0.0.1:{}", self.ports.apiserver);
        self.admin_kubeconfig = kubeconfig_yaml(
            &self.name,
            &self.server,
            &pki.ca_crt,
            ADMIN_USER,
            &[
                ("client-certificate-data", b64(&pki.admin_crt)),
                ("client-key-data", b64(&pki.admin_key)),
            ],
            None,
        );
        write_private(&self.dir.join("kubeconfig"), &self.admin_kubeconfig)?;
        let kcm_kubeconfig = kubeconfig_yaml(
            &self.name,
            &self.server,
            &pki.ca_crt,
            KCM_USER,
            &[
                ("client-certificate-data", b64(&pki.kcm_crt)),
                ("client-key-data", b64(&pki.kcm_key)),
            ],
            None,
        );
        write_private(&self.dir.join("kcm.kubeconfig"), &kcm_kubeconfig)?;
        self.harness_kubeconfig = kubeconfig_yaml(
            &self.name,
            &self.server,
            &pki.ca_crt,
            HARNESS_USER,
            &[
                ("client-certificate-data", b64(&pki.harness_crt)),
                ("client-key-data", b64(&pki.harness_key)),
            ],
            None,
        );

        let etcd_url = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer_url = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        let mut etcd_args: Vec<String> = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", etcd_dir.display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        etcd_args.extend(self.extra_etcd_flags.iter().cloned());
        let etcd = Proc::spawn(ETCD, &self.binaries.etcd, &etcd_args, &self.log(ETCD), None)?;
        let pgid = etcd.pid();
        {
            let mut procs = self.lock();
            procs.etcd = Some(etcd);
            procs.pgid = Some(pgid);
            procs.watchdog = Some(Watchdog::spawn(pgid)?);
        }
        // kube-apiserver waits for etcd by itself; starting both at once saves a second.
        self.spawn_apiserver()?;
        let client = self.polling_client().await?;
        self.wait_for("kube-apiserver /readyz", deadline, || readyz(&client))
            .await?;
        if self.run_kcm {
            self.spawn_kcm()?;
            self.wait_for("the default ServiceAccount", deadline, || {
                default_service_account(&client)
            })
            .await?;
        }
        Ok(())
    }

    fn apiserver_args(&self) -> Vec<String> {
        let p = self.dir.join("pki");
        let p = |f: &str| p.join(f).display().to_string();
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.ports.etcd_client),
            format!("--secure-port={}", self.ports.apiserver),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--cert-dir={}", p("")),
            format!("--tls-cert-file={}", p("serving.crt")),
            format!("--tls-private-key-file={}", p("serving.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--authorization-mode=Node,RBAC".to_owned(),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--allow-privileged=true".to_owned(),
        ];
        if self.audit {
            args.extend([
                format!(
                    "--audit-policy-file={}",
                    self.dir.join("audit-policy.yaml").display()
                ),
                format!("--audit-log-path={}", self.audit_log().display()),
                "--audit-log-format=json".to_owned(),
                // Written in the request's own goroutine, before the next request of the same
                // client can start (see `audit_events_settled`).
                "--audit-log-mode=blocking".to_owned(),
            ]);
        }
        if !self.watch_cache {
            args.push("--watch-cache=false".to_owned());
        }
        if let Some(interval) = self.compaction {
            args.push(format!(
                "--etcd-compaction-interval={}ms",
                interval.as_millis()
            ));
        }
        args.extend(self.extra_apiserver_flags.iter().cloned());
        args
    }

    fn spawn_apiserver(&self) -> Result<()> {
        let mut procs = self.lock();
        let pgid = procs.pgid;
        procs.apiserver = Some(Proc::spawn(
            APISERVER,
            &self.binaries.kube_apiserver,
            &self.apiserver_args(),
            &self.log(APISERVER),
            pgid,
        )?);
        Ok(())
    }

    fn spawn_kcm(&self) -> Result<()> {
        let Some(binary) = &self.binaries.kube_controller_manager else {
            return Ok(());
        };
        let kubeconfig = self.dir.join("kcm.kubeconfig").display().to_string();
        let pki = self.dir.join("pki");
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--controllers=garbage-collector-controller,namespace-controller,\
             serviceaccount-controller,serviceaccount-token-controller,\
             clusterrole-aggregation-controller"
                .to_owned(),
            format!(
                "--service-account-private-key-file={}",
                pki.join("sa.key").display()
            ),
            format!("--root-ca-file={}", pki.join("ca.crt").display()),
            "--use-service-account-credentials=false".to_owned(),
            "--leader-elect=false".to_owned(),
            format!("--secure-port={}", self.ports.kcm),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--cert-dir={}", self.dir.join("kcm-certs").display()),
        ];
        let mut procs = self.lock();
        let pgid = procs.pgid;
        procs.kcm = Some(Proc::spawn(KCM, binary, &args, &self.log(KCM), pgid)?);
        Ok(())
    }

    /// A client as the harness itself (user `kube-control-plane`, group `system:masters`).
    pub(crate) async fn harness_client(&self) -> Result<kube::Client> {
        crate::identity::client_from_yaml(&self.harness_kubeconfig).await
    }

    /// A harness client that fails fast (no retries), for polling.
    async fn polling_client(&self) -> Result<kube::Client> {
        let mut config = crate::identity::config_from_yaml(&self.harness_kubeconfig).await?;
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(5));
        kube::Client::try_from(config).map_err(crate::kube_err("build a client"))
    }

    /// Polls `probe` until it says yes; fails early when a server exits and at `deadline`, both
    /// times with the log tails.
    async fn wait_for<F, Fut>(&self, what: &str, deadline: Instant, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            let exited = self.lock().exited();
            if let Some(exited) = exited {
                return Err(Error::Start(format!(
                    "control plane {} in {}: {exited} while waiting for {what}{}",
                    self.name,
                    self.dir.display(),
                    self.log_tails(25)
                )));
            }
            if tokio::time::timeout(Duration::from_secs(5), probe())
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Start(format!(
                    "control plane {} in {}: timed out waiting for {what}{}",
                    self.name,
                    self.dir.display(),
                    self.log_tails(25)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tails(&self, lines: usize) -> String {
        tails(&[ETCD, APISERVER, KCM].map(|n| self.log(n)), lines)
    }

    /// Stops only kube-apiserver (SIGTERM, SIGKILL after 3 s); etcd and the controller manager
    /// keep running, as when an API server restarts in a real cluster.
    pub async fn stop_apiserver(&self) -> Result<()> {
        let apiserver = self.lock().apiserver.take();
        if let Some(mut apiserver) = apiserver {
            tokio::task::spawn_blocking(move || terminate(&mut [&mut apiserver]))
                .await
                .map_err(|e| Error::Other(format!("stopping kube-apiserver: {e}")))?;
        }
        Ok(())
    }

    /// SIGKILLs kube-apiserver, as a crash or an OOM kill would: open watches break with a
    /// transport error instead of ending cleanly (as on [`ControlPlane::stop_apiserver`]), so
    /// clients resume them from their last resourceVersion. Start it again with
    /// [`ControlPlane::start_apiserver`].
    pub async fn kill_apiserver(&self) -> Result<()> {
        let apiserver = self.lock().apiserver.take();
        if let Some(mut apiserver) = apiserver {
            tokio::task::spawn_blocking(move || kill(&mut apiserver))
                .await
                .map_err(|e| Error::Other(format!("killing kube-apiserver: {e}")))?;
        }
        Ok(())
    }

    /// Starts kube-apiserver again on the same port and etcd and waits for `/readyz`.
    pub async fn start_apiserver(&self) -> Result<()> {
        if self.lock().apiserver.is_some() {
            return Err(Error::Other(format!(
                "kube-apiserver of {} is running; stop_apiserver first",
                self.name
            )));
        }
        self.spawn_apiserver()?;
        let client = self.polling_client().await?;
        self.wait_for(
            "kube-apiserver /readyz after a restart",
            Instant::now() + self.timeout,
            || readyz(&client),
        )
        .await
    }

    /// The admin kubeconfig (client certificate, group `system:masters`), also in
    /// `DIR/kubeconfig` for `kubectl`.
    pub fn admin_kubeconfig(&self) -> String {
        self.admin_kubeconfig.clone()
    }

    /// `DIR/kubeconfig`: the admin kubeconfig as a file, for a child process or `kubectl`.
    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The folder with the PKI, kubeconfigs, logs, audit log and etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name given in [`Options::name`] (made file-name safe).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether kube-controller-manager runs.
    pub fn has_controller_manager(&self) -> bool {
        self.run_kcm
    }

    /// The pids of etcd, kube-apiserver and kube-controller-manager (`None` when not running),
    /// e.g. to prove that none outlives a test.
    pub fn pids(&self) -> [(&'static str, Option<u32>); 3] {
        let procs = self.lock();
        [
            (ETCD, procs.etcd.as_ref().map(Proc::pid)),
            (APISERVER, procs.apiserver.as_ref().map(Proc::pid)),
            (KCM, procs.kcm.as_ref().map(Proc::pid)),
        ]
    }

    /// A client as `admin` (group `system:masters`).
    pub async fn admin_client(&self) -> Result<kube::Client> {
        crate::identity::client_from_yaml(&self.admin_kubeconfig).await
    }

    pub(crate) fn audit_enabled(&self) -> bool {
        self.audit
    }

    pub(crate) fn audit_log_path(&self) -> PathBuf {
        self.audit_log()
    }
}

async fn readyz(client: &kube::Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    client.request_text(request).await.is_ok()
}

async fn default_service_account(client: &kube::Client) -> bool {
    Api::<ServiceAccount>::namespaced(client.clone(), "default")
        .get_opt("default")
        .await
        .is_ok_and(|sa| sa.is_some())
}

pub(crate) fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "[kube-control-plane {}] dropped while panicking; logs:{}",
                self.name,
                self.log_tails(40)
            );
        }
        self.lock().stop_all();
        if panicking || !self.remove_dir {
            if panicking {
                eprintln!(
                    "[kube-control-plane {}] kept {} (kubeconfig, logs, audit.log, etcd data)",
                    self.name,
                    self.dir.display()
                );
            }
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "[kube-control-plane {}] could not remove {}: {e}",
                self.name,
                self.dir.display()
            );
        }
    }
}
