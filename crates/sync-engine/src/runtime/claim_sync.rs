//! The syncer of one accepted permission claim (reference 5.9, decision CL1): mirrors claimed
//! objects (for example Secrets) between each mapped consumer namespace and its service
//! namespace, in the direction of their owner.
//!
//! Watches are per namespace on both sides (only namespaces that have an APIServiceNamespace),
//! never cluster-wide: a claim on Secrets must not read every Secret of either cluster. Writes
//! are addressed to the same two namespaces ([`ClaimLocation`]). So every request for a claimed
//! object is namespaced, and Roles bound in the served namespaces are all the rights a claim
//! needs (the chart's `rbac.claimedResourcesScope=namespaces`). On a shared control plane that
//! is what keeps one tenant's konnector away from another tenant's Secrets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use konnector_api::v1alpha1::{APIServiceNamespace, PermissionClaim};
use kube::core::ApiResource;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use konnector_api::strings::controllers::CLAIMED_OBJECT;

use super::contain::contain;
use super::exec::execute;
use super::expectations::Expectations;
use super::export_sync::Clusters;
use super::queue::{RetryClass, WorkQueue};
use super::watch::{Change, Scope, SharedWatch, WatchHub};
use crate::mapping::{NamespaceMap, NamespaceState};
use crate::plan::Side;
use crate::plan::claims::{ClaimLocation, plan_claim};

/// `(consumer namespace, name)`.
type ClaimKey = (String, String);

struct NamespaceWatches {
    consumer: Arc<SharedWatch>,
    provider: Arc<SharedWatch>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for NamespaceWatches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Inner {
    claim: PermissionClaim,
    resource: ApiResource,
    provider_namespace: String,
    clusters: Clusters,
    hub: Arc<WatchHub>,
    namespaces: Arc<SharedWatch>,
    /// consumer namespace -> (service namespace, watches).
    watched: Mutex<BTreeMap<String, (String, NamespaceWatches)>>,
    queue: WorkQueue<ClaimKey>,
    expectations: Expectations,
}

/// A running claim syncer; dropping it stops it.
pub struct ClaimSyncer {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ClaimSyncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimSyncer")
            .field("resource", &self.inner.resource.plural)
            .finish_non_exhaustive()
    }
}

impl Drop for ClaimSyncer {
    fn drop(&mut self) {
        self.inner.queue.shutdown();
        for t in &self.tasks {
            t.abort();
        }
        if let Ok(mut w) = self.inner.watched.lock() {
            w.clear();
        }
    }
}

impl ClaimSyncer {
    /// Starts syncing `claim` for resource `resource` (its kind resolved by discovery).
    pub fn start(
        hub: Arc<WatchHub>,
        clusters: Clusters,
        provider_namespace: String,
        claim: PermissionClaim,
        resource: ApiResource,
    ) -> Self {
        let namespaces = hub.watch(
            &clusters.provider_id,
            &clusters.provider,
            &ApiResource::erase::<APIServiceNamespace>(&()),
            Scope::Namespace(provider_namespace.clone()),
            None,
        );
        let inner = Arc::new(Inner {
            claim,
            resource,
            provider_namespace,
            clusters,
            hub,
            namespaces: namespaces.clone(),
            watched: Mutex::new(BTreeMap::new()),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
        });
        let mut sub = namespaces.subscribe();
        let watcher = inner.clone();
        let mut tasks = vec![tokio::spawn(async move {
            watcher.namespaces.ready().await;
            watcher.refresh_namespaces();
            while !matches!(sub.recv().await, Err(RecvError::Closed)) {
                watcher.refresh_namespaces();
            }
        })];
        let worker = inner.clone();
        tasks.push(tokio::spawn(async move { worker.work().await }));
        ClaimSyncer { inner, tasks }
    }
}

impl ClaimSyncer {
    /// Retries at once the objects waiting out a transient failure (their cluster is back).
    pub fn retry_transient_now(&self) -> usize {
        self.inner.queue.retry_transient_now()
    }

    /// Why watches of this claim are refused (401/403), one line per refused watch: the
    /// binding shows it, since nothing syncs in that namespace until someone grants access.
    pub fn denied_watches(&self) -> Vec<String> {
        let watched = self.inner.watched.lock().unwrap_or_else(|e| e.into_inner());
        let resource = &self.inner.resource.plural;
        let mut out = Vec::new();
        for (consumer_ns, (service_ns, w)) in watched.iter() {
            for (side, ns, watch) in [
                ("app cluster", consumer_ns, &w.consumer),
                ("provider", service_ns, &w.provider),
            ] {
                if let Some(e) = watch.last_error().filter(|e| e.is_denied()) {
                    out.push(format!(
                        "{resource} in namespace {ns} of the {side}: {}",
                        e.message
                    ));
                }
            }
        }
        out
    }
}

impl Inner {
    fn namespace_map(&self) -> NamespaceMap {
        NamespaceMap::new(&self.namespaces.list_as::<APIServiceNamespace>())
    }

    /// Starts watches for newly mapped namespaces and stops those of unmapped ones.
    fn refresh_namespaces(self: &Arc<Self>) {
        let map = self.namespace_map();
        let names: Vec<String> = self.namespaces.keys().into_iter().map(|(_, n)| n).collect();
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = BTreeMap::new();
        for consumer_ns in names {
            if let NamespaceState::Ready(service) = map.state(&consumer_ns) {
                wanted.insert(consumer_ns, service.to_string());
            }
        }
        watched.retain(|c, (s, _)| wanted.get(c) == Some(s));
        for (consumer_ns, service_ns) in wanted {
            if watched.contains_key(&consumer_ns) {
                continue;
            }
            let consumer = self.hub.watch(
                &self.clusters.consumer_id,
                &self.clusters.consumer,
                &self.resource,
                Scope::Namespace(consumer_ns.clone()),
                None,
            );
            let provider = self.hub.watch(
                &self.clusters.provider_id,
                &self.clusters.provider,
                &self.resource,
                Scope::Namespace(service_ns.clone()),
                None,
            );
            let mut tasks = Vec::new();
            for watch in [consumer.clone(), provider.clone()] {
                let mut sub = watch.subscribe();
                let inner = self.clone();
                let ns = consumer_ns.clone();
                tasks.push(tokio::spawn(async move {
                    watch.ready().await;
                    inner.enqueue_namespace(&ns);
                    loop {
                        match sub.recv().await {
                            Ok(Change::Object { name, .. }) => inner.queue.add((ns.clone(), name)),
                            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                                inner.enqueue_namespace(&ns)
                            }
                            Err(RecvError::Closed) => break,
                        }
                    }
                }));
            }
            watched.insert(
                consumer_ns,
                (
                    service_ns,
                    NamespaceWatches {
                        consumer,
                        provider,
                        tasks,
                    },
                ),
            );
        }
    }

    fn enqueue_namespace(&self, consumer_ns: &str) {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, w)) = watched.get(consumer_ns) {
            for (_, name) in w.consumer.keys().into_iter().chain(w.provider.keys()) {
                self.queue.add((consumer_ns.to_string(), name));
            }
        }
    }

    async fn work(&self) {
        while let Some(key) = self.queue.next().await {
            // Followers keep their caches warm but plan nothing until they lead.
            self.hub.leadership().leading().await;
            let result = match contain(self.reconcile(&key)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err((e.retry_class(), e.to_string())),
                Err(p) => Err((RetryClass::Other, p.to_string())),
            };
            self.hub
                .metrics()
                .reconciled(CLAIMED_OBJECT, result.is_ok());
            self.hub.metrics().queue(CLAIMED_OBJECT, self.queue.len());
            match result {
                Ok(()) => self.queue.forget(&key),
                Err((class, err)) => {
                    let delay = self.queue.retry(key.clone(), class, None);
                    self.hub.metrics().retried(CLAIMED_OBJECT, class.as_str());
                    let attempt = self.queue.failures(&key);
                    if attempt.is_power_of_two() {
                        tracing::warn!(cluster = "app", kind = %self.resource.kind, namespace = %key.0, name = %key.1,
                            error = %err, attempt, retry_in = ?delay, "claimed object sync failed");
                    } else {
                        tracing::debug!(kind = %self.resource.kind, namespace = %key.0, name = %key.1,
                            error = %err, attempt, retry_in = ?delay, "claimed object sync failed again");
                    }
                }
            }
            self.queue.done(&key);
        }
    }

    async fn reconcile(&self, key: &ClaimKey) -> Result<(), super::exec::ExecError> {
        let (service_ns, consumer, provider) = {
            let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            let Some((service_ns, w)) = watched.get(&key.0) else {
                return Ok(());
            };
            if !(w.consumer.is_ready() && w.provider.is_ready()) {
                return Ok(()); // Enqueued again once both caches listed.
            }
            (
                service_ns.clone(),
                w.consumer.get(Some(&key.0), &key.1),
                w.provider.get(Some(service_ns), &key.1),
            )
        };
        let ids = [
            (
                (Side::Consumer, Some(key.0.clone()), key.1.clone()),
                consumer.as_ref(),
            ),
            (
                (Side::Provider, Some(service_ns.clone()), key.1.clone()),
                provider.as_ref(),
            ),
        ];
        for (id, obj) in &ids {
            let rv = obj.and_then(|o| o.metadata.resource_version.as_deref());
            if let Some(wait) = self.expectations.still_stale(id, rv) {
                self.queue.add_after(key.clone(), wait);
                return Ok(());
            }
        }
        let at = ClaimLocation {
            provider_namespace: Some(service_ns),
            consumer_namespace: Some(key.0.clone()),
            name: key.1.clone(),
        };
        let writes = plan_claim(&self.claim, &at, provider.as_deref(), consumer.as_deref());
        for write in &writes {
            if !self.hub.leadership().is_leading() {
                return Ok(()); // Lost the lease: the new leader re-plans this key.
            }
            let cluster: &Cluster = match write.side {
                Side::Consumer => &self.clusters.consumer,
                Side::Provider => &self.clusters.provider,
            };
            let outcome = execute(cluster, &self.resource, write, self.hub.metrics()).await?;
            let planned_on = match write.side {
                Side::Consumer => consumer
                    .as_ref()
                    .and_then(|o| o.metadata.resource_version.clone()),
                Side::Provider => provider
                    .as_ref()
                    .and_then(|o| o.metadata.resource_version.clone()),
            };
            self.expectations.record(write, planned_on, &outcome);
            let (namespace, name) = write.namespace_and_name();
            tracing::info!(cluster = write.side.cluster_role(), kind = %self.resource.kind,
                namespace = namespace.as_deref().unwrap_or(""), name = %name,
                reason = write.reason, outcome = ?outcome, provider_namespace = %self.provider_namespace, "wrote claimed object");
        }
        Ok(())
    }
}

/// The `ApiResource` of a claim: group, version and plural from the claim, kind from discovery.
pub async fn claim_resource(
    cluster: &Cluster,
    claim: &PermissionClaim,
) -> Result<ApiResource, kube::Error> {
    let gv = kube::core::GroupVersion {
        group: claim.group.clone(),
        version: claim.version.clone(),
    };
    let group = kube::discovery::oneshot::pinned_group(&cluster.client(), &gv).await?;
    group
        .versioned_resources(&claim.version)
        .into_iter()
        .map(|(r, _)| r)
        .find(|r| r.plural == claim.resource)
        .ok_or_else(|| {
            kube::Error::Discovery(kube::error::DiscoveryError::MissingResource(format!(
                "{}/{}",
                gv.api_version(),
                claim.resource
            )))
        })
}
