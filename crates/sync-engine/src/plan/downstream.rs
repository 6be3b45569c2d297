//! The spec syncer's decision for one downstream (consumer) object (reference 5.8.1).

use konnector_api::strings::annotations::{BOUND, BOUND_TRUE, CLUSTER_NAMESPACE};
use konnector_api::strings::finalizers::SYNCER;
use konnector_api::strings::{API_VERSION, FIELD_MANAGER};
use kube::core::DynamicObject;
use serde_json::{Map, Value, json};

use super::{ExportContext, Op, PlanError, Side, Target, Write};
use crate::mapping::NamespaceState;
use crate::objects::{
    has_annotation, has_finalizer, is_deleting, name, namespace, portable_annotations,
    portable_labels, spec,
};
use crate::ssa::apply_would_change;

/// Where the upstream copy of a downstream object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKey {
    /// Namespace (if namespaced upstream) and name.
    At(Option<String>, String),
    /// The consumer namespace has no APIServiceNamespace yet.
    NamespaceMissing(String),
    /// The APIServiceNamespace has no service namespace yet.
    NamespacePending,
}

/// Where to look for the upstream copy of `downstream`.
pub fn upstream_key(ctx: &ExportContext<'_>, downstream: &DynamicObject) -> UpstreamKey {
    let name = name(downstream);
    if let Some(mapping) = ctx.cluster_scoped {
        let at = mapping.upstream(name);
        return UpstreamKey::At(at.namespace, at.name);
    }
    let consumer_ns = namespace(downstream).unwrap_or_default();
    match ctx.namespaces.state(consumer_ns) {
        NamespaceState::Missing => UpstreamKey::NamespaceMissing(consumer_ns.to_string()),
        NamespaceState::Pending => UpstreamKey::NamespacePending,
        NamespaceState::Ready(s) => UpstreamKey::At(Some(s.to_string()), name.to_string()),
    }
}

/// The finalizer and bound annotation on a live downstream object, unless it has both.
fn take_ownership(downstream: &DynamicObject) -> Option<Write> {
    if has_finalizer(downstream, SYNCER) && has_annotation(downstream, BOUND, BOUND_TRUE) {
        return None;
    }
    let mut finalizers = downstream.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == SYNCER) {
        finalizers.push(SYNCER.to_string());
    }
    let mut metadata = finalizers_patch(downstream, &finalizers);
    metadata.insert("annotations".into(), json!({BOUND: BOUND_TRUE}));
    Some(patch_downstream(
        downstream,
        metadata,
        "take ownership of downstream object",
    ))
}

/// The finalizer list of `downstream` replaced by `finalizers`, with its resourceVersion as a
/// precondition (others may change the list meanwhile).
fn finalizers_patch(
    downstream: &DynamicObject,
    finalizers: &[impl serde::Serialize],
) -> serde_json::Map<String, serde_json::Value> {
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "resourceVersion".into(),
        json!(downstream.metadata.resource_version),
    );
    metadata.insert("finalizers".into(), json!(finalizers));
    metadata
}

/// A merge patch of `metadata` on the downstream object.
fn patch_downstream(
    downstream: &DynamicObject,
    metadata: serde_json::Map<String, serde_json::Value>,
    reason: &'static str,
) -> Write {
    Write {
        target: Target::Synced,
        side: Side::Consumer,
        op: Op::MergePatch {
            namespace: downstream.metadata.namespace.clone(),
            name: name(downstream).to_string(),
            patch: json!({ "metadata": metadata }),
        },
        reason,
    }
}

/// Plans the writes for one downstream object, given its upstream copy as found at
/// [`upstream_key`] (`None` if absent or if the key is not ready).
///
/// - Namespaced objects first need an `APIServiceNamespace` with a service namespace; the plan
///   creates the `APIServiceNamespace` and then waits for the provider (its status change
///   re-enqueues the object). The finalizer is added while it waits (the reference adds it
///   after): once the namespace is ready, the upstream apply is the only round trip left.
/// - While the downstream object lives, it carries the `klutch.anynines.com/syncer` finalizer and
///   the bound annotation, and the upstream copy is server-side applied whenever that would change
///   it (see [`crate::ssa`]).
/// - When it is being deleted, the upstream copy is deleted and then the finalizer released; if
///   the upstream copy is already being deleted, the finalizer stays until it is gone.
pub fn plan_downstream(
    ctx: &ExportContext<'_>,
    downstream: &DynamicObject,
    upstream: Option<&DynamicObject>,
) -> Result<Vec<Write>, PlanError> {
    let deleting = is_deleting(downstream);
    let key = upstream_key(ctx, downstream);
    let (up_ns, up_name) = match key {
        UpstreamKey::At(ns, name) => (ns, name),
        UpstreamKey::NamespaceMissing(consumer_ns) => {
            // Nothing can exist upstream without a namespace mapping: a deleting object is
            // simply released; a live one gets its APIServiceNamespace.
            if deleting {
                return Ok(release_finalizer(downstream).into_iter().collect());
            }
            let mut writes = vec![create_service_namespace(ctx, &consumer_ns)];
            writes.extend(take_ownership(downstream));
            return Ok(writes);
        }
        UpstreamKey::NamespacePending => {
            if deleting {
                return Ok(release_finalizer(downstream).into_iter().collect());
            }
            return Ok(take_ownership(downstream).into_iter().collect());
        }
    };
    if let (Some(mapping), Some(up)) = (ctx.cluster_scoped, upstream) {
        mapping.check_owner(crate::objects::annotation(up, CLUSTER_NAMESPACE))?;
    }
    if upstream.is_none() && !deleting {
        super::check_name_lengths(up_ns.as_deref(), &up_name)?;
    }

    if deleting {
        return Ok(match upstream {
            None => release_finalizer(downstream).into_iter().collect(),
            Some(up) if is_deleting(up) => Vec::new(),
            Some(up) => {
                let mut writes = vec![Write {
                    target: Target::Synced,
                    side: Side::Provider,
                    op: Op::Delete {
                        namespace: up_ns,
                        name: up_name,
                        uid: up.metadata.uid.clone(),
                    },
                    reason: "downstream object deleted",
                }];
                writes.extend(release_finalizer(downstream));
                writes
            }
        });
    }

    let mut writes: Vec<Write> = take_ownership(downstream).into_iter().collect();
    let desired = desired_upstream(ctx, downstream, up_ns, up_name)?;
    let changed = match upstream {
        None => true,
        Some(up) => match serde_json::to_value(up) {
            Ok(live) => apply_would_change(&desired, &live, FIELD_MANAGER),
            Err(_) => true,
        },
    };
    if changed {
        writes.push(Write {
            target: Target::Synced,
            side: Side::Provider,
            op: Op::Apply(desired),
            reason: if upstream.is_some() {
                "downstream spec differs from upstream"
            } else {
                "create upstream object"
            },
        });
    }
    Ok(writes)
}

/// The apply configuration of the upstream copy: identity, the user's labels and annotations,
/// the bound annotation, and the spec. Status is never pushed upstream.
fn desired_upstream(
    ctx: &ExportContext<'_>,
    downstream: &DynamicObject,
    up_ns: Option<String>,
    up_name: String,
) -> Result<Value, PlanError> {
    let mut annotations = portable_annotations(downstream);
    annotations.insert(BOUND.to_string(), BOUND_TRUE.to_string());
    let mut metadata = Map::new();
    metadata.insert("name".into(), Value::String(up_name));
    if let Some(ns) = up_ns {
        metadata.insert("namespace".into(), Value::String(ns));
    }
    let labels = portable_labels(downstream);
    if !labels.is_empty() {
        metadata.insert("labels".into(), json!(labels));
    }
    if let Some(mapping) = ctx.cluster_scoped {
        annotations.insert(
            CLUSTER_NAMESPACE.to_string(),
            ctx.provider_namespace.to_string(),
        );
        if mapping.upstream_is_cluster_scoped() {
            let uid = ctx.provider_namespace_uid.ok_or_else(|| {
                PlanError::ProviderNamespaceUid(ctx.provider_namespace.to_string())
            })?;
            metadata.insert(
                "ownerReferences".into(),
                json!([{"apiVersion": "v1", "kind": "Namespace", "name": ctx.provider_namespace, "uid": uid}]),
            );
        }
    }
    metadata.insert("annotations".into(), json!(annotations));
    let mut object = Map::new();
    object.insert(
        "apiVersion".into(),
        Value::String(ctx.resource.api_version.clone()),
    );
    object.insert("kind".into(), Value::String(ctx.resource.kind.clone()));
    object.insert("metadata".into(), Value::Object(metadata));
    if let Some(spec) = spec(downstream) {
        object.insert("spec".into(), spec.clone());
    }
    Ok(Value::Object(object))
}

fn create_service_namespace(ctx: &ExportContext<'_>, consumer_ns: &str) -> Write {
    let object = DynamicObject {
        types: Some(kube::core::TypeMeta {
            api_version: API_VERSION.to_string(),
            kind: "APIServiceNamespace".to_string(),
        }),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(consumer_ns.to_string()),
            namespace: Some(ctx.provider_namespace.to_string()),
            ..Default::default()
        },
        data: json!({"spec": {}}),
    };
    Write {
        target: Target::ServiceNamespace,
        side: Side::Provider,
        op: Op::Create(object),
        reason: "map consumer namespace",
    }
}

/// Removes our finalizer from a deleting downstream object, if it still has it.
fn release_finalizer(downstream: &DynamicObject) -> Option<Write> {
    if !has_finalizer(downstream, SYNCER) {
        return None;
    }
    let finalizers: Vec<&String> = downstream
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != SYNCER)
        .collect();
    Some(patch_downstream(
        downstream,
        finalizers_patch(downstream, &finalizers),
        "release downstream object",
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{obj, resource};
    use super::*;
    use crate::mapping::{ClusterScopedMapping, NamespaceMap};
    use konnector_api::v1alpha1::Isolation;

    fn ns_map(entries: &[(&str, &str)]) -> NamespaceMap {
        let mut map = NamespaceMap::default();
        for (c, s) in entries {
            map.insert((*c).into(), (*s).into());
        }
        map
    }

    fn ctx<'a>(
        namespaces: &'a NamespaceMap,
        res: &'a kube::core::ApiResource,
        cluster: Option<&'a ClusterScopedMapping>,
    ) -> ExportContext<'a> {
        ExportContext {
            provider_namespace: "p",
            provider_namespace_uid: Some("uid-p"),
            resource: res,
            cluster_scoped: cluster,
            namespaces,
        }
    }

    fn synced_downstream() -> DynamicObject {
        obj(
            json!({"metadata": {"name": "db", "namespace": "default", "resourceVersion": "5",
            "finalizers": [SYNCER], "annotations": {BOUND: "true"}, "labels": {"team": "a"}},
            "spec": {"tier": "small"}}),
        )
    }

    fn synced_upstream() -> DynamicObject {
        obj(
            json!({"metadata": {"name": "db", "namespace": "p-default", "uid": "u1",
            "labels": {"team": "a"}, "annotations": {BOUND: "true"},
            "managedFields": [{"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "mangodb.com/v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}, "f:annotations": {"f:klutch.anynines.com/bound": {}}}, "f:spec": {"f:tier": {}}}}]},
            "spec": {"tier": "small", "resourceRef": {"name": "xr"}}, "status": {"phase": "Running"}}),
        )
    }

    #[test]
    fn first_object_in_a_namespace_creates_its_apiservicenamespace_and_takes_ownership_while_it_waits()
     {
        let (map, res) = (ns_map(&[]), resource());
        let d = obj(json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {}}));
        let writes = plan_downstream(&ctx(&map, &res, None), &d, None).unwrap();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].side, Side::Provider);
        assert_eq!(writes[1].side, Side::Consumer);
        assert_eq!(writes[1].reason, "take ownership of downstream object");
        let Op::Create(sn) = &writes[0].op else {
            panic!("{writes:?}")
        };
        assert_eq!(sn.metadata.name.as_deref(), Some("default"));
        assert_eq!(sn.metadata.namespace.as_deref(), Some("p"));
        assert_eq!(sn.types.as_ref().unwrap().kind, "APIServiceNamespace");

        // Pending: ownership only, and nothing once the object has it.
        let pending = ns_map(&[("default", "")]);
        let writes = plan_downstream(&ctx(&pending, &res, None), &d, None).unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].reason, "take ownership of downstream object");
        let owned = obj(json!({"metadata": {"name": "db", "namespace": "default",
            "finalizers": [SYNCER], "annotations": {BOUND: BOUND_TRUE}}, "spec": {}}));
        assert!(
            plan_downstream(&ctx(&pending, &res, None), &owned, None)
                .unwrap()
                .is_empty()
        );
        // The namespace ready: the apply is all that is left.
        let ready = ns_map(&[("default", "p-default")]);
        let writes = plan_downstream(&ctx(&ready, &res, None), &owned, None).unwrap();
        assert_eq!(writes.len(), 1);
        assert!(matches!(writes[0].op, Op::Apply(_)), "{writes:?}");
    }

    #[test]
    fn new_object_gets_finalizer_then_upstream_copy_via_apply() {
        let (map, res) = (ns_map(&[("default", "p-default")]), resource());
        let d = obj(
            json!({"metadata": {"name": "db", "namespace": "default", "resourceVersion": "3",
            "labels": {"team": "a"}, "uid": "d-uid",
            "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"tier": "small"}, "status": {"phase": "Pending"}}),
        );
        let writes = plan_downstream(&ctx(&map, &res, None), &d, None).unwrap();
        assert_eq!(writes.len(), 2, "{writes:#?}");
        assert_eq!(writes[0].side, Side::Consumer);
        let Op::MergePatch { patch, .. } = &writes[0].op else {
            panic!()
        };
        assert_eq!(patch["metadata"]["finalizers"], json!([SYNCER]));
        assert_eq!(patch["metadata"]["resourceVersion"], "3");
        assert_eq!(patch["metadata"]["annotations"][BOUND], "true");
        let Op::Apply(up) = &writes[1].op else {
            panic!()
        };
        assert_eq!(
            *up,
            json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
                "metadata": {"name": "db", "namespace": "p-default", "labels": {"team": "a"},
                    "annotations": {"note": "x", BOUND: "true"}},
                "spec": {"tier": "small"}})
        );
        // Ownership and the apply go to different clusters and may be sent together.
        assert!(crate::plan::may_run_together(&writes[0], &writes[1]));
    }

    #[test]
    fn synced_pair_plans_nothing_even_with_fields_of_other_managers() {
        let (map, res) = (ns_map(&[("default", "p-default")]), resource());
        let writes = plan_downstream(
            &ctx(&map, &res, None),
            &synced_downstream(),
            Some(&synced_upstream()),
        )
        .unwrap();
        assert_eq!(writes, vec![]);
    }

    #[test]
    fn spec_change_or_upstream_drift_is_applied() {
        let (map, res) = (ns_map(&[("default", "p-default")]), resource());
        let mut d = synced_downstream();
        d.data["spec"]["tier"] = json!("Dedicated");
        let writes = plan_downstream(&ctx(&map, &res, None), &d, Some(&synced_upstream())).unwrap();
        assert_eq!(writes.len(), 1);
        let Op::Apply(up) = &writes[0].op else {
            panic!()
        };
        assert_eq!(up["spec"], json!({"tier": "Dedicated"}));

        let mut drifted = synced_upstream();
        drifted.data["spec"]["tier"] = json!("Shared");
        let writes =
            plan_downstream(&ctx(&map, &res, None), &synced_downstream(), Some(&drifted)).unwrap();
        let Op::Apply(up) = &writes[0].op else {
            panic!()
        };
        assert_eq!(up["spec"]["tier"], "small");
    }

    #[test]
    fn deletion_deletes_upstream_with_uid_precondition_then_releases() {
        let (map, res) = (ns_map(&[("default", "p-default")]), resource());
        let mut d = synced_downstream();
        d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        d.metadata.finalizers = Some(vec!["other".into(), SYNCER.into()]);
        let writes = plan_downstream(&ctx(&map, &res, None), &d, Some(&synced_upstream())).unwrap();
        assert_eq!(writes.len(), 2);
        assert_eq!(
            writes[0].op,
            Op::Delete {
                namespace: Some("p-default".into()),
                name: "db".into(),
                uid: Some("u1".into())
            }
        );
        let Op::MergePatch { patch, .. } = &writes[1].op else {
            panic!()
        };
        assert_eq!(patch["metadata"]["finalizers"], json!(["other"]));
        // The finalizer is released only after the delete was accepted.
        assert!(!crate::plan::may_run_together(&writes[0], &writes[1]));
        assert!(!crate::plan::may_run_together(&writes[1], &writes[0]));

        // Upstream already deleting: wait for it to go.
        let mut up = synced_upstream();
        up.metadata.deletion_timestamp = d.metadata.deletion_timestamp.clone();
        assert!(
            plan_downstream(&ctx(&map, &res, None), &d, Some(&up))
                .unwrap()
                .is_empty()
        );
        // Upstream gone: release.
        let writes = plan_downstream(&ctx(&map, &res, None), &d, None).unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].side, Side::Consumer);
        // No mapping at all: release too, nothing upstream can exist.
        let empty = ns_map(&[]);
        assert_eq!(
            plan_downstream(&ctx(&empty, &res, None), &d, None)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn removing_a_label_downstream_reapplies_so_the_server_drops_it() {
        let (map, res) = (ns_map(&[("default", "p-default")]), resource());
        let mut d = synced_downstream();
        d.metadata.labels = None;
        let writes = plan_downstream(&ctx(&map, &res, None), &d, Some(&synced_upstream())).unwrap();
        assert_eq!(writes.len(), 1);
        let Op::Apply(up) = &writes[0].op else {
            panic!()
        };
        assert!(up["metadata"].get("labels").is_none());
    }

    #[test]
    fn cluster_scoped_prefixed_gets_prefix_annotation_and_owner() {
        let (map, res) = (ns_map(&[]), resource());
        let m = ClusterScopedMapping {
            provider_namespace: "p".into(),
            isolation: Isolation::Prefixed,
        };
        let d = obj(
            json!({"metadata": {"name": "test", "finalizers": [SYNCER], "annotations": {BOUND: "true"}},
            "spec": {"a": 1}}),
        );
        let writes = plan_downstream(&ctx(&map, &res, Some(&m)), &d, None).unwrap();
        let Op::Apply(up) = &writes[0].op else {
            panic!("{writes:?}")
        };
        assert_eq!(up["metadata"]["name"], "p-test");
        assert!(up["metadata"].get("namespace").is_none());
        assert_eq!(up["metadata"]["annotations"][CLUSTER_NAMESPACE], "p");
        assert_eq!(
            up["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Namespace", "name": "p", "uid": "uid-p"}])
        );
    }

    #[test]
    fn a_prefixed_name_over_253_characters_is_refused_before_any_write() {
        let (map, res) = (ns_map(&[]), resource());
        let m = ClusterScopedMapping {
            provider_namespace: "p".into(),
            isolation: Isolation::Prefixed,
        };
        let fits = "x".repeat(251); // "p-" + 251 = 253
        let d = obj(json!({"metadata": {"name": fits}}));
        assert!(plan_downstream(&ctx(&map, &res, Some(&m)), &d, None).is_ok());
        let d = obj(json!({"metadata": {"name": "x".repeat(252)}}));
        let err = plan_downstream(&ctx(&map, &res, Some(&m)), &d, None).unwrap_err();
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
        assert!(err.to_string().contains("254 characters"), "{err}");
    }

    #[test]
    fn cluster_scoped_namespaced_isolation_and_foreign_objects() {
        let (map, res) = (ns_map(&[]), resource());
        let m = ClusterScopedMapping {
            provider_namespace: "p".into(),
            isolation: Isolation::Namespaced,
        };
        let d = obj(
            json!({"metadata": {"name": "test", "finalizers": [SYNCER], "annotations": {BOUND: "true"}}}),
        );
        let writes = plan_downstream(&ctx(&map, &res, Some(&m)), &d, None).unwrap();
        let Op::Apply(up) = &writes[0].op else {
            panic!()
        };
        assert_eq!(up["metadata"]["namespace"], "p");
        assert_eq!(up["metadata"]["name"], "test");
        assert!(up["metadata"].get("ownerReferences").is_none());

        let none = ClusterScopedMapping {
            provider_namespace: "p".into(),
            isolation: Isolation::None,
        };
        let foreign =
            obj(json!({"metadata": {"name": "test", "annotations": {CLUSTER_NAMESPACE: "q"}}}));
        assert!(plan_downstream(&ctx(&map, &res, Some(&none)), &d, Some(&foreign)).is_err());
    }
}
