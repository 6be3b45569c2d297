//! The status, adopt and orphan decisions for one upstream (provider) object (reference 5.8.2,
//! 5.8.3, with decisions A1/A2).

use konnector_api::strings::annotations::{BOUND, BOUND_TRUE, CLUSTER_NAMESPACE};
use kube::core::DynamicObject;
use serde_json::json;

use super::{ExportContext, Op, PlanError, Side, Target, Write};
use crate::objects::{annotation, is_deleting, name, namespace, status};

/// Where the downstream counterpart of an upstream object lives: `(namespace, name)`, or `None`
/// when the upstream object is not this consumer's.
pub fn downstream_key(
    ctx: &ExportContext<'_>,
    upstream: &DynamicObject,
) -> Result<Option<(Option<String>, String)>, PlanError> {
    if let Some(mapping) = ctx.cluster_scoped {
        return Ok(mapping
            .downstream_name(
                namespace(upstream),
                name(upstream),
                annotation(upstream, CLUSTER_NAMESPACE),
            )
            .map(|n| (None, n)));
    }
    let Some(service_ns) = namespace(upstream) else {
        return Ok(None);
    };
    Ok(ctx
        .namespaces
        .consumer_of(service_ns)?
        .map(|consumer| (Some(consumer.to_string()), name(upstream).to_string())))
}

/// Plans the writes for one upstream object, given its downstream counterpart as found at
/// [`downstream_key`]:
///
/// - no counterpart and the bound annotation: the downstream object was deleted while we were
///   not looking, so the upstream copy is deleted (the caller only runs this once the caches of
///   both clusters have synced);
/// - no counterpart and no bound annotation: the provider created it, so it is adopted: created
///   downstream with the bound annotation (the spec syncer then takes over and marks it upstream);
/// - both present: the upstream status is copied to the downstream `/status`, when it differs.
pub fn plan_upstream(
    ctx: &ExportContext<'_>,
    upstream: &DynamicObject,
    downstream: Option<&DynamicObject>,
) -> Result<Vec<Write>, PlanError> {
    let Some((down_ns, down_name)) = downstream_key(ctx, upstream)? else {
        return Ok(Vec::new());
    };
    let Some(down) = downstream else {
        if is_deleting(upstream) {
            return Ok(Vec::new());
        }
        if annotation(upstream, BOUND).is_some() {
            return Ok(vec![Write {
                target: Target::Synced,
                side: Side::Provider,
                op: Op::Delete {
                    namespace: upstream.metadata.namespace.clone(),
                    name: name(upstream).to_string(),
                    uid: upstream.metadata.uid.clone(),
                },
                reason: "downstream object is gone",
            }]);
        }
        return Ok(vec![adopt(upstream, down_ns, down_name)]);
    };
    if is_deleting(down) || status(upstream) == status(down) {
        return Ok(Vec::new());
    }
    let mut updated = down.clone();
    // The server keeps the managed fields of an update that sends none; a cached object's are
    // trimmed (runtime::cache) and must not replace the live ones.
    updated.metadata.managed_fields = None;
    if let Some(data) = updated.data.as_object_mut() {
        match status(upstream) {
            Some(s) => {
                data.insert("status".into(), s.clone());
            }
            None => {
                data.remove("status");
            }
        }
    }
    Ok(vec![Write {
        target: Target::Synced,
        side: Side::Consumer,
        op: Op::ReplaceStatus(updated),
        reason: "upstream status changed",
    }])
}

/// A downstream copy of a provider-created object: identity, labels, annotations (without the
/// provider-side bookkeeping) and spec. Owner references, finalizers and managed fields describe
/// the provider cluster and are not copied (A1).
fn adopt(upstream: &DynamicObject, namespace: Option<String>, name: String) -> Write {
    let mut annotations = upstream.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(CLUSTER_NAMESPACE);
    annotations.insert(BOUND.to_string(), BOUND_TRUE.to_string());
    let mut data = json!({});
    if let Some(spec) = upstream.data.get("spec") {
        data["spec"] = spec.clone();
    }
    let object = DynamicObject {
        types: upstream.types.clone(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name),
            namespace,
            labels: upstream.metadata.labels.clone(),
            annotations: Some(annotations),
            ..Default::default()
        },
        data,
    };
    Write {
        target: Target::Synced,
        side: Side::Consumer,
        op: Op::Create(object),
        reason: "adopt provider-created object",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{obj, resource};
    use super::*;
    use crate::mapping::{ClusterScopedMapping, NamespaceMap};
    use konnector_api::v1alpha1::Isolation;

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

    fn map() -> NamespaceMap {
        let mut m = NamespaceMap::default();
        m.insert("default".into(), "p-default".into());
        m
    }

    #[test]
    fn status_is_copied_downstream_only_when_it_differs() {
        let (m, res) = (map(), resource());
        let up = obj(
            json!({"metadata": {"name": "db", "namespace": "p-default", "annotations": {BOUND: "true"}},
            "spec": {"tier": "x"}, "status": {"phase": "Running"}}),
        );
        let down = obj(
            json!({"metadata": {"name": "db", "namespace": "default", "resourceVersion": "7"},
            "spec": {"tier": "x"}, "status": {"phase": "Pending"}}),
        );
        let writes = plan_upstream(&ctx(&m, &res, None), &up, Some(&down)).unwrap();
        assert_eq!(writes.len(), 1);
        let Op::ReplaceStatus(o) = &writes[0].op else {
            panic!()
        };
        assert_eq!(o.data["status"], json!({"phase": "Running"}));
        assert_eq!(o.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(o.data["spec"], json!({"tier": "x"}), "spec is untouched");

        let mut same = down.clone();
        same.data["status"] = json!({"phase": "Running"});
        assert!(
            plan_upstream(&ctx(&m, &res, None), &up, Some(&same))
                .unwrap()
                .is_empty()
        );

        // Upstream without status removes the downstream status.
        let bare = obj(json!({"metadata": {"name": "db", "namespace": "p-default"}, "spec": {}}));
        let writes = plan_upstream(&ctx(&m, &res, None), &bare, Some(&down)).unwrap();
        let Op::ReplaceStatus(o) = &writes[0].op else {
            panic!()
        };
        assert!(o.data.get("status").is_none());
    }

    #[test]
    fn bound_upstream_without_downstream_is_deleted_with_uid_precondition() {
        let (m, res) = (map(), resource());
        let up = obj(
            json!({"metadata": {"name": "db", "namespace": "p-default", "uid": "u", "annotations": {BOUND: "true"}}}),
        );
        let writes = plan_upstream(&ctx(&m, &res, None), &up, None).unwrap();
        assert_eq!(
            writes[0].op,
            Op::Delete {
                namespace: Some("p-default".into()),
                name: "db".into(),
                uid: Some("u".into())
            }
        );
        assert_eq!(writes[0].side, Side::Provider);
    }

    #[test]
    fn unbound_upstream_is_adopted_without_provider_bookkeeping() {
        let (m, res) = (map(), resource());
        let up = obj(
            json!({"metadata": {"name": "test2", "namespace": "p-default", "uid": "u",
            "labels": {"l": "1"}, "annotations": {"a": "b"}, "finalizers": ["provider/cleanup"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "c"}],
            "managedFields": [{"manager": "x"}]},
            "spec": {"tier": "x"}, "status": {"phase": "Running"}}),
        );
        let writes = plan_upstream(&ctx(&m, &res, None), &up, None).unwrap();
        assert_eq!(writes[0].side, Side::Consumer);
        let Op::Create(d) = &writes[0].op else {
            panic!()
        };
        let v = serde_json::to_value(d).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
                "metadata": {"name": "test2", "namespace": "default", "labels": {"l": "1"},
                    "annotations": {"a": "b", BOUND: "true"}},
                "spec": {"tier": "x"}})
        );
    }

    #[test]
    fn objects_of_other_consumers_are_left_alone() {
        let (m, res) = (map(), resource());
        let up = obj(
            json!({"metadata": {"name": "db", "namespace": "q-default", "annotations": {BOUND: "true"}}}),
        );
        assert!(
            plan_upstream(&ctx(&m, &res, None), &up, None)
                .unwrap()
                .is_empty()
        );
        let prefixed = ClusterScopedMapping {
            provider_namespace: "p".into(),
            isolation: Isolation::Prefixed,
        };
        let other = obj(
            json!({"metadata": {"name": "q-test", "annotations": {BOUND: "true", CLUSTER_NAMESPACE: "q"}}}),
        );
        assert!(
            plan_upstream(&ctx(&m, &res, Some(&prefixed)), &other, None)
                .unwrap()
                .is_empty()
        );
        let mine = obj(
            json!({"metadata": {"name": "p-test", "uid": "u", "annotations": {BOUND: "true", CLUSTER_NAMESPACE: "p"}}}),
        );
        assert_eq!(
            plan_upstream(&ctx(&m, &res, Some(&prefixed)), &mine, None)
                .unwrap()
                .len(),
            1
        );
        let adopted =
            obj(json!({"metadata": {"name": "p-new", "annotations": {CLUSTER_NAMESPACE: "p"}}}));
        let writes = plan_upstream(&ctx(&m, &res, Some(&prefixed)), &adopted, None).unwrap();
        let Op::Create(d) = &writes[0].op else {
            panic!()
        };
        assert_eq!(d.metadata.name.as_deref(), Some("new"));
        assert!(
            d.metadata
                .annotations
                .as_ref()
                .unwrap()
                .get(CLUSTER_NAMESPACE)
                .is_none()
        );
    }
}
