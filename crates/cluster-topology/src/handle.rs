//! Cluster roles and the swappable client handle each role is served by.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::client_layer::{ClientHealth, ClientOptions};
use crate::identity::{ContentDigest, EndpointId};

/// The part a cluster plays for the konnector (reference §0, §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Holds `APIServiceBinding`s and the kubeconfig Secrets they reference.
    Binding,
    /// Where users create instances of bound APIs; CRDs are installed here.
    App,
    /// Serves the APIs (`APIServiceExport`, `ClusterBinding`, service namespaces).
    Provider,
}

impl Role {
    /// Lowercase name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binding => "binding",
            Self::App => "app",
            Self::Provider => "provider",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One built client with what it was built from. Immutable: a credential change produces a new
/// connection with a higher generation.
#[derive(Clone)]
pub struct ClusterConnection {
    client: kube::Client,
    config: Arc<kube::Config>,
    namespace: Option<String>,
    digest: Option<ContentDigest>,
    generation: u64,
}

impl ClusterConnection {
    /// A connection at generation 0 (the first one a handle serves).
    pub fn new(
        client: kube::Client,
        config: kube::Config,
        namespace: Option<String>,
        digest: Option<ContentDigest>,
    ) -> Self {
        Self {
            client,
            config: Arc::new(config),
            namespace,
            digest,
            generation: 0,
        }
    }

    pub(crate) fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    pub(crate) fn with_client(mut self, client: kube::Client) -> Self {
        self.client = client;
        self
    }

    /// The client (cheap to clone).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The connection settings the client was built from.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// Namespace of the kubeconfig's current context (or the service account's), if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The API server URL (safe to log).
    pub fn server(&self) -> String {
        self.config.cluster_url.to_string()
    }

    /// Digest of the Secret bytes this came from (`None` for local configuration).
    pub fn digest(&self) -> Option<ContentDigest> {
        self.digest
    }

    /// 0 for the connection made at startup, incremented by every swap.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The endpoint identity of this connection used in `namespace`.
    pub fn endpoint(&self, namespace: &str) -> EndpointId {
        EndpointId::of(&self.config, namespace)
    }
}

impl fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConnection")
            .field("server", &self.server())
            .field("namespace", &self.namespace)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A cheaply cloneable handle to the current connection of one role.
///
/// Holders call [`ClusterHandle::client`] for each unit of work (so they pick up a swapped client
/// on the next one) and may await [`ClusterHandle::changed`] to restart watches when the
/// credentials change. A clone starts out having seen the connection current at cloning time.
///
/// A handle owns one [`ClientHealth`] for its cluster: every client it serves, before and after
/// a credential rotation, reports to it and shares its concurrency limit and `Retry-After` gate
/// (the server's limits do not change with the credentials).
pub struct ClusterHandle {
    role: Role,
    health: ClientHealth,
    // The handle keeps the sender alive so that `changed` never sees a closed channel: a role
    // without rotation simply never changes.
    tx: Arc<watch::Sender<Arc<ClusterConnection>>>,
    rx: watch::Receiver<Arc<ClusterConnection>>,
}

impl ClusterHandle {
    /// A handle serving `connection` for `role`, with a health of its own that the
    /// connection's client does not report to (it stays reachable with zero counters). Use
    /// [`ClusterHandle::with_health`] for a client built with
    /// [`build_client_with_health`](crate::build_client_with_health).
    pub fn new(role: Role, connection: ClusterConnection) -> Self {
        let health = ClientHealth::new(ClientOptions::default().with_label(role.as_str()));
        Self::with_health(role, connection, health)
    }

    /// A handle serving `connection` for `role`, whose client reports to `health`; clients
    /// swapped in later must be built with the same health.
    pub fn with_health(role: Role, connection: ClusterConnection, health: ClientHealth) -> Self {
        let (tx, rx) = watch::channel(Arc::new(connection));
        Self {
            role,
            health,
            tx: Arc::new(tx),
            rx,
        }
    }

    /// The same connection (and future swaps) serving another role.
    pub fn for_role(&self, role: Role) -> Self {
        Self {
            role,
            health: self.health.clone(),
            tx: self.tx.clone(),
            rx: self.tx.subscribe(),
        }
    }

    pub(crate) fn sender(&self) -> Arc<watch::Sender<Arc<ClusterConnection>>> {
        self.tx.clone()
    }

    /// The role this handle serves.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Reachability, throttling and counters of this cluster's clients (the same for every
    /// clone, role and credential generation of the handle).
    pub fn health(&self) -> ClientHealth {
        self.health.clone()
    }

    /// The current client.
    pub fn client(&self) -> kube::Client {
        self.tx.borrow().client()
    }

    /// The current connection.
    pub fn current(&self) -> Arc<ClusterConnection> {
        self.tx.borrow().clone()
    }

    /// Generation of the current connection.
    pub fn generation(&self) -> u64 {
        self.tx.borrow().generation()
    }

    /// Waits until the connection is swapped after the last one this handle saw (the one current
    /// when the handle was created or cloned, or the last one `changed`/`wait_for` returned),
    /// and returns the new one.
    pub async fn changed(&mut self) -> Arc<ClusterConnection> {
        // The handle owns a sender, so the channel cannot close while `self` exists.
        let _ = self.rx.changed().await;
        self.rx.borrow_and_update().clone()
    }

    /// Waits until the current connection satisfies `predicate` (checked immediately first).
    pub async fn wait_for(
        &mut self,
        mut predicate: impl FnMut(&ClusterConnection) -> bool,
    ) -> Arc<ClusterConnection> {
        loop {
            let current = self.rx.borrow_and_update().clone();
            if predicate(&current) {
                return current;
            }
            let _ = self.rx.changed().await;
        }
    }
}

impl Clone for ClusterHandle {
    fn clone(&self) -> Self {
        Self {
            role: self.role,
            health: self.health.clone(),
            tx: self.tx.clone(),
            rx: self.tx.subscribe(),
        }
    }
}

impl fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("role", &self.role)
            .field("health", &self.health)
            .field("current", &*self.tx.borrow())
            .finish()
    }
}
