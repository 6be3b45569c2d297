//! The provider side of an export syncer: one watch over all namespaces (informer scope
//! `Cluster`), or one watch per mapped service namespace (informer scope `Namespaced`, the
//! reference's multi-namespace informer), which needs no cluster-wide rights on the provider.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kube::api::DynamicObject;
use kube::core::ApiResource;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::watch::{Change, Scope, SharedWatch, WatchHub};

pub(super) struct Forwarded {
    pub(super) watch: Arc<SharedWatch>,
    task: JoinHandle<()>,
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards the changes of `watch` to `to`. A resync is forwarded once the watch counts as
/// listed: a subscriber that looks at its readiness on the resync of the first list must not
/// find it still unlisted.
pub(super) fn forward(watch: Arc<SharedWatch>, to: broadcast::Sender<Change>) -> Forwarded {
    let mut sub = watch.subscribe();
    let listed = watch.clone();
    let task = tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    listed.ready().await;
                    let _ = to.send(Change::Resync);
                }
                Ok(change) => {
                    let _ = to.send(change);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    Forwarded { watch, task }
}

struct PerNamespace {
    hub: Arc<WatchHub>,
    cluster: Cluster,
    cluster_id: String,
    resource: ApiResource,
    watches: Mutex<BTreeMap<String, Forwarded>>,
}

enum Kind {
    One(Forwarded),
    PerNamespace(Box<PerNamespace>),
}

/// The provider objects an export syncer sees, and their changes.
pub struct ProviderView {
    kind: Kind,
    changes: broadcast::Sender<Change>,
}

impl std::fmt::Debug for ProviderView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::One(w) => f.debug_tuple("ProviderView::One").field(&w.watch).finish(),
            Kind::PerNamespace(p) => {
                let n = p.watches.lock().map(|w| w.len()).unwrap_or_default();
                f.debug_struct("ProviderView::PerNamespace")
                    .field("namespaces", &n)
                    .finish()
            }
        }
    }
}

impl ProviderView {
    /// A view backed by one watch.
    pub fn single(watch: Arc<SharedWatch>) -> Self {
        let (changes, _) = broadcast::channel(super::watch::CHANGE_BUFFER);
        ProviderView {
            kind: Kind::One(forward(watch, changes.clone())),
            changes,
        }
    }

    /// A view with one watch per namespace given to [`set_namespaces`](Self::set_namespaces).
    pub fn per_namespace(
        hub: Arc<WatchHub>,
        cluster: Cluster,
        cluster_id: String,
        resource: ApiResource,
    ) -> Self {
        let (changes, _) = broadcast::channel(super::watch::CHANGE_BUFFER);
        ProviderView {
            kind: Kind::PerNamespace(Box::new(PerNamespace {
                hub,
                cluster,
                cluster_id,
                resource,
                watches: Mutex::new(BTreeMap::new()),
            })),
            changes,
        }
    }

    /// Watches exactly these namespaces (no-op for a single watch).
    pub fn set_namespaces<'a>(&self, namespaces: impl IntoIterator<Item = &'a str>) {
        let Kind::PerNamespace(p) = &self.kind else {
            return;
        };
        let PerNamespace {
            hub,
            cluster,
            cluster_id,
            resource,
            watches,
        } = p.as_ref();
        let wanted: BTreeSet<&str> = namespaces.into_iter().collect();
        let mut watches = watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|ns, _| wanted.contains(ns.as_str()));
        for ns in wanted {
            if !watches.contains_key(ns) {
                let watch = hub.watch(
                    cluster_id,
                    cluster,
                    resource,
                    Scope::Namespace(ns.to_string()),
                    None,
                );
                watches.insert(ns.to_string(), forward(watch, self.changes.clone()));
            }
        }
    }

    /// Changes of any watched object.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Waits for the single watch's first list (per-namespace views are ready per namespace).
    pub async fn ready(&self) {
        if let Kind::One(w) = &self.kind {
            w.watch.ready().await;
        }
    }

    /// Whether objects in `namespace` are known (their watch has listed).
    pub fn is_ready_for(&self, namespace: Option<&str>) -> bool {
        match (&self.kind, namespace) {
            (Kind::One(w), _) => w.watch.is_ready(),
            (Kind::PerNamespace(p), Some(ns)) => {
                let watches = p.watches.lock().unwrap_or_else(|e| e.into_inner());
                watches.get(ns).is_some_and(|w| w.watch.is_ready())
            }
            (Kind::PerNamespace(_), None) => true,
        }
    }

    /// Whether every current watch has listed.
    pub fn is_ready(&self) -> bool {
        match &self.kind {
            Kind::One(w) => w.watch.is_ready(),
            Kind::PerNamespace(p) => {
                let watches = p.watches.lock().unwrap_or_else(|e| e.into_inner());
                watches.values().all(|w| w.watch.is_ready())
            }
        }
    }

    /// The cached object.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<DynamicObject>> {
        match &self.kind {
            Kind::One(w) => w.watch.get(namespace, name),
            Kind::PerNamespace(p) => {
                let watches = p.watches.lock().unwrap_or_else(|e| e.into_inner());
                watches.get(namespace?)?.watch.get(namespace, name)
            }
        }
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<DynamicObject>> {
        match &self.kind {
            Kind::One(w) => w.watch.list(),
            Kind::PerNamespace(p) => {
                let watches = p.watches.lock().unwrap_or_else(|e| e.into_inner());
                watches.values().flat_map(|w| w.watch.list()).collect()
            }
        }
    }
}
