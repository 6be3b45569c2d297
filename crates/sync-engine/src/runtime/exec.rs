//! Executes planned writes against a cluster. Thin on purpose: every decision was made by the
//! planner; this only maps an [`Op`] to a request and sorts the outcome.

use konnector_api::strings::FIELD_MANAGER;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ApiResource;

use super::cluster::Cluster;
use super::queue::RetryClass;
use crate::plan::{Op, Write};

/// A write that failed.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {verb} {resource} {target} on the {side} cluster failed: {source}")]
pub struct ExecError {
    /// Why the write was planned.
    pub reason: &'static str,
    /// The HTTP verb-ish operation.
    pub verb: &'static str,
    /// `plural.group`.
    pub resource: String,
    /// `namespace/name`.
    pub target: String,
    /// `consumer` or `provider`.
    pub side: &'static str,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

impl ExecError {
    /// Whether retrying soon may help (conflicts) rather than backing off.
    pub fn is_conflict(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if s.code == 409)
    }

    /// How soon retrying may help. etcd's request size limit surfaces as a 500 whose message
    /// says so; it is the object's fault, not the server's, and retrying soon cannot help.
    pub fn retry_class(&self) -> RetryClass {
        match &self.source {
            kube::Error::Api(s) if s.code == 500 && s.message.contains("request is too large") => {
                RetryClass::Rejected
            }
            other => RetryClass::of(other),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster accepted it; the object's resourceVersion afterwards (none after a delete).
    Done(Option<String>),
    /// Nothing to do any more (the object is already there, or already gone).
    Moot,
}

fn api(cluster: &Cluster, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(cluster.client(), ns, resource),
        None => Api::all_with(cluster.client(), resource),
    }
}

fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Performs one write on `cluster` for `resource`.
pub async fn execute(
    cluster: &Cluster,
    resource: &ApiResource,
    write: &Write,
    metrics: &crate::metrics::Metrics,
) -> Result<Outcome, ExecError> {
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let (verb, result) = match &write.op {
        Op::Create(obj) => {
            let a = api(cluster, resource, obj.metadata.namespace.as_deref());
            (
                "create",
                a.create(&pp, obj)
                    .await
                    .map(|o| Outcome::Done(o.metadata.resource_version))
                    .or_else(|e| match code(&e) {
                        Some(409) => Ok(Outcome::Moot),
                        _ => Err(e),
                    }),
            )
        }
        Op::Apply(value) => {
            let ns = value
                .pointer("/metadata/namespace")
                .and_then(|v| v.as_str());
            let name = value
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let a = api(cluster, resource, ns);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            (
                "apply",
                a.patch(name, &params, &Patch::Apply(value))
                    .await
                    .map(|o| Outcome::Done(o.metadata.resource_version)),
            )
        }
        Op::MergePatch {
            namespace,
            name,
            patch,
        } => {
            let a = api(cluster, resource, namespace.as_deref());
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            (
                "patch",
                a.patch(name, &params, &Patch::Merge(patch))
                    .await
                    .map(|o| Outcome::Done(o.metadata.resource_version))
                    .or_else(not_found_is_moot),
            )
        }
        Op::ReplaceStatus(obj) => {
            let a = api(cluster, resource, obj.metadata.namespace.as_deref());
            let name = obj.metadata.name.clone().unwrap_or_default();
            (
                "update status",
                a.replace_status(&name, &pp, obj)
                    .await
                    .map(|o| Outcome::Done(o.metadata.resource_version))
                    .or_else(not_found_is_moot),
            )
        }
        Op::Replace(obj) => {
            let a = api(cluster, resource, obj.metadata.namespace.as_deref());
            let name = obj.metadata.name.clone().unwrap_or_default();
            (
                "update",
                a.replace(&name, &pp, obj)
                    .await
                    .map(|o| Outcome::Done(o.metadata.resource_version))
                    .or_else(not_found_is_moot),
            )
        }
        Op::Delete {
            namespace,
            name,
            uid,
        } => {
            let a = api(cluster, resource, namespace.as_deref());
            let dp = DeleteParams {
                preconditions: uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            // A uid mismatch (409) means a newer object took the name: not ours to delete.
            (
                "delete",
                a.delete(name, &dp)
                    .await
                    .map(|_| Outcome::Done(None))
                    .or_else(|e| match code(&e) {
                        Some(404) | Some(409) => Ok(Outcome::Moot),
                        _ => Err(e),
                    }),
            )
        }
    };
    let verb_label = match &write.op {
        Op::Create(_) => "create",
        Op::Apply(_) => "apply",
        Op::MergePatch { .. } => "patch",
        Op::ReplaceStatus(_) => "update_status",
        Op::Replace(_) => "update",
        Op::Delete { .. } => "delete",
    };
    let conflict = matches!(&result, Err(kube::Error::Api(s)) if s.code == 409);
    metrics.wrote(write.side.as_str(), verb_label, conflict);
    result.map_err(|source| ExecError {
        reason: write.reason,
        verb,
        resource: if resource.group.is_empty() {
            resource.plural.clone()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        },
        target: write.object_key(),
        side: write.side.as_str(),
        source,
    })
}

fn not_found_is_moot(e: kube::Error) -> Result<Outcome, kube::Error> {
    match code(&e) {
        Some(404) => Ok(Outcome::Moot),
        _ => Err(e),
    }
}
