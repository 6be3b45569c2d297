//! Shared watches: one watch per (cluster, resource, namespace scope, field selector), however
//! many controllers need it.
//!
//! A [`SharedWatch`] keeps a reflector cache and tells subscribers which objects changed. It
//! follows its cluster's [`Cluster`]: when credentials rotate, the watch restarts with the
//! new client and the cache keeps serving the last known state meanwhile. The [`WatchHub`] hands
//! out existing watches and drops a watch when its last user is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::cluster::Cluster;

/// Which objects a watch covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// All namespaces (or a cluster-scoped resource).
    All,
    /// One namespace.
    Namespace(String),
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This object was added, modified or deleted.
    Object {
        /// Namespace, `None` for cluster-scoped objects.
        namespace: Option<String>,
        /// Name.
        name: String,
    },
    /// The watch relisted (after a disconnect or a credential change): objects may have changed
    /// or vanished without a per-object event, so subscribers should look at everything again.
    Resync,
}

/// Identity of a watch in the hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    /// Which cluster (an id chosen by the owner of the handle, e.g. `app`).
    pub cluster: String,
    /// `group/version/plural`.
    pub resource: String,
    /// Namespace scope.
    pub scope: Scope,
    /// Field selector, if any (named Secret watches).
    pub fields: Option<String>,
}

/// A running watch with its cache.
pub struct SharedWatch {
    key: WatchKey,
    resource: ApiResource,
    store: Store<DynamicObject>,
    events: broadcast::Sender<Change>,
    /// Set once the first list completed. Our own flag, because the store's readiness future
    /// keeps only the last waker: a second waiter (or an `is_ready` poll) would steal the
    /// first one's wake-up and leave it waiting forever.
    listed: tokio::sync::watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SharedWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWatch")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for SharedWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Capacity of the change channel; a subscriber that lags behind gets a [`Change::Resync`].
const CHANGE_BUFFER: usize = 4096;

impl SharedWatch {
    /// Starts watching `resource` in `scope` on the handle's cluster.
    pub fn start(
        handle: Cluster,
        key: WatchKey,
        resource: ApiResource,
        scope: Scope,
        fields: Option<String>,
    ) -> Arc<Self> {
        let writer = Writer::new(resource.clone());
        let store = writer.as_reader();
        let (events, _) = broadcast::channel(CHANGE_BUFFER);
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(
            WatchTask {
                handle,
                resource: resource.clone(),
                scope,
                fields,
                writer,
                events: events.clone(),
                listed: listed_tx,
                key: key.clone(),
            }
            .run(),
        );
        Arc::new(SharedWatch {
            key,
            resource,
            store,
            events,
            listed,
            task,
        })
    }

    /// The watched resource.
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// The cache.
    pub fn store(&self) -> &Store<DynamicObject> {
        &self.store
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.events.subscribe()
    }

    /// Waits until the first list completed. Any number of tasks may wait at once.
    pub async fn ready(&self) {
        let mut listed = self.listed.clone();
        // The sender lives as long as the task, which lives as long as `self`.
        let _ = listed.wait_for(|l| *l).await;
    }

    /// Whether the first list completed.
    pub fn is_ready(&self) -> bool {
        *self.listed.borrow()
    }

    /// The cached object `namespace/name`.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<DynamicObject>> {
        let mut r = ObjectRef::new_with(name, self.resource.clone());
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<DynamicObject>> {
        self.store.state()
    }

    /// The cached object `namespace/name` as a typed object (`None` if absent or if it does
    /// not parse as `K`, which the API server's validation makes an exception).
    pub fn get_as<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: kube::Resource + serde::de::DeserializeOwned,
    {
        self.get(namespace, name)
            .and_then(|o| o.as_ref().clone().try_parse().ok())
    }

    /// Every cached object that parses as `K`.
    pub fn list_as<K>(&self) -> Vec<K>
    where
        K: kube::Resource + serde::de::DeserializeOwned,
    {
        self.list()
            .iter()
            .filter_map(|o| o.as_ref().clone().try_parse().ok())
            .collect()
    }
}

/// What the background task of one watch owns.
struct WatchTask {
    handle: Cluster,
    resource: ApiResource,
    scope: Scope,
    fields: Option<String>,
    writer: Writer<DynamicObject>,
    events: broadcast::Sender<Change>,
    listed: tokio::sync::watch::Sender<bool>,
    key: WatchKey,
}

impl WatchTask {
    async fn run(self) {
        let WatchTask {
            mut handle,
            resource,
            scope,
            fields,
            mut writer,
            events,
            listed,
            key,
        } = self;
        loop {
            let client = handle.client();
            let api: Api<DynamicObject> = match &scope {
                Scope::All => Api::all_with(client, &resource),
                Scope::Namespace(ns) => Api::namespaced_with(client, ns, &resource),
            };
            let mut config = watcher::Config::default();
            if let Some(f) = &fields {
                config = config.fields(f);
            }
            let mut stream = watcher::watcher(api, config).default_backoff().boxed();
            let generation = handle.generation();
            loop {
                tokio::select! {
                    event = stream.next() => match event {
                        Some(Ok(event)) => {
                            writer.apply_watcher_event(&event);
                            let change = match &event {
                                Event::Apply(o) | Event::Delete(o) => Some(Change::Object {
                                    namespace: o.metadata.namespace.clone(),
                                    name: o.metadata.name.clone().unwrap_or_default(),
                                }),
                                Event::InitDone => {
                                    listed.send_replace(true);
                                    Some(Change::Resync)
                                }
                                Event::Init | Event::InitApply(_) => None,
                            };
                            if let Some(change) = change {
                                // No subscriber is fine: the cache is still kept.
                                let _ = events.send(change);
                            }
                        }
                        Some(Err(err)) => {
                            tracing::warn!(cluster = %key.cluster, resource = %key.resource, error = %err, "watch failed, retrying");
                        }
                        None => break,
                    },
                    _ = handle.changed() => {
                        if handle.generation() != generation {
                            tracing::info!(cluster = %key.cluster, resource = %key.resource, "credentials changed, restarting watch");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Hands out shared watches, and carries the metrics every syncer using it reports to.
#[derive(Debug, Default)]
pub struct WatchHub {
    watches: Mutex<HashMap<WatchKey, Weak<SharedWatch>>>,
    metrics: crate::metrics::Metrics,
    leadership: super::leadership::Leadership,
}

impl WatchHub {
    /// A new, empty hub with its own (unregistered) metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new hub whose syncers report to `metrics` and write only while `leadership` leads.
    pub fn with(
        metrics: crate::metrics::Metrics,
        leadership: super::leadership::Leadership,
    ) -> Self {
        WatchHub {
            watches: Mutex::default(),
            metrics,
            leadership,
        }
    }

    /// A new hub whose syncers report to `metrics` (always leading).
    pub fn with_metrics(metrics: crate::metrics::Metrics) -> Self {
        Self::with(metrics, super::leadership::Leadership::always())
    }

    /// Whether the syncers using this hub may write.
    pub fn leadership(&self) -> &super::leadership::Leadership {
        &self.leadership
    }

    /// The metrics syncers report to.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The watch of `resource` in `scope` on `cluster`, started if nobody watches it yet.
    pub fn watch(
        &self,
        cluster: &str,
        handle: &Cluster,
        resource: &ApiResource,
        scope: Scope,
        fields: Option<String>,
    ) -> Arc<SharedWatch> {
        let key = WatchKey {
            cluster: cluster.to_string(),
            resource: format!(
                "{}/{}/{}",
                resource.group, resource.version, resource.plural
            ),
            scope: scope.clone(),
            fields: fields.clone(),
        };
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = watches.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let watch =
            SharedWatch::start(handle.clone(), key.clone(), resource.clone(), scope, fields);
        watches.insert(key, Arc::downgrade(&watch));
        watch
    }

    /// Number of running watches (for tests and metrics).
    pub fn len(&self) -> usize {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Whether no watch runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
