//! The syncer of one exported resource: keeps every consumer object and its provider copy in
//! agreement (spec up, status down, adoption, deletion), driven by shared watches of both
//! clusters and the APIServiceNamespaces of the provider namespace.
//!
//! Work is keyed by the consumer-side identity of a pair, so a change on either side leads to one
//! reconcile that sees both copies. Upstream-side changes are mapped to that key through the
//! namespace and name mapping; upstream objects that belong to no consumer of this provider
//! namespace are ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use konnector_api::v1alpha1::APIServiceNamespace;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use konnector_api::strings::controllers::CLUSTER_SPEC;

use super::contain::contain;
use super::exec::{ExecError, Outcome, execute};
use super::expectations::Expectations;
use super::provider_view::ProviderView;
use super::queue::{RetryClass, WorkQueue};
use super::watch::{Change, Scope, SharedWatch, WatchHub};
use crate::mapping::{ClusterScopedMapping, NamespaceMap};
use crate::objects::is_deleting;
use crate::plan::{
    ExportContext, Op, PlanError, Side, Target, UpstreamKey, Write, downstream_key,
    may_run_together, plan_downstream, plan_upstream, upstream_key,
};

/// Reconciles of one export syncer that run at once. Each waits on one or two API round
/// trips, so one worker made a burst of 1,000 objects take 1,000 round trips back to back.
/// As many as the client layer lets reach one server (`--max-concurrent-requests`, whose
/// limit also adapts to 429s): on the bench's 2-core machine a real burst of 1,000 took
/// 3.8 s with 8, 3.7 s with 16 and 3.4 s with 32, against 3.1-3.2 s for a plain client doing
/// the same writes 32 at a time.
pub const WORKERS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(32) {
    Some(n) => n,
    None => unreachable!(),
};

/// How long an APIServiceNamespace create is remembered, so that the other objects of its
/// namespace do not create it again before the cache shows it.
const NAMESPACE_CLAIM: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a service namespace counts as new after this syncer created its
/// APIServiceNamespace: its provider watch's first list may then be skipped (see
/// [`Inner::reconcile`]).
const NEW_NAMESPACE: std::time::Duration = std::time::Duration::from_secs(60);

/// What one export syncer syncs, and where.
#[derive(Debug, Clone)]
pub struct ExportSyncConfig {
    /// The provider namespace `P`.
    pub provider_namespace: String,
    /// uid of namespace `P` on the provider (for cluster-scoped owner references).
    pub provider_namespace_uid: Option<String>,
    /// The synced resource (group, first served version, kind, plural).
    pub resource: ApiResource,
    /// `Some` for cluster-scoped consumer resources.
    pub cluster_scoped: Option<ClusterScopedMapping>,
    /// Watch namespaced provider objects per service namespace (informer scope `Namespaced`)
    /// instead of in all namespaces (informer scope `Cluster`).
    pub per_namespace_provider_watches: bool,
    /// Reconciles that run at once ([`WORKERS`] unless configured, `--sync-workers`).
    pub workers: std::num::NonZeroUsize,
}

/// The two clusters and how the hub names them.
#[derive(Debug, Clone)]
pub struct Clusters {
    /// The app cluster.
    pub consumer: Cluster,
    /// Hub id of the app cluster.
    pub consumer_id: String,
    /// The provider cluster.
    pub provider: Cluster,
    /// Hub id of the provider cluster (one per provider endpoint).
    pub provider_id: String,
}

/// A consumer-side identity: `(namespace, name)`.
pub type PairKey = (Option<String>, String);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Planning failed.
    #[error("planning {key}: {source}")]
    Plan {
        /// The pair.
        key: String,
        /// Why.
        #[source]
        source: PlanError,
    },
    /// A write failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Leadership was lost during the reconcile; the rest of its writes were withheld.
    #[error(transparent)]
    NotLeader(#[from] super::leadership::NotLeader),
    /// The reconcile panicked (a bug); contained and retried.
    #[error(transparent)]
    Panicked(#[from] super::contain::Panicked),
}

impl SyncError {
    /// How soon retrying may help.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            SyncError::Plan {
                source: PlanError::NameTooLong { .. } | PlanError::Mapping(_),
                ..
            } => RetryClass::Rejected,
            SyncError::Plan { .. } => RetryClass::Other,
            SyncError::Exec(e) => e.retry_class(),
            SyncError::NotLeader(_) | SyncError::Panicked(_) => RetryClass::Other,
        }
    }
}

/// A running export syncer; dropping it stops it.
#[derive(Debug)]
pub struct ExportSyncer {
    inner: Arc<Inner>,
    queue: WorkQueue<PairKey>,
    tasks: Vec<JoinHandle<()>>,
    consumer: Arc<SharedWatch>,
    provider: Arc<ProviderView>,
    namespaces: Arc<SharedWatch>,
}

impl Drop for ExportSyncer {
    fn drop(&mut self) {
        self.queue.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug)]
struct Inner {
    hub: Arc<WatchHub>,
    config: ExportSyncConfig,
    clusters: Clusters,
    service_namespace_resource: ApiResource,
    consumer: Arc<SharedWatch>,
    provider: Arc<ProviderView>,
    namespaces: Arc<SharedWatch>,
    queue: WorkQueue<PairKey>,
    reconciles: AtomicU64,
    failures: AtomicU64,
    /// What the cache should show after our own writes.
    expectations: Expectations,
    /// APIServiceNamespaces this syncer created that its cache may not show yet, so that the
    /// other objects of the same consumer namespace do not create them again.
    created_namespaces: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    /// The namespace map with the version of the APIServiceNamespace cache it was built from:
    /// every reconcile needs it, and it changes only when a namespace is mapped.
    namespace_map: std::sync::Mutex<Option<(u64, Arc<NamespaceMap>)>>,
    /// Consumer namespaces whose APIServiceNamespace this syncer created (201), and when.
    new_namespaces: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

impl ExportSyncer {
    /// Starts syncing. Reconciles begin once the caches of both clusters have synced, so that
    /// "absent" always means absent (the orphan safety net depends on it).
    pub fn start(hub: &Arc<WatchHub>, clusters: Clusters, config: ExportSyncConfig) -> Self {
        let consumer = hub.watch(
            &clusters.consumer_id,
            &clusters.consumer,
            &config.resource,
            Scope::All,
            None,
        );
        let provider = Arc::new(match &config.cluster_scoped {
            Some(m) if !m.upstream_is_cluster_scoped() => ProviderView::single(hub.watch(
                &clusters.provider_id,
                &clusters.provider,
                &config.resource,
                Scope::Namespace(config.provider_namespace.clone()),
                None,
            )),
            None if config.per_namespace_provider_watches => ProviderView::per_namespace(
                hub.clone(),
                clusters.provider.clone(),
                clusters.provider_id.clone(),
                config.resource.clone(),
            ),
            _ => ProviderView::single(hub.watch(
                &clusters.provider_id,
                &clusters.provider,
                &config.resource,
                Scope::All,
                None,
            )),
        });
        let service_namespace_resource = ApiResource::erase::<APIServiceNamespace>(&());
        let namespaces = hub.watch(
            &clusters.provider_id,
            &clusters.provider,
            &service_namespace_resource,
            Scope::Namespace(config.provider_namespace.clone()),
            None,
        );
        let queue = WorkQueue::new();
        let config_workers = config.workers.get();
        let inner = Arc::new(Inner {
            hub: hub.clone(),
            config,
            clusters,
            service_namespace_resource,
            consumer: consumer.clone(),
            provider: provider.clone(),
            namespaces: namespaces.clone(),
            queue: queue.clone(),
            reconciles: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            expectations: Expectations::default(),
            created_namespaces: std::sync::Mutex::default(),
            namespace_map: std::sync::Mutex::default(),
            new_namespaces: std::sync::Mutex::default(),
        });
        let mut tasks = Vec::new();
        // Subscribe before waiting for the caches, so no change between list and start is lost.
        let subs = [
            (Side::Consumer, consumer.subscribe()),
            (Side::Provider, provider.subscribe()),
        ];
        let mut sn_sub = namespaces.subscribe();
        let starter = inner.clone();
        tasks.push(tokio::spawn(async move {
            starter.consumer.ready().await;
            starter.provider.ready().await;
            starter.namespaces.ready().await;
            starter.refresh_provider_namespaces();
            starter.enqueue_all();
            starter.work().await;
        }));
        // More workers: a reconcile mostly waits for its round trips, and the queue never
        // hands one pair to two workers. They start once the first has enqueued everything.
        for _ in 1..config_workers {
            let worker = inner.clone();
            tasks.push(tokio::spawn(async move {
                worker.consumer.ready().await;
                worker.provider.ready().await;
                worker.namespaces.ready().await;
                worker.work().await;
            }));
        }
        for (side, mut sub) in subs {
            let inner = inner.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match sub.recv().await {
                        Ok(Change::Object { namespace, name }) => {
                            inner.on_change(side, namespace, name)
                        }
                        Ok(Change::Resync) | Err(RecvError::Lagged(_)) => inner.enqueue_all(),
                        Err(RecvError::Closed) => break,
                    }
                }
            }));
        }
        let sn_inner = inner.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match sn_sub.recv().await {
                    // A namespace mapping changed: every pair in that consumer namespace may move.
                    Ok(Change::Object { name, .. }) => {
                        sn_inner.refresh_provider_namespaces();
                        sn_inner.enqueue_consumer_namespace(&name);
                    }
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                        sn_inner.refresh_provider_namespaces();
                        sn_inner.enqueue_all();
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }));
        ExportSyncer {
            inner,
            queue,
            tasks,
            consumer,
            provider,
            namespaces,
        }
    }

    /// Retries at once the objects waiting out a transient failure (their cluster is back).
    pub fn retry_transient_now(&self) -> usize {
        self.queue.retry_transient_now()
    }

    /// Whether the caches of both clusters have synced.
    pub fn is_synced(&self) -> bool {
        self.consumer.is_ready() && self.provider.is_ready() && self.namespaces.is_ready()
    }

    /// Keys waiting to be reconciled.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// The synced resource.
    pub fn resource(&self) -> &ApiResource {
        &self.inner.config.resource
    }

    /// The consumer objects currently cached.
    pub fn consumer_objects(&self) -> Vec<Arc<DynamicObject>> {
        self.consumer.list()
    }

    /// Reconciles completed so far (successful and failed).
    pub fn reconciles(&self) -> u64 {
        self.inner.reconciles.load(Ordering::Relaxed)
    }

    /// Reconciles that failed so far.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn namespace_map(&self) -> Arc<NamespaceMap> {
        // The version is read first: a change while building makes the next call build again.
        let version = self.namespaces.version();
        let mut memo = self.namespace_map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, map)) = memo.as_ref()
            && *v == version
        {
            return map.clone();
        }
        let map = Arc::new(NamespaceMap::new(
            &self.namespaces.list_as::<APIServiceNamespace>(),
        ));
        *memo = Some((version, map.clone()));
        map
    }

    /// Per-namespace provider watches follow the mapped service namespaces.
    fn refresh_provider_namespaces(&self) {
        let map = self.namespace_map();
        self.provider.set_namespaces(map.service_namespaces());
    }

    fn ctx<'a>(&'a self, namespaces: &'a NamespaceMap) -> ExportContext<'a> {
        ExportContext {
            provider_namespace: &self.config.provider_namespace,
            provider_namespace_uid: self.config.provider_namespace_uid.as_deref(),
            resource: &self.config.resource,
            cluster_scoped: self.config.cluster_scoped.as_ref(),
            namespaces,
        }
    }

    fn enqueue_all(&self) {
        for key in self.consumer.keys() {
            self.queue.add(key);
        }
        let map = self.namespace_map();
        let ctx = self.ctx(&map);
        for o in self.provider.list() {
            if let Ok(Some(key)) = downstream_key(&ctx, &o) {
                self.queue.add(key);
            }
        }
    }

    fn enqueue_consumer_namespace(&self, consumer_ns: &str) {
        for key in self.consumer.keys() {
            if key.0.as_deref() == Some(consumer_ns) {
                self.queue.add(key);
            }
        }
        let map = self.namespace_map();
        if let crate::mapping::NamespaceState::Ready(service) = map.state(consumer_ns) {
            let ctx = self.ctx(&map);
            for o in self.provider.list() {
                if o.metadata.namespace.as_deref() == Some(service)
                    && let Ok(Some(key)) = downstream_key(&ctx, &o)
                {
                    self.queue.add(key);
                }
            }
        }
    }

    fn on_change(&self, side: Side, namespace: Option<String>, name: String) {
        match side {
            Side::Consumer => self.queue.add((namespace, name)),
            Side::Provider => {
                let map = self.namespace_map();
                let ctx = self.ctx(&map);
                let key = match self.provider.get(namespace.as_deref(), &name) {
                    Some(o) => downstream_key(&ctx, &o).ok().flatten(),
                    // Deleted upstream: map the identity without the object.
                    None => {
                        let mut probe = DynamicObject::new(&name, &self.config.resource);
                        probe.metadata.namespace = namespace;
                        if let Some(m) = &self.config.cluster_scoped {
                            probe.metadata.annotations = Some(
                                [(
                                    crate::mapping::CLUSTER_NAMESPACE_ANNOTATION.to_string(),
                                    m.provider_namespace.clone(),
                                )]
                                .into_iter()
                                .collect(),
                            );
                        }
                        downstream_key(&ctx, &probe).ok().flatten()
                    }
                };
                if let Some(key) = key {
                    self.queue.add(key);
                }
            }
        }
    }

    async fn work(&self) {
        while let Some(key) = self.queue.next().await {
            // Followers keep their caches warm but plan nothing until they lead.
            self.hub.leadership().leading().await;
            let result = match contain(self.reconcile(&key)).await {
                Ok(r) => r,
                Err(p) => Err(SyncError::Panicked(p)),
            };
            self.reconciles.fetch_add(1, Ordering::Relaxed);
            self.hub.metrics().reconciled(CLUSTER_SPEC, result.is_ok());
            self.hub.metrics().queue(CLUSTER_SPEC, self.queue.len());
            match result {
                Ok(()) => self.queue.forget(&key),
                Err(err) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    let class = err.retry_class();
                    let delay = self.queue.retry(key.clone(), class, None);
                    self.hub.metrics().retried(CLUSTER_SPEC, class.as_str());
                    let attempt = self.queue.failures(&key);
                    if class == RetryClass::Rejected {
                        self.report_on_object(&key, &err);
                    }
                    // A failure streak logs at attempts 1, 2, 4, 8, ...; while the cluster is
                    // known to be down (the client layer and the session say so once), an
                    // object's failure is expected and only a debug line.
                    let outage = class == RetryClass::Transient && self.remote_down(&err);
                    if attempt.is_power_of_two() && !outage {
                        tracing::warn!(
                            cluster = "app",
                            kind = %self.config.resource.kind,
                            namespace = key.0.as_deref().unwrap_or(""),
                            name = %key.1,
                            error = %err,
                            retry_class = class.as_str(),
                            attempt,
                            retry_in = ?delay,
                            "sync failed"
                        );
                    } else {
                        tracing::debug!(
                            kind = %self.config.resource.kind,
                            namespace = key.0.as_deref().unwrap_or(""),
                            name = %key.1,
                            error = %err,
                            attempt,
                            retry_in = ?delay,
                            "sync failed again"
                        );
                    }
                }
            }
            self.queue.done(&key);
        }
    }

    /// Whether the cluster a failed write went to is known to be unreachable.
    fn remote_down(&self, err: &SyncError) -> bool {
        let SyncError::Exec(e) = err else {
            return false;
        };
        let cluster = if e.side == Side::Consumer.as_str() {
            &self.clusters.consumer
        } else {
            &self.clusters.provider
        };
        cluster.health().is_some_and(|h| !h.is_reachable())
    }

    /// An object the provider refuses (too large, an invalid name) is the user's to fix: say so
    /// where they look, on the object (`kubectl describe`), with the server's message. The
    /// recorder folds repeats into one Event's series and rate-limits each object.
    fn report_on_object(&self, key: &PairKey, err: &SyncError) {
        let Some(obj) = self.consumer.get(key.0.as_deref(), &key.1) else {
            return;
        };
        let note = match err {
            SyncError::Exec(e) => format!(
                "Cannot be synced to the service provider: {} rejected it: {}",
                e.side,
                match &e.source {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                }
            ),
            other => format!("Cannot be synced to the service provider: {other}"),
        };
        self.hub.events().app().object(
            &self.config.resource,
            &obj,
            super::events::EventType::Warning,
            konnector_api::events::reasons::SYNC_FAILED,
            konnector_api::events::actions::SYNC,
            note,
        );
    }

    async fn reconcile(&self, key: &PairKey) -> Result<(), SyncError> {
        let map = self.namespace_map();
        let ctx = self.ctx(&map);
        let downstream = self.consumer.get(key.0.as_deref(), &key.1);
        let probe;
        let down_ref = match &downstream {
            Some(d) => d.as_ref(),
            None => {
                let mut p = DynamicObject::new(&key.1, &self.config.resource);
                p.metadata.namespace = key.0.clone();
                probe = p;
                &probe
            }
        };
        let upstream = match upstream_key(&ctx, down_ref) {
            UpstreamKey::At(ns, name) => {
                if self.provider.is_ready_for(ns.as_deref()) {
                    self.provider.get(ns.as_deref(), &name)
                } else if downstream.as_ref().is_some_and(|d| !is_deleting(d))
                    && self.created_namespace_recently(key.0.as_deref())
                {
                    // A service namespace made for this syncer's APIServiceNamespace moments
                    // ago holds nothing yet: the live object is applied without waiting for
                    // the namespace's first list, which a real API server may hold back ~100 ms
                    // until its watch cache is fresh. Were something there, the apply is what
                    // the plan would have chosen anyway.
                    None
                } else {
                    // A newly mapped service namespace whose watch has not listed yet: absent
                    // would not mean absent. Its first list enqueues the pair again.
                    self.queue
                        .add_after(key.clone(), std::time::Duration::from_millis(200));
                    return Ok(());
                }
            }
            UpstreamKey::NamespaceMissing(_) | UpstreamKey::NamespacePending => None,
        };
        let up_id = match upstream_key(&ctx, down_ref) {
            UpstreamKey::At(ns, name) => Some((Side::Provider, ns, name)),
            _ => None,
        };
        let down_id = (Side::Consumer, key.0.clone(), key.1.clone());
        let observed = [(
            down_id,
            downstream
                .as_ref()
                .and_then(|d| d.metadata.resource_version.clone()),
        )]
        .into_iter()
        .chain(up_id.map(|id| {
            (
                id,
                upstream
                    .as_ref()
                    .and_then(|u| u.metadata.resource_version.clone()),
            )
        }));
        for (id, rv) in observed {
            if let Some(wait) = self.expectations.still_stale(&id, rv.as_deref()) {
                // The write's own watch event re-enqueues the pair; the delayed add covers a
                // lost event.
                self.queue.add_after(key.clone(), wait);
                return Ok(());
            }
        }
        let plan_err = |source| SyncError::Plan {
            key: format!("{}/{}", key.0.as_deref().unwrap_or(""), key.1),
            source,
        };
        let mut writes = match &downstream {
            Some(d) => plan_downstream(&ctx, d, upstream.as_deref()).map_err(plan_err)?,
            None => Vec::new(),
        };
        // Spec first; the status is looked at again once the spec writes have been observed.
        if writes.is_empty()
            && let Some(u) = &upstream
        {
            writes = plan_upstream(&ctx, u, downstream.as_deref()).map_err(plan_err)?;
        }
        self.skip_namespaces_being_created(&mut writes);
        let started = std::time::Instant::now();
        let planned_on = |side: Side| match side {
            Side::Consumer => downstream
                .as_ref()
                .and_then(|d| d.metadata.resource_version.clone()),
            Side::Provider => upstream
                .as_ref()
                .and_then(|u| u.metadata.resource_version.clone()),
        };
        let mut rest: &[Write] = &writes;
        while !rest.is_empty() {
            // Writes that need not wait for each other go out together (see may_run_together).
            let together = if rest.len() >= 2 && may_run_together(&rest[0], &rest[1]) {
                2
            } else {
                1
            };
            let (stage, tail) = rest.split_at(together);
            if !self.hub.leadership().is_leading() {
                self.release_namespace_claims(rest);
                return Err(SyncError::NotLeader(super::leadership::NotLeader));
            }
            rest = tail;
            let outcomes = futures::future::join_all(stage.iter().map(|w| self.execute(w))).await;
            let mut failed = None;
            for (write, outcome) in stage.iter().zip(outcomes) {
                match outcome {
                    Ok(outcome) => {
                        self.remember_namespace_created(write, &outcome);
                        if write.target == Target::Synced {
                            self.expectations
                                .record(write, planned_on(write.side), &outcome);
                        }
                    }
                    Err(e) => {
                        self.release_namespace_claims(std::slice::from_ref(write));
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        // A spec sync ends with an apply upstream, a status sync with a status write downstream.
        if writes.iter().any(|w| matches!(w.op, Op::Apply(_))) {
            self.hub.metrics().synced("spec", started.elapsed());
        }
        if writes.iter().any(|w| matches!(w.op, Op::ReplaceStatus(_))) {
            self.hub.metrics().synced("status", started.elapsed());
        }
        Ok(())
    }

    /// Drops creates of APIServiceNamespaces that this syncer created moments ago or another of
    /// its workers is creating now (the first to plan one claims it); the namespace's watch
    /// event re-enqueues every object of it once the cache shows it.
    fn skip_namespaces_being_created(&self, writes: &mut Vec<Write>) {
        let mut created = self
            .created_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        created.retain(|_, until| *until > now);
        writes.retain(|w| {
            if w.target != Target::ServiceNamespace {
                return true;
            }
            match created.entry(w.object_key()) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(now + NAMESPACE_CLAIM);
                    true
                }
            }
        });
    }

    /// A claimed APIServiceNamespace create failed: another reconcile may try.
    fn release_namespace_claims(&self, writes: &[Write]) {
        let mut created = self
            .created_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for w in writes {
            if w.target == Target::ServiceNamespace {
                created.remove(&w.object_key());
            }
        }
    }

    /// Whether this syncer created the APIServiceNamespace of `consumer_ns` within
    /// [`NEW_NAMESPACE`].
    fn created_namespace_recently(&self, consumer_ns: Option<&str>) -> bool {
        let Some(ns) = consumer_ns else {
            return false;
        };
        let mut new = self
            .new_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        new.retain(|_, at| now.duration_since(*at) < NEW_NAMESPACE);
        new.contains_key(ns)
    }

    fn remember_namespace_created(&self, write: &Write, outcome: &Outcome) {
        if write.target == Target::ServiceNamespace {
            if matches!(outcome, Outcome::Done(_)) {
                let (_, name) = write.namespace_and_name();
                self.new_namespaces
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), tokio::time::Instant::now());
            }
            let mut created = self
                .created_namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            created.insert(
                write.object_key(),
                tokio::time::Instant::now() + NAMESPACE_CLAIM,
            );
        }
    }

    async fn execute(&self, write: &Write) -> Result<Outcome, ExecError> {
        let cluster = match write.side {
            Side::Consumer => &self.clusters.consumer,
            Side::Provider => &self.clusters.provider,
        };
        let resource = match write.target {
            Target::Synced => &self.config.resource,
            Target::ServiceNamespace => &self.service_namespace_resource,
        };
        let outcome = execute(cluster, resource, write, self.hub.metrics()).await?;
        let (namespace, name) = write.namespace_and_name();
        tracing::info!(
            cluster = write.side.cluster_role(),
            kind = %resource.kind,
            namespace = namespace.as_deref().unwrap_or(""),
            name = %name,
            reason = write.reason,
            outcome = ?outcome,
            "wrote"
        );
        Ok(outcome)
    }
}
