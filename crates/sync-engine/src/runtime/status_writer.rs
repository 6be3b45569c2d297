//! The one writer of APIServiceBinding status (decision C2).
//!
//! Several controllers observe things about a binding (its Secret, its provider session, its
//! CRD, the heartbeat); each reports its conditions here, and this writer merges them with the
//! stored status, recomputes `Ready`, and patches `/status` only when something changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use konnector_api::conditions::Condition;
use konnector_api::strings::FIELD_MANAGER;
use konnector_api::v1alpha1::APIServiceBinding;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::contain::contain;
use super::queue::WorkQueue;
use super::watch::SharedWatch;
use crate::plan::status::binding_status;

/// `(namespace, name)` of an APIServiceBinding.
pub type BindingKey = (String, String);

#[derive(Debug, Default, Clone)]
struct Report {
    conditions: BTreeMap<String, Condition>,
    pretty_name: Option<String>,
}

#[derive(Debug)]
struct Inner {
    metrics: crate::metrics::Metrics,
    leadership: super::leadership::Leadership,
    cluster: Cluster,
    bindings: Arc<SharedWatch>,
    reports: Mutex<HashMap<BindingKey, Report>>,
    queue: WorkQueue<BindingKey>,
}

/// Handle to the status writer; cloning shares it.
#[derive(Debug, Clone)]
pub struct BindingStatusWriter {
    inner: Arc<Inner>,
    _task: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl BindingStatusWriter {
    /// Starts the writer for bindings in `bindings` (a watch of the binding cluster).
    pub fn start(
        cluster: Cluster,
        bindings: Arc<SharedWatch>,
        metrics: crate::metrics::Metrics,
        leadership: super::leadership::Leadership,
    ) -> Self {
        let inner = Arc::new(Inner {
            metrics,
            leadership,
            cluster,
            bindings,
            reports: Mutex::new(HashMap::new()),
            queue: WorkQueue::new(),
        });
        let worker = inner.clone();
        let task = tokio::spawn(async move { worker.work().await });
        BindingStatusWriter {
            inner,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Records `conditions` (and the provider's pretty name, when known) for a binding; they are
    /// written together with everything else reported for it.
    pub fn report(
        &self,
        key: &BindingKey,
        conditions: Vec<Condition>,
        pretty_name: Option<String>,
    ) {
        {
            let mut reports = self.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
            let report = reports.entry(key.clone()).or_default();
            for c in conditions {
                report.conditions.insert(c.type_.clone(), c);
            }
            if pretty_name.is_some() {
                report.pretty_name = pretty_name;
            }
        }
        self.inner.queue.add(key.clone());
    }

    /// Forgets a deleted binding.
    pub fn forget(&self, key: &BindingKey) {
        let mut reports = self.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports.remove(key);
    }

    /// Re-checks a binding whose stored status may have been changed by someone else.
    pub fn recheck(&self, key: &BindingKey) {
        let known = {
            let reports = self.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
            reports.contains_key(key)
        };
        if known {
            self.inner.queue.add(key.clone());
        }
    }
}

impl Inner {
    async fn work(&self) {
        while let Some(key) = self.queue.next().await {
            // Only the leader writes statuses; the status is computed after the gate, from the
            // cache as it is then.
            self.leadership.leading().await;
            let result = match contain(self.write(&key)).await {
                Ok(r) => r,
                Err(p) => {
                    tracing::error!(cluster = "binding", kind = "APIServiceBinding", namespace = %key.0, name = %key.1, error = %p, "status update panicked");
                    self.queue.add_rate_limited(key.clone());
                    self.queue.done(&key);
                    continue;
                }
            };
            match result {
                Ok(()) => self.queue.forget(&key),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Someone wrote the binding since our cache saw it; look again soon.
                    tracing::debug!(cluster = "binding", kind = "APIServiceBinding", namespace = %key.0, name = %key.1, "status update conflicted, retrying");
                    self.queue
                        .add_after(key.clone(), std::time::Duration::from_millis(50));
                }
                Err(err) => {
                    let delay = self.queue.add_rate_limited(key.clone());
                    tracing::warn!(cluster = "binding", kind = "APIServiceBinding", namespace = %key.0, name = %key.1,
                        error = %err, retry_in = ?delay, "status update failed");
                }
            }
            self.queue.done(&key);
        }
    }

    async fn write(&self, key: &BindingKey) -> Result<(), kube::Error> {
        let report = {
            let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
            match reports.get(key) {
                Some(r) => r.clone(),
                None => return Ok(()),
            }
        };
        let Some(obj) = self.bindings.get(Some(&key.0), &key.1) else {
            return Ok(());
        };
        let Ok(binding) = obj.as_ref().clone().try_parse::<APIServiceBinding>() else {
            return Ok(());
        };
        let Some(status) = binding_status(
            binding.status.as_ref(),
            report.conditions.into_values(),
            report.pretty_name.as_deref(),
            Timestamp::now(),
        ) else {
            return Ok(());
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.cluster.client(), &key.0, self.bindings.resource());
        let patch = json!({
            "metadata": {"resourceVersion": binding.metadata.resource_version},
            "status": status,
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let patched = api
            .patch_status(&key.1, &params, &Patch::Merge(&patch))
            .await;
        let conflict = matches!(&patched, Err(kube::Error::Api(s)) if s.code == 409);
        self.metrics.wrote("binding", "patch_status", conflict);
        match patched {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
