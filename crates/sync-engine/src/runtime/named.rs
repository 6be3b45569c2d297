//! Cluster-scoped objects watched by name: the app cluster's CRDs of the bound exports, and not
//! every CRD of the app cluster.
//!
//! A cluster has hundreds of CRDs, some of 100 KB and more (Crossplane providers, cert-manager);
//! a session needs only the few its exports define. Watching all of them cost about 3 MiB per
//! app cluster in a fleet with twenty such CRDs each; one watch per exported name costs what the
//! exports cost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kube::core::ApiResource;
use tokio::sync::broadcast;

use super::cluster::Cluster;
use super::provider_view::{Forwarded, forward};
use super::watch::{Change, Scope, WatchHub};

/// Watches of one cluster-scoped resource, one per name given to [`NamedObjects::set_names`],
/// with their changes merged.
pub struct NamedObjects {
    hub: Arc<WatchHub>,
    cluster: Cluster,
    cluster_id: String,
    resource: ApiResource,
    watches: Mutex<BTreeMap<String, Forwarded>>,
    changes: broadcast::Sender<Change>,
}

impl std::fmt::Debug for NamedObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedObjects")
            .field("resource", &self.resource.plural)
            .field("names", &self.names())
            .finish()
    }
}

impl NamedObjects {
    /// Watches of `resource` on `cluster` (hub id `cluster_id`); none until names are set.
    pub fn new(
        hub: Arc<WatchHub>,
        cluster: Cluster,
        cluster_id: String,
        resource: ApiResource,
    ) -> Self {
        let (changes, _) = broadcast::channel(super::watch::CHANGE_BUFFER);
        NamedObjects {
            hub,
            cluster,
            cluster_id,
            resource,
            watches: Mutex::default(),
            changes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Forwarded>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches exactly these names. A name watched anew is not known until its watch has
    /// listed ([`NamedObjects::is_ready_for`]); its first list is told as a
    /// [`Change::Resync`].
    pub fn set_names<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let wanted: BTreeSet<&str> = names.into_iter().collect();
        let mut watches = self.lock();
        watches.retain(|name, _| wanted.contains(name.as_str()));
        for name in wanted {
            if !watches.contains_key(name) {
                let watch = self.hub.watch(
                    &self.cluster_id,
                    &self.cluster,
                    &self.resource,
                    Scope::All,
                    Some(format!("metadata.name={name}")),
                );
                // A watch the hub already had has listed: tell the subscribers there is
                // something to look at, as its first list would have.
                let listed = watch.is_ready();
                watches.insert(name.to_owned(), forward(watch, self.changes.clone()));
                if listed {
                    let _ = self.changes.send(Change::Resync);
                }
            }
        }
    }

    /// The names watched.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Changes of any watched object.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Whether `name` is watched and its watch has listed: only then does "absent" mean absent.
    pub fn is_ready_for(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|w| w.watch.is_ready())
    }

    /// Whether every watch has listed.
    pub fn is_ready(&self) -> bool {
        self.lock().values().all(|w| w.watch.is_ready())
    }

    /// Waits until every current watch has listed.
    pub async fn ready(&self) {
        let watches: Vec<_> = self.lock().values().map(|w| w.watch.clone()).collect();
        for w in watches {
            w.ready().await;
        }
    }

    /// The object `name` as a `K`, if it is watched and cached.
    pub fn get_as<K>(&self, name: &str) -> Option<K>
    where
        K: kube::Resource + serde::de::DeserializeOwned,
    {
        let watch = self.lock().get(name)?.watch.clone();
        watch.get_as(None, name)
    }
}
