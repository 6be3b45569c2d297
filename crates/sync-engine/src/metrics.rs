//! The engine's metrics (decisions: "Metrics"), in a `prometheus-client` registry the host
//! serves (the binary at `/metrics`; an embedding operator wherever it likes).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cluster_topology::{ClientHealth, ClientStats, WeakClientHealth};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller name (the reference's names, e.g. `klutch-bind-konnector-cluster-spec`).
    pub controller: String,
}

/// Labels of an API write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `consumer` (app cluster) or `provider`.
    pub cluster: String,
    /// `create`, `apply`, `patch`, `update`, `update_status`, `delete`.
    pub verb: String,
}

/// Labels of a sync direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `spec` (consumer -> provider) or `status` (provider -> consumer).
    pub direction: String,
}

/// Labels of a credential event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// `reloaded` or `rejected`.
    pub outcome: String,
}

/// Labels of a watch relist.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelistLabels {
    /// The cluster id of the watch (`app`, `binding`, or the provider's).
    pub cluster: String,
    /// `group/version/plural`.
    pub resource: String,
    /// `gone` (410), `ended_early` (the server ended the watch before its timeout),
    /// `schema_changed` (the last list may predate a CRD schema switch), or `forbidden` /
    /// `unauthorized` (a refused list or watch, retried with backoff up to 5 minutes).
    pub reason: String,
}

/// Labels of a retried reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// Controller name.
    pub controller: String,
    /// `conflict`, `transient` (unreachable, throttled, 5xx), `rejected` (the server refuses
    /// the object) or `other`.
    pub class: String,
}

/// Labels of a cluster's clients.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// `app`, `binding` (control-plane mode: the control plane) or `provider:<endpoint>`.
    pub cluster: String,
}

/// The clients whose [`ClientHealth`] is reported, read at each scrape (the layer keeps its
/// counters itself; copying them into families would need a timer and lag behind).
///
/// Entries are weak: a client nobody uses any more (a provider session that ended, a client
/// built for a check and thrown away) drops out of the metrics by itself. Per label the most
/// recently registered client that is still alive is reported.
#[derive(Clone, Debug, Default)]
pub struct ClientHealthCollector {
    clients: Arc<Mutex<Vec<(String, WeakClientHealth)>>>,
}

impl ClientHealthCollector {
    fn add(&self, label: &str, health: &ClientHealth) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain(|(_, h)| h.upgrade().is_some_and(|h| !h.same(health)));
        clients.push((label.to_owned(), health.downgrade()));
    }

    /// The live clients, one per label (the newest), in label order.
    fn live(&self) -> Vec<(ClientLabels, ClientStats, bool)> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain(|(_, h)| h.upgrade().is_some());
        let mut newest = std::collections::BTreeMap::new();
        for (label, h) in clients.iter() {
            if let Some(health) = h.upgrade() {
                newest.insert(label.clone(), health);
            }
        }
        newest
            .into_iter()
            .map(|(label, health)| {
                (
                    ClientLabels { cluster: label },
                    health.stats(),
                    health.is_reachable(),
                )
            })
            .collect()
    }
}

type ReadStat = fn(&ClientStats, bool) -> u64;

const CLIENT_COUNTERS: [(&str, &str, ReadStat); 4] = [
    (
        "client_throttled",
        "Responses that throttled the client (429, or 503 with Retry-After), per cluster",
        |s, _| s.throttled,
    ),
    (
        "client_transport_errors",
        "Requests that failed below HTTP (refused, reset, TLS, timeout), per cluster",
        |s, _| s.transport_errors,
    ),
    (
        "client_requests",
        "Requests sent to the API server (throttled ones sent again included), per cluster",
        |s, _| s.requests,
    ),
    (
        "client_throttle_retries",
        "Throttled requests sent again after Retry-After, per cluster",
        |s, _| s.retries,
    ),
];

const CLIENT_GAUGES: [(&str, &str, ReadStat); 4] = [
    (
        "client_inflight_requests",
        "Requests holding a concurrency slot (watches not counted), per cluster",
        |s, _| s.in_flight as u64,
    ),
    (
        "client_concurrency_limit",
        "Current adaptive limit of concurrent requests, per cluster",
        |s, _| s.concurrency_limit as u64,
    ),
    (
        "client_long_running_requests",
        "Open long-running requests (watches), per cluster",
        |s, _| s.long_running as u64,
    ),
    (
        "cluster_reachable",
        "1 while the cluster's API server answers, 0 after a transport error",
        |_, reachable| u64::from(reachable),
    ),
];

impl Collector for ClientHealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clients = self.live();
        if clients.is_empty() {
            return Ok(());
        }
        for (name, help, read) in CLIENT_COUNTERS {
            let kind = ConstCounter::new(0u64).metric_type();
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, stats, reachable) in &clients {
                ConstCounter::new(read(stats, *reachable)).encode(metric.encode_family(labels)?)?;
            }
        }
        for (name, help, read) in CLIENT_GAUGES {
            let kind = ConstGauge::new(0i64).metric_type();
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, stats, reachable) in &clients {
                let value = i64::try_from(read(stats, *reachable)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(labels)?)?;
            }
        }
        let kind = ConstCounter::new(0f64).metric_type();
        let mut metric = encoder.encode_descriptor(
            "client_gate_wait_seconds",
            "Time requests waited for a server's Retry-After, summed over requests, per cluster",
            None,
            kind,
        )?;
        for (labels, stats, _) in &clients {
            ConstCounter::new(stats.gate_wait.as_secs_f64())
                .encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// Reports what the Event recorders did, per cluster, read from their counters at each scrape.
#[derive(Clone, Debug, Default)]
pub struct EventStatsCollector {
    sinks: Arc<Mutex<Vec<(String, crate::runtime::events::EventSink)>>>,
}

impl EventStatsCollector {
    fn add(&self, cluster: &str, sink: &crate::runtime::events::EventSink) {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        sinks.retain(|(c, _)| c != cluster);
        sinks.push((cluster.to_string(), sink.clone()));
    }

    /// Stops reporting the recorders whose cluster label `gone` selects (and lets them end).
    fn remove(&self, gone: impl Fn(&str) -> bool) {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        sinks.retain(|(c, _)| !gone(c));
    }
}

impl Collector for EventStatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sinks = self
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if sinks.is_empty() {
            return Ok(());
        }
        let kind = ConstCounter::new(0u64).metric_type();
        let mut metric = encoder.encode_descriptor(
            "events",
            "Kubernetes Events by cluster and outcome: created, patched (a series grew), dropped_spam (an object used up its writes), dropped_full, dropped_not_leading, failed",
            None,
            kind,
        )?;
        for (cluster, sink) in &sinks {
            let s = sink.stats();
            for (outcome, n) in [
                ("created", s.created),
                ("patched", s.patched),
                ("dropped_spam", s.dropped_spam),
                ("dropped_full", s.dropped_full),
                ("dropped_not_leading", s.dropped_not_leading),
                ("failed", s.failed),
            ] {
                let labels = [("cluster", cluster.as_str()), ("outcome", outcome)];
                ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Cluster id, resource and the cache.
type CacheEntry = (
    String,
    String,
    std::sync::Weak<crate::runtime::cache::Cache>,
);

/// The caches of the shared watches, read at each scrape: how many objects the konnector holds
/// and what they cost. Entries are weak: a watch nobody uses any more drops out by itself.
#[derive(Clone, Debug, Default)]
pub struct WatchCacheCollector {
    caches: Arc<Mutex<Vec<CacheEntry>>>,
}

impl WatchCacheCollector {
    /// Reports `cache` under the watch's cluster id and `group/version/plural`.
    pub fn add(&self, cluster: &str, resource: &str, cache: &Arc<crate::runtime::cache::Cache>) {
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.retain(|(_, _, c)| c.strong_count() > 0);
        caches.push((
            cluster.to_owned(),
            resource.to_owned(),
            Arc::downgrade(cache),
        ));
    }

    /// Objects and bytes per (cluster, resource), summed over the live caches (per-namespace
    /// watches of one resource add up).
    fn totals(&self) -> std::collections::BTreeMap<(String, String), (usize, usize)> {
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.retain(|(_, _, c)| c.strong_count() > 0);
        let mut out = std::collections::BTreeMap::<_, (usize, usize)>::new();
        for (cluster, resource, cache) in caches.iter() {
            if let Some(cache) = cache.upgrade() {
                let t = out.entry((cluster.clone(), resource.clone())).or_default();
                t.0 += cache.len();
                t.1 += cache.text_bytes();
            }
        }
        out
    }
}

impl Collector for WatchCacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals();
        if totals.is_empty() {
            return Ok(());
        }
        type Read = fn(&(usize, usize)) -> usize;
        let gauges: [(&str, &str, Read); 2] = [
            (
                "watch_cache_objects",
                "Objects held in the shared watches' caches, per cluster and resource",
                |t| t.0,
            ),
            (
                "watch_cache_bytes",
                "Bytes of object text held in the shared watches' caches (trimmed JSON; the maps add about 100 bytes per object), per cluster and resource",
                |t| t.1,
            ),
        ];
        for (name, help, read) in gauges {
            let kind = ConstGauge::new(0i64).metric_type();
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for ((cluster, resource), t) in &totals {
                let labels = [
                    ("cluster", cluster.as_str()),
                    ("resource", resource.as_str()),
                ];
                let value = i64::try_from(read(t)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric of the engine; cheap to clone (the families share their storage).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Reconciles per controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Failed reconciles per controller.
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    /// Write requests per cluster and verb (only requests the engine sent).
    pub writes: Family<WriteLabels, Counter>,
    /// Writes rejected with 409 Conflict, per cluster.
    pub conflicts: Family<WriteLabels, Counter>,
    /// Time from starting a reconcile to its last write landing, per sync direction.
    pub sync_latency: Family<DirectionLabels, Histogram, fn() -> Histogram>,
    /// Keys waiting in work queues, per controller.
    pub queue_depth: Family<ControllerLabels, Gauge>,
    /// Seconds since the last successful ClusterBinding heartbeat.
    pub heartbeat_age_seconds: Gauge,
    /// 1 while this replica holds the lease.
    pub leader: Gauge,
    /// Credential reloads (Secret-sourced kubeconfigs), by outcome.
    pub credential_reloads: Family<CredentialLabels, Counter>,
    /// Full relists of a shared watch after its start, by cluster, resource and reason.
    pub watch_relists: Family<RelistLabels, Counter>,
    /// Failed reconciles queued for a retry, by controller and why they failed.
    pub retries: Family<RetryLabels, Counter>,
    /// The clients whose health is reported (see [`Metrics::register_client`]).
    pub clients: ClientHealthCollector,
    /// The Event recorders whose counters are reported (see [`Metrics::register_events`]).
    pub events: EventStatsCollector,
    /// The watch caches whose size is reported.
    pub caches: WatchCacheCollector,
    /// Fleet mode: app clusters whose Lease this replica holds.
    pub fleet_app_clusters: Gauge,
    /// Fleet mode: [`Metrics::sync_latency`] per app cluster.
    pub fleet_sync_latency: Family<AppClusterDirectionLabels, Histogram, fn() -> Histogram>,
    /// Fleet mode: [`Metrics::reconcile_errors`] per app cluster.
    pub fleet_reconcile_errors: Family<AppClusterControllerLabels, Counter>,
    /// Fleet mode: [`Metrics::heartbeat_age_seconds`] per app cluster (the unlabelled gauge is
    /// whichever app cluster heartbeated last).
    pub fleet_heartbeat_age_seconds: Family<AppClusterLabels, Gauge>,
    /// The app cluster (its binding root namespace) an engine of a fleet reports for, set by
    /// [`Metrics::for_app_cluster`]: its syncs, failures and heartbeat are also counted under
    /// that label.
    app_cluster: Option<Arc<str>>,
    /// Fleet mode: Leases of app clusters taken and given up, by app cluster (its binding root
    /// namespace) and event (`acquired`, `released`).
    pub fleet_lease_changes: Family<FleetLabels, Counter>,
}

/// Labels naming an app cluster of a fleet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AppClusterLabels {
    /// The app cluster's binding root namespace.
    pub app_cluster: String,
}

/// Labels of [`Metrics::fleet_sync_latency`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AppClusterDirectionLabels {
    /// The app cluster's binding root namespace.
    pub app_cluster: String,
    /// `spec` or `status`.
    pub direction: String,
}

/// Labels of [`Metrics::fleet_reconcile_errors`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AppClusterControllerLabels {
    /// The app cluster's binding root namespace.
    pub app_cluster: String,
    /// Controller name.
    pub controller: String,
}

/// Labels of [`Metrics::fleet_lease_changes`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FleetLabels {
    /// The app cluster's binding root namespace.
    pub app_cluster: String,
    /// `acquired` or `released`.
    pub event: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            writes: Family::default(),
            conflicts: Family::default(),
            sync_latency: Family::new_with_constructor(latency_histogram),
            queue_depth: Family::default(),
            heartbeat_age_seconds: Gauge::default(),
            leader: Gauge::default(),
            credential_reloads: Family::default(),
            watch_relists: Family::default(),
            retries: Family::default(),
            clients: ClientHealthCollector::default(),
            events: EventStatsCollector::default(),
            caches: WatchCacheCollector::default(),
            fleet_app_clusters: Gauge::default(),
            fleet_sync_latency: Family::new_with_constructor(latency_histogram),
            fleet_reconcile_errors: Family::default(),
            fleet_heartbeat_age_seconds: Family::default(),
            app_cluster: None,
            fleet_lease_changes: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `konnector` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("konnector");
        r.register(
            "reconciles",
            "Reconciles per controller",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles per controller",
            self.reconcile_errors.clone(),
        );
        r.register(
            "api_writes",
            "Write requests per cluster and verb",
            self.writes.clone(),
        );
        r.register(
            "api_conflicts",
            "Write requests rejected with 409 Conflict",
            self.conflicts.clone(),
        );
        r.register(
            "sync_latency_seconds",
            "Time from the start of a reconcile to its last write, per sync direction",
            self.sync_latency.clone(),
        );
        r.register(
            "queue_depth",
            "Keys waiting in work queues, per controller",
            self.queue_depth.clone(),
        );
        r.register(
            "heartbeat_age_seconds",
            "Seconds since the last successful ClusterBinding heartbeat",
            self.heartbeat_age_seconds.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the lease",
            self.leader.clone(),
        );
        r.register(
            "fleet_app_clusters",
            "Fleet mode: app clusters whose Lease this replica holds",
            self.fleet_app_clusters.clone(),
        );
        r.register(
            "fleet_sync_latency_seconds",
            "Fleet mode: sync latency per app cluster and direction",
            self.fleet_sync_latency.clone(),
        );
        r.register(
            "fleet_reconcile_errors",
            "Fleet mode: failed reconciles per app cluster and controller",
            self.fleet_reconcile_errors.clone(),
        );
        r.register(
            "fleet_heartbeat_age_seconds",
            "Fleet mode: seconds since the last successful ClusterBinding heartbeat, per app cluster",
            self.fleet_heartbeat_age_seconds.clone(),
        );
        r.register(
            "fleet_lease_changes",
            "Fleet mode: app cluster Leases taken and given up, by app cluster and event",
            self.fleet_lease_changes.clone(),
        );
        r.register(
            "credential_reloads",
            "Credential reloads by outcome",
            self.credential_reloads.clone(),
        );
        r.register(
            "watch_relists",
            "Full relists of a watch after its first list, by cluster, resource and reason",
            self.watch_relists.clone(),
        );
        r.register(
            "retries",
            "Failed reconciles queued for a retry, by controller and failure class",
            self.retries.clone(),
        );
        r.register_collector(Box::new(self.clients.clone()));
        r.register_collector(Box::new(self.events.clone()));
        r.register_collector(Box::new(self.caches.clone()));
    }

    /// Reports the Event recorder of `cluster` as `konnector_events_total`.
    pub fn register_events(&self, cluster: &str, sink: &crate::runtime::events::EventSink) {
        self.events.add(cluster, sink);
    }

    /// Reports the clients of the cluster `label` (throttling, transport errors, in-flight
    /// requests, concurrency limit, reachability) from now on, replacing an earlier registration
    /// of that label; works before and after [`Metrics::register`].
    pub fn register_client(&self, label: &str, health: &ClientHealth) {
        self.clients.add(label, health);
    }

    /// Counts a credential reload or rejection (`konnector_credential_reloads_total`).
    pub fn credential_event(&self, event: &cluster_topology::CredentialEvent) {
        let outcome = match event {
            cluster_topology::CredentialEvent::Reloaded { .. } => "reloaded",
            cluster_topology::CredentialEvent::Rejected { .. } => "rejected",
        };
        self.credential_reloads
            .get_or_create(&CredentialLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a retry of a failed reconcile.
    pub fn retried(&self, controller: &str, class: &str) {
        self.retries
            .get_or_create(&RetryLabels {
                controller: controller.to_string(),
                class: class.to_string(),
            })
            .inc();
    }

    /// Counts a relist of a watch.
    pub fn relisted(&self, cluster: &str, resource: &str, reason: &str) {
        self.watch_relists
            .get_or_create(&RelistLabels {
                cluster: cluster.to_string(),
                resource: resource.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a reconcile (and its failure).
    pub fn reconciled(&self, controller: &str, ok: bool) {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        if !ok {
            self.reconcile_errors.get_or_create(&labels).inc();
            if let Some(r) = &self.app_cluster {
                self.fleet_reconcile_errors
                    .get_or_create(&AppClusterControllerLabels {
                        app_cluster: r.to_string(),
                        controller: controller.to_string(),
                    })
                    .inc();
            }
        }
    }

    /// The same metrics, also counting syncs, failures and the heartbeat of the app cluster
    /// `r` under its label (fleet mode: one engine per app cluster, one registry).
    pub fn for_app_cluster(&self, r: &str) -> Metrics {
        Metrics {
            app_cluster: Some(r.into()),
            ..self.clone()
        }
    }

    /// Stops reporting the heartbeat age of app cluster `r`, which this replica no longer
    /// serves (a frozen age would look like a heartbeat failing).
    pub fn forget_app_cluster(&self, r: &str) {
        self.fleet_heartbeat_age_seconds.remove(&AppClusterLabels {
            app_cluster: r.to_owned(),
        });
        let suffix = format!(":{r}");
        self.events.remove(|c| c.ends_with(&suffix));
    }

    /// The `cluster` label of a cluster id: `app` and `binding` as they are, or, for the engine
    /// of one app cluster of a fleet, `app:<R>` and `binding:<R>`, so that each app cluster's
    /// Event recorders are counted apart.
    pub fn cluster_label(&self, cluster: &str) -> String {
        match &self.app_cluster {
            Some(r) => format!("{cluster}:{r}"),
            None => cluster.to_owned(),
        }
    }

    /// Sets the age of the last successful ClusterBinding heartbeat.
    pub fn heartbeat_age(&self, seconds: i64) {
        self.heartbeat_age_seconds.set(seconds);
        if let Some(r) = &self.app_cluster {
            self.fleet_heartbeat_age_seconds
                .get_or_create(&AppClusterLabels {
                    app_cluster: r.to_string(),
                })
                .set(seconds);
        }
    }

    /// Counts a write request.
    pub fn wrote(&self, cluster: &str, verb: &str, conflict: bool) {
        let labels = WriteLabels {
            cluster: cluster.to_string(),
            verb: verb.to_string(),
        };
        self.writes.get_or_create(&labels).inc();
        if conflict {
            self.conflicts.get_or_create(&labels).inc();
        }
    }

    /// Records how long a sync in `direction` took.
    pub fn synced(&self, direction: &str, took: Duration) {
        self.sync_latency
            .get_or_create(&DirectionLabels {
                direction: direction.to_string(),
            })
            .observe(took.as_secs_f64());
        if let Some(r) = &self.app_cluster {
            self.fleet_sync_latency
                .get_or_create(&AppClusterDirectionLabels {
                    app_cluster: r.to_string(),
                    direction: direction.to_string(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// Sets the queue depth of `controller`.
    pub fn queue(&self, controller: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&ControllerLabels {
                controller: controller.to_string(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_as_openmetrics() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.reconciled("klutch-bind-konnector-cluster-spec", true);
        m.reconciled("klutch-bind-konnector-cluster-spec", false);
        m.wrote("provider", "apply", false);
        m.synced("spec", Duration::from_millis(3));
        m.leader.set(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"konnector_reconciles_total{controller="klutch-bind-konnector-cluster-spec"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"konnector_reconcile_errors_total{controller="klutch-bind-konnector-cluster-spec"} 1"#
        ));
        assert!(text.contains(r#"konnector_api_writes_total{cluster="provider",verb="apply"} 1"#));
        assert!(text.contains(r#"konnector_sync_latency_seconds_count{direction="spec"} 1"#));
        assert!(text.contains("konnector_leader 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_fleet_engine_also_reports_under_its_app_cluster() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let r1 = m.for_app_cluster("klutch-bind-ns-a");
        r1.synced("status", Duration::from_millis(3));
        r1.reconciled("c", false);
        r1.heartbeat_age(4);
        m.for_app_cluster("klutch-bind-ns-b").heartbeat_age(7);
        assert_eq!(r1.cluster_label("app"), "app:klutch-bind-ns-a");
        assert_eq!(m.cluster_label("app"), "app");
        let text = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        let t = text(&registry);
        for line in [
            r#"konnector_sync_latency_seconds_count{direction="status"} 1"#,
            r#"konnector_fleet_sync_latency_seconds_count{app_cluster="klutch-bind-ns-a",direction="status"} 1"#,
            r#"konnector_fleet_reconcile_errors_total{app_cluster="klutch-bind-ns-a",controller="c"} 1"#,
            r#"konnector_fleet_heartbeat_age_seconds{app_cluster="klutch-bind-ns-a"} 4"#,
            r#"konnector_fleet_heartbeat_age_seconds{app_cluster="klutch-bind-ns-b"} 7"#,
        ] {
            assert!(t.contains(line), "{line} in {t}");
        }
        m.forget_app_cluster("klutch-bind-ns-a");
        let t = text(&registry);
        assert!(
            !t.contains(r#"konnector_fleet_heartbeat_age_seconds{app_cluster="klutch-bind-ns-a"}"#)
        );
        assert!(t.contains(
            r#"konnector_fleet_heartbeat_age_seconds{app_cluster="klutch-bind-ns-b"} 7"#
        ));
    }

    /// The registry as the /metrics endpoint serves it.
    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn client_health_is_reported_per_cluster_while_the_client_lives() {
        use cluster_topology::ClientOptions;
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        // Nothing registered: no client families at all.
        assert!(!encode(&registry).contains("konnector_client_"));

        let app = ClientHealth::new(ClientOptions::default().with_label("app"));
        m.register_client("app", &app);
        let provider = ClientHealth::new(ClientOptions::default());
        m.register_client("provider:abc", &provider);
        let text = encode(&registry);
        for line in [
            r#"konnector_client_throttled_total{cluster="app"} 0"#,
            r#"konnector_client_transport_errors_total{cluster="provider:abc"} 0"#,
            r#"konnector_client_inflight_requests{cluster="app"} 0"#,
            r#"konnector_client_concurrency_limit{cluster="app"} 32"#,
            r#"konnector_cluster_reachable{cluster="provider:abc"} 1"#,
            r#"konnector_client_gate_wait_seconds_total{cluster="app"} 0.0"#,
            "# TYPE konnector_client_throttled counter",
            "# TYPE konnector_cluster_reachable gauge",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));

        // A re-registered label reports the newest live client; a dropped client disappears
        // and the one registered before it is reported again.
        let replacement = ClientHealth::new(
            ClientOptions::default()
                .with_max_concurrent_requests(std::num::NonZeroUsize::new(5).unwrap()),
        );
        m.register_client("app", &replacement);
        let text = encode(&registry);
        assert!(
            text.contains(r#"konnector_client_concurrency_limit{cluster="app"} 5"#),
            "{text}"
        );
        assert_eq!(
            text.matches(r#"konnector_cluster_reachable{cluster="app"}"#)
                .count(),
            1,
            "{text}"
        );
        drop(replacement);
        drop(provider);
        let text = encode(&registry);
        assert!(
            text.contains(r#"konnector_client_concurrency_limit{cluster="app"} 32"#),
            "{text}"
        );
        assert!(!text.contains("provider:abc"), "{text}");
    }

    #[test]
    fn event_recorders_are_reported_per_cluster_and_outcome() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        assert!(!encode(&registry).contains("konnector_events_total"));
        let sink = crate::runtime::events::EventSink::disabled();
        m.register_events("binding", &sink);
        m.register_events("binding", &sink); // re-registering replaces
        let text = encode(&registry);
        for outcome in ["created", "patched", "dropped_spam", "failed"] {
            let line =
                format!(r#"konnector_events_total{{cluster="binding",outcome="{outcome}"}} 0"#);
            assert_eq!(text.matches(&line).count(), 1, "{line} in\n{text}");
        }
    }

    #[test]
    fn watch_caches_are_summed_per_cluster_and_resource_while_they_live() {
        use crate::runtime::cache::Cache;
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        assert!(!encode(&registry).contains("konnector_watch_cache_objects"));
        let object = |ns: &str, name: &str| -> kube::api::DynamicObject {
            serde_json::from_value(serde_json::json!({"metadata": {"namespace": ns, "name": name}}))
                .unwrap()
        };
        // Two per-namespace watches of one resource add up.
        let (a, b) = (Arc::new(Cache::default()), Arc::new(Cache::default()));
        a.apply(object("a", "x"));
        b.apply(object("b", "y"));
        b.apply(object("b", "z"));
        m.caches.add("provider", "mangodb.com/v1/mangodbs", &a);
        m.caches.add("provider", "mangodb.com/v1/mangodbs", &b);
        let text = encode(&registry);
        let objects = r#"konnector_watch_cache_objects{cluster="provider",resource="mangodb.com/v1/mangodbs"} 3"#;
        assert!(text.contains(objects), "{text}");
        let bytes = a.text_bytes() + b.text_bytes();
        assert!(
            text.contains(&format!(
                r#"konnector_watch_cache_bytes{{cluster="provider",resource="mangodb.com/v1/mangodbs"}} {bytes}"#
            )),
            "{text}"
        );
        drop(b);
        assert!(encode(&registry).contains(
            r#"konnector_watch_cache_objects{cluster="provider",resource="mangodb.com/v1/mangodbs"} 1"#
        ));
    }
}
