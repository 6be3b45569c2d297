//! The engine: the binding supervisor that turns APIServiceBindings into provider sessions.
//!
//! For each binding it checks the referenced kubeconfig Secret (`SecretValid`), finds or starts
//! the provider session for that endpoint and namespace (one session per distinct endpoint,
//! reference-counted by its bindings, rebuilt when credentials change), and releases the session
//! when the binding goes. Only the Secrets bindings reference are watched, each by name.
//!
//! It also starts the Event recorders of the clusters it talks to (registered in
//! [`WatchHub::events`]) and records on the bindings what it sees itself: a Secret that turns
//! invalid or unreadable, and credential reloads and rejections.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cluster_topology::{EndpointId, NamespaceRequirement, parse_kubeconfig};
use k8s_openapi::api::core::v1::Secret;
use konnector_api::v1alpha1::APIServiceBinding;
use kube::core::ApiResource;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use konnector_api::conditions::{Condition, Severity};
use konnector_api::events::{actions, reasons as event_reasons};
use konnector_api::strings::condition_types::{CONNECTED, SECRET_VALID};
use konnector_api::strings::controllers::KONNECTOR as KONNECTOR_CONTROLLER;
use konnector_api::strings::reasons;

use crate::plan::events::turned_false;
use crate::plan::status::{SecretCheck, secret_valid};
use crate::runtime::Cluster;
use crate::runtime::contain::contain;
use crate::runtime::events::{APP_CLUSTER, BINDING_CLUSTER, EventSink, EventType};
use crate::runtime::queue::WorkQueue;
use crate::runtime::session::{ProviderSession, SessionSpec};
use crate::runtime::status_writer::{BindingKey, BindingStatusWriter};
use crate::runtime::watch::{Change, Scope, SharedWatch, WatchError, WatchHub};

/// Where bindings live and how provider sessions are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineMode {
    /// The konnector runs in the app cluster; provider kubeconfigs come from binding Secrets.
    Default,
    /// The konnector runs on the control plane, which is also the provider; bindings and
    /// Secrets are read only in the binding root namespace.
    ControlPlane {
        /// `--binding-root-namespace`.
        binding_root_namespace: String,
    },
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The mode.
    pub mode: EngineMode,
}

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The binding cluster's APIServiceBinding watch ended.
    #[error("the APIServiceBinding watch in the binding cluster stopped")]
    WatchEnded,
}

/// The next credential event, or never when there is no event source (or it closed).
async fn recv_credential(
    events: &mut Option<tokio::sync::broadcast::Receiver<cluster_topology::CredentialEvent>>,
) -> Option<cluster_topology::CredentialEvent> {
    loop {
        let Some(rx) = events.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(event) => return Some(event),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => *events = None,
        }
    }
}

/// `AppKubeconfigValid` for an app-cluster credential event (other roles report elsewhere).
fn app_kubeconfig_condition(
    event: &Option<cluster_topology::CredentialEvent>,
) -> Option<Condition> {
    use cluster_topology::{CredentialEvent, Role};
    match event.as_ref()? {
        CredentialEvent::Reloaded {
            role: Role::App,
            secret,
            ..
        } => Some(crate::plan::status::app_kubeconfig_valid(
            &secret.to_string(),
            None,
        )),
        CredentialEvent::Rejected {
            role: Role::App,
            secret,
            reason,
        } => Some(crate::plan::status::app_kubeconfig_valid(
            &secret.to_string(),
            Some(&reason.to_string()),
        )),
        _ => None,
    }
}

/// The Event a credential event is worth on every binding: `(type, reason, note)`. Every
/// binding is concerned, since they all use the rotated cluster (the app cluster, or the
/// control plane that is binding cluster and provider at once).
fn credential_event(
    event: &cluster_topology::CredentialEvent,
) -> (EventType, &'static str, String) {
    use cluster_topology::CredentialEvent;
    match event {
        CredentialEvent::Reloaded { role, secret, .. } => (
            EventType::Normal,
            event_reasons::CREDENTIAL_RELOADED,
            format!(
                "The {role} cluster kubeconfig in secret {secret} changed; the konnector now uses the new credentials."
            ),
        ),
        CredentialEvent::Rejected {
            role,
            secret,
            reason,
        } => (
            EventType::Warning,
            event_reasons::CREDENTIAL_REJECTED,
            format!(
                "The {role} cluster kubeconfig in secret {secret} was rejected ({reason}); the last good kubeconfig is still in use."
            ),
        ),
    }
}

/// Whether the engine's root caches have synced (for `/healthz` and `/readyz`).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Root caches synced.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The konnector's sync engine.
#[derive(Debug)]
pub struct Engine {
    credential_events: Option<tokio::sync::broadcast::Receiver<cluster_topology::CredentialEvent>>,
    binding: Cluster,
    app: Cluster,
    options: EngineOptions,
    readiness: Readiness,
    hub: Arc<WatchHub>,
    /// How provider clients built from binding Secrets (default mode) treat their servers.
    client_options: cluster_topology::ClientOptions,
    /// Reconciles each export syncer runs at once (`--sync-workers`).
    sync_workers: std::num::NonZeroUsize,
    /// The hub that watches the binding cluster for several engines (fleet mode).
    shared_watches: Option<Arc<WatchHub>>,
}

/// Identity of a provider session: a provider endpoint with its namespace (default mode), or
/// the control plane's root namespace (control-plane mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SessionKey {
    Endpoint(EndpointId),
    ControlPlane(String),
}

struct SessionEntry {
    session: ProviderSession,
    bindings: BTreeSet<BindingKey>,
}

struct State {
    sessions: HashMap<SessionKey, SessionEntry>,
    binding_session: HashMap<BindingKey, SessionKey>,
    secret_watches: BTreeMap<(String, String), Arc<SharedWatch>>,
    /// The `SecretValid=False` message last recorded as an Event per binding, so that a
    /// re-reconcile before the status write lands does not record it twice.
    secret_events: HashMap<BindingKey, String>,
    /// Records Events about bindings (in the binding cluster).
    events: EventSink,
}

impl Engine {
    /// An engine over the binding and app clusters (the same cluster in default mode).
    pub fn new(binding: Cluster, app: Cluster, options: EngineOptions) -> Self {
        Engine {
            credential_events: None,
            binding,
            app,
            options,
            readiness: Readiness::default(),
            hub: Arc::new(WatchHub::new()),
            client_options: cluster_topology::ClientOptions::default(),
            sync_workers: crate::runtime::export_sync::WORKERS,
            shared_watches: None,
        }
    }

    /// A hub over the given metrics and leadership, sharing the binding cluster's watches if
    /// [`Engine::with_shared_watches`] said so.
    fn rebuild_hub(
        &mut self,
        metrics: crate::metrics::Metrics,
        leadership: crate::runtime::leadership::Leadership,
    ) {
        let hub = WatchHub::with(metrics, leadership);
        self.hub = Arc::new(match &self.shared_watches {
            Some(shared) => hub.sharing(BINDING_CLUSTER, shared.clone(), BINDING_CLUSTER),
            None => hub,
        });
    }

    /// Takes the binding cluster's watches from `shared` (which must watch the same cluster as
    /// this engine's binding cluster), as views of one watch per resource: fleet mode runs one
    /// engine per app cluster over one control plane, which then sees one watch per resource
    /// rather than one per app cluster. Each engine keeps its own leadership and app cluster.
    pub fn with_shared_watches(mut self, shared: Arc<WatchHub>) -> Self {
        self.shared_watches = Some(shared);
        self.rebuild_hub(self.hub.metrics().clone(), self.hub.leadership().clone());
        self
    }

    /// Provider clients built from binding Secrets (default mode) follow `options`
    /// (`--max-concurrent-requests`, ...); their health is reported in the metrics.
    pub fn with_client_options(mut self, options: cluster_topology::ClientOptions) -> Self {
        self.client_options = options;
        self
    }

    /// Reconciles each export syncer runs at once (default [`WORKERS`](crate::runtime::export_sync::WORKERS)).
    /// More help a burst while the servers have room; the client layer still bounds what reaches
    /// each server.
    pub fn with_sync_workers(mut self, workers: std::num::NonZeroUsize) -> Self {
        self.sync_workers = workers;
        self
    }

    /// Reports to `metrics` (register them with [`Metrics::register`](crate::metrics::Metrics::register)).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        let leadership = self.hub.leadership().clone();
        self.rebuild_hub(metrics, leadership);
        self
    }

    /// Writes only while `leadership` leads; caches and planning inputs stay warm meanwhile.
    /// Without it the engine always writes (for embedders that elect elsewhere, or not at all).
    pub fn with_leadership(mut self, leadership: crate::runtime::leadership::Leadership) -> Self {
        let metrics = self.hub.metrics().clone();
        self.rebuild_hub(metrics, leadership);
        self
    }

    /// Reports the app cluster kubeconfig's rotations (control-plane mode) on every binding as
    /// `AppKubeconfigValid`.
    pub fn with_credential_events(
        mut self,
        events: tokio::sync::broadcast::Receiver<cluster_topology::CredentialEvent>,
    ) -> Self {
        self.credential_events = Some(events);
        self
    }

    /// Readiness of the root caches.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EngineError> {
        let scope = match &self.options.mode {
            EngineMode::Default => Scope::All,
            EngineMode::ControlPlane {
                binding_root_namespace,
            } => Scope::Namespace(binding_root_namespace.clone()),
        };
        let binding_resource = ApiResource::erase::<APIServiceBinding>(&());
        let bindings = self
            .hub
            .watch("binding", &self.binding, &binding_resource, scope, None);
        let status = BindingStatusWriter::start(
            self.binding.clone(),
            bindings.clone(),
            self.hub.metrics().clone(),
            self.hub.leadership().clone(),
        );
        let queue: WorkQueue<BindingKey> = WorkQueue::new();
        let mut binding_events = bindings.subscribe();
        let (secret_tx, mut secret_rx) = mpsc::unbounded_channel::<(String, String)>();
        let mut state = State {
            sessions: HashMap::new(),
            binding_session: HashMap::new(),
            secret_watches: BTreeMap::new(),
            secret_events: HashMap::new(),
            events: self.start_event_sinks(),
        };
        bindings.ready().await;
        self.readiness.0.store(true, Ordering::Relaxed);
        tracing::info!("informers are synced");
        let enqueue_all = |queue: &WorkQueue<BindingKey>| {
            for b in bindings.list() {
                queue.add((
                    b.metadata.namespace.clone().unwrap_or_default(),
                    b.metadata.name.clone().unwrap_or_default(),
                ));
            }
        };
        enqueue_all(&queue);
        tokio::pin!(shutdown);
        let mut credential_events = self.credential_events.take();
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
                event = recv_credential(&mut credential_events) => {
                    if let Some(condition) = app_kubeconfig_condition(&event) {
                        for binding in bindings.list_as::<APIServiceBinding>() {
                            let key = (
                                binding.metadata.namespace.clone().unwrap_or_default(),
                                binding.metadata.name.clone().unwrap_or_default(),
                            );
                            status.report(&key, vec![condition.clone()], None);
                        }
                    }
                    if let Some(event) = &event {
                        let (type_, reason, note) = credential_event(event);
                        for binding in bindings.list_as::<APIServiceBinding>() {
                            state.events.resource(&binding, type_, reason, actions::RELOAD_CREDENTIALS, note.clone());
                        }
                    }
                }
                event = binding_events.recv() => match event {
                    Ok(Change::Object { namespace, name }) => {
                        let key = (namespace.unwrap_or_default(), name);
                        status.recheck(&key);
                        queue.add(key);
                    }
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => enqueue_all(&queue),
                    Err(RecvError::Closed) => return Err(EngineError::WatchEnded),
                },
                Some(secret) = secret_rx.recv() => {
                    for binding in bindings.list_as::<APIServiceBinding>() {
                        let r = &binding.spec.kubeconfig_secret_ref;
                        if r.namespace == secret.0 && r.name == secret.1 {
                            queue.add((
                                binding.metadata.namespace.clone().unwrap_or_default(),
                                binding.metadata.name.clone().unwrap_or_default(),
                            ));
                        }
                    }
                }
                Some(key) = queue.next() => {
                    let outcome = contain(self.reconcile(&key, &bindings, &status, &mut state, &secret_tx)).await;
                    // A binding may have moved to another Secret: drop watches nobody needs.
                    self.prune_secret_watches(&bindings, &mut state);
                    self.hub.metrics().reconciled(KONNECTOR_CONTROLLER, outcome.is_ok());
                    if let Err(p) = outcome {
                        tracing::error!(cluster = "binding", kind = "APIServiceBinding", namespace = %key.0, name = %key.1, error = %p, "binding reconcile panicked; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                    queue.done(&key);
                }
            }
        }
    }

    /// Starts the Event recorders of the binding and app clusters (one recorder when they are
    /// the same cluster, in default mode) unless an embedder registered its own; the binding
    /// cluster's.
    fn start_event_sinks(&self) -> EventSink {
        let sinks = self.hub.events();
        let leadership = self.hub.leadership().clone();
        let binding = sinks.get_or_register(BINDING_CLUSTER, || {
            EventSink::start(self.binding.clone(), leadership.clone())
        });
        match &self.options.mode {
            EngineMode::Default => {
                sinks.get_or_register(APP_CLUSTER, || binding.clone());
            }
            EngineMode::ControlPlane { .. } => {
                let app = sinks.get_or_register(APP_CLUSTER, || {
                    EventSink::start(self.app.clone(), leadership)
                });
                let metrics = self.hub.metrics();
                metrics.register_events(&metrics.cluster_label(APP_CLUSTER), &app);
            }
        }
        let metrics = self.hub.metrics();
        metrics.register_events(&metrics.cluster_label(BINDING_CLUSTER), &binding);
        binding
    }

    /// Reports `SecretValid` and records a Warning Event (`reason`) when it turned False or its
    /// message changed.
    fn report_secret(
        key: &BindingKey,
        binding: &APIServiceBinding,
        condition: Condition,
        status: &BindingStatusWriter,
        state: &mut State,
        (reason, action): (&str, &str),
    ) {
        let stored = binding
            .status
            .as_ref()
            .and_then(|s| konnector_api::conditions::get(&s.conditions, SECRET_VALID));
        if condition.status == konnector_api::conditions::ConditionStatus::False {
            if turned_false(stored, &condition)
                && state.secret_events.get(key) != Some(&condition.message)
            {
                state.events.resource(
                    binding,
                    EventType::Warning,
                    reason,
                    action,
                    condition.message.clone(),
                );
                state
                    .secret_events
                    .insert(key.clone(), condition.message.clone());
            }
        } else {
            state.secret_events.remove(key);
        }
        status.report(key, vec![condition], None);
    }

    fn secret_watch(
        &self,
        state: &mut State,
        namespace: &str,
        name: &str,
        notify: &mpsc::UnboundedSender<(String, String)>,
    ) -> Arc<SharedWatch> {
        let id = (namespace.to_string(), name.to_string());
        if let Some(w) = state.secret_watches.get(&id) {
            return w.clone();
        }
        let resource = ApiResource::erase::<Secret>(&());
        let watch = self.hub.watch(
            "binding",
            &self.binding,
            &resource,
            Scope::Namespace(namespace.to_string()),
            Some(format!("metadata.name={name}")),
        );
        let mut sub = watch.subscribe();
        let forward_to = notify.clone();
        let forward = id.clone();
        tokio::spawn(async move {
            // Every change (or a lag) re-checks the bindings of this Secret.
            while !matches!(sub.recv().await, Err(RecvError::Closed)) {
                if forward_to.send(forward.clone()).is_err() {
                    break;
                }
            }
        });
        // A failing list or watch (e.g. 403: the konnector may not read the Secret) is reported
        // on the bindings, and so is its recovery.
        let mut errors = watch.errors();
        let notify_errors = notify.clone();
        let errors_id = id.clone();
        tokio::spawn(async move {
            while errors.changed().await.is_ok() {
                if notify_errors.send(errors_id.clone()).is_err() {
                    break;
                }
            }
        });
        // Tell the bindings once the first list arrived, so a missing Secret is reported.
        let ready = watch.clone();
        let notify_ready = notify.clone();
        let ready_id = id.clone();
        tokio::spawn(async move {
            ready.ready().await;
            let _ = notify_ready.send(ready_id);
        });
        state.secret_watches.insert(id, watch.clone());
        watch
    }

    async fn reconcile(
        &self,
        key: &BindingKey,
        bindings: &Arc<SharedWatch>,
        status: &BindingStatusWriter,
        state: &mut State,
        secret_tx: &mpsc::UnboundedSender<(String, String)>,
    ) {
        let binding = bindings.get_as::<APIServiceBinding>(Some(&key.0), &key.1);
        let Some(binding) = binding else {
            tracing::info!(cluster = "binding", kind = "APIServiceBinding", namespace = %key.0, name = %key.1, "binding deleted, releasing its provider session");
            self.release(key, state, true).await;
            status.forget(key);
            state.secret_events.remove(key);
            self.prune_secret_watches(bindings, state);
            return;
        };
        let secret_ref = binding.spec.kubeconfig_secret_ref.clone();
        let watch = self.secret_watch(state, &secret_ref.namespace, &secret_ref.name, secret_tx);
        if let Some(denied) = watch.last_error().filter(WatchError::is_denied) {
            // The server refuses the Secret (403, 401): say so with its message. A running
            // session keeps its last good credentials; the watch retries with backoff and its
            // recovery re-enqueues the binding.
            let condition = secret_valid(&secret_ref, &SecretCheck::Unreadable(denied.message));
            Self::report_secret(
                key,
                &binding,
                condition,
                status,
                state,
                (event_reasons::WATCH_FORBIDDEN, actions::WATCH),
            );
            return;
        }
        if !watch.is_ready() {
            return; // Re-enqueued when the Secret watch has listed.
        }
        let secret = watch.get_as::<Secret>(Some(&secret_ref.namespace), &secret_ref.name);
        let (check, endpoint) = self.check_secret(&secret_ref.key, secret.as_ref());
        Self::report_secret(
            key,
            &binding,
            secret_valid(&secret_ref, &check),
            status,
            state,
            (event_reasons::SECRET_INVALID, actions::READ_SECRET),
        );
        let Some((endpoint, spec)) = endpoint else {
            // Invalid: keep any running session (last good credentials) until the Secret is fixed.
            return;
        };
        if state.binding_session.get(key) == Some(&endpoint) {
            if let Some(entry) = state.sessions.get(&endpoint) {
                entry.session.binding_changed(key);
            }
            return;
        }
        if state.binding_session.contains_key(key) {
            // The Secret now holds other credentials (or another endpoint): a rotation.
            state.events.resource(
                &binding,
                EventType::Normal,
                event_reasons::CREDENTIAL_RELOADED,
                actions::RELOAD_CREDENTIALS,
                format!(
                    "Kubeconfig secret {} changed; the binding now uses its new credentials.",
                    secret_ref.namespaced_name()
                ),
            );
        }
        self.release(key, state, false).await;
        let entry = state.sessions.entry(endpoint.clone()).or_insert_with(|| {
            tracing::info!(provider_namespace = %spec.provider_namespace, "starting new provider session");
            SessionEntry {
                session: ProviderSession::start(
                    spec,
                    ("app".to_string(), self.app.clone()),
                    self.binding.clone(),
                    bindings.clone(),
                    status.clone(),
                    self.hub.clone(),
                ),
                bindings: BTreeSet::new(),
            }
        });
        entry.bindings.insert(key.clone());
        entry.session.add_binding(key);
        // Until the session reports, the binding is not Ready: a binding that never had a
        // `Connected` condition gets `False/Pending/Info` (in the summary, `Unknown` would lose
        // to any `True`). An existing one keeps its value, so a restart over a synced world
        // writes nothing.
        let has_connected = binding
            .status
            .as_ref()
            .is_some_and(|s| konnector_api::conditions::get(&s.conditions, CONNECTED).is_some());
        if !has_connected {
            status.report(
                key,
                vec![Condition::false_(
                    CONNECTED,
                    reasons::PENDING,
                    Severity::Info,
                    "Waiting for the provider session.",
                )],
                None,
            );
        }
        state.binding_session.insert(key.clone(), endpoint);
    }

    /// The `SecretValid` outcome and, when usable, the session the binding belongs to.
    fn check_secret(
        &self,
        key: &str,
        secret: Option<&Secret>,
    ) -> (SecretCheck, Option<(SessionKey, SessionSpec)>) {
        let Some(secret) = secret else {
            return (SecretCheck::NotFound, None);
        };
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
            return (SecretCheck::MissingKey, None);
        };
        match &self.options.mode {
            EngineMode::Default => {
                match load_kubeconfig(&bytes.0, NamespaceRequirement::Required) {
                    Err(e) => (SecretCheck::Invalid(e), None),
                    Ok(parsed) => {
                        let namespace = parsed.namespace.clone().unwrap_or_default();
                        let endpoint = parsed.endpoint(&namespace);
                        let id = format!("provider:{}", endpoint.as_str());
                        let options = self.client_options.clone().with_label(id.clone());
                        match cluster_topology::build_layered_client(parsed.config, &options) {
                            Err(e) => (SecretCheck::Invalid(e.to_string()), None),
                            Ok((client, health)) => {
                                // Weakly held: a client built for a check that starts no
                                // session drops out of the metrics with it.
                                self.hub.metrics().register_client(&id, &health);
                                (
                                    SecretCheck::Valid,
                                    Some((
                                        SessionKey::Endpoint(endpoint.clone()),
                                        SessionSpec {
                                            provider_id: id,
                                            provider: Cluster::fixed_with_health(client, health),
                                            provider_namespace: namespace,
                                            mirror_kubeconfig_secret: true,
                                            sync_workers: self.sync_workers,
                                        },
                                    )),
                                )
                            }
                        }
                    }
                }
            }
            EngineMode::ControlPlane {
                binding_root_namespace,
            } => {
                // The Secret only has to be a kubeconfig; the control plane itself is the provider,
                // so every binding shares one session for the root namespace (K6).
                match load_kubeconfig(&bytes.0, NamespaceRequirement::Optional) {
                    Err(e) => (SecretCheck::Invalid(e), None),
                    Ok(_) => (
                        SecretCheck::Valid,
                        Some((
                            SessionKey::ControlPlane(binding_root_namespace.clone()),
                            SessionSpec {
                                provider_id: "binding".to_string(),
                                provider: self.binding.clone(),
                                provider_namespace: binding_root_namespace.clone(),
                                mirror_kubeconfig_secret: false,
                                sync_workers: self.sync_workers,
                            },
                        )),
                    ),
                }
            }
        }
    }

    async fn release(&self, key: &BindingKey, state: &mut State, deleted: bool) {
        let Some(endpoint) = state.binding_session.remove(key) else {
            return;
        };
        let Some(entry) = state.sessions.get_mut(&endpoint) else {
            return;
        };
        entry.bindings.remove(key);
        entry.session.remove_binding(key, deleted).await;
        if entry.bindings.is_empty() {
            tracing::info!("stopping provider session: no binding uses it any more");
            state.sessions.remove(&endpoint);
        }
    }

    fn prune_secret_watches(&self, bindings: &Arc<SharedWatch>, state: &mut State) {
        let referenced: BTreeSet<(String, String)> = bindings
            .list_as::<APIServiceBinding>()
            .into_iter()
            .map(|b| {
                (
                    b.spec.kubeconfig_secret_ref.namespace,
                    b.spec.kubeconfig_secret_ref.name,
                )
            })
            .collect();
        state.secret_watches.retain(|id, _| referenced.contains(id));
    }
}

/// A binding's kubeconfig, or what is wrong with it (never its contents).
fn load_kubeconfig(
    bytes: &[u8],
    namespace: NamespaceRequirement,
) -> Result<cluster_topology::ParsedKubeconfig, String> {
    let parsed = parse_kubeconfig(bytes, namespace).map_err(|e| e.to_string())?;
    match missing_user(bytes) {
        Some(problem) => Err(problem),
        None => Ok(parsed),
    }
}

/// The problem of a kubeconfig whose current context names a user it does not define. The
/// loader, like client-go, connects anonymously then; for a binding's kubeconfig that is a typo
/// or a cut-off file, and anonymous requests fail at the provider with a less helpful error.
fn missing_user(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text).ok()?;
    let current = kubeconfig.current_context.as_deref()?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == current)?
        .context
        .as_ref()?;
    let user = context.user.as_deref().filter(|u| !u.is_empty())?;
    (!kubeconfig.auth_infos.iter().any(|u| u.name == user))
        .then(|| format!("user \"{user}\" of context \"{current}\" not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1
kind: Config
clusters:
- name: p
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: c
  context:
    cluster: p
    user: u
    namespace: kube-bind-p
current-context: c
users:
- name: u
  user:
    token: s3cr3t-t0ken
";

    fn problem(text: &str) -> String {
        match load_kubeconfig(text.as_bytes(), NamespaceRequirement::Required) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn each_kind_of_malformed_kubeconfig_says_what_is_wrong() {
        assert!(load_kubeconfig(GOOD.as_bytes(), NamespaceRequirement::Required).is_ok());
        let cases = [
            ("not: [yaml".to_string(), "couldn't parse kubeconfig"),
            (String::new(), "no configuration has been provided"),
            (
                GOOD.replace("- name: p\n  cluster:\n    server: https://127.0.0.1:6443\n", ""),
                "cluster \"p\" of context \"c\" not found",
            ),
            (
                GOOD.replace("current-context: c\n", ""),
                "current context \"\" not found",
            ),
            (
                GOOD.replace("    cluster: p\n", "    cluster: q\n"),
                "cluster \"q\" of context \"c\" not found",
            ),
            (
                GOOD.replace("    user: u\n", "    user: nobody\n"),
                "user \"nobody\" of context \"c\" not found",
            ),
            (
                GOOD.replace("    server: https://127.0.0.1:6443\n", "    insecure-skip-tls-verify: true\n"),
                "cluster \"p\" has no server",
            ),
            (
                GOOD.replace(
                    "    server: https://127.0.0.1:6443\n",
                    "    server: https://127.0.0.1:6443\n    certificate-authority-data: '%%%'\n",
                ),
                "certificate-authority-data of cluster \"p\" is not valid base64",
            ),
            (
                GOOD.replace(
                    "    server: https://127.0.0.1:6443\n",
                    "    server: https://127.0.0.1:6443\n    certificate-authority-data: bm90IGEgY2VydGlmaWNhdGU=\n",
                ),
                "certificate authority of cluster \"p\" contains no PEM certificate",
            ),
            (
                GOOD.replace("    namespace: kube-bind-p\n", ""),
                "current context \"c\" has no namespace set",
            ),
        ];
        for (text, expected) in cases {
            let message = problem(&text);
            assert!(
                message.contains(expected),
                "{message:?} does not say {expected:?}"
            );
            assert!(!message.contains("s3cr3t"), "{message:?}");
        }
        // Control-plane mode: the namespace is optional, a missing user is still wrong.
        let no_ns = GOOD.replace("    namespace: kube-bind-p\n", "");
        assert!(load_kubeconfig(no_ns.as_bytes(), NamespaceRequirement::Optional).is_ok());
        let no_user = no_ns.replace("    user: u\n", "    user: nobody\n");
        assert!(load_kubeconfig(no_user.as_bytes(), NamespaceRequirement::Optional).is_err());
        // A context without a user is anonymous access, as in client-go.
        let anonymous = GOOD.replace("    user: u\n", "");
        assert!(load_kubeconfig(anonymous.as_bytes(), NamespaceRequirement::Required).is_ok());
    }

    #[test]
    fn credential_events_say_which_secret_and_what_happens_now() {
        use cluster_topology::{CredentialEvent, RejectReason, Role, SecretKeyRef};
        let secret = SecretKeyRef::new("root", "app-kubeconfig", "kubeconfig");
        let (type_, reason, note) = credential_event(&CredentialEvent::Rejected {
            role: Role::App,
            secret: secret.clone(),
            reason: RejectReason::SecretNotFound,
        });
        assert_eq!((type_, reason), (EventType::Warning, "CredentialRejected"));
        assert_eq!(
            note,
            "The app cluster kubeconfig in secret root/app-kubeconfig was rejected (secret not found); the last good kubeconfig is still in use."
        );
        let (type_, reason, _) = credential_event(&CredentialEvent::Reloaded {
            role: Role::App,
            secret,
            generation: 2,
            at: Default::default(),
        });
        assert_eq!((type_, reason), (EventType::Normal, "CredentialReloaded"));
    }
}
