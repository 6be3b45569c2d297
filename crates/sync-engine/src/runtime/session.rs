//! A provider session: everything the konnector does for one provider endpoint and provider
//! namespace `P`, shared by all bindings that use it (decisions K1-K6).
//!
//! It keeps the ClusterBinding heartbeat, installs each bound export's CRD in the app cluster
//! (only CRDs it owns), runs one [`ExportSyncer`] per bound export once the CRD serves the
//! export's schema (EG1), writes the exports' status, and removes APIServiceNamespaces whose
//! consumer namespace is gone.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use konnector_api::strings::{
    CLUSTER_BINDING_NAME, FIELD_MANAGER, controllers, finalizers::SYNCER,
};
use konnector_api::v1alpha1::{
    APIServiceBinding, APIServiceExport, APIServiceNamespace, AcceptablePermissionClaimState,
    ClusterBinding, Isolation, PermissionClaim, Scope as ExportScope,
};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::claim_sync::{ClaimSyncer, claim_resource};
use super::cluster::Cluster;
use super::contain::contain;
use super::export_sync::{Clusters, ExportSyncConfig, ExportSyncer};
use super::named::NamedObjects;
use super::queue::WorkQueue;
use super::status_writer::{BindingKey, BindingStatusWriter};
use super::watch::{Change, Scope, SharedWatch, WatchHub};
use crate::crd::{SchemaState, crd_for_export, is_owned_by, schema_state};
use crate::mapping::ClusterScopedMapping;
use crate::plan::status::{
    ExportCheck, HEARTBEAT_INTERVAL, Reachability, Remote, Transition, cluster_binding_status,
    consumer_secret, export_conditions, export_status, heartbeating, informers_synced,
    time_until_heartbeat,
};
use crate::version::{binary_version, git_version};

/// How long a session's caches may take to sync before its bindings report
/// `InformersSynced=False` (the reference's 2m30s).
pub const INFORMER_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(150);

/// How often a session checks that its remote clusters answer. The heartbeat itself is due
/// only every 2.5 minutes; an outage must show on the bindings well within that.
pub const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a probe may take before the cluster counts as unreachable (a blackholed network
/// never refuses a connection).
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a session connects to.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Hub id of the provider cluster (unique per endpoint and credentials).
    pub provider_id: String,
    /// The provider cluster.
    pub provider: Cluster,
    /// The provider namespace `P` (also the binding root namespace there).
    pub provider_namespace: String,
    /// Default mode mirrors the provider-side kubeconfig Secret into the binding's Secret.
    pub mirror_kubeconfig_secret: bool,
    /// Reconciles each export syncer runs at once.
    pub sync_workers: std::num::NonZeroUsize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Heartbeat,
    Binding(String),
    Export(String),
    ServiceNamespace(String),
}

/// The accepted claims of one export and their syncers.
type RunningClaims = (Vec<PermissionClaim>, Vec<ClaimSyncer>);

struct RunningSyncer {
    generation: Option<i64>,
    syncer: ExportSyncer,
}

struct Inner {
    spec: SessionSpec,
    app: Cluster,
    /// The hub's id of the app cluster.
    app_id: String,
    binding_cluster: Cluster,
    status: BindingStatusWriter,
    bindings_watch: Arc<SharedWatch>,
    bindings: Mutex<BTreeSet<BindingKey>>,
    hub: Arc<WatchHub>,
    cluster_bindings: Arc<SharedWatch>,
    exports: Arc<SharedWatch>,
    service_namespaces: Arc<SharedWatch>,
    /// The app cluster's CRDs of the exports, watched by name.
    crds: Arc<NamedObjects>,
    app_namespaces: Arc<SharedWatch>,
    syncers: Mutex<HashMap<String, RunningSyncer>>,
    /// Claim syncers per export name, with the accepted claims they were started for.
    claims: Mutex<HashMap<String, RunningClaims>>,
    /// Default mode: the watch of the provider-side kubeconfig Secret, once its name is known.
    provider_secret: Mutex<Option<ProviderSecretWatch>>,
    queue: WorkQueue<Key>,
    /// Which remote clusters answer their probes.
    reach: Mutex<Reachability>,
    /// Wakes the prober early (a request just failed at the transport level).
    probe_now: tokio::sync::Notify,
    /// The refused claim watches last reported, per export.
    claim_denials: Mutex<HashMap<String, Vec<String>>>,
}

/// A named watch of the provider-side kubeconfig Secret; its changes trigger the mirror.
struct ProviderSecretWatch {
    name: String,
    watch: Arc<SharedWatch>,
    forward: JoinHandle<()>,
}

impl Drop for ProviderSecretWatch {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSession")
            .field("provider", &self.spec.provider_id)
            .field("namespace", &self.spec.provider_namespace)
            .finish_non_exhaustive()
    }
}

/// A running provider session; dropping it stops everything it runs.
#[derive(Debug)]
pub struct ProviderSession {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ProviderSession {
    fn drop(&mut self) {
        self.inner.queue.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn resource<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

impl ProviderSession {
    /// Starts a session.
    pub fn start(
        spec: SessionSpec,
        app: (String, Cluster),
        binding_cluster: Cluster,
        bindings_watch: Arc<SharedWatch>,
        status: BindingStatusWriter,
        hub: Arc<WatchHub>,
    ) -> Self {
        let p = Scope::Namespace(spec.provider_namespace.clone());
        let cluster_bindings = hub.watch(
            &spec.provider_id,
            &spec.provider,
            &resource::<ClusterBinding>(),
            p.clone(),
            None,
        );
        let exports = hub.watch(
            &spec.provider_id,
            &spec.provider,
            &resource::<APIServiceExport>(),
            p.clone(),
            None,
        );
        let service_namespaces = hub.watch(
            &spec.provider_id,
            &spec.provider,
            &resource::<APIServiceNamespace>(),
            p,
            None,
        );
        let crds = Arc::new(NamedObjects::new(
            hub.clone(),
            app.1.clone(),
            app.0.clone(),
            resource::<CustomResourceDefinition>(),
        ));
        let app_namespaces = hub.watch(
            &app.0,
            &app.1,
            &resource::<k8s_openapi::api::core::v1::Namespace>(),
            Scope::All,
            None,
        );
        let inner = Arc::new(Inner {
            spec,
            app_id: app.0.clone(),
            app: app.1,
            binding_cluster,
            status,
            bindings_watch,
            bindings: Mutex::new(BTreeSet::new()),
            hub,
            cluster_bindings,
            exports,
            service_namespaces,
            crds,
            app_namespaces,
            syncers: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            provider_secret: Mutex::new(None),
            queue: WorkQueue::new(),
            reach: Mutex::new(Reachability::default()),
            probe_now: tokio::sync::Notify::new(),
            claim_denials: Mutex::new(HashMap::new()),
        });
        let mut tasks = Vec::new();
        type Mapper = fn(&Inner, Change);
        let sources: [(broadcast::Receiver<Change>, Mapper); 5] = [
            (inner.cluster_bindings.subscribe(), |i, _| {
                i.queue.add(Key::Heartbeat);
                i.enqueue_bindings();
            }),
            (inner.exports.subscribe(), |i, c| {
                i.watch_export_crds();
                match c {
                    Change::Object { name, .. } => {
                        i.queue.add(Key::Binding(name.clone()));
                        i.queue.add(Key::Export(name));
                    }
                    Change::Resync => i.enqueue_all(),
                }
            }),
            (inner.crds.subscribe(), |i, c| match c {
                Change::Object { name, .. } => {
                    if i.exports
                        .get(Some(&i.spec.provider_namespace), &name)
                        .is_some()
                    {
                        i.queue.add(Key::Binding(name.clone()));
                        i.queue.add(Key::Export(name));
                    }
                }
                Change::Resync => i.enqueue_all(),
            }),
            (inner.service_namespaces.subscribe(), |i, c| match c {
                Change::Object { name, .. } => i.queue.add(Key::ServiceNamespace(name)),
                Change::Resync => i.enqueue_all(),
            }),
            (inner.app_namespaces.subscribe(), |i, c| match c {
                Change::Object { name, .. } => {
                    if i.service_namespaces
                        .get(Some(&i.spec.provider_namespace), &name)
                        .is_some()
                    {
                        i.queue.add(Key::ServiceNamespace(name));
                    }
                }
                Change::Resync => i.enqueue_all(),
            }),
        ];
        for (mut sub, map) in sources {
            let inner = inner.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match sub.recv().await {
                        Ok(change) => map(&inner, change),
                        Err(RecvError::Lagged(_)) => inner.enqueue_all(),
                        Err(RecvError::Closed) => break,
                    }
                }
            }));
        }
        let prober = inner.clone();
        tasks.push(tokio::spawn(async move { prober.probe_loop().await }));
        let worker = inner.clone();
        tasks.push(tokio::spawn(async move {
            let synced = async {
                for w in [&worker.cluster_bindings, &worker.exports, &worker.service_namespaces, &worker.app_namespaces] {
                    w.ready().await;
                }
                // The exports are known: watch their CRDs, and wait for those too.
                worker.watch_export_crds();
                worker.crds.ready().await;
            };
            tokio::pin!(synced);
            // C1: `InformersSynced` says whether the caches really synced. If they have not
            // within the reference's deadline, the bindings say so (and keep waiting).
            if tokio::time::timeout(INFORMER_SYNC_TIMEOUT, &mut synced).await.is_err() {
                tracing::warn!(provider_namespace = %worker.spec.provider_namespace, timeout = ?INFORMER_SYNC_TIMEOUT, "provider session caches did not sync in time");
                for key in worker.binding_keys() {
                    worker.status.report(&key, vec![informers_synced(false, INFORMER_SYNC_TIMEOUT)], None);
                }
                synced.await;
            }
            tracing::info!(provider_namespace = %worker.spec.provider_namespace, "provider session caches synced");
            worker.enqueue_all();
            worker.work().await;
        }));
        ProviderSession { inner, tasks }
    }

    /// Adds a binding to this session.
    pub fn add_binding(&self, key: &BindingKey) {
        let added = {
            let mut b = self
                .inner
                .bindings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            b.insert(key.clone())
        };
        if added {
            self.inner.queue.add(Key::Heartbeat);
        }
        self.inner.queue.add(Key::Binding(key.1.clone()));
        self.inner.queue.add(Key::Export(key.1.clone()));
    }

    /// Re-looks at a binding (it changed), and at its export's status, which copies the
    /// binding's `SchemaInSync` (without this, a restart would write what the last binding
    /// status change should have).
    pub fn binding_changed(&self, key: &BindingKey) {
        self.inner.queue.add(Key::Binding(key.1.clone()));
        self.inner.queue.add(Key::Export(key.1.clone()));
    }

    /// Removes a binding; returns how many bindings still use the session. When the binding is
    /// gone for good (`deleted`), its syncers stop and the downstream objects lose our finalizer,
    /// so users can still delete them; provider objects are left as they are.
    pub async fn remove_binding(&self, key: &BindingKey, deleted: bool) -> usize {
        let remaining = {
            let mut b = self
                .inner
                .bindings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            b.remove(key);
            b.len()
        };
        let still_bound = {
            let b = self
                .inner
                .bindings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            b.iter().any(|(_, n)| *n == key.1)
        };
        if !still_bound {
            let stopped = {
                let mut s = self.inner.syncers.lock().unwrap_or_else(|e| e.into_inner());
                s.remove(&key.1)
            };
            {
                let mut c = self.inner.claims.lock().unwrap_or_else(|e| e.into_inner());
                c.remove(&key.1);
            }
            // Only the leader releases finalizers; every replica's supervisor sees the deletion.
            if deleted
                && self.inner.hub.leadership().is_leading()
                && let Some(running) = stopped
            {
                self.inner.release_downstream(&key.1, running).await;
            }
            self.inner.queue.add(Key::Export(key.1.clone()));
        }
        remaining
    }

    /// Whether the session's caches have synced.
    pub fn is_synced(&self) -> bool {
        [
            &self.inner.cluster_bindings,
            &self.inner.exports,
            &self.inner.service_namespaces,
            &self.inner.app_namespaces,
        ]
        .iter()
        .all(|w| w.is_ready())
            && self.inner.crds.is_ready()
    }
}

impl Inner {
    /// Watches the app cluster's CRDs of the exports there are now (by name: the cluster's
    /// other CRDs are none of this session's business).
    fn watch_export_crds(&self) {
        let names: Vec<String> = self
            .exports
            .keys()
            .into_iter()
            .filter(|(ns, _)| ns.as_deref() == Some(self.p()))
            .map(|(_, name)| name)
            .collect();
        self.crds.set_names(names.iter().map(String::as_str));
    }

    fn reach(&self) -> std::sync::MutexGuard<'_, Reachability> {
        self.reach.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In control-plane mode the app cluster is the remote one (the konnector runs next to the
    /// provider, which also holds the bindings); in default mode the provider is.
    fn remotes(&self) -> &'static [Remote] {
        if self.spec.mirror_kubeconfig_secret {
            &[Remote::Provider]
        } else {
            &[Remote::App]
        }
    }

    /// Probes the remote clusters every [`PROBE_INTERVAL`] (sooner when woken) and turns
    /// outages into binding conditions; when a cluster is back, everything that failed on it
    /// is retried at once instead of waiting out its backoff.
    async fn probe_loop(&self) {
        async fn changed(
            health: &mut Option<tokio::sync::watch::Receiver<cluster_topology::Reachability>>,
        ) {
            let alive = match health.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => false,
            };
            if !alive {
                *health = None;
                std::future::pending::<()>().await
            }
        }
        let cluster = match self.remotes() {
            [Remote::App] => &self.app,
            _ => &self.spec.provider,
        };
        let mut health = cluster.health().map(|h| h.subscribe());
        loop {
            self.recheck_claim_watches();
            for &remote in self.remotes() {
                let result = self.probe(remote).await;
                let transition = self.reach().observe(remote, result);
                match transition {
                    Transition::Unchanged => {}
                    Transition::Lost(error) => {
                        tracing::warn!(provider_namespace = %self.p(), cluster = ?remote, %error, "cluster unreachable");
                        let conditions = self.reach().conditions();
                        for key in self.binding_keys() {
                            self.record_condition_events(&key, &conditions);
                            self.status.report(&key, conditions.clone(), None);
                        }
                    }
                    Transition::Regained => {
                        tracing::info!(provider_namespace = %self.p(), cluster = ?remote, "cluster reachable again");
                        self.hub.cluster_reachable(match remote {
                            Remote::App => &self.app_id,
                            Remote::Provider => &self.spec.provider_id,
                        });
                        self.retry_transient_now();
                        self.enqueue_all();
                    }
                }
            }
            // A request of any part of the konnector that failed to connect (or a first answer
            // after that) is seen by the client's health: probe at once instead of waiting.
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = self.probe_now.notified() => {}
                () = changed(&mut health) => {}
            }
        }
    }

    /// One cheap read that every konnector identity may do; any answer below 500 (including
    /// 429: the server is there, only busy) means reachable.
    async fn probe(&self, remote: Remote) -> Result<(), String> {
        let request = async {
            match remote {
                Remote::Provider => {
                    Api::<ClusterBinding>::namespaced(self.spec.provider.client(), self.p())
                        .get_opt(CLUSTER_BINDING_NAME)
                        .await
                        .map(|_| ())
                }
                Remote::App => Api::<CustomResourceDefinition>::all(self.app.client())
                    .list_metadata(&kube::api::ListParams::default().limit(1))
                    .await
                    .map(|_| ()),
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, request).await {
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            Ok(Ok(())) => Ok(()),
            Ok(Err(kube::Error::Api(s))) if s.code < 500 => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
        }
    }

    /// Retries every key of this session and its syncers that waits out a transient failure.
    fn retry_transient_now(&self) {
        let mut n = self.queue.retry_transient_now();
        for s in self
            .syncers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            n += s.syncer.retry_transient_now();
        }
        for (_, claims) in self
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            n += claims
                .iter()
                .map(ClaimSyncer::retry_transient_now)
                .sum::<usize>();
        }
        tracing::debug!(provider_namespace = %self.p(), retried = n, "retrying after reconnect");
    }

    /// Events for the condition changes a report is about to make (compared with the binding's
    /// stored status, so a restart over a steady world records none).
    fn record_condition_events(
        &self,
        key: &BindingKey,
        conditions: &[konnector_api::conditions::Condition],
    ) {
        let stored = self
            .binding(key)
            .and_then(|b| b.status)
            .map(|s| s.conditions)
            .unwrap_or_default();
        for e in crate::plan::events::binding_events(&stored, conditions) {
            self.binding_event(key, e.type_, e.reason, e.action, e.note);
        }
    }

    fn binding_event(
        &self,
        key: &BindingKey,
        type_: crate::plan::events::EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.hub
            .events()
            .binding()
            .binding(&self.bindings_watch, key, type_, reason, action, note);
    }

    /// Why the claim watches of export `name` are refused (empty when they are not).
    fn denied_claim_watches(&self, name: &str) -> Vec<String> {
        let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        claims
            .get(name)
            .map(|(_, syncers)| {
                syncers
                    .iter()
                    .flat_map(ClaimSyncer::denied_watches)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Re-reconciles the bindings whose claim watches became refused or allowed since the
    /// last look (watch errors come and go without an object change to trigger anything).
    fn recheck_claim_watches(&self) {
        let names: Vec<String> = {
            let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            claims.keys().cloned().collect()
        };
        let mut seen = self.claim_denials.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            let denied = self.denied_claim_watches(&name);
            if seen.get(&name) != Some(&denied) {
                seen.insert(name.clone(), denied);
                self.queue.add(Key::Binding(name));
            }
        }
    }

    /// The same event on every binding of export `name`.
    fn export_event(
        &self,
        name: &str,
        type_: crate::plan::events::EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        for key in self.binding_keys().into_iter().filter(|(_, n)| n == name) {
            self.binding_event(&key, type_, reason, action, note.to_string());
        }
    }

    fn binding_keys(&self) -> Vec<BindingKey> {
        let b = self.bindings.lock().unwrap_or_else(|e| e.into_inner());
        b.iter().cloned().collect()
    }

    fn enqueue_bindings(&self) {
        for (_, name) in self.binding_keys() {
            self.queue.add(Key::Binding(name));
        }
    }

    fn enqueue_all(&self) {
        self.queue.add(Key::Heartbeat);
        for (_, name) in self.binding_keys() {
            self.queue.add(Key::Binding(name.clone()));
            self.queue.add(Key::Export(name));
        }
        for e in self.exports.list() {
            if let Some(n) = e.metadata.name.clone() {
                self.queue.add(Key::Export(n));
            }
        }
        for sn in self.service_namespaces.list() {
            if let Some(n) = sn.metadata.name.clone() {
                self.queue.add(Key::ServiceNamespace(n));
            }
        }
    }

    fn p(&self) -> &str {
        &self.spec.provider_namespace
    }

    fn cluster_binding(&self) -> Option<ClusterBinding> {
        self.cluster_bindings
            .get_as(Some(self.p()), CLUSTER_BINDING_NAME)
    }

    fn binding(&self, key: &BindingKey) -> Option<APIServiceBinding> {
        self.bindings_watch.get_as(Some(&key.0), &key.1)
    }

    async fn work(&self) {
        // Keys seen while following: handled (for real) once this replica leads.
        let mut parked: BTreeSet<Key> = BTreeSet::new();
        let leadership = self.hub.leadership().clone();
        loop {
            let key = tokio::select! {
                key = self.queue.next() => match key {
                    Some(key) => key,
                    None => return,
                },
                () = leadership.leading(), if !parked.is_empty() => {
                    for key in std::mem::take(&mut parked) {
                        self.queue.add(key);
                    }
                    continue;
                }
            };
            if !leadership.is_leading() {
                // A follower starts the syncers of exports whose CRD already serves their
                // schema, so that their caches are warm when it takes over; it writes nothing.
                if let Key::Binding(name) = &key
                    && let Err(e) = self.warm(name).await
                {
                    tracing::debug!(export = %name, error = %e, "could not warm the export's caches");
                }
                parked.insert(key.clone());
                self.queue.done(&key);
                continue;
            }
            let work = async {
                match &key {
                    Key::Heartbeat => self.heartbeat().await,
                    Key::Binding(name) => self.reconcile_binding(name).await,
                    Key::Export(name) => self.reconcile_export_status(name).await,
                    Key::ServiceNamespace(name) => self.reconcile_service_namespace(name).await,
                }
            };
            let result = contain(work)
                .await
                .map_err(|p| p.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let controller = match &key {
                Key::Heartbeat => controllers::CLUSTERBINDING,
                Key::Binding(_) => controllers::CLUSTER_SERVICEBINDING,
                Key::Export(_) => controllers::CLUSTER_SERVICEEXPORT,
                Key::ServiceNamespace(_) => controllers::NAMESPACEDELETION,
            };
            self.hub.metrics().reconciled(controller, result.is_ok());
            self.hub
                .metrics()
                .queue(controllers::CLUSTER, self.queue.len());
            match result {
                Ok(()) => self.queue.forget(&key),
                Err(err) => {
                    let delay = self.queue.add_rate_limited(key.clone());
                    let attempt = self.queue.failures(&key);
                    if attempt.is_power_of_two() {
                        tracing::warn!(provider_namespace = %self.spec.provider_namespace, key = ?key, error = %err, attempt, retry_in = ?delay, "reconcile failed");
                    } else {
                        tracing::debug!(provider_namespace = %self.spec.provider_namespace, key = ?key, error = %err, attempt, retry_in = ?delay, "reconcile failed again");
                    }
                }
            }
            self.queue.done(&key);
        }
    }

    /// ClusterBinding heartbeat, version and (default mode) kubeconfig Secret mirroring.
    async fn heartbeat(&self) -> Result<(), kube::Error> {
        let bindings = self.binding_keys();
        if bindings.is_empty() {
            return Ok(());
        }
        let Some(cb) = self.cluster_binding() else {
            tracing::info!(cluster = "provider", kind = "ClusterBinding", namespace = %self.p(), name = CLUSTER_BINDING_NAME, "ClusterBinding not found");
            return Ok(());
        };
        if self.spec.mirror_kubeconfig_secret
            && self
                .provider_secret_watch(&cb.spec.kubeconfig_secret_ref.name)
                .is_none()
        {
            return Ok(()); // The Secret watch's first list triggers the heartbeat again.
        }
        let secret_valid = if self.spec.mirror_kubeconfig_secret {
            self.mirror_kubeconfig_secret(&cb, &bindings).await?
        } else {
            None
        };
        let now = Timestamp::now();
        let git = git_version();
        let result = match cluster_binding_status(
            cb.status.as_ref(),
            &git,
            binary_version(&git),
            secret_valid,
            now,
        ) {
            None => Ok(()),
            Some(status) => {
                let api: Api<ClusterBinding> =
                    Api::namespaced(self.spec.provider.client(), self.p());
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PatchParams::default()
                };
                {
                    let patched = api
                        .patch_status(
                            CLUSTER_BINDING_NAME,
                            &params,
                            &Patch::Merge(json!({"status": status})),
                        )
                        .await;
                    self.count("provider", "patch_status", &patched);
                    patched.map(|_| ())
                }
            }
        };
        let error = result.as_ref().err().map(ToString::to_string);
        let mut conditions = vec![heartbeating(match &error {
            Some(e) => Err(e.as_str()),
            None => Ok(()),
        })];
        if result.as_ref().is_err_and(|e| {
            crate::runtime::queue::RetryClass::of(e) == crate::runtime::queue::RetryClass::Transient
        }) {
            self.probe_now.notify_one();
        }
        // While the provider is known to be down its outage message stays, so the two reports
        // do not take turns rewriting the binding.
        self.reach().apply(&mut conditions);
        conditions.retain(|c| c.type_ == konnector_api::strings::condition_types::HEARTBEATING);
        for key in &bindings {
            self.status.report(
                key,
                conditions.clone(),
                Some(cb.spec.provider_pretty_name.clone()),
            );
        }
        if let Some(last) = self
            .cluster_binding()
            .and_then(|c| c.status)
            .and_then(|s| s.last_heartbeat_time)
        {
            let age = Timestamp::now().duration_since(last.0).as_secs();
            self.hub.metrics().heartbeat_age(age.max(0));
        }
        let next = time_until_heartbeat(
            self.cluster_binding().and_then(|c| c.status).as_ref(),
            Timestamp::now(),
        );
        let next = if next.is_zero() {
            HEARTBEAT_INTERVAL / 2
        } else {
            next
        };
        self.queue.add_after(Key::Heartbeat, next);
        result
    }

    /// Mirrors the provider-side kubeconfig Secret into each binding's Secret when they differ.
    async fn mirror_kubeconfig_secret(
        &self,
        cb: &ClusterBinding,
        bindings: &[BindingKey],
    ) -> Result<Option<konnector_api::conditions::Condition>, kube::Error> {
        let secret_ref = &cb.spec.kubeconfig_secret_ref;
        let Some(watch) = self.provider_secret_watch(&secret_ref.name) else {
            return Ok(None); // Its first list triggers the next heartbeat.
        };
        let provider: Option<Secret> = watch.get_as(Some(self.p()), &secret_ref.name);
        let mut condition = None;
        for key in bindings {
            let Some(binding) = self.binding(key) else {
                continue;
            };
            let target = &binding.spec.kubeconfig_secret_ref;
            let consumer_api: Api<Secret> =
                Api::namespaced(self.binding_cluster.client(), &target.namespace);
            let consumer = consumer_api.get_opt(&target.name).await?;
            let (c, write) = consumer_secret(
                self.p(),
                &secret_ref.name,
                &secret_ref.key,
                provider.as_ref(),
                consumer.as_ref(),
            );
            condition = Some(c);
            if let (true, Some(p)) = (write, &provider) {
                let mut desired = consumer.clone().unwrap_or_default();
                desired.metadata.name = Some(target.name.clone());
                desired.metadata.namespace = Some(target.namespace.clone());
                desired.data = p.data.clone();
                desired.type_ = p.type_.clone();
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PostParams::default()
                };
                if consumer.is_some() {
                    let r = consumer_api.replace(&target.name, &pp, &desired).await;
                    self.count("binding", "update", &r);
                    r?;
                } else {
                    let r = consumer_api.create(&pp, &desired).await;
                    self.count("binding", "create", &r);
                    r?;
                }
                tracing::info!(cluster = "binding", kind = "Secret", namespace = %target.namespace, name = %target.name, "mirrored provider kubeconfig");
            }
        }
        Ok(condition)
    }

    /// Counts a write request of the session in the metrics.
    fn count<T>(&self, cluster: &str, verb: &str, result: &Result<T, kube::Error>) {
        let conflict = matches!(result, Err(kube::Error::Api(s)) if s.code == 409);
        self.hub.metrics().wrote(cluster, verb, conflict);
    }

    /// The named watch of the provider-side kubeconfig Secret, once it has listed.
    fn provider_secret_watch(&self, name: &str) -> Option<Arc<SharedWatch>> {
        let mut slot = self
            .provider_secret
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|w| w.name != name) {
            let watch = self.hub.watch(
                &self.spec.provider_id,
                &self.spec.provider,
                &resource::<Secret>(),
                Scope::Namespace(self.p().to_string()),
                Some(format!("metadata.name={name}")),
            );
            let mut sub = watch.subscribe();
            let queue = self.queue.clone();
            let forward = tokio::spawn(async move {
                while !matches!(sub.recv().await, Err(RecvError::Closed)) {
                    queue.add(Key::Heartbeat);
                }
            });
            *slot = Some(ProviderSecretWatch {
                name: name.to_string(),
                watch,
                forward,
            });
        }
        slot.as_ref()
            .map(|w| w.watch.clone())
            .filter(|w| w.is_ready())
    }

    /// CRD installation, `Connected`/`SchemaInSync`, and the export's syncer.
    async fn reconcile_binding(&self, name: &str) -> Result<(), kube::Error> {
        let keys: Vec<BindingKey> = self
            .binding_keys()
            .into_iter()
            .filter(|(_, n)| n == name)
            .collect();
        let Some(binding) = keys.iter().find_map(|k| self.binding(k)) else {
            return Ok(());
        };
        let export: Option<APIServiceExport> = self.exports.get_as(Some(self.p()), name);
        if export.is_some() && !self.crds.is_ready_for(name) {
            // The watch of its CRD is new and has not listed yet: "absent" would not mean
            // absent. Its first list brings this binding back.
            self.watch_export_crds();
            return Ok(());
        }
        let check = match &export {
            None => ExportCheck::NotFound,
            Some(export) => self.ensure_crd(export, &binding).await?,
        };
        let pretty = self
            .cluster_binding()
            .map(|cb| cb.spec.provider_pretty_name);
        let mut conditions = export_conditions(name, &check);
        conditions.push(crate::plan::status::claims_watchable(
            &self.denied_claim_watches(name),
        ));
        self.reach().apply(&mut conditions);
        for key in &keys {
            self.record_condition_events(key, &conditions);
            self.status.report(key, conditions.clone(), pretty.clone());
        }
        match (&check, &export) {
            (ExportCheck::Installed(SchemaState::InSync), Some(export)) => {
                self.ensure_syncer(export).await?;
                self.ensure_claims(name, &binding).await
            }
            _ => {
                // No export, or the CRD does not serve the export's schema yet: no syncer may
                // read objects through a stale schema (EG1).
                self.stop_syncers(name);
                Ok(())
            }
        }
    }

    /// Read-only part of a binding reconcile: if the export's CRD is installed, owned by the
    /// binding and serves the export's schema, start its syncers (they wait to plan until this
    /// replica leads).
    async fn warm(&self, name: &str) -> Result<(), kube::Error> {
        let keys: Vec<BindingKey> = self
            .binding_keys()
            .into_iter()
            .filter(|(_, n)| n == name)
            .collect();
        let Some(binding) = keys.iter().find_map(|k| self.binding(k)) else {
            return Ok(());
        };
        let Some(export) = self
            .exports
            .get_as::<APIServiceExport>(Some(self.p()), name)
        else {
            return Ok(());
        };
        let Ok(desired) = crd_for_export(&export, &binding) else {
            return Ok(());
        };
        let Some(installed) = self.crds.get_as::<CustomResourceDefinition>(name) else {
            return Ok(());
        };
        if is_owned_by(&installed, &binding)
            && schema_state(&installed, &desired) == SchemaState::InSync
        {
            self.ensure_syncer(&export).await?;
            self.ensure_claims(name, &binding).await?;
        }
        Ok(())
    }

    fn stop_syncers(&self, name: &str) {
        let mut s = self.syncers.lock().unwrap_or_else(|e| e.into_inner());
        if s.remove(name).is_some() {
            tracing::info!(export = %name, "Stopping APIServiceExport sync");
        }
        let mut c = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        c.remove(name);
    }

    /// One claim syncer per accepted claim; a change of the accepted claims restarts them (E1).
    async fn ensure_claims(
        &self,
        name: &str,
        binding: &APIServiceBinding,
    ) -> Result<(), kube::Error> {
        let accepted: Vec<PermissionClaim> = binding
            .spec
            .permission_claims
            .iter()
            .filter(|c| c.state == AcceptablePermissionClaimState::Accepted)
            .map(|c| c.claim.clone())
            .collect();
        {
            let c = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            if c.get(name).is_some_and(|(running, _)| *running == accepted) {
                return Ok(());
            }
        }
        let mut syncers = Vec::new();
        for claim in &accepted {
            let resource = claim_resource(&self.app, claim).await?;
            let clusters = Clusters {
                consumer: self.app.clone(),
                consumer_id: "app".to_string(),
                provider: self.spec.provider.clone(),
                provider_id: self.spec.provider_id.clone(),
            };
            syncers.push(ClaimSyncer::start(
                self.hub.clone(),
                clusters,
                self.p().to_string(),
                claim.clone(),
                resource,
            ));
        }
        tracing::info!(export = %name, claims = accepted.len(), "started claimed-resource sync");
        let mut c = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        c.insert(name.to_string(), (accepted, syncers));
        Ok(())
    }

    async fn ensure_crd(
        &self,
        export: &APIServiceExport,
        binding: &APIServiceBinding,
    ) -> Result<ExportCheck, kube::Error> {
        let name = export.metadata.name.clone().unwrap_or_default();
        let desired = match crd_for_export(export, binding) {
            Ok(crd) => crd,
            Err(e) => return Ok(ExportCheck::Invalid(e.to_string())),
        };
        let api: Api<CustomResourceDefinition> = Api::all(self.app.client());
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let installed: Option<CustomResourceDefinition> = self.crds.get_as(&name);
        let Some(installed) = installed else {
            let created = api.create(&pp, &desired).await;
            self.count("consumer", "create", &created);
            return match created {
                Ok(_) => {
                    tracing::info!(cluster = "app", kind = "CustomResourceDefinition", name = %name, "installed CRD");
                    self.export_event(
                        &name,
                        crate::plan::events::EventType::Normal,
                        konnector_api::events::reasons::CRD_INSTALLED,
                        konnector_api::events::actions::INSTALL_CRD,
                        &format!("CustomResourceDefinition {name} installed in the app cluster from the APIServiceExport."),
                    );
                    Ok(ExportCheck::Installed(SchemaState::NotEstablished))
                }
                Err(kube::Error::Api(s)) if s.code == 422 => {
                    Ok(ExportCheck::CreateFailed(s.message))
                }
                Err(e) => Err(e),
            };
        };
        if !is_owned_by(&installed, binding) {
            return Ok(ExportCheck::Foreign);
        }
        match schema_state(&installed, &desired) {
            SchemaState::OutOfSync => {
                let mut updated = installed.clone();
                updated.spec = desired.spec.clone();
                let replaced = api.replace(&name, &pp, &updated).await;
                self.count("consumer", "update", &replaced);
                match replaced {
                    Ok(_) => {
                        // The export's schema changed, so the provider's CRD most likely did too:
                        // reads of both around now may have gone through the old schema.
                        if let Some(resource) = export_resource(export) {
                            self.hub.schema_changed("app", &resource);
                            self.hub.schema_changed(&self.spec.provider_id, &resource);
                        }
                        tracing::info!(cluster = "app", kind = "CustomResourceDefinition", name = %name, "updated CRD");
                        self.export_event(
                            &name,
                            crate::plan::events::EventType::Normal,
                            konnector_api::events::reasons::CRD_UPDATED,
                            konnector_api::events::actions::INSTALL_CRD,
                            &format!("CustomResourceDefinition {name} updated to the APIServiceExport's schema."),
                        );
                        Ok(ExportCheck::Installed(SchemaState::OutOfSync))
                    }
                    Err(kube::Error::Api(s)) if s.code == 422 => {
                        Ok(ExportCheck::UpdateFailed(s.message))
                    }
                    Err(e) => Err(e),
                }
            }
            state => Ok(ExportCheck::Installed(state)),
        }
    }

    async fn ensure_syncer(&self, export: &APIServiceExport) -> Result<(), kube::Error> {
        let name = export.metadata.name.clone().unwrap_or_default();
        let generation = export.metadata.generation;
        {
            let s = self.syncers.lock().unwrap_or_else(|e| e.into_inner());
            if s.get(&name).is_some_and(|r| r.generation == generation) {
                return Ok(());
            }
        }
        let Some(resource) = export_resource(export) else {
            return Ok(());
        };
        let restarted = {
            let s = self.syncers.lock().unwrap_or_else(|e| e.into_inner());
            s.contains_key(&name)
        };
        if restarted {
            // The export changed, and with it (most likely) the schema on both sides: whatever
            // the watches read while the API servers still served the old schema is read again.
            self.hub.schema_changed("app", &resource);
            self.hub.schema_changed(&self.spec.provider_id, &resource);
        }
        let cluster_scoped =
            (export.spec.scope == ExportScope::Cluster).then(|| ClusterScopedMapping {
                provider_namespace: self.p().to_string(),
                isolation: export
                    .spec
                    .cluster_scoped_isolation
                    .unwrap_or(Isolation::Prefixed),
            });
        let uid = if cluster_scoped.is_some() {
            let api: Api<k8s_openapi::api::core::v1::Namespace> =
                Api::all(self.spec.provider.client());
            api.get(self.p()).await?.metadata.uid
        } else {
            None
        };
        let config = ExportSyncConfig {
            provider_namespace: self.p().to_string(),
            provider_namespace_uid: uid,
            resource,
            cluster_scoped,
            per_namespace_provider_watches: export.spec.informer_scope == ExportScope::Namespaced,
            workers: self.spec.sync_workers,
        };
        let clusters = Clusters {
            consumer: self.app.clone(),
            consumer_id: "app".to_string(),
            provider: self.spec.provider.clone(),
            provider_id: self.spec.provider_id.clone(),
        };
        let syncer = ExportSyncer::start(&self.hub, clusters, config);
        let mut s = self.syncers.lock().unwrap_or_else(|e| e.into_inner());
        if s.insert(name.clone(), RunningSyncer { generation, syncer })
            .is_some()
        {
            tracing::info!(export = %name, reason = "GenerationChanged", "Restarted APIServiceExport sync");
        } else {
            tracing::info!(export = %name, "Started APIServiceExport sync");
        }
        Ok(())
    }

    /// Removes our finalizer from every downstream object of a no-longer-bound resource.
    async fn release_downstream(&self, name: &str, running: RunningSyncer) {
        let resource = running.syncer.resource().clone();
        let objects = running.syncer.consumer_objects();
        drop(running);
        // The cache may predate our own finalizer write, so every object is checked live.
        for obj in objects {
            let api: Api<DynamicObject> = match &obj.metadata.namespace {
                Some(ns) => Api::namespaced_with(self.app.client(), ns, &resource),
                None => Api::all_with(self.app.client(), &resource),
            };
            let obj_name = obj.metadata.name.clone().unwrap_or_default();
            let released = release_finalizer(&api, &obj_name).await;
            self.count("consumer", "patch", &released);
            if let Err(e) = released {
                tracing::warn!(cluster = "app", kind = %resource.kind, namespace = obj.metadata.namespace.as_deref().unwrap_or(""),
                    name = %obj_name, export = %name, error = %e, "could not release downstream object");
            }
        }
    }

    /// The export's status on the provider.
    async fn reconcile_export_status(&self, name: &str) -> Result<(), kube::Error> {
        let Some(export) = self
            .exports
            .get_as::<APIServiceExport>(Some(self.p()), name)
        else {
            return Ok(());
        };
        // A binding the supervisor has not handed to this session yet (it adds them one by one
        // after a restart, each once its Secret is read) still binds the export: without this,
        // a restart would write "no binding" and then "connected" again.
        let binding = self
            .binding_keys()
            .into_iter()
            .filter(|(_, n)| n == name)
            .find_map(|k| self.binding(&k))
            .or_else(|| {
                self.bindings_watch
                    .list_as::<APIServiceBinding>()
                    .into_iter()
                    .find(|b| b.metadata.name.as_deref() == Some(name))
            });
        if !self.crds.is_ready_for(name) {
            // Not known yet (see `ensure_crd`); its first list brings the export back.
            return Ok(());
        }
        let crd: Option<CustomResourceDefinition> = self.crds.get_as(name);
        let crd = crd.filter(|c| binding.as_ref().is_some_and(|b| is_owned_by(c, b)));
        let Some(status) = export_status(
            export.status.as_ref(),
            binding.as_ref(),
            crd.as_ref(),
            Timestamp::now(),
        ) else {
            return Ok(());
        };
        let api: Api<APIServiceExport> = Api::namespaced(self.spec.provider.client(), self.p());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let patch = json!({"metadata": {"resourceVersion": export.metadata.resource_version}, "status": status});
        let patched = api.patch_status(name, &params, &Patch::Merge(&patch)).await;
        self.count("provider", "patch_status", &patched);
        match patched {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the APIServiceNamespace of a consumer namespace that no longer exists.
    async fn reconcile_service_namespace(&self, name: &str) -> Result<(), kube::Error> {
        let Some(sn) = self.service_namespaces.get(Some(self.p()), name) else {
            return Ok(());
        };
        if !self.app_namespaces.is_ready() || self.app_namespaces.get(None, name).is_some() {
            return Ok(());
        }
        let api: Api<APIServiceNamespace> = Api::namespaced(self.spec.provider.client(), self.p());
        let dp = DeleteParams {
            preconditions: sn.metadata.uid.clone().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let deleted = api.delete(name, &dp).await;
        self.count("provider", "delete", &deleted);
        match deleted {
            Ok(_) => {
                tracing::info!(cluster = "provider", kind = "APIServiceNamespace", namespace = %self.p(), name = %name, "consumer namespace is gone, deleted its APIServiceNamespace");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Removes our finalizer from one object, re-reading it on conflicts (its cached copy may be
/// older than the last status write).
async fn release_finalizer(api: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(live) = api.get_opt(name).await? else {
            return Ok(());
        };
        let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == SYNCER) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != SYNCER).collect();
        let patch = json!({"metadata": {"resourceVersion": live.metadata.resource_version, "finalizers": kept}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The resource an export serves (its first served version).
fn export_resource(export: &APIServiceExport) -> Option<ApiResource> {
    let version = export.spec.first_served_version()?;
    Some(ApiResource {
        group: export.spec.group.clone(),
        version: version.name.clone(),
        api_version: if export.spec.group.is_empty() {
            version.name.clone()
        } else {
            format!("{}/{}", export.spec.group, version.name)
        },
        kind: export.spec.names.kind.clone(),
        plural: export.spec.names.plural.clone(),
    })
}
