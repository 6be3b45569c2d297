//! Planning functions: observed state in, writes out.
//!
//! Each function looks at objects from the caches of both clusters and returns the writes that
//! would make them agree, or none when they already do. The executor performs the writes in
//! order and stops at the first failure (the key is then retried with backoff), so a plan is
//! ordered for safety: for example the downstream finalizer is added before the upstream object
//! is created, so that a deletion can never slip past the konnector.

pub mod claims;
mod downstream;
pub mod events;
pub mod status;
mod upstream;

use kube::core::{ApiResource, DynamicObject};
use serde_json::Value;

pub use downstream::{UpstreamKey, plan_downstream, upstream_key};
pub use upstream::{downstream_key, plan_upstream};

use crate::mapping::{ClusterScopedMapping, NamespaceMap};

/// The two sides of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The app cluster, where users create objects.
    Consumer,
    /// The provider cluster (in control-plane mode: the control plane).
    Provider,
}

impl Side {
    /// The cluster role this side is, as log lines name it (`app` or `provider`).
    pub fn cluster_role(self) -> &'static str {
        match self {
            Side::Consumer => "app",
            Side::Provider => "provider",
        }
    }

    /// Role name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Consumer => "consumer",
            Side::Provider => "provider",
        }
    }
}

/// Which resource a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The resource the planning syncer syncs (the bound or claimed resource).
    Synced,
    /// `apiservicenamespaces.klutch.anynines.com` on the provider.
    ServiceNamespace,
}

/// One write to one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Which cluster to write to.
    pub side: Side,
    /// Which resource.
    pub target: Target,
    /// What to write.
    pub op: Op,
    /// Why, in a few words (logged with the object, counted in metrics).
    pub reason: &'static str,
}

/// A write operation on a dynamic object.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// POST the object.
    Create(DynamicObject),
    /// Server-side apply of this configuration, field manager `klutch.anynines.com`, `force`.
    Apply(Value),
    /// JSON merge patch on the main resource; carries `metadata.resourceVersion` as a precondition
    /// where the patch replaces a list (finalizers) that others may change concurrently.
    MergePatch {
        /// Namespace, `None` for cluster-scoped objects.
        namespace: Option<String>,
        /// Object name.
        name: String,
        /// The patch.
        patch: Value,
    },
    /// PUT the `/status` subresource with this object (its resourceVersion is the precondition).
    ReplaceStatus(DynamicObject),
    /// PUT the whole object (its resourceVersion is the precondition).
    Replace(DynamicObject),
    /// DELETE with a uid precondition, so that a newer object of the same name is never deleted.
    Delete {
        /// Namespace, `None` for cluster-scoped objects.
        namespace: Option<String>,
        /// Object name.
        name: String,
        /// The uid observed when planning.
        uid: Option<String>,
    },
}

/// Whether `b` may be sent while `a` is still in flight instead of after it. Taking ownership
/// of a downstream object (its finalizer and bound annotation) and applying its upstream copy
/// go to different clusters and neither needs the other's result, so a new object costs one
/// round trip instead of two. The reference sends them one after the other; should the
/// ownership patch fail (a conflict, the object deleted meanwhile) after the apply landed, the
/// next reconcile takes ownership again, or, the object being gone, deletes the bound upstream
/// copy as any orphan. Everything else keeps its order (deletions above all: the upstream copy
/// is deleted before the finalizer is released).
pub fn may_run_together(a: &Write, b: &Write) -> bool {
    a.target == Target::Synced
        && b.target == Target::Synced
        && a.side == Side::Consumer
        && matches!(a.op, Op::MergePatch { .. })
        && b.side == Side::Provider
        && matches!(b.op, Op::Apply(_))
}

impl Write {
    /// Namespace (if namespaced) and name of the written object.
    pub fn namespace_and_name(&self) -> (Option<String>, String) {
        match &self.op {
            Op::Create(o) | Op::ReplaceStatus(o) | Op::Replace(o) => (
                o.metadata.namespace.clone(),
                o.metadata.name.clone().unwrap_or_default(),
            ),
            Op::Apply(v) => (
                v.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(String::from),
                v.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            Op::MergePatch {
                namespace, name, ..
            }
            | Op::Delete {
                namespace, name, ..
            } => (namespace.clone(), name.clone()),
        }
    }

    /// `namespace/name` of the written object, for logs.
    pub fn object_key(&self) -> String {
        match self.namespace_and_name() {
            (Some(ns), name) => format!("{ns}/{name}"),
            (None, name) => name,
        }
    }
}

/// What the syncers of one exported resource need to know to plan.
#[derive(Debug, Clone)]
pub struct ExportContext<'a> {
    /// The provider namespace `P`.
    pub provider_namespace: &'a str,
    /// uid of namespace `P` on the provider (owner of cluster-scoped upstream copies).
    pub provider_namespace_uid: Option<&'a str>,
    /// The synced resource (same group/version/kind on both sides).
    pub resource: &'a ApiResource,
    /// `Some` for cluster-scoped consumer resources.
    pub cluster_scoped: Option<&'a ClusterScopedMapping>,
    /// Consumer namespace <-> service namespace.
    pub namespaces: &'a NamespaceMap,
}

/// Errors that stop a plan; the key is retried with backoff and the error reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Name or namespace mapping failed.
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
    /// Cluster-scoped upstream objects need the uid of namespace `P` for their owner reference.
    #[error("uid of provider namespace {0} is not known yet")]
    ProviderNamespaceUid(String),
    /// The name the object would get on the provider is longer than Kubernetes allows; no
    /// request could succeed, so none is sent.
    #[error(
        "the provider name {name:?} ({len} characters) is longer than the {limit} characters Kubernetes allows; rename the object or use a shorter provider namespace"
    )]
    NameTooLong {
        /// The mapped name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit (253 for object names, 63 for namespaces).
        limit: usize,
    },
}

/// Object names are DNS subdomains (253 characters), namespaces DNS labels (63).
pub(crate) fn check_name_lengths(namespace: Option<&str>, name: &str) -> Result<(), PlanError> {
    let too_long = |name: &str, limit: usize| {
        (name.len() > limit).then(|| PlanError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
            limit,
        })
    };
    match namespace
        .and_then(|ns| too_long(ns, 63))
        .or_else(|| too_long(name, 253))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod name_length_tests {
    use super::*;

    #[test]
    fn names_over_253_and_namespaces_over_63_characters_are_refused() {
        assert!(check_name_lengths(Some(&"n".repeat(63)), &"x".repeat(253)).is_ok());
        let err = check_name_lengths(Some(&"n".repeat(64)), "x").unwrap_err();
        assert!(
            matches!(
                &err,
                PlanError::NameTooLong {
                    len: 64,
                    limit: 63,
                    ..
                }
            ),
            "{err}"
        );
        let err = check_name_lengths(None, &"x".repeat(254)).unwrap_err();
        assert!(
            matches!(
                &err,
                PlanError::NameTooLong {
                    len: 254,
                    limit: 253,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use kube::core::{ApiResource, DynamicObject};
    use serde_json::{Value, json};

    pub fn resource() -> ApiResource {
        ApiResource {
            group: "mangodb.com".into(),
            version: "v1".into(),
            api_version: "mangodb.com/v1".into(),
            kind: "MangoDB".into(),
            plural: "mangodbs".into(),
        }
    }

    pub fn obj(value: Value) -> DynamicObject {
        let mut base = json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB"});
        if let (Some(b), Some(v)) = (base.as_object_mut(), value.as_object()) {
            b.extend(v.clone());
        }
        serde_json::from_value(base).unwrap()
    }
}
