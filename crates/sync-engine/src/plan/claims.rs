//! Claimed resources (for example Secrets) mirrored between the clusters (reference 5.9, CL1).
//!
//! Each claimed object has one owner side, recorded in the `klutch.anynines.com/resource-owner`
//! annotation on both copies. The owner's copy is the truth: the other copy is created, updated
//! and deleted to match it, and edits or deletions made to the other copy are reverted. Claim
//! selectors (`names`, `namespaces`, `labelSelectors`, `owner`) are honoured, and a write happens
//! only when the copies differ in content, labels or annotations.

use std::collections::BTreeMap;

use konnector_api::strings::annotations::{
    RESOURCE_OWNER, RESOURCE_OWNER_CONSUMER, RESOURCE_OWNER_PROVIDER,
};
use konnector_api::v1alpha1::{Owner, PermissionClaim};
use kube::core::DynamicObject;
use serde_json::{Map, Value, json};

use super::{Op, Side, Target, Write};
use crate::objects::{annotation, is_deleting, name, portable_annotations, portable_labels};

/// Whether the claim's selector selects `obj` (names, namespaces and label selectors; an absent
/// or empty list selects everything, `"*"` matches any value).
pub fn selects(claim: &PermissionClaim, obj: &DynamicObject) -> bool {
    let Some(selector) = &claim.selector else {
        return true;
    };
    let matches_list = |list: &Option<Vec<String>>, value: &str| match list {
        None => true,
        Some(l) if l.is_empty() => true,
        Some(l) => l.iter().any(|x| x == "*" || x == value),
    };
    if !matches_list(&selector.names, name(obj)) {
        return false;
    }
    if let Some(ns) = obj.metadata.namespace.as_deref()
        && !matches_list(&selector.namespaces, ns)
    {
        return false;
    }
    match &selector.label_selectors {
        None => true,
        Some(selectors) if selectors.is_empty() => true,
        Some(selectors) => {
            let labels = obj.metadata.labels.clone().unwrap_or_default();
            selectors
                .iter()
                .any(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        }
    }
}

fn owner_annotation(obj: &DynamicObject) -> Option<Owner> {
    match annotation(obj, RESOURCE_OWNER) {
        Some(RESOURCE_OWNER_PROVIDER) => Some(Owner::Provider),
        Some(RESOURCE_OWNER_CONSUMER) => Some(Owner::Consumer),
        _ => None,
    }
}

/// Who owns a claimed object, from its two copies (reference 5.9 step 3): an annotation wins
/// (provider side first); an unannotated object whose other copy does not exist belongs to the
/// side it was created on; two unannotated copies have no owner and are left alone.
pub fn owner_of(
    provider: Option<&DynamicObject>,
    consumer: Option<&DynamicObject>,
) -> Option<Owner> {
    if let Some(owner) = provider.and_then(owner_annotation) {
        return Some(owner);
    }
    if provider.is_some() && consumer.is_none() {
        return Some(Owner::Provider);
    }
    if let Some(owner) = consumer.and_then(owner_annotation) {
        return Some(owner);
    }
    if consumer.is_some() && provider.is_none() {
        return Some(Owner::Consumer);
    }
    None
}

/// The location of each copy: `(namespace, name)` on the provider and on the consumer. Every
/// write [`plan_claim`] plans is addressed to one of these two places, so a konnector that may
/// only touch claimed objects in the namespaces it serves (namespaced Roles, no ClusterRole) is
/// never denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimLocation {
    /// Provider namespace (service namespace), `None` for cluster-scoped resources.
    pub provider_namespace: Option<String>,
    /// Consumer namespace, `None` for cluster-scoped resources.
    pub consumer_namespace: Option<String>,
    /// Name (the same on both sides).
    pub name: String,
}

/// Plans the writes that make the two copies of one claimed object agree.
pub fn plan_claim(
    claim: &PermissionClaim,
    at: &ClaimLocation,
    provider: Option<&DynamicObject>,
    consumer: Option<&DynamicObject>,
) -> Vec<Write> {
    let Some(owner) = owner_of(provider, consumer) else {
        return Vec::new();
    };
    // The claim's owner restricts which side's objects are mirrored at all.
    if claim
        .selector
        .as_ref()
        .and_then(|s| s.owner)
        .is_some_and(|o| o != owner)
    {
        return Vec::new();
    }
    let (source, target, source_side, target_side, source_ns, target_ns, owner_value) = match owner
    {
        Owner::Provider => (
            provider,
            consumer,
            Side::Provider,
            Side::Consumer,
            &at.provider_namespace,
            &at.consumer_namespace,
            RESOURCE_OWNER_PROVIDER,
        ),
        Owner::Consumer => (
            consumer,
            provider,
            Side::Consumer,
            Side::Provider,
            &at.consumer_namespace,
            &at.provider_namespace,
            RESOURCE_OWNER_CONSUMER,
        ),
    };
    let Some(source) = source else {
        // The owner's copy is gone: the mirror goes too.
        return delete(target, target_side, target_ns).into_iter().collect();
    };
    if !selects(claim, source) {
        return Vec::new();
    }
    if is_deleting(source) {
        return delete(target, target_side, target_ns).into_iter().collect();
    }
    let mut writes = Vec::new();
    if annotation(source, RESOURCE_OWNER) != Some(owner_value) {
        writes.push(Write {
            target: Target::Synced,
            side: source_side,
            // Addressed by the location, like every other write, not by what the cache holds:
            // each request stays in a namespace the konnector serves, which is all that
            // namespaced Roles grant.
            op: Op::MergePatch {
                namespace: source_ns.clone(),
                name: at.name.clone(),
                patch: json!({"metadata": {"annotations": {RESOURCE_OWNER: owner_value}}}),
            },
            reason: "mark claimed object's owner",
        });
    }
    let desired = mirror(source, target_ns.clone(), &at.name, owner_value);
    match target {
        None => writes.push(Write {
            target: Target::Synced,
            side: target_side,
            op: Op::Create(desired),
            reason: "mirror claimed object",
        }),
        Some(t) if is_deleting(t) => {}
        Some(t) if same_content(&desired, t) => {}
        Some(t) => {
            let mut replacement = desired;
            replacement.metadata.resource_version = t.metadata.resource_version.clone();
            replacement.metadata.uid = t.metadata.uid.clone();
            writes.push(Write {
                target: Target::Synced,
                side: target_side,
                op: Op::Replace(replacement),
                reason: "claimed object differs from its owner's copy",
            });
        }
    }
    writes
}

fn delete(target: Option<&DynamicObject>, side: Side, namespace: &Option<String>) -> Option<Write> {
    let t = target?;
    if is_deleting(t) {
        return None;
    }
    Some(Write {
        target: Target::Synced,
        side,
        op: Op::Delete {
            namespace: namespace.clone(),
            name: name(t).to_string(),
            uid: t.metadata.uid.clone(),
        },
        reason: "owner's copy of claimed object is gone",
    })
}

/// The other side's copy: the owner's content, labels and annotations, with the owner annotation,
/// and none of the cluster-local bookkeeping (uid, resourceVersion, owner references, finalizers,
/// managed fields, timestamps).
fn mirror(
    source: &DynamicObject,
    namespace: Option<String>,
    name: &str,
    owner: &str,
) -> DynamicObject {
    let mut annotations = portable_annotations(source);
    annotations.insert(RESOURCE_OWNER.to_string(), owner.to_string());
    let labels = portable_labels(source);
    DynamicObject {
        types: source.types.clone(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            namespace,
            labels: (!labels.is_empty()).then_some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: source.data.clone(),
    }
}

/// Content (everything but metadata), labels and annotations are equal.
fn same_content(desired: &DynamicObject, live: &DynamicObject) -> bool {
    let content = |o: &DynamicObject| -> Map<String, Value> {
        o.data.as_object().cloned().unwrap_or_default()
    };
    let labels = |o: &DynamicObject| -> BTreeMap<String, String> { portable_labels(o) };
    content(desired) == content(live)
        && labels(desired) == labels(live)
        && portable_annotations(desired) == portable_annotations(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use konnector_api::v1alpha1::ResourceSelector;

    fn secret(ns: &str, owner: Option<&str>, value: &str) -> DynamicObject {
        let mut annotations = serde_json::Map::new();
        if let Some(o) = owner {
            annotations.insert(RESOURCE_OWNER.into(), json!(o));
        }
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": ns, "uid": format!("uid-{ns}"), "resourceVersion": "9",
                "annotations": annotations, "labels": {"app": "db"}},
            "type": "Opaque", "data": {"password": value}}))
        .unwrap()
    }

    fn claim(owner: Option<Owner>) -> PermissionClaim {
        PermissionClaim {
            resource: "secrets".into(),
            version: "v1".into(),
            selector: Some(ResourceSelector {
                owner,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at() -> ClaimLocation {
        ClaimLocation {
            provider_namespace: Some("p-default".into()),
            consumer_namespace: Some("default".into()),
            name: "creds".into(),
        }
    }

    #[test]
    fn provider_created_secret_is_marked_and_mirrored_down() {
        let up = secret("p-default", None, "ZHVtbXk=");
        let writes = plan_claim(&claim(Some(Owner::Provider)), &at(), Some(&up), None);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].side, Side::Provider);
        let Op::Create(down) = &writes[1].op else {
            panic!()
        };
        assert_eq!(writes[1].side, Side::Consumer);
        let v = serde_json::to_value(down).unwrap();
        assert_eq!(v["metadata"]["namespace"], "default");
        assert_eq!(v["metadata"]["annotations"][RESOURCE_OWNER], "Provider");
        assert_eq!(v["data"]["password"], "ZHVtbXk=");
        assert!(
            v["metadata"].get("uid").is_none() && v["metadata"].get("resourceVersion").is_none()
        );
    }

    #[test]
    fn edits_to_the_mirror_are_reverted_and_equal_copies_cause_no_write() {
        let up = secret("p-default", Some("Provider"), "ZHVtbXk=");
        let edited = secret("default", Some("Provider"), "ZWRpdGVk");
        let writes = plan_claim(
            &claim(Some(Owner::Provider)),
            &at(),
            Some(&up),
            Some(&edited),
        );
        assert_eq!(writes.len(), 1);
        let Op::Replace(o) = &writes[0].op else {
            panic!()
        };
        assert_eq!(o.data["data"]["password"], "ZHVtbXk=");
        assert_eq!(o.metadata.resource_version.as_deref(), Some("9"));
        let same = secret("default", Some("Provider"), "ZHVtbXk=");
        assert!(
            plan_claim(&claim(Some(Owner::Provider)), &at(), Some(&up), Some(&same)).is_empty()
        );
    }

    #[test]
    fn deleting_the_owner_copy_deletes_the_mirror_in_the_right_namespace() {
        let down = secret("default", Some("Provider"), "x");
        let writes = plan_claim(&claim(Some(Owner::Provider)), &at(), None, Some(&down));
        assert_eq!(
            writes[0].op,
            Op::Delete {
                namespace: Some("default".into()),
                name: "creds".into(),
                uid: Some("uid-default".into())
            }
        );
        let mut deleting = secret("p-default", Some("Provider"), "x");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let writes = plan_claim(
            &claim(Some(Owner::Provider)),
            &at(),
            Some(&deleting),
            Some(&down),
        );
        assert_eq!(writes[0].side, Side::Consumer);
        assert!(matches!(&writes[0].op, Op::Delete { namespace: Some(ns), .. } if ns == "default"));
    }

    #[test]
    fn consumer_owned_objects_mirror_upstream_and_owner_filter_applies() {
        let down = secret("default", None, "x");
        let writes = plan_claim(&claim(Some(Owner::Consumer)), &at(), None, Some(&down));
        assert_eq!(writes.len(), 2);
        assert_eq!(
            (writes[0].side, writes[1].side),
            (Side::Consumer, Side::Provider)
        );
        // With owner: Provider, a consumer-created object is not mirrored upstream (CL1).
        assert!(plan_claim(&claim(Some(Owner::Provider)), &at(), None, Some(&down)).is_empty());
        // With owner: Consumer, an unannotated provider object is left alone.
        let up = secret("p-default", None, "x");
        assert!(plan_claim(&claim(Some(Owner::Consumer)), &at(), Some(&up), None).is_empty());
    }

    /// Namespaced Roles are enough: whatever the copies look like, every planned write goes to
    /// the provider copy's namespace on the provider or the consumer copy's on the consumer.
    #[test]
    fn every_write_stays_in_the_namespaces_of_the_location() {
        let mut deleting = secret("p-default", Some("Provider"), "x");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        // A cached copy that lacks its namespace must not turn into a cluster-wide request.
        let mut unnamespaced = secret("default", None, "x");
        unnamespaced.metadata.namespace = None;
        let ups = [
            None,
            Some(secret("p-default", None, "x")),
            Some(secret("p-default", Some("Provider"), "x")),
            Some(secret("p-default", Some("Consumer"), "y")),
            Some(deleting),
        ];
        let downs = [
            None,
            Some(secret("default", None, "x")),
            Some(secret("default", Some("Consumer"), "z")),
            Some(secret("default", Some("Provider"), "y")),
            Some(unnamespaced),
        ];
        let mut planned = 0;
        for owner in [None, Some(Owner::Provider), Some(Owner::Consumer)] {
            for up in &ups {
                for down in &downs {
                    for w in plan_claim(&claim(owner), &at(), up.as_ref(), down.as_ref()) {
                        planned += 1;
                        let (ns, name) = w.namespace_and_name();
                        let expected = match w.side {
                            Side::Provider => "p-default",
                            Side::Consumer => "default",
                        };
                        assert_eq!(ns.as_deref(), Some(expected), "{w:?}");
                        assert_eq!(name, "creds");
                    }
                }
            }
        }
        assert!(planned > 20, "the cases plan writes ({planned})");
    }

    #[test]
    fn both_unannotated_is_left_alone() {
        let up = secret("p-default", None, "x");
        let down = secret("default", None, "y");
        assert_eq!(owner_of(Some(&up), Some(&down)), None);
        assert!(plan_claim(&claim(None), &at(), Some(&up), Some(&down)).is_empty());
    }

    #[test]
    fn selectors_names_namespaces_and_labels() {
        let s = secret("default", None, "x");
        let mut c = claim(None);
        assert!(selects(&c, &s));
        c.selector = Some(ResourceSelector {
            names: Some(vec!["other".into()]),
            ..Default::default()
        });
        assert!(!selects(&c, &s));
        c.selector = Some(ResourceSelector {
            names: Some(vec!["*".into()]),
            namespaces: Some(vec!["kube-system".into()]),
            ..Default::default()
        });
        assert!(!selects(&c, &s));
        let mut wanted = std::collections::BTreeMap::new();
        wanted.insert("app".to_string(), "db".to_string());
        let mut other = std::collections::BTreeMap::new();
        other.insert("app".to_string(), "web".to_string());
        c.selector = Some(ResourceSelector {
            label_selectors: Some(vec![other.clone()]),
            ..Default::default()
        });
        assert!(!selects(&c, &s));
        c.selector = Some(ResourceSelector {
            label_selectors: Some(vec![other, wanted]),
            ..Default::default()
        });
        assert!(selects(&c, &s));
        // A selector that does not select the owner's copy means no mirroring.
        c.selector = Some(ResourceSelector {
            names: Some(vec!["other".into()]),
            ..Default::default()
        });
        assert!(plan_claim(&c, &at(), Some(&secret("p-default", None, "x")), None).is_empty());
    }
}
