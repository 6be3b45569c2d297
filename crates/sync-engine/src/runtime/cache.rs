//! The cache behind every shared watch: each object as its JSON text, without what the
//! konnector never reads.
//!
//! An informer cache of full objects costs about 8 KiB per small custom resource: a parsed
//! `serde_json::Value` spends a B-tree node of some 600 bytes on every JSON object, and
//! `metadata.managedFields` holds a tree per field manager. The konnector reads a cached object
//! only when it reconciles it, a few times per change, so it keeps the text (about 10 % of that)
//! and parses on read, which costs microseconds. `managedFields` entries are dropped except the
//! konnector's own server-side apply, which [`crate::ssa`] needs to tell whether an apply would
//! remove a field it applied before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use konnector_api::strings::FIELD_MANAGER;
use kube::api::DynamicObject;

/// Drops what no controller of the konnector reads: every `managedFields` entry but the
/// konnector's own apply of the main resource, and that entry's timestamp.
pub fn trim(obj: &mut DynamicObject) {
    let Some(entries) = obj.metadata.managed_fields.take() else {
        return;
    };
    let ours: Vec<_> = entries
        .into_iter()
        .filter(|e| {
            e.manager.as_deref() == Some(FIELD_MANAGER)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().unwrap_or("").is_empty()
        })
        .map(|mut e| {
            e.time = None;
            e
        })
        .collect();
    if !ours.is_empty() {
        obj.metadata.managed_fields = Some(ours);
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects (a name never holds a `/`).
fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Objects by namespace and name, as trimmed JSON text.
#[derive(Debug, Default)]
pub struct Cache {
    objects: RwLock<HashMap<String, Box<str>>>,
    /// Bumped by every change, so that whoever derives something from the whole cache can
    /// tell whether to derive it again.
    version: AtomicU64,
}

impl Cache {
    /// An object as the cache keeps it: its key and trimmed text.
    pub fn encode(mut obj: DynamicObject) -> Option<(String, Box<str>)> {
        trim(&mut obj);
        let k = key(
            obj.metadata.namespace.as_deref(),
            obj.metadata.name.as_deref()?,
        );
        // Serializing a value that was just deserialized cannot fail.
        let text = serde_json::to_string(&obj).ok()?;
        Some((k, text.into_boxed_str()))
    }

    fn decode(text: &str) -> Option<Arc<DynamicObject>> {
        // Text this cache wrote from a DynamicObject parses back as one; were that ever not
        // so, the object would look absent, so it is said loudly.
        match serde_json::from_str(text) {
            Ok(obj) => Some(Arc::new(obj)),
            Err(e) => {
                tracing::error!(error = %e, "a cached object does not parse back; treating it as absent");
                None
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Box<str>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Box<str>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the whole content (a list).
    pub fn replace(&self, objects: impl IntoIterator<Item = DynamicObject>) {
        self.replace_encoded(objects.into_iter().filter_map(Self::encode));
    }

    /// Replaces the whole content with objects already [`Cache::encode`]d.
    pub fn replace_encoded(&self, objects: impl IntoIterator<Item = (String, Box<str>)>) {
        let map: HashMap<String, Box<str>> = objects.into_iter().collect();
        *self.write() = map;
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Adds or updates an object (a watch event).
    pub fn apply(&self, obj: DynamicObject) {
        if let Some((k, text)) = Self::encode(obj) {
            self.write().insert(k, text);
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Removes an object (a delete event).
    pub fn delete(&self, namespace: Option<&str>, name: &str) {
        self.write().remove(&key(namespace, name));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The object `namespace/name`.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<DynamicObject>> {
        Self::decode(self.read().get(&key(namespace, name))?)
    }

    /// The object `namespace/name` as a `K` (`None` if absent or not a `K`).
    pub fn get_as<K: serde::de::DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<K> {
        serde_json::from_str(self.read().get(&key(namespace, name))?).ok()
    }

    /// Every object that parses as a `K`.
    pub fn list_as<K: serde::de::DeserializeOwned>(&self) -> Vec<K> {
        let texts: Vec<Box<str>> = self.read().values().cloned().collect();
        texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<DynamicObject>> {
        let texts: Vec<Box<str>> = self.read().values().cloned().collect();
        texts.iter().filter_map(|t| Self::decode(t)).collect()
    }

    /// Every object in `namespace` (a namespace view of a cluster-wide watch, fleet mode).
    pub fn list_in(&self, namespace: &str) -> Vec<Arc<DynamicObject>> {
        let texts = self.texts_in(namespace);
        texts.iter().filter_map(|t| Self::decode(t)).collect()
    }

    /// Every object in `namespace` that parses as a `K`.
    pub fn list_as_in<K: serde::de::DeserializeOwned>(&self, namespace: &str) -> Vec<K> {
        let texts = self.texts_in(namespace);
        texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    }

    /// Names of the objects in `namespace`.
    pub fn keys_in(&self, namespace: &str) -> Vec<(Option<String>, String)> {
        let prefix = format!("{namespace}/");
        self.read()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|name| (Some(namespace.to_owned()), name.to_owned()))
            .collect()
    }

    fn texts_in(&self, namespace: &str) -> Vec<Box<str>> {
        let prefix = format!("{namespace}/");
        self.read()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Namespace and name of every object, without parsing any.
    pub fn keys(&self) -> Vec<(Option<String>, String)> {
        self.read()
            .keys()
            .map(|k| match k.split_once('/') {
                Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
                None => (None, k.clone()),
            })
            .collect()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Bytes of object text held (without the map's own overhead).
    pub fn text_bytes(&self) -> usize {
        self.read().iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Changes so far; equal values mean equal content.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn upstream() -> DynamicObject {
        obj(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
            "metadata": {"name": "db", "namespace": "p-default", "uid": "u1", "resourceVersion": "7",
            "annotations": {"klutch.anynines.com/bound": "true"},
            "managedFields": [
                {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "mangodb.com/v1",
                 "time": "2026-12-06T09:30:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:tier": {}}}},
                {"manager": FIELD_MANAGER, "operation": "Update", "apiVersion": "mangodb.com/v1",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:finalizers": {}}}},
                {"manager": FIELD_MANAGER, "operation": "Apply", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}},
                {"manager": "crossplane", "operation": "Apply", "apiVersion": "mangodb.com/v1",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:resourceRef": {}}}}]},
            "spec": {"tier": "small", "resourceRef": {"name": "xr"}}, "status": {"phase": "Running"}}))
    }

    #[test]
    fn trimming_keeps_only_our_apply_of_the_main_resource() {
        let mut o = upstream();
        trim(&mut o);
        let entries = o.metadata.managed_fields.clone().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].operation.as_deref(), Some("Apply"));
        assert!(entries[0].time.is_none());
        assert_eq!(
            entries[0].fields_v1.as_ref().unwrap().0,
            json!({"f:spec": {"f:tier": {}}})
        );
        // Everything else is untouched.
        let (mut a, mut b) = (
            serde_json::to_value(&o).unwrap(),
            serde_json::to_value(upstream()).unwrap(),
        );
        a["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        b["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(a, b);
    }

    #[test]
    fn an_object_without_our_apply_keeps_no_managed_fields() {
        let mut o = obj(json!({"metadata": {"name": "x", "managedFields": [
            {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}]}}));
        trim(&mut o);
        assert!(o.metadata.managed_fields.is_none());
    }

    #[test]
    fn the_cache_serves_what_it_was_given_trimmed() {
        let c = Cache::default();
        let v0 = c.version();
        c.apply(upstream());
        assert!(c.version() > v0);
        let mut expected = upstream();
        trim(&mut expected);
        assert_eq!(*c.get(Some("p-default"), "db").unwrap(), expected);
        assert!(c.get(None, "db").is_none());
        assert!(c.get(Some("other"), "db").is_none());
        assert_eq!(
            c.keys(),
            vec![(Some("p-default".to_string()), "db".to_string())]
        );
        assert_eq!(c.list().len(), 1);
        c.delete(Some("p-default"), "db");
        assert!(c.is_empty());
    }

    #[test]
    fn everything_but_managed_fields_survives_the_text() {
        // A read that came back different (or not at all) would be planned on as absent.
        let full = obj(json!({"apiVersion": "example.com/v1beta1", "kind": "Thing",
            "metadata": {"name": "t", "namespace": "n", "uid": "u", "resourceVersion": "9",
                "generation": 3, "creationTimestamp": "2026-12-06T09:30:00Z",
                "deletionTimestamp": "2026-12-06T09:31:00Z", "deletionGracePeriodSeconds": 0,
                "labels": {"a": "b"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"x\":1}"},
                "finalizers": ["x/y"], "generateName": "t-",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": "p", "uid": "pu",
                    "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"n": 1.5, "big": 12345678901234i64, "list": [1, "two", null, {"x": []}],
                "empty": {}, "unicode": "ü ✓"},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-12-06T09:30:00.123456Z"}]}}));
        let c = Cache::default();
        c.apply(full.clone());
        assert_eq!(*c.get(Some("n"), "t").unwrap(), full);
    }

    #[test]
    fn a_list_replaces_everything_and_cluster_scoped_keys_have_no_namespace() {
        let c = Cache::default();
        c.apply(upstream());
        c.replace([obj(json!({"metadata": {"name": "cluster-wide"}}))]);
        assert_eq!(c.len(), 1);
        assert_eq!(c.keys(), vec![(None, "cluster-wide".to_string())]);
        assert!(c.get(None, "cluster-wide").is_some());
        assert!(c.text_bytes() > 0);
    }

    #[test]
    fn text_is_a_fraction_of_a_parsed_object() {
        // What the cache holds for the object above, against its full JSON.
        let full = serde_json::to_string(&upstream()).unwrap().len();
        let c = Cache::default();
        c.apply(upstream());
        assert!(c.text_bytes() < full, "{} >= {full}", c.text_bytes());
    }
}
