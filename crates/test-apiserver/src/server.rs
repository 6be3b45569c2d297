//! The server handle: users, listener lifecycle (start, stop, restart on the same port with the
//! same data), kubeconfigs, request records and fault injection. The options and the state the
//! handle shares with the running server are in [`crate::shared`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::request::User;
use crate::shared::{Fault, Options, RecordedRequest, Shared};
use crate::store::Store;

/// Name of the built-in admin user (member of `system:masters`).
pub const ADMIN: &str = "admin";

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the listener failed.
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
    /// Generating or loading the TLS material failed.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// A running in-memory API server. Dropping the handle stops it.
#[derive(Debug)]
pub struct TestApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Option<crate::tls::TlsMaterial>,
    listener: Option<JoinHandle<()>>,
    gc: JoinHandle<()>,
    /// The ClusterRole aggregation controller.
    aggregation: JoinHandle<()>,
    /// Forgets old history every `Options::compaction_interval`.
    compactor: Option<JoinHandle<()>>,
}

impl TestApiServer {
    /// Starts a server on 127.0.0.1 with the built-in namespaces `default`, `kube-system` and
    /// `kube-public`.
    pub async fn start(options: Options) -> Result<Self, StartError> {
        let mut users: HashMap<String, User> = HashMap::new();
        let admin = User::new(ADMIN, &["system:masters", "system:authenticated"]);
        users.insert(admin.token.clone(), admin);
        for u in &options.users {
            let mut u = u.clone();
            if !u.groups.iter().any(|g| g == "system:authenticated") {
                u.groups.push("system:authenticated".to_owned());
            }
            users.insert(u.token.clone(), u);
        }
        let mut store = Store::new(options.history_limit);
        store.max_object_bytes = options.max_object_bytes;
        crate::api::bootstrap(&mut store);
        let (drop_watches, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: RwLock::new(store),
            options: options.clone(),
            users,
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            drop_watches,
            gc: Notify::new(),
            aggregation: Notify::new(),
        });
        let tls = if options.tls {
            Some(crate::tls::TlsMaterial::generate().map_err(StartError::Tls)?)
        } else {
            None
        };
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|source| StartError::Bind {
                port: options.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: options.port,
            source,
        })?;
        let gc = tokio::spawn(crate::gc::run(shared.clone()));
        let aggregation = tokio::spawn(crate::aggregation::run(shared.clone()));
        let compactor = options
            .compaction_interval
            .map(|interval| tokio::spawn(compact_every(shared.clone(), interval)));
        let task = tokio::spawn(serve(
            listener,
            shared.clone(),
            tls.as_ref().map(|t| t.acceptor.clone()),
        ));
        Ok(Self {
            shared,
            addr,
            tls,
            listener: Some(task),
            gc,
            aggregation,
            compactor,
        })
    }

    /// `https://127.0.0.1:<port>` (or `http://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA certificate (PEM) that signed the serving certificate, for HTTPS servers.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// The bearer token of a configured user (`admin` always exists).
    pub fn token(&self, user: &str) -> Option<String> {
        self.shared
            .users
            .values()
            .find(|u| u.name == user)
            .map(|u| u.token.clone())
    }

    /// A kubeconfig (YAML) for `user` with context `test`; `None` for an unknown user.
    pub fn kubeconfig(&self, user: &str) -> Option<String> {
        let token = self.token(user)?;
        let ca = self
            .ca_pem()
            .map(|pem| {
                format!(
                    "\n    certificate-authority-data: {}",
                    base64::engine::general_purpose::STANDARD.encode(pem)
                )
            })
            .unwrap_or_default();
        Some(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}{ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n    namespace: default\ncurrent-context: test\npreferences: {{}}\n",
            url = self.url(),
        ))
    }

    /// Stops accepting connections and closes every open one (watches end abruptly). The data
    /// is kept for [`Self::restart`].
    pub async fn stop(&mut self) {
        if let Some(task) = self.listener.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same port with the same data (stops first if running).
    pub async fn restart(&mut self) -> Result<(), StartError> {
        self.stop().await;
        let port = self.addr.port();
        // The old socket may linger briefly; retry the bind for a moment.
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => {
                    self.listener = Some(tokio::spawn(serve(
                        listener,
                        self.shared.clone(),
                        self.tls.as_ref().map(|t| t.acceptor.clone()),
                    )));
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(StartError::Bind {
            port,
            source: last.unwrap_or_else(|| std::io::Error::other("bind failed")),
        })
    }

    /// Every request served so far (oldest first).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        if let Ok(mut r) = self.shared.requests.lock() {
            r.clear();
        }
    }

    /// Number of recorded requests that could have changed state (create, update, patch,
    /// delete, deletecollection), whether or not they succeeded.
    pub fn write_count(&self) -> usize {
        self.requests().iter().filter(|r| r.is_write()).count()
    }

    /// Injects a fault (see [`Fault::fail`] and [`Fault::delay`]).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.push(fault);
        }
    }

    /// Removes all pending faults.
    pub fn clear_faults(&self) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.clear();
        }
    }

    /// Ends every open watch cleanly (clients see the stream end and re-watch).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|g| *g += 1);
    }

    /// Forgets event history: watches and exact lists from any earlier resourceVersion get
    /// `410 Gone`, which forces informers to relist.
    pub fn compact(&self) {
        if let Ok(mut s) = self.shared.store.write() {
            s.compact();
        }
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.read().map(|s| s.rv).unwrap_or_default()
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(task) = self.listener.take() {
            task.abort();
        }
        self.gc.abort();
        self.aggregation.abort();
        if let Some(compactor) = &self.compactor {
            compactor.abort();
        }
    }
}

/// etcd compaction as kube-apiserver drives it: at each tick, compact to the revision seen at
/// the previous tick, so history is kept for at least one interval.
async fn compact_every(shared: Arc<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = None;
    loop {
        ticker.tick().await;
        let Ok(mut store) = shared.store.write() else {
            return;
        };
        if let Some(rv) = previous {
            store.compact_to(rv);
        }
        previous = Some(store.rv);
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which closes every
/// connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        crate::http::handle(shared.clone(), req, peer)
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
