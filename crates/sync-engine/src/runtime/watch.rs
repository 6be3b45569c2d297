//! Shared watches: one watch per (cluster, resource, namespace scope, field selector), however
//! many controllers need it.
//!
//! A [`SharedWatch`] keeps a reflector cache and tells subscribers which objects changed. It
//! follows its cluster's [`Cluster`]: when credentials rotate, the watch restarts with the
//! new client and the cache keeps serving the last known state meanwhile. The [`WatchHub`] hands
//! out existing watches and drops a watch when its last user is gone.
//!
//! A failing list or watch is retried. Transient failures (a server restarting, a dropped
//! connection) are retried within seconds. A watch the server refuses (403 Forbidden, 401
//! Unauthorized) will keep being refused until someone changes RBAC or credentials, so it backs
//! off exponentially to about five minutes, with jitter so that many refused watches do not
//! retry in step (a credential rotation restarts it at once). Either way the failure is
//! exposed ([`SharedWatch::last_error`], [`SharedWatch::errors`]) for the owner to report on
//! the object concerned, and logged once per backoff step rather than once per attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::core::ApiResource;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::cache::Cache;
use super::cluster::Cluster;
use super::events::EventSinks;

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

/// The failure of a watch's last list or watch request; cleared when one succeeds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchError {
    /// HTTP status of the server's answer; `None` for a transport failure (connection refused,
    /// TLS, a stream that went silent).
    pub code: Option<u16>,
    /// The server's machine-readable reason (`Forbidden`, `Unauthorized`, ...), or empty.
    pub reason: String,
    /// The server's message, e.g. `secrets "x" is forbidden: User "y" cannot list resource
    /// "secrets" in API group "" in the namespace "z"`; the error text for transport failures.
    pub message: String,
    /// `list` or `watch`.
    pub request: &'static str,
    /// Failed attempts in a row, this one included.
    pub attempts: u32,
    /// How long until the next attempt.
    pub retry_in: Duration,
}

impl WatchError {
    /// 401 or 403: retrying will not help until RBAC or the credentials change.
    pub fn is_denied(&self) -> bool {
        matches!(self.code, Some(401 | 403))
    }
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} failed ({code}): {}", self.request, self.message),
            None => write!(f, "{} failed: {}", self.request, self.message),
        }
    }
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
    cache: Arc<Cache>,
    events: broadcast::Sender<Change>,
    /// Set once the first list completed. Our own flag, because the store's readiness future
    /// keeps only the last waker: a second waiter (or an `is_ready` poll) would steal the
    /// first one's wake-up and leave it waiting forever.
    listed: tokio::sync::watch::Receiver<bool>,
    errors: tokio::sync::watch::Receiver<Option<WatchError>>,
    /// The watch task; `None` for a view, which has none of its own.
    task: Option<JoinHandle<()>>,
    /// The views taken of this watch, told about the changes they show.
    views: Arc<Views>,
    /// Set for a view of a wider watch ([`WatchHub::sharing`]): what it shows of it.
    view: Option<View>,
}

/// What a view shows of the watch it is taken from: one namespace, or one named object in it.
#[derive(Debug)]
struct View {
    /// Kept alive as long as the view is.
    parent: Arc<SharedWatch>,
    namespace: String,
    name: Option<String>,
    /// Its entry in the parent's [`Views`].
    id: u64,
}

/// The change channels of the views of one watch, by namespace. The watch task hands each
/// change to the views of its namespace only: with hundreds of views of one watch (one per app
/// cluster of a fleet), a change costs a map lookup, not a wake-up of every view.
#[derive(Debug, Default)]
struct Views {
    by_namespace: Mutex<HashMap<String, Vec<ViewSink>>>,
    next: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct ViewSink {
    id: u64,
    name: Option<String>,
    tx: broadcast::Sender<Change>,
}

impl Views {
    fn add(&self, namespace: &str, name: Option<String>, tx: broadcast::Sender<Change>) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(namespace.to_owned())
            .or_default()
            .push(ViewSink { id, name, tx });
        id
    }

    fn remove(&self, namespace: &str, id: u64) {
        let mut map = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sinks) = map.get_mut(namespace) {
            sinks.retain(|s| s.id != id);
            if sinks.is_empty() {
                map.remove(namespace);
            }
        }
    }

    /// Tells the views that show `change` (every view, for a resync).
    fn dispatch(&self, change: &Change) {
        let map = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        match change {
            Change::Object {
                namespace: Some(ns),
                name,
            } => {
                for sink in map.get(ns).into_iter().flatten() {
                    if sink.name.as_deref().is_none_or(|n| n == name) {
                        let _ = sink.tx.send(change.clone());
                    }
                }
            }
            Change::Object {
                namespace: None, ..
            } => {}
            Change::Resync => {
                for sink in map.values().flatten() {
                    let _ = sink.tx.send(Change::Resync);
                }
            }
        }
    }
}

impl View {
    fn admits(&self, namespace: Option<&str>, name: &str) -> bool {
        namespace == Some(self.namespace.as_str()) && self.name.as_deref().is_none_or(|n| n == name)
    }
}

/// The name a field selector selects, if it selects exactly one name (`metadata.name=x`).
fn selected_name(fields: &str) -> Option<&str> {
    let name = fields
        .strip_prefix("metadata.name==")
        .or_else(|| fields.strip_prefix("metadata.name="))?;
    (!name.is_empty() && !name.contains([',', '=', '!'])).then_some(name)
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
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(view) = &self.view {
            view.parent.views.remove(&view.namespace, view.id);
        }
    }
}

/// Capacity of a change channel; a subscriber that lags behind gets a [`Change::Resync`] and
/// looks at everything again. The buffer is allocated and written up front (about 80 bytes a
/// slot), for every watch: 4,096 slots made a third of an idle konnector's heap.
pub(crate) const CHANGE_BUFFER: usize = 256;

impl SharedWatch {
    /// Starts watching `resource` in `scope` on the handle's cluster.
    fn start(
        handle: Cluster,
        key: WatchKey,
        resource: ApiResource,
        scope: Scope,
        fields: Option<String>,
        hub: HubContext,
    ) -> Arc<Self> {
        let cache = Arc::new(Cache::default());
        hub.metrics.caches.add(&key.cluster, &key.resource, &cache);
        let (events, _) = broadcast::channel(CHANGE_BUFFER);
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        let (errors_tx, errors) = tokio::sync::watch::channel(None);
        let views = Arc::new(Views::default());
        let task = tokio::spawn(
            WatchTask {
                handle,
                resource: resource.clone(),
                scope,
                fields,
                cache: cache.clone(),
                events: events.clone(),
                views: views.clone(),
                listed: listed_tx,
                errors: errors_tx,
                key: key.clone(),
                reconnected: hub.reconnects.subscribe(&key.cluster),
                hub,
            }
            .run(),
        );
        Arc::new(SharedWatch {
            key,
            resource,
            cache,
            events,
            listed,
            errors,
            task: Some(task),
            views,
            view: None,
        })
    }

    /// A view of `parent` (a cluster-wide watch) showing only `namespace`, or only the object
    /// `name` in it: the same cache, readiness and errors, and only the changes it shows.
    fn view_of(
        parent: Arc<SharedWatch>,
        key: WatchKey,
        namespace: String,
        name: Option<String>,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(CHANGE_BUFFER);
        let id = parent.views.add(&namespace, name.clone(), events.clone());
        Arc::new(SharedWatch {
            key,
            resource: parent.resource.clone(),
            cache: parent.cache.clone(),
            events,
            listed: parent.listed.clone(),
            errors: parent.errors.clone(),
            task: None,
            views: Arc::default(),
            view: Some(View {
                parent,
                namespace,
                name,
                id,
            }),
        })
    }

    /// Why the last list or watch request failed, while the watch keeps failing; `None` once
    /// one succeeded. A watch that never listed and has a denied error
    /// ([`WatchError::is_denied`]) has no cache to offer until RBAC or credentials change.
    pub fn last_error(&self) -> Option<WatchError> {
        self.errors.borrow().clone()
    }

    /// [`SharedWatch::last_error`] as it changes: every failed attempt, and the recovery.
    pub fn errors(&self) -> tokio::sync::watch::Receiver<Option<WatchError>> {
        self.errors.clone()
    }

    /// The watched resource.
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// The cache (of the whole watch a view is taken from).
    pub fn cache(&self) -> &Cache {
        &self.cache
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
        if self
            .view
            .as_ref()
            .is_some_and(|v| !v.admits(namespace, name))
        {
            return None;
        }
        self.cache.get(namespace, name)
    }

    /// Every cached object (each parsed: [`SharedWatch::keys`] when names are enough).
    pub fn list(&self) -> Vec<Arc<DynamicObject>> {
        match &self.view {
            None => self.cache.list(),
            Some(View {
                namespace,
                name: None,
                ..
            }) => self.cache.list_in(namespace),
            Some(View {
                namespace,
                name: Some(name),
                ..
            }) => self.cache.get(Some(namespace), name).into_iter().collect(),
        }
    }

    /// Namespace and name of every cached object.
    pub fn keys(&self) -> Vec<(Option<String>, String)> {
        match &self.view {
            None => self.cache.keys(),
            Some(v) => self
                .cache
                .keys_in(&v.namespace)
                .into_iter()
                .filter(|(ns, name)| v.admits(ns.as_deref(), name))
                .collect(),
        }
    }

    /// Changes to the cache so far: equal values mean equal content.
    pub fn version(&self) -> u64 {
        self.cache.version()
    }

    /// The cached object `namespace/name` as a typed object (`None` if absent or if it does
    /// not parse as `K`, which the API server's validation makes an exception).
    pub fn get_as<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: kube::Resource + serde::de::DeserializeOwned,
    {
        if self
            .view
            .as_ref()
            .is_some_and(|v| !v.admits(namespace, name))
        {
            return None;
        }
        self.cache.get_as(namespace, name)
    }

    /// Every cached object that parses as `K`.
    pub fn list_as<K>(&self) -> Vec<K>
    where
        K: kube::Resource + serde::de::DeserializeOwned,
    {
        match &self.view {
            None => self.cache.list_as(),
            Some(View {
                namespace,
                name: None,
                ..
            }) => self.cache.list_as_in(namespace),
            Some(View {
                namespace,
                name: Some(name),
                ..
            }) => self
                .cache
                .get_as(Some(namespace), name)
                .into_iter()
                .collect(),
        }
    }
}

/// How long a watch request asks the server to keep the stream open. The server ends it at
/// that time; an end well before it is the server telling us something (see [`after_stream_end`]).
const WATCH_TIMEOUT: Duration = Duration::from_secs(290);

/// How long after a schema change of a resource a list of it may still have been served by the
/// API server's storage of the old schema. The real kube-apiserver swaps a custom resource's
/// storage when its CRD informer sees the update (normally milliseconds, without a bound), and
/// tears the old storage down at least a second later, which ends the watches opened on it.
const SCHEMA_SETTLE: Duration = Duration::from_secs(10);

/// A stream that ends before its timeout by more than this was ended by the server.
const EARLY_END_MARGIN: Duration = Duration::from_secs(5);

/// Page size of the initial and recovery lists.
const PAGE_SIZE: u32 = 500;

/// How a watch stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The server finished the response after `lived`.
    Closed {
        /// How long the stream was open.
        lived: Duration,
    },
    /// `410 Gone`: the resourceVersion is too old to resume from.
    Gone,
    /// A transport error or an error event other than 410.
    Failed,
}

/// What to do after a watch stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextStep {
    /// List again from scratch and replace the cache.
    Relist(RelistReason),
    /// Watch again from the last resourceVersion.
    Resume,
}

/// Why a watch lists again (the `reason` label of `konnector_watch_relists`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelistReason {
    /// `410 Gone`: the resourceVersion to resume from was compacted away.
    Gone,
    /// The server ended the stream before its timeout (a CRD storage torn down, a restart).
    EndedEarly,
    /// The last list may have been served with a schema that was being replaced.
    SchemaChanged,
}

impl RelistReason {
    fn as_str(self) -> &'static str {
        match self {
            RelistReason::Gone => "gone",
            RelistReason::EndedEarly => "ended_early",
            RelistReason::SchemaChanged => "schema_changed",
        }
    }
}

/// Whether a list that started at `list_started` may have been served with a schema that was
/// replaced at `schema_changed` (or later).
pub(crate) fn list_suspect(list_started: Instant, schema_changed: Option<Instant>) -> bool {
    schema_changed.is_some_and(|c| c + SCHEMA_SETTLE > list_started)
}

/// Relist or resume after a stream ended.
///
/// Resuming from a resourceVersion is right when nothing but time passed. It is wrong after a
/// CRD schema change: objects the old storage decoded (and pruned) stay in the cache with the
/// fields the new schema added missing, and no event ever corrects them. The server ends the
/// watches of the old storage when it tears it down, before their timeout, so a stream closed
/// early is relisted, and so is any stream whose list may have been served by the old storage.
pub(crate) fn after_stream_end(
    end: StreamEnd,
    requested: Duration,
    list_started: Instant,
    schema_changed: Option<Instant>,
) -> NextStep {
    match end {
        StreamEnd::Gone => NextStep::Relist(RelistReason::Gone),
        StreamEnd::Failed => NextStep::Resume,
        StreamEnd::Closed { .. } if list_suspect(list_started, schema_changed) => {
            NextStep::Relist(RelistReason::SchemaChanged)
        }
        StreamEnd::Closed { lived } if lived + EARLY_END_MARGIN.min(requested / 2) < requested => {
            NextStep::Relist(RelistReason::EndedEarly)
        }
        StreamEnd::Closed { .. } => NextStep::Resume,
    }
}

/// Retry delays of one watch, reset by a success: doubling from 200 ms to 10 s after transient
/// failures; after denied ones ([`WatchError::is_denied`]) see [`denied_delay`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
    /// Denied failures in a row.
    denied: u32,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Backoff {
            next: Self::MIN,
            denied: 0,
        }
    }

    fn reset(&mut self) {
        self.next = Self::MIN;
        self.denied = 0;
    }

    /// The delay before the next attempt after a failure.
    fn next_delay(&mut self, denied: bool) -> Duration {
        if denied {
            self.denied = self.denied.saturating_add(1);
            denied_delay(self.denied, jitter())
        } else {
            let delay = self.next;
            self.next = (self.next * 2).min(Self::MAX);
            delay
        }
    }
}

/// First delay after a denied list or watch.
const DENIED_MIN: Duration = Duration::from_secs(1);
/// Largest delay (before jitter) between attempts of a denied watch.
const DENIED_MAX: Duration = Duration::from_secs(300);

/// The delay before attempt `failures + 1` of a watch the server keeps refusing: 1 s doubling
/// to 5 min, each scaled by a factor between 0.75 and 1.25 picked from `jitter` (in `[0, 1)`).
pub(crate) fn denied_delay(failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let base = (DENIED_MIN * 2u32.pow(exponent)).min(DENIED_MAX);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in `[0, 1)` that differs from call to call (the standard library's randomly keyed
/// hasher; no random number crate is needed for jitter).
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the `attempts`-th failure in a row is logged, `since_logged` after the last line:
/// the first, then every time the count doubles, and at least every five minutes while a watch
/// keeps failing. Thousands of failed attempts during an outage make a handful of lines.
pub(crate) fn should_log(attempts: u32, since_logged: Option<Duration>) -> bool {
    attempts <= 1
        || attempts.is_power_of_two()
        || since_logged.is_none_or(|d| d >= Duration::from_secs(300))
}

/// The status code, reason and message of a failed request.
fn describe(err: &kube::Error) -> (Option<u16>, String, String) {
    match err {
        kube::Error::Api(s) => (Some(s.code), s.reason.clone(), s.message.clone()),
        other => (None, String::new(), other.to_string()),
    }
}

/// When the schema of a resource last changed, per cluster and resource, as the engine learnt
/// it (its own CRD updates, export generation changes). Shared by the hub and its watches.
#[derive(Debug, Clone, Default)]
pub(crate) struct SchemaChanges(Arc<Mutex<HashMap<(String, String), Instant>>>);

impl SchemaChanges {
    fn record(&self, cluster: &str, resource: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((cluster.to_string(), resource.to_string()), Instant::now());
    }

    fn last(&self, key: &WatchKey) -> Option<Instant> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(key.cluster.clone(), key.resource.clone())).copied()
    }
}

/// Per cluster id, a counter bumped when the engine learns that the cluster answers again
/// after an outage: watches waiting out a backoff retry at once instead of up to 10 s later.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reconnects(Arc<Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>>);

impl Reconnects {
    fn subscribe(&self, cluster: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(cluster.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    fn bump(&self, cluster: &str) {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = m.get(cluster) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// What the background task of one watch owns.
struct WatchTask {
    handle: Cluster,
    resource: ApiResource,
    scope: Scope,
    fields: Option<String>,
    cache: Arc<Cache>,
    events: broadcast::Sender<Change>,
    views: Arc<Views>,
    listed: tokio::sync::watch::Sender<bool>,
    errors: tokio::sync::watch::Sender<Option<WatchError>>,
    key: WatchKey,
    hub: HubContext,
    /// Bumped when the watch's cluster answers again ([`WatchHub::cluster_reachable`]).
    reconnected: tokio::sync::watch::Receiver<u64>,
}

/// A run of failures of one watch, for the log and the error it exposes.
#[derive(Debug, Default)]
struct Failures {
    /// Failed attempts in a row.
    attempts: u32,
    /// When the last line about them was logged.
    logged: Option<Instant>,
    /// The failure of the stream just ended, set by [`WatchTask::follow`].
    pending: Option<(Option<u16>, String, String)>,
}

/// What every watch of a hub shares with it.
#[derive(Debug, Clone)]
struct HubContext {
    schema_changes: SchemaChanges,
    /// What each watch request asks the server for ([`WATCH_TIMEOUT`] unless the hub says).
    timeout: Duration,
    metrics: crate::metrics::Metrics,
    reconnects: Reconnects,
}

impl WatchTask {
    async fn run(mut self) {
        loop {
            let generation = self.handle.generation();
            let mut handle = self.handle.clone();
            let client_changed = async move {
                loop {
                    handle.changed().await;
                    if handle.generation() != generation {
                        return;
                    }
                }
            };
            let client = self.handle.client();
            let api: Api<DynamicObject> = match &self.scope {
                Scope::All => Api::all_with(client, &self.resource),
                Scope::Namespace(ns) => Api::namespaced_with(client, ns, &self.resource),
            };
            tokio::select! {
                () = self.list_watch(&api) => {}
                () = client_changed => {
                    tracing::info!(cluster = %self.key.cluster, resource = %self.key.resource, "credentials changed, restarting watch");
                }
            }
        }
    }

    /// Lists, then watches from the list's resourceVersion, relisting when [`after_stream_end`]
    /// says so. Runs until cancelled.
    async fn list_watch(&mut self, api: &Api<DynamicObject>) {
        let mut backoff = Backoff::new();
        let mut failures = Failures::default();
        'relist: loop {
            let list_started = Instant::now();
            let mut version = match self.relist(api).await {
                Ok(version) => {
                    self.recovered(&mut failures);
                    version
                }
                Err(err) => {
                    self.failed("list", describe(&err), &mut backoff, &mut failures)
                        .await;
                    continue 'relist;
                }
            };
            loop {
                let suspect = list_suspect(list_started, self.hub.schema_changes.last(&self.key));
                // A list the old storage may have served is checked again soon: a short watch
                // ends, and its end relists.
                let requested = if suspect {
                    SCHEMA_SETTLE.min(self.hub.timeout)
                } else {
                    self.hub.timeout
                };
                let mut params = WatchParams::default()
                    .timeout(u32::try_from(requested.as_secs().max(1)).unwrap_or(290));
                if let Some(f) = &self.fields {
                    params = params.fields(f);
                }
                let opened = Instant::now();
                let end = match api.watch(&params, &version).await {
                    Ok(stream) => {
                        self.recovered(&mut failures);
                        self.follow(stream, &mut version, &mut failures).await
                    }
                    Err(kube::Error::Api(s)) if s.code == 410 => StreamEnd::Gone,
                    Err(err) => {
                        failures.pending = Some(describe(&err));
                        StreamEnd::Failed
                    }
                };
                let next = after_stream_end(
                    end,
                    requested,
                    list_started,
                    self.hub.schema_changes.last(&self.key),
                );
                let healthy = matches!(end, StreamEnd::Closed { .. })
                    && opened.elapsed() >= Duration::from_secs(1);
                if healthy {
                    backoff.reset();
                } else if let Some(failure) = failures.pending.take() {
                    self.failed("watch", failure, &mut backoff, &mut failures)
                        .await;
                } else {
                    let delay = backoff.next_delay(false);
                    self.sleep_unless_reconnected(delay).await;
                }
                if let NextStep::Relist(reason) = next {
                    // Rare (410 Gone, a storage torn down, a schema change): worth a line.
                    tracing::info!(cluster = %self.key.cluster, resource = %self.key.resource, end = ?end, reason = reason.as_str(), "relisting");
                    self.hub.metrics.relisted(
                        &self.key.cluster,
                        &self.key.resource,
                        reason.as_str(),
                    );
                    continue 'relist;
                }
            }
        }
    }

    /// Records a failed request: exposes it, counts a denied one, logs once per backoff step,
    /// and waits before the next attempt.
    async fn failed(
        &mut self,
        request: &'static str,
        (code, reason, message): (Option<u16>, String, String),
        backoff: &mut Backoff,
        failures: &mut Failures,
    ) {
        failures.attempts = failures.attempts.saturating_add(1);
        let error = WatchError {
            code,
            reason,
            message,
            request,
            attempts: failures.attempts,
            retry_in: Duration::ZERO,
        };
        let denied = error.is_denied();
        let delay = backoff.next_delay(denied);
        let error = WatchError {
            retry_in: delay,
            ..error
        };
        if denied {
            let label = if error.code == Some(401) {
                "unauthorized"
            } else {
                "forbidden"
            };
            self.hub
                .metrics
                .relisted(&self.key.cluster, &self.key.resource, label);
        }
        if should_log(failures.attempts, failures.logged.map(|t| t.elapsed())) {
            failures.logged = Some(Instant::now());
            tracing::warn!(
                cluster = %self.key.cluster,
                resource = %self.key.resource,
                scope = ?self.key.scope,
                fields = self.key.fields.as_deref().unwrap_or_default(),
                code = error.code.unwrap_or_default(),
                error = %error.message,
                attempts = error.attempts,
                retry_in = ?delay,
                "{request} failed, retrying"
            );
        }
        self.errors.send_replace(Some(error));
        if denied {
            tokio::time::sleep(delay).await;
        } else {
            self.sleep_unless_reconnected(delay).await;
        }
    }

    /// Waits `delay`, or less if the cluster is reported reachable again meanwhile.
    async fn sleep_unless_reconnected(&mut self, delay: Duration) {
        self.reconnected.mark_unchanged();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            changed = self.reconnected.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// A list or watch request succeeded: the failure run, if any, is over.
    fn recovered(&mut self, failures: &mut Failures) {
        if failures.attempts > 0 {
            tracing::info!(cluster = %self.key.cluster, resource = %self.key.resource, failed_attempts = failures.attempts, "watch recovered");
        }
        failures.attempts = 0;
        failures.logged = None;
        self.errors.send_if_modified(|e| e.take().is_some());
    }

    /// A full, paginated list that replaces the cache; the resourceVersion to watch from.
    async fn relist(&mut self, api: &Api<DynamicObject>) -> Result<String, kube::Error> {
        let started = Instant::now();
        let mut objects = Vec::new();
        let mut continue_token: Option<String> = None;
        let version = loop {
            let mut params = ListParams::default().limit(PAGE_SIZE);
            if let Some(f) = &self.fields {
                params = params.fields(f);
            }
            if let Some(token) = &continue_token {
                params = params.continue_token(token);
            }
            match api.list(&params).await {
                Ok(page) => {
                    // Each page is trimmed as it comes: a list of thousands of full objects
                    // would otherwise be held whole before the cache takes it.
                    objects.extend(page.items.into_iter().filter_map(Cache::encode));
                    match page.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(token) => continue_token = Some(token),
                        None => break page.metadata.resource_version.unwrap_or_default(),
                    }
                }
                Err(err) => return Err(err),
            }
        };
        tracing::debug!(cluster = %self.key.cluster, resource = %self.key.resource, scope = ?self.key.scope,
            objects = objects.len(), took = ?started.elapsed(), "listed");
        self.cache.replace_encoded(objects);
        // No subscriber is fine: the cache is still kept. Sent before the first list is
        // announced, so that whoever subscribes once the watch is ready sees only what follows.
        let _ = self.events.send(Change::Resync);
        self.views.dispatch(&Change::Resync);
        // The failure is over before the list is announced: whoever sees the watch ready sees
        // no stale error.
        self.errors.send_if_modified(|e| e.take().is_some());
        self.listed.send_replace(true);
        Ok(version)
    }

    /// Applies the events of one watch stream to the cache until it ends.
    async fn follow(
        &mut self,
        stream: impl futures::Stream<Item = Result<WatchEvent<DynamicObject>, kube::Error>>,
        version: &mut String,
        failures: &mut Failures,
    ) -> StreamEnd {
        let opened = Instant::now();
        let mut stream = std::pin::pin!(stream);
        // The server ends the stream at the timeout; a stream silent well past it is dead.
        let idle = self.hub.timeout + Duration::from_secs(30);
        loop {
            let event = match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(event)) => event,
                Ok(None) => {
                    return StreamEnd::Closed {
                        lived: opened.elapsed(),
                    };
                }
                Err(_) => {
                    failures.pending = Some((
                        None,
                        String::new(),
                        format!("no event for {idle:?}, the stream is dead"),
                    ));
                    return StreamEnd::Failed;
                }
            };
            let (event, deleted) = match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => (o, false),
                Ok(WatchEvent::Deleted(o)) => (o, true),
                Ok(WatchEvent::Bookmark(b)) => {
                    *version = b.metadata.resource_version;
                    continue;
                }
                Ok(WatchEvent::Error(e)) if e.code == 410 => return StreamEnd::Gone,
                Ok(WatchEvent::Error(e)) => {
                    failures.pending = Some((Some(e.code), e.reason.clone(), e.message.clone()));
                    return StreamEnd::Failed;
                }
                Err(err) => {
                    failures.pending = Some(describe(&err));
                    return StreamEnd::Failed;
                }
            };
            if let Some(rv) = event.metadata.resource_version.clone() {
                *version = rv;
            }
            let change = Change::Object {
                namespace: event.metadata.namespace.clone(),
                name: event.metadata.name.clone().unwrap_or_default(),
            };
            if deleted {
                self.cache.delete(
                    event.metadata.namespace.as_deref(),
                    event.metadata.name.as_deref().unwrap_or_default(),
                );
            } else {
                self.cache.apply(event);
            }
            self.views.dispatch(&change);
            let _ = self.events.send(change);
        }
    }
}

/// `group/version/plural`, the resource part of a [`WatchKey`].
fn resource_key(resource: &ApiResource) -> String {
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

/// Hands out shared watches, and carries the metrics every syncer using it reports to.
#[derive(Debug)]
pub struct WatchHub {
    watches: Mutex<HashMap<WatchKey, Weak<SharedWatch>>>,
    metrics: crate::metrics::Metrics,
    leadership: super::leadership::Leadership,
    schema_changes: SchemaChanges,
    watch_timeout: Duration,
    events: Arc<EventSinks>,
    reconnects: Reconnects,
    sharing: Option<Sharing>,
}

/// A cluster whose watches another hub serves ([`WatchHub::sharing`]).
#[derive(Debug, Clone)]
struct Sharing {
    /// The cluster id in this hub.
    cluster: String,
    /// The hub that watches it for everyone.
    shared: Arc<WatchHub>,
    /// The cluster id in the shared hub.
    shared_cluster: String,
}

impl Default for WatchHub {
    fn default() -> Self {
        Self::with(
            crate::metrics::Metrics::default(),
            super::leadership::Leadership::always(),
        )
    }
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
            schema_changes: SchemaChanges::default(),
            reconnects: Reconnects::default(),
            watch_timeout: WATCH_TIMEOUT,
            events: Arc::default(),
            sharing: None,
        }
    }

    /// Watches of `cluster` are served by `shared` (as its `shared_cluster`) instead of being
    /// opened by this hub: a namespace-scoped watch becomes a view of `shared`'s one watch of
    /// the resource in all namespaces, a watch of one named object (`metadata.name=x`) a view
    /// of that too, any other the very watch `shared` hands out. Fleet mode gives each app
    /// cluster's engine a hub of its own (its leadership, its app cluster) that shares the
    /// control plane's watches this way, so that the control plane sees one watch per resource
    /// whatever the number of app clusters.
    pub fn sharing(mut self, cluster: &str, shared: Arc<WatchHub>, shared_cluster: &str) -> Self {
        self.sharing = Some(Sharing {
            cluster: cluster.to_owned(),
            shared,
            shared_cluster: shared_cluster.to_owned(),
        });
        self
    }

    /// The hub and cluster id that serve `cluster`'s watches, if another hub does.
    fn shared_for(&self, cluster: &str) -> Option<&Sharing> {
        self.sharing.as_ref().filter(|s| s.cluster == cluster)
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

    /// The Event recorders of the clusters this hub watches, by cluster id
    /// ([`BINDING_CLUSTER`](super::events::BINDING_CLUSTER),
    /// [`APP_CLUSTER`](super::events::APP_CLUSTER)); the engine registers them when it runs.
    /// They live here because everything that starts syncers already holds the hub.
    pub fn events(&self) -> &Arc<EventSinks> {
        &self.events
    }

    /// Watches started from now on ask the server to end each watch request after `timeout`
    /// (default 290 s) and then resume it from their last resourceVersion: a relist if that
    /// resourceVersion has been compacted away (`410 Gone`). Tests use a short one to reach that
    /// path in seconds.
    pub fn with_watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = timeout;
        self
    }

    /// Tells the watches of `resource` on `cluster` (running or started later) that its schema
    /// just changed: the API server may serve lists and watches with the old schema for a while,
    /// so whatever they read around now is read again once the server has switched.
    pub fn schema_changed(&self, cluster: &str, resource: &ApiResource) {
        self.schema_changes.record(cluster, &resource_key(resource));
        if let Some(s) = self.shared_for(cluster) {
            s.shared.schema_changed(&s.shared_cluster, resource);
        }
    }

    /// Tells the watches of `cluster` that it answers again after an outage: those waiting out
    /// a backoff after a transient failure retry at once (refused ones keep their backoff).
    pub fn cluster_reachable(&self, cluster: &str) {
        self.reconnects.bump(cluster);
        if let Some(s) = self.shared_for(cluster) {
            s.shared.cluster_reachable(&s.shared_cluster);
        }
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
            resource: resource_key(resource),
            scope: scope.clone(),
            fields: fields.clone(),
        };
        if let Some(s) = self.shared_for(cluster) {
            let view = match (&scope, fields.as_deref()) {
                (Scope::Namespace(ns), None) => Some((ns.clone(), None)),
                (Scope::Namespace(ns), Some(f)) => {
                    selected_name(f).map(|n| (ns.clone(), Some(n.to_owned())))
                }
                _ => None,
            };
            let Some((namespace, name)) = view else {
                return s
                    .shared
                    .watch(&s.shared_cluster, handle, resource, scope, fields);
            };
            let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = watches.get(&key).and_then(Weak::upgrade) {
                return existing;
            }
            watches.retain(|_, w| w.strong_count() > 0);
            let parent = s
                .shared
                .watch(&s.shared_cluster, handle, resource, Scope::All, None);
            let view = SharedWatch::view_of(parent, key.clone(), namespace, name);
            watches.insert(key, Arc::downgrade(&view));
            return view;
        }
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = watches.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let watch = SharedWatch::start(
            handle.clone(),
            key.clone(),
            resource.clone(),
            scope,
            fields,
            HubContext {
                schema_changes: self.schema_changes.clone(),
                timeout: self.watch_timeout,
                metrics: self.metrics.clone(),
                reconnects: self.reconnects.clone(),
            },
        );
        watches.insert(key, Arc::downgrade(&watch));
        watch
    }

    /// Number of running watches (for tests and metrics).
    pub fn len(&self) -> usize {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Number of watches this hub itself has open on `cluster` (views and the watches of a
    /// sharing hub not counted): what the cluster's API server sees.
    pub fn open_on(&self, cluster: &str) -> usize {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches
            .iter()
            .filter(|(k, w)| k.cluster == cluster && w.upgrade().is_some_and(|w| w.view.is_none()))
            .count()
    }

    /// Whether no watch runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn closed(lived: Duration) -> StreamEnd {
        StreamEnd::Closed { lived }
    }

    #[test]
    fn a_stream_that_reached_its_timeout_resumes() {
        let listed = Instant::now();
        let next = after_stream_end(closed(WATCH_TIMEOUT), WATCH_TIMEOUT, listed, None);
        assert_eq!(next, NextStep::Resume);
    }

    #[test]
    fn a_stream_the_server_ended_early_relists() {
        // The old storage of a CRD is torn down about a second after a schema change; its
        // watches end then, long before their timeout.
        let listed = Instant::now();
        let next = after_stream_end(closed(SECOND), WATCH_TIMEOUT, listed, None);
        assert_eq!(next, NextStep::Relist(RelistReason::EndedEarly));
    }

    #[test]
    fn gone_relists_and_failures_resume() {
        let listed = Instant::now();
        assert_eq!(
            after_stream_end(StreamEnd::Gone, WATCH_TIMEOUT, listed, None),
            NextStep::Relist(RelistReason::Gone)
        );
        assert_eq!(
            after_stream_end(StreamEnd::Failed, WATCH_TIMEOUT, listed, None),
            NextStep::Resume
        );
    }

    #[test]
    fn a_list_around_a_schema_change_is_suspect_and_relisted_at_the_next_end() {
        let now = Instant::now();
        // The list started right after the change (the server may not have switched yet).
        let listed = now + Duration::from_millis(3);
        assert!(list_suspect(listed, Some(now)));
        assert_eq!(
            after_stream_end(closed(SCHEMA_SETTLE), SCHEMA_SETTLE, listed, Some(now)),
            NextStep::Relist(RelistReason::SchemaChanged)
        );
        // The change came after the list: the list predates it, the cache is read again.
        assert!(list_suspect(now, Some(now + SECOND)));
    }

    #[test]
    fn a_list_well_after_a_schema_change_is_trusted() {
        let changed = Instant::now();
        let listed = changed + SCHEMA_SETTLE + SECOND;
        assert!(!list_suspect(listed, Some(changed)));
        assert_eq!(
            after_stream_end(closed(WATCH_TIMEOUT), WATCH_TIMEOUT, listed, Some(changed)),
            NextStep::Resume
        );
    }

    #[test]
    fn a_denied_watch_backs_off_to_about_five_minutes_with_jitter() {
        let delays: Vec<Duration> = (1..=12).map(|n| denied_delay(n, 0.5)).collect();
        assert_eq!(delays[0], SECOND);
        assert_eq!(delays[1], 2 * SECOND);
        assert_eq!(delays[8], 256 * SECOND);
        assert_eq!(delays[9], 300 * SECOND);
        assert_eq!(delays[11], 300 * SECOND);
        // Jitter spreads each step over 0.75..1.25 of it.
        assert_eq!(denied_delay(3, 0.0), 3 * SECOND);
        assert_eq!(denied_delay(3, 1.0), 5 * SECOND);
        assert_eq!(denied_delay(u32::MAX, 0.99).as_secs(), 373);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
        // Within ten minutes a denied watch tries about ten times, not four hundred.
        let mut backoff = Backoff::new();
        let mut spent = Duration::ZERO;
        let mut attempts = 0;
        while spent < 600 * SECOND {
            spent += backoff.next_delay(true);
            attempts += 1;
        }
        assert!((9..=12).contains(&attempts), "{attempts} attempts");
        // A success resets it.
        backoff.reset();
        assert!(backoff.next_delay(true) <= SECOND + SECOND / 4);
    }

    #[test]
    fn failures_are_logged_once_per_backoff_step() {
        let logged: Vec<u32> = (1..=100).filter(|&n| should_log(n, Some(SECOND))).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64]);
        assert!(should_log(77, Some(300 * SECOND)));
        assert!(should_log(77, None));
    }

    #[test]
    fn denied_means_401_or_403() {
        let e = |code| WatchError {
            code,
            reason: String::new(),
            message: "m".into(),
            request: "list",
            attempts: 1,
            retry_in: SECOND,
        };
        assert!(e(Some(403)).is_denied());
        assert!(e(Some(401)).is_denied());
        assert!(!e(Some(500)).is_denied());
        assert!(!e(None).is_denied());
        assert_eq!(e(Some(403)).to_string(), "list failed (403): m");
    }

    #[test]
    fn a_short_requested_timeout_is_not_mistaken_for_an_early_end() {
        let listed = Instant::now();
        let requested = Duration::from_secs(4);
        assert_eq!(
            after_stream_end(closed(requested), requested, listed, None),
            NextStep::Resume
        );
    }
}
