//! The engine's metrics (decisions: "Metrics"), in a `prometheus-client` registry the host
//! serves (the binary at `/metrics`; an embedding operator wherever it likes).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    /// `gone` (410), `ended_early` (the server ended the watch before its timeout) or
    /// `schema_changed` (the last list may predate a CRD schema switch).
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
}
