//! Fleet mode: one control-plane konnector process serves every app cluster an
//! `AppClusterBinding` defines, each exactly as a control-plane-mode konnector started for it
//! would ([`cluster_topology::fleet::member_of`]), sharded over the replicas of the deployment.
//!
//! - **Who serves an app cluster** is whoever holds the Lease `klutch-bind` in its binding root
//!   namespace `R`: the very Lease a per-cluster konnector takes, so the two never write for one
//!   app cluster at once. Each replica announces itself with a heartbeat Lease
//!   `konnector-fleet-<fleet id>-<identity>` in its own namespace; every replica computes the
//!   same balanced
//!   assignment from the replicas it sees alive ([`cluster_topology::fleet::plan_shards`]), takes
//!   the free or expired Leases assigned to it and hands over the ones assigned elsewhere.
//!   Expiry is judged on this replica's clock from when it first saw a Lease unchanged, as the
//!   leader election does, and the replicas watch every app cluster's Lease all the time: the
//!   Leases of a replica that died are taken over as soon as they expire (15 s), not 15 s after
//!   the takeover was decided.
//! - **Per app cluster** a holder runs the control-plane-mode [`Engine`] for `R` while it holds
//!   the Lease (writes stop the moment it is lost), with its own app-cluster client read from
//!   the kubeconfig Secret and swapped when the Secret changes.
//! - **Shared** are the control-plane watches: every engine takes its views from one hub, which
//!   has one watch per resource on the control plane whatever the number of app clusters
//!   ([`WatchHub::sharing`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_topology::fleet::{FleetMember, LabelSelector, ShardLease, ideal_owners, member_of};
use cluster_topology::{
    ClientHealth, ClientOptions, ClusterHandle, CredentialUpdater, NamespaceRequirement, Role,
    connect_kubeconfig_with_health,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use konnector_api::events::{actions, reasons};
use konnector_api::v1alpha1::{APIServiceBinding, AppClusterBinding};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::core::ApiResource;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{Engine, EngineMode, EngineOptions};
use crate::metrics::{FleetLabels, Metrics};
use crate::runtime::Cluster;
use crate::runtime::events::{BINDING_CLUSTER, EventSink, EventType};
use crate::runtime::leadership::Leadership;
use crate::runtime::lease::{self, LEASE_DURATION, Seen};
use crate::runtime::status_writer::BindingStatusWriter;
use crate::runtime::watch::{Scope, SharedWatch, WatchHub};

/// Prefix of the heartbeat Leases of fleet replicas, in their own namespace; followed by the
/// fleet's id ([`LabelSelector::fleet_id`]), a dash and the replica's identity.
pub const MEMBER_LEASE_PREFIX: &str = "konnector-fleet-";

/// How often the fleet looks at its members, bindings and Leases again.
const TICK: Duration = Duration::from_secs(1);

/// A heartbeat Lease nobody renewed for this long belongs to a replica that is gone for good
/// (a crashed pod's name is not reused): it is deleted so that they do not pile up.
const MEMBER_GONE_AFTER: Duration = Duration::from_secs(600);

/// Fleet settings.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// This replica's identity (`POD_NAME`): holder of the Leases it takes.
    pub identity: String,
    /// Namespace of this replica's heartbeat Lease (`--lease-namespace`); every replica of one
    /// fleet uses the same.
    pub lease_namespace: String,
    /// Name of each app cluster's Lease in its root namespace (`--lease-name`, `klutch-bind`).
    pub lease_name: String,
    /// Which `AppClusterBinding`s this fleet serves (`--fleet-selector`).
    pub selector: LabelSelector,
    /// How the app-cluster clients treat their servers; labelled `app:<R>` per app cluster.
    pub client: ClientOptions,
    /// `--sync-workers` of each app cluster's engine.
    pub sync_workers: std::num::NonZeroUsize,
}

/// Whether this replica is ready: its control-plane watches have listed and its heartbeat
/// Lease is held.
#[derive(Debug, Clone, Default)]
pub struct FleetReadiness(Arc<AtomicBool>);

impl FleetReadiness {
    /// Ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The app clusters this replica serves now, by root namespace (for tests and `/readyz`
/// detail).
#[derive(Debug, Clone, Default)]
pub struct Held(Arc<Mutex<BTreeSet<String>>>);

impl Held {
    /// Root namespaces of the app clusters whose Lease this replica holds.
    pub fn get(&self) -> BTreeSet<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, r: &str, held: bool) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held {
            set.insert(r.to_owned());
        } else {
            set.remove(r);
        }
    }
}

/// Why the fleet stopped.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The watch of `AppClusterBinding`s on the control plane ended.
    #[error("the AppClusterBinding watch on the control plane stopped")]
    WatchEnded,
}

/// The fleet of one replica.
#[derive(Debug)]
pub struct Fleet {
    control_plane: ClusterHandle,
    options: FleetOptions,
    metrics: Metrics,
    readiness: FleetReadiness,
    held: Held,
    watch_timeout: Option<Duration>,
}

/// What every holder shares.
struct Ctx {
    control_plane: ClusterHandle,
    options: FleetOptions,
    metrics: Metrics,
    /// Opens the control plane's watches, one per resource.
    root: Arc<WatchHub>,
    /// Views of `root` by namespace (kubeconfig Secrets).
    views: Arc<WatchHub>,
    bindings: Arc<SharedWatch>,
    /// The `AppClusterBinding`s, for the uid of the Events about them.
    app_cluster_bindings: Arc<SharedWatch>,
    events: EventSink,
    held: Held,
}

/// A running holder of one app cluster's Lease.
struct Holder {
    member: watch::Sender<FleetMember>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn resource<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

impl Fleet {
    /// A fleet over the control plane `control_plane` (its binding-role handle).
    pub fn new(control_plane: ClusterHandle, options: FleetOptions, metrics: Metrics) -> Self {
        Fleet {
            control_plane,
            options,
            metrics,
            readiness: FleetReadiness::default(),
            held: Held::default(),
            watch_timeout: None,
        }
    }

    /// Watch requests end after `timeout` and resume (tests reach that path in seconds).
    pub fn with_watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = Some(timeout);
        self
    }

    /// This replica's readiness.
    pub fn readiness(&self) -> FleetReadiness {
        self.readiness.clone()
    }

    /// The app clusters this replica holds.
    pub fn held(&self) -> Held {
        self.held.clone()
    }

    /// Runs until `shutdown` resolves; then stops every app cluster's writers, releases their
    /// Leases and the heartbeat, so that the other replicas take over at once.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), FleetError> {
        let cp = Cluster::Handle(self.control_plane.clone());
        let mut root = WatchHub::with(self.metrics.clone(), Leadership::always());
        if let Some(t) = self.watch_timeout {
            root = root.with_watch_timeout(t);
        }
        let root = Arc::new(root);
        let views = Arc::new(
            WatchHub::with(self.metrics.clone(), Leadership::always()).sharing(
                BINDING_CLUSTER,
                root.clone(),
                BINDING_CLUSTER,
            ),
        );
        let app_cluster_bindings = root.watch(
            BINDING_CLUSTER,
            &cp,
            &resource::<AppClusterBinding>(),
            Scope::All,
            None,
        );
        let cluster_leases = root.watch(
            BINDING_CLUSTER,
            &cp,
            &resource::<Lease>(),
            Scope::All,
            Some(format!("metadata.name={}", self.options.lease_name)),
        );
        let members = root.watch(
            BINDING_CLUSTER,
            &cp,
            &resource::<Lease>(),
            Scope::Namespace(self.options.lease_namespace.clone()),
            None,
        );
        let bindings = root.watch(
            BINDING_CLUSTER,
            &cp,
            &resource::<APIServiceBinding>(),
            Scope::All,
            None,
        );
        let ctx = Arc::new(Ctx {
            control_plane: self.control_plane.clone(),
            metrics: self.metrics.clone(),
            events: EventSink::start(cp.clone(), Leadership::always()),
            options: self.options.clone(),
            root,
            views,
            bindings,
            app_cluster_bindings: app_cluster_bindings.clone(),
            held: self.held.clone(),
        });

        // The heartbeat: a Lease of our own, held as long as we run.
        let me = self.options.identity.clone();
        // Replicas with another selector are another fleet: not members of this one.
        let members_prefix = format!("{MEMBER_LEASE_PREFIX}{}-", self.options.selector.fleet_id());
        let heartbeat_name = format!("{members_prefix}{me}");
        let (beat_tx, beat) = watch::channel(None);
        // Counted alive while our heartbeat's renewal deadline has not passed.
        let heartbeat_held = Leadership::from_deadlines(beat);
        let (stop_beat, stop_beat_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(lease::run(
            Api::namespaced(self.control_plane.client(), &self.options.lease_namespace),
            heartbeat_name.clone(),
            me.clone(),
            beat_tx,
            stopped(stop_beat_rx),
        ));

        tokio::pin!(shutdown);
        let synced = async {
            for w in [&app_cluster_bindings, &cluster_leases, &members] {
                w.ready().await;
            }
        };
        tokio::select! {
            () = synced => {}
            () = &mut shutdown => {
                let _ = stop_beat.send(true);
                let _ = heartbeat.await;
                return Ok(());
            }
        }
        tracing::info!(identity = %me, lease_namespace = %self.options.lease_namespace, "fleet caches synced");

        let mut lease_seen: HashMap<String, Seen> = HashMap::new();
        let mut member_seen: HashMap<String, Seen> = HashMap::new();
        let mut holders: BTreeMap<String, Holder> = BTreeMap::new();
        // Holders stopped, still releasing their Lease.
        let mut releasing: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
        let mut reported: HashMap<(String, String), String> = HashMap::new();
        // Stale heartbeat Leases (by resourceVersion) whose deletion was asked for.
        let mut forgotten: BTreeSet<String> = BTreeSet::new();
        let mut acb_events = app_cluster_bindings.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the next Lease held by someone else runs out, unless renewed: looked at again
        // just then, so that a dead replica's app clusters are taken over at once.
        let mut next_expiry: Option<Instant> = None;
        let result = loop {
            let expiry = async {
                match next_expiry {
                    Some(at) => tokio::time::sleep_until(at + Duration::from_millis(5)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                _ = tick.tick() => {}
                () = expiry => {}
                event = acb_events.recv() => {
                    if matches!(event, Err(broadcast::error::RecvError::Closed)) {
                        break Err(FleetError::WatchEnded);
                    }
                }
            }
            let now = Instant::now();
            next_expiry = None;
            let mut expires = |seen: &Seen| {
                let at = valid_until(seen);
                if at >= now {
                    next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
                }
            };
            let beating = heartbeat_held.is_leading();
            if beating && !self.readiness.is_ready() {
                tracing::info!(identity = %me, "fleet member heartbeat held; serving app clusters");
                self.readiness.0.store(true, Ordering::Relaxed);
            }

            // The app clusters of the selected bindings.
            let mut wanted: BTreeMap<String, (FleetMember, AppClusterBinding)> = BTreeMap::new();
            let mut unservable = Vec::new();
            for acb in app_cluster_bindings.list_as::<AppClusterBinding>() {
                let labels = acb.metadata.labels.clone().unwrap_or_default();
                if !self.options.selector.matches(&labels) {
                    continue;
                }
                let key = (
                    acb.metadata.namespace.clone().unwrap_or_default(),
                    acb.metadata.name.clone().unwrap_or_default(),
                );
                match member_of(&acb) {
                    Ok(member) => {
                        reported.remove(&key);
                        wanted.insert(member.root_namespace.clone(), (member, acb));
                    }
                    Err(e) => {
                        let note = e.to_string();
                        if reported.get(&key) != Some(&note) {
                            unservable.push((key, note, acb));
                        }
                    }
                }
            }

            // Who is alive: heartbeat Leases renewed within their duration (ours while we
            // hold it).
            let mut alive = BTreeSet::new();
            let member_leases: Vec<Lease> = members.list_as::<Lease>();
            member_seen.retain(|name, _| {
                member_leases
                    .iter()
                    .any(|l| l.metadata.name.as_deref() == Some(name))
            });
            for l in &member_leases {
                let Some(name) = l.metadata.name.as_deref() else {
                    continue;
                };
                if !name.starts_with(&members_prefix) {
                    continue;
                }
                let seen = observe(&mut member_seen, name, l.spec.clone(), now);
                let holder = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_default();
                if holder.is_empty() {
                    continue;
                }
                if holder == me {
                    if beating {
                        alive.insert(holder);
                    }
                } else if live(seen, now) {
                    expires(seen);
                    alive.insert(holder);
                } else if now.duration_since(seen.at) > MEMBER_GONE_AFTER
                    && forgotten.insert(l.metadata.resource_version.clone().unwrap_or_default())
                {
                    forget_member(&ctx, l);
                }
            }

            // Every app cluster's Lease as seen from here.
            lease_seen.retain(|r, _| wanted.contains_key(r));
            let mut shard_leases = Vec::with_capacity(wanted.len());
            for r in wanted.keys() {
                let spec = cluster_leases
                    .get_as::<Lease>(Some(r), &self.options.lease_name)
                    .and_then(|l| l.spec);
                let seen = observe(&mut lease_seen, r, spec, now);
                let holder = seen
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .filter(|h| !h.is_empty());
                if holder.as_ref().is_some_and(|h| *h != me) {
                    expires(seen);
                }
                shard_leases.push(ShardLease {
                    cluster: r.clone(),
                    live: holder.is_some() && live(seen, now),
                    holder,
                });
            }

            // Plan only while we count ourselves alive: the others do not see us otherwise.
            // Meanwhile (our heartbeat failing: the control plane is unreachable, or we were
            // paused) nothing is taken or handed over; each held Lease keeps its own deadline.
            releasing.retain(|_, t| !t.is_finished());
            if beating {
                let mut replicas = alive.clone();
                replicas.insert(me.clone());
                // A binding nobody can serve is reported once, by the replica it would go to.
                let keys: Vec<String> = unservable
                    .iter()
                    .map(|(k, _, _)| format!("{}/{}", k.0, k.1))
                    .collect();
                let reporters = ideal_owners(&replicas, keys.iter().map(String::as_str));
                for ((key, note, acb), k) in unservable.into_iter().zip(&keys) {
                    if reporters.get(k) == Some(&me) {
                        tracing::warn!(namespace = %key.0, name = %key.1, error = %note, "AppClusterBinding cannot be served");
                        ctx.events.resource(
                            &acb,
                            EventType::Warning,
                            reasons::APP_CLUSTER_UNAVAILABLE,
                            actions::SHARD,
                            note.clone(),
                        );
                    }
                    reported.insert(key, note);
                }
                let plan = cluster_topology::fleet::plan_shards(&me, &alive, &shard_leases);

                // Hand over what is no longer ours, stop serving what is gone.
                let leaving: Vec<String> = holders
                    .keys()
                    .filter(|r| !plan.assigned.contains(*r))
                    .cloned()
                    .collect();
                for r in leaving {
                    if let Some(h) = holders.remove(&r) {
                        let why = if wanted.contains_key(&r) {
                            "assigned to another replica"
                        } else {
                            "its AppClusterBinding is gone or not selected"
                        };
                        tracing::info!(app_cluster = %r, why, "handing the app cluster over");
                        let _ = h.stop.send(true);
                        // It releases the Lease in the background; until it has, the app
                        // cluster is not taken again (two electors of ours on one Lease would
                        // each believe they hold it).
                        releasing.insert(r, h.task);
                    }
                }
                // Take what is assigned to us and free.
                for r in plan.acquire {
                    if holders.contains_key(&r) || releasing.contains_key(&r) {
                        continue;
                    }
                    let Some((member, _)) = wanted.get(&r) else {
                        continue;
                    };
                    let seen = lease_seen.get(&r).cloned();
                    holders.insert(r.clone(), Holder::start(ctx.clone(), member.clone(), seen));
                }
            }
            // Keep holders informed of changed bindings (a new kubeconfig Secret reference).
            for (r, h) in &holders {
                if let Some((member, _)) = wanted.get(r) {
                    h.member.send_if_modified(|m| {
                        let changed = m != member;
                        if changed {
                            *m = member.clone();
                        }
                        changed
                    });
                }
            }
            holders.retain(|_, h| !h.task.is_finished());
            self.metrics
                .fleet_app_clusters
                .set(i64::try_from(self.held.get().len()).unwrap_or(i64::MAX));
        };

        // Shutting down: every holder stops its writers and releases its Lease, then the
        // heartbeat goes, so that the others rebalance at once.
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut holders)
            .into_values()
            .map(|h| {
                let _ = h.stop.send(true);
                h.task
            })
            .chain(std::mem::take(&mut releasing).into_values())
            .collect();
        let released = futures::future::join_all(tasks);
        if tokio::time::timeout(Duration::from_secs(10), released)
            .await
            .is_err()
        {
            tracing::warn!("some app cluster Leases were not released in time");
        }
        let _ = stop_beat.send(true);
        let _ = heartbeat.await;
        let api: Api<Lease> =
            Api::namespaced(self.control_plane.client(), &self.options.lease_namespace);
        if let Err(e) = api.delete(&heartbeat_name, &DeleteParams::default()).await {
            tracing::debug!(error = %e, "could not delete the heartbeat Lease");
        }
        self.metrics.fleet_app_clusters.set(0);
        result
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Records `spec` as seen now unless it was seen so before; returns the observation.
fn observe<'a>(
    seen: &'a mut HashMap<String, Seen>,
    key: &str,
    spec: Option<LeaseSpec>,
    now: Instant,
) -> &'a Seen {
    let entry = seen.entry(key.to_owned()).or_insert_with(|| Seen {
        spec: spec.clone(),
        at: now,
    });
    if entry.spec != spec {
        *entry = Seen { spec, at: now };
    }
    entry
}

/// Until when a Lease seen unchanged since `seen.at` is valid (its holder's duration on our
/// clock).
fn valid_until(seen: &Seen) -> Instant {
    seen.at + seen.spec.as_ref().map_or(LEASE_DURATION, lease::duration)
}

/// Whether a Lease seen unchanged since `seen.at` is still valid at `now`.
fn live(seen: &Seen, now: Instant) -> bool {
    now <= valid_until(seen)
}

/// Deletes the heartbeat Lease of a replica gone for good (only if unchanged since read).
fn forget_member(ctx: &Arc<Ctx>, lease: &Lease) {
    let (Some(name), Some(ns)) = (
        lease.metadata.name.clone(),
        lease.metadata.namespace.clone(),
    ) else {
        return;
    };
    let api: Api<Lease> = Api::namespaced(ctx.control_plane.client(), &ns);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version.clone(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    tokio::spawn(async move {
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(lease = %name, "deleted the heartbeat Lease of a replica gone for good")
            }
            Err(e) => {
                tracing::debug!(lease = %name, error = %e, "could not delete a stale heartbeat Lease")
            }
        }
    });
}

impl Holder {
    fn start(ctx: Arc<Ctx>, member: FleetMember, seen: Option<Seen>) -> Self {
        let (member_tx, member_rx) = watch::channel(member);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(hold(ctx, member_rx, stop_rx, seen));
        Holder {
            member: member_tx,
            stop,
            task,
        }
    }
}

/// Holds one app cluster's Lease and serves the app cluster while it does; on `stop`, stops
/// writing, then releases the Lease.
async fn hold(
    ctx: Arc<Ctx>,
    mut member: watch::Receiver<FleetMember>,
    stop: watch::Receiver<bool>,
    seen: Option<Seen>,
) {
    let r = member.borrow().root_namespace.clone();
    let (lead_tx, lead) = watch::channel(None);
    let elector = tokio::spawn(lease::run_from(
        Api::namespaced(ctx.control_plane.client(), &r),
        ctx.options.lease_name.clone(),
        ctx.options.identity.clone(),
        lead_tx,
        stopped(stop.clone()),
        seen,
    ));
    let leadership = Leadership::from_deadlines(lead.clone());
    let mut first = lead.clone();
    let acquired = tokio::select! {
        r = first.wait_for(Option::is_some) => r.is_ok(),
        () = stopped(stop.clone()) => false,
    };
    if acquired {
        let binding = member.borrow().binding.clone();
        tracing::info!(app_cluster = %r, identity = %ctx.options.identity, "took over the app cluster");
        lease_change(&ctx, &r, "acquired");
        ctx.held.set(&r, true);
        record(
            &ctx,
            &binding,
            EventType::Normal,
            reasons::APP_CLUSTER_ACQUIRED,
            format!(
                "Replica {} serves the app cluster of binding root namespace {r}.",
                ctx.options.identity
            ),
        );
        loop {
            let current = member.borrow_and_update().clone();
            let changed = async {
                let _ = member.changed().await;
            };
            tokio::select! {
                () = serve(&ctx, &current, leadership.clone()) => {
                    // Its engine or Secret watch ended: start over, not in a tight loop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                () = changed => {
                    tracing::info!(app_cluster = %r, "AppClusterBinding changed; reconnecting its app cluster");
                    continue;
                }
                () = stopped(stop.clone()) => break,
            }
        }
    }
    // The elector stops writers (its deadline goes) before it clears the Lease.
    let _ = elector.await;
    if acquired {
        ctx.held.set(&r, false);
        ctx.metrics.forget_app_cluster(&r);
        lease_change(&ctx, &r, "released");
        let binding = member.borrow().binding.clone();
        record(
            &ctx,
            &binding,
            EventType::Normal,
            reasons::APP_CLUSTER_RELEASED,
            format!(
                "Replica {} no longer serves the app cluster of binding root namespace {r}.",
                ctx.options.identity
            ),
        );
        tracing::info!(app_cluster = %r, "released the app cluster");
    }
}

fn lease_change(ctx: &Ctx, r: &str, event: &str) {
    ctx.metrics
        .fleet_lease_changes
        .get_or_create(&FleetLabels {
            app_cluster: r.to_owned(),
            event: event.to_owned(),
        })
        .inc();
}

/// Records an Event on the `AppClusterBinding` `binding` (with its uid when cached, so that
/// `kubectl describe` shows it).
fn record(ctx: &Ctx, binding: &(String, String), type_: EventType, reason: &str, note: String) {
    if let Some(acb) = ctx
        .app_cluster_bindings
        .get_as::<AppClusterBinding>(Some(&binding.0), &binding.1)
    {
        ctx.events
            .resource(&acb, type_, reason, actions::SHARD, note);
        return;
    }
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(ApiResource::erase::<AppClusterBinding>(&()).api_version),
        kind: Some("AppClusterBinding".to_owned()),
        namespace: Some(binding.0.clone()),
        name: Some(binding.1.clone()),
        ..Default::default()
    };
    ctx.events
        .publish(reference, type_, reason, actions::SHARD, note);
}

/// Serves one app cluster: connects with the kubeconfig Secret and runs its engine; while the
/// Secret is missing or unusable, says so on the cluster's bindings and waits for it to change.
/// Runs until cancelled.
async fn serve(ctx: &Arc<Ctx>, member: &FleetMember, leadership: Leadership) {
    let r = member.root_namespace.clone();
    let secret_ref = member.app_kubeconfig.clone();
    let cp = Cluster::Handle(ctx.control_plane.clone());
    let secret = ctx.views.watch(
        BINDING_CLUSTER,
        &cp,
        &resource::<Secret>(),
        Scope::Namespace(secret_ref.namespace.clone()),
        Some(format!("metadata.name={}", secret_ref.name)),
    );
    let mut changes = secret.subscribe();
    secret.ready().await;
    let label = format!("app:{r}");
    let health = ClientHealth::new(ctx.options.client.clone().with_label(label.clone()));
    let mut status: Option<BindingStatusWriter> = None;
    let mut last_problem = None;
    // The first usable kubeconfig.
    let connection = loop {
        let current = secret.get_as::<Secret>(Some(&secret_ref.namespace), &secret_ref.name);
        let problem = match current
            .as_ref()
            .map(|s| cluster_topology::rotation::secret_value(s, &secret_ref.key))
        {
            None => format!("secret {secret_ref} not found"),
            Some(None) => format!(
                "secret {secret_ref} does not contain key {}",
                secret_ref.key
            ),
            Some(Some(bytes)) => match connect_kubeconfig_with_health(
                &bytes,
                NamespaceRequirement::Optional,
                &health,
            ) {
                Ok(connection) => break connection,
                Err(e) => format!("{e}"),
            },
        };
        if last_problem.as_ref() != Some(&problem) {
            tracing::warn!(app_cluster = %r, error = %problem, "the app cluster's kubeconfig cannot be used; waiting for its Secret to change");
            record(
                ctx,
                &member.binding,
                EventType::Warning,
                reasons::APP_CLUSTER_UNAVAILABLE,
                format!(
                    "The app cluster of binding root namespace {r} cannot be served: {problem}."
                ),
            );
            let writer = status.get_or_insert_with(|| {
                BindingStatusWriter::start(
                    cp.clone(),
                    ctx.bindings.clone(),
                    ctx.metrics.clone(),
                    leadership.clone(),
                )
            });
            let condition =
                crate::plan::status::app_kubeconfig_unusable(&secret_ref.to_string(), &problem);
            for key in binding_keys(ctx, &r) {
                writer.report(&key, vec![condition.clone()], None);
            }
            last_problem = Some(problem);
        }
        // A lagging receiver just looks again; only a closed watch ends this.
        if let Err(broadcast::error::RecvError::Closed) = changes.recv().await {
            return;
        }
    };
    // The problem reported before is over: say so (the engine reports rotations from now on).
    // The writer lives as long as this app cluster is served, so that the report lands.
    if let Some(writer) = &status {
        let condition = crate::plan::status::app_kubeconfig_valid(&secret_ref.to_string(), None);
        for key in binding_keys(ctx, &r) {
            writer.report(&key, vec![condition.clone()], None);
        }
    }
    ctx.metrics.register_client(&label, &health);
    let app = ClusterHandle::with_health(Role::App, connection, health);
    tracing::info!(app_cluster = %r, app = %app.current().server(), secret = %secret_ref, "serving the app cluster");

    // Rotation: the updater swaps the app client when the Secret changes to something usable.
    let (credentials, _) = broadcast::channel(16);
    let mut updater = CredentialUpdater::new(
        &app,
        secret_ref.clone(),
        NamespaceRequirement::Optional,
        credentials.clone(),
    );
    let engine = Engine::new(
        cp.clone(),
        app.clone().into(),
        EngineOptions {
            mode: EngineMode::ControlPlane {
                binding_root_namespace: r.clone(),
            },
        },
    )
    .with_metrics(ctx.metrics.for_app_cluster(&r))
    .with_leadership(leadership)
    .with_credential_events(credentials.subscribe())
    .with_client_options(ctx.options.client.clone())
    .with_sync_workers(ctx.options.sync_workers)
    .with_shared_watches(ctx.root.clone());
    let engine = engine.run(std::future::pending::<()>());
    tokio::pin!(engine);
    loop {
        let retry = updater.next_retry();
        tokio::select! {
            result = &mut engine => {
                if let Err(e) = result {
                    tracing::error!(app_cluster = %r, error = %e, "the app cluster's engine stopped");
                }
                return;
            }
            change = changes.recv() => {
                if matches!(change, Err(broadcast::error::RecvError::Closed)) {
                    return;
                }
                let current = secret.get_as::<Secret>(Some(&secret_ref.namespace), &secret_ref.name);
                if let Some(event) = updater.observe(current.as_ref()).await {
                    ctx.metrics.credential_event(&event);
                }
            }
            () = async {
                match retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(event) = updater.retry().await {
                    ctx.metrics.credential_event(&event);
                }
            }
        }
    }
}

/// The APIServiceBindings in root namespace `r`.
fn binding_keys(ctx: &Ctx, r: &str) -> Vec<(String, String)> {
    ctx.bindings
        .keys()
        .into_iter()
        .filter(|(ns, _)| ns.as_deref() == Some(r))
        .map(|(_, name)| (r.to_owned(), name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64) -> Option<LeaseSpec> {
        Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(renewed).unwrap_or_default(),
            )),
            ..LeaseSpec::default()
        })
    }

    #[test]
    fn a_lease_is_live_until_seen_unchanged_for_its_duration() {
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        let first = observe(&mut seen, "r", spec("a", 1), t0).clone();
        assert_eq!(first.at, t0);
        assert!(live(&first, t0 + Duration::from_secs(15)));
        assert!(!live(&first, t0 + Duration::from_secs(16)));
        // The same content seen later keeps its first sighting: expiry is not postponed.
        let again = observe(&mut seen, "r", spec("a", 1), t0 + Duration::from_secs(10)).clone();
        assert_eq!(again.at, t0);
        // A renewal is a change: counted from when it is seen.
        let renewed = observe(&mut seen, "r", spec("a", 2), t0 + Duration::from_secs(12)).clone();
        assert_eq!(renewed.at, t0 + Duration::from_secs(12));
        assert!(live(&renewed, t0 + Duration::from_secs(20)));
    }

    #[test]
    fn a_lease_without_a_duration_lasts_the_default() {
        let t0 = Instant::now();
        let seen = Seen {
            spec: Some(LeaseSpec::default()),
            at: t0,
        };
        assert!(live(&seen, t0 + LEASE_DURATION));
        assert!(!live(&seen, t0 + LEASE_DURATION + Duration::from_secs(1)));
    }
}
