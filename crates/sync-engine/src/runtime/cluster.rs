//! A cluster the engine talks to: a fixed client (for embedding and tests) or a
//! [`ClusterHandle`] whose client is swapped when credentials rotate.

use cluster_topology::ClusterHandle;

/// Where the engine gets the client of one cluster.
#[derive(Clone)]
pub enum Cluster {
    /// A client that never changes.
    Fixed(kube::Client),
    /// A rotating connection from `cluster-topology`.
    Handle(ClusterHandle),
}

impl From<kube::Client> for Cluster {
    fn from(client: kube::Client) -> Self {
        Cluster::Fixed(client)
    }
}

impl From<ClusterHandle> for Cluster {
    fn from(handle: ClusterHandle) -> Self {
        Cluster::Handle(handle)
    }
}

impl Cluster {
    /// The client to use for the next unit of work.
    pub fn client(&self) -> kube::Client {
        match self {
            Cluster::Fixed(c) => c.clone(),
            Cluster::Handle(h) => h.client(),
        }
    }

    /// Changes whenever the client is replaced.
    pub fn generation(&self) -> u64 {
        match self {
            Cluster::Fixed(_) => 0,
            Cluster::Handle(h) => h.generation(),
        }
    }

    /// Resolves when the client was replaced (never, for a fixed client).
    pub async fn changed(&mut self) {
        match self {
            Cluster::Fixed(_) => std::future::pending().await,
            Cluster::Handle(h) => {
                h.changed().await;
            }
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cluster::Fixed(_) => f.write_str("Cluster::Fixed"),
            Cluster::Handle(h) => write!(f, "Cluster::Handle({:?})", h.role()),
        }
    }
}
