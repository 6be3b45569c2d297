//! A cluster the engine talks to: a fixed client (for embedding and tests) or a
//! [`ClusterHandle`] whose client is swapped when credentials rotate.

use cluster_topology::{ClientHealth, ClusterHandle};

/// Where the engine gets the client of one cluster.
#[derive(Clone)]
pub enum Cluster {
    /// A client that never changes.
    Fixed(kube::Client),
    /// A client that never changes, built through the client layer
    /// ([`cluster_topology::build_layered_client`]), with the health it reports to.
    Layered(kube::Client, ClientHealth),
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
    /// A fixed client whose reachability and throttling `health` reports, e.g. from
    /// [`cluster_topology::build_layered_client`].
    pub fn fixed_with_health(client: kube::Client, health: ClientHealth) -> Self {
        Cluster::Layered(client, health)
    }

    /// The client to use for the next unit of work.
    pub fn client(&self) -> kube::Client {
        match self {
            Cluster::Fixed(c) | Cluster::Layered(c, _) => c.clone(),
            Cluster::Handle(h) => h.client(),
        }
    }

    /// Reachability, throttling and counters of the cluster's clients; `None` for a fixed
    /// client given without its health.
    pub fn health(&self) -> Option<ClientHealth> {
        match self {
            Cluster::Fixed(_) => None,
            Cluster::Layered(_, health) => Some(health.clone()),
            Cluster::Handle(h) => Some(h.health()),
        }
    }

    /// Changes whenever the client is replaced.
    pub fn generation(&self) -> u64 {
        match self {
            Cluster::Fixed(_) | Cluster::Layered(..) => 0,
            Cluster::Handle(h) => h.generation(),
        }
    }

    /// Resolves when the client was replaced (never, for a fixed client).
    pub async fn changed(&mut self) {
        match self {
            Cluster::Fixed(_) | Cluster::Layered(..) => std::future::pending().await,
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
            Cluster::Layered(_, health) => write!(f, "Cluster::Layered({:?})", health.label()),
            Cluster::Handle(h) => write!(f, "Cluster::Handle({:?})", h.role()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use cluster_topology::{ClientOptions, build_layered_client};

    #[tokio::test]
    async fn health_is_there_unless_a_bare_client_was_given() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let (client, health) =
            build_layered_client(config, &ClientOptions::default().with_label("provider:x"))
                .unwrap();
        let layered = Cluster::fixed_with_health(client.clone(), health.clone());
        assert!(layered.health().unwrap().same(&health));
        assert_eq!(layered.generation(), 0);
        assert_eq!(format!("{layered:?}"), r#"Cluster::Layered("provider:x")"#);
        assert!(Cluster::Fixed(client).health().is_none());
    }
}
