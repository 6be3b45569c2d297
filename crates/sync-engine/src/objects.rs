//! Small, pure helpers over dynamic objects.

use std::collections::BTreeMap;

use kube::core::DynamicObject;

/// Whether the object carries `key` with exactly `value` as an annotation.
pub fn has_annotation(obj: &DynamicObject, key: &str, value: &str) -> bool {
    annotation(obj, key) == Some(value)
}

/// The value of annotation `key`, if any.
pub fn annotation<'a>(obj: &'a DynamicObject, key: &str) -> Option<&'a str> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether the object has a deletion timestamp.
pub fn is_deleting(obj: &DynamicObject) -> bool {
    obj.metadata.deletion_timestamp.is_some()
}

/// Whether the object carries `finalizer`.
pub fn has_finalizer(obj: &DynamicObject, finalizer: &str) -> bool {
    obj.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// The object's `spec`, if it has one.
pub fn spec(obj: &DynamicObject) -> Option<&serde_json::Value> {
    obj.data.get("spec")
}

/// The object's `status`, if it has one.
pub fn status(obj: &DynamicObject) -> Option<&serde_json::Value> {
    obj.data.get("status")
}

/// Name of the object ("" if unset, which the API server never returns).
pub fn name(obj: &DynamicObject) -> &str {
    obj.metadata.name.as_deref().unwrap_or_default()
}

/// Namespace of the object, `None` for cluster-scoped objects.
pub fn namespace(obj: &DynamicObject) -> Option<&str> {
    obj.metadata.namespace.as_deref()
}

/// `namespace/name` or `name`, for logs and errors.
pub fn key(obj: &DynamicObject) -> String {
    match namespace(obj) {
        Some(ns) => format!("{ns}/{}", name(obj)),
        None => name(obj).to_string(),
    }
}

/// Annotations that describe one cluster's bookkeeping and must not be copied to the other.
const LOCAL_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// The user's labels and annotations, without cluster-local bookkeeping.
pub fn portable_labels(obj: &DynamicObject) -> BTreeMap<String, String> {
    obj.metadata.labels.clone().unwrap_or_default()
}

/// The user's annotations, without cluster-local bookkeeping.
pub fn portable_annotations(obj: &DynamicObject) -> BTreeMap<String, String> {
    let mut annotations = obj.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| !LOCAL_ANNOTATIONS.contains(&k.as_str()));
    annotations
}
