//! The controllers a real control plane runs next to the API server, reduced to what changes
//! API-visible state: the garbage collector (ownerReferences with background, foreground and
//! orphan propagation), the namespace controller (deletes a terminating namespace's content,
//! then its `kubernetes` finalizer) and the CRD finalizer (deletes a CRD's objects before the
//! CRD).
//!
//! It runs asynchronously after the write that triggered it, as the real controllers do, so
//! clients observe the same sequence of events (owner deleted, then dependents).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{self, CRD_CLEANUP_FINALIZER, DeleteOpts, deleting};
use crate::resources::ResourceDef;
use crate::shared::Shared;
use crate::store::{ObjKey, Store};

/// Runs garbage collection whenever a write asks for it, and the namespace controller once a
/// terminating namespace's grace period ([`crate::Options::namespace_deletion_delay`]) is over.
pub async fn run(shared: Arc<Shared>) {
    let delay = shared.options.namespace_deletion_delay;
    // Terminating namespaces (by uid) and when the controller first saw them.
    let mut seen: HashMap<String, Instant> = HashMap::new();
    loop {
        let mut next = None;
        if let Ok(mut store) = shared.store.write() {
            let now = Instant::now();
            let terminating = terminating_namespaces(&store);
            seen.retain(|uid, _| terminating.iter().any(|(u, _)| u == uid));
            let mut due = HashSet::new();
            for (uid, name) in terminating {
                let since = *seen.entry(uid).or_insert(now);
                let left = (since + delay).saturating_duration_since(now);
                if left.is_zero() {
                    due.insert(name);
                } else {
                    next = Some(next.map_or(left, |n: Duration| n.min(left)));
                }
            }
            collect(&mut store, &due);
            // The collector may have deleted ClusterRoles.
            if store.aggregation_pending {
                shared.aggregation.notify_one();
            }
        }
        match next {
            Some(wait) => {
                tokio::select! {
                    () = shared.gc.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            None => shared.gc.notified().await,
        }
    }
}

/// `(uid, name)` of every namespace marked for deletion.
fn terminating_namespaces(store: &Store) -> Vec<(String, String)> {
    let field = |o: &Value, p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    store
        .table("namespaces")
        .map(|t| {
            t.values()
                .filter(|o| deleting(o))
                .map(|o| (field(o, "/metadata/uid"), field(o, "/metadata/name")))
                .collect()
        })
        .unwrap_or_default()
}

struct Owner<'a> {
    namespace: &'a str,
    kind: &'a str,
    deleting: bool,
    finalizers: Vec<&'a str>,
}

enum Action {
    Delete(String, ObjKey, &'static str),
    RemoveOwnerRef(String, ObjKey, String),
    RemoveFinalizer(String, ObjKey, &'static str),
    FinalizeNamespace(String),
}

/// Runs passes until nothing changes; the namespace controller only works on the terminating
/// namespaces in `due` (their grace period is over).
pub fn collect(store: &mut Store, due: &HashSet<String>) {
    for _ in 0..10_000 {
        store.gc_pending = false;
        let actions = plan(store, due);
        if actions.is_empty() {
            break;
        }
        for a in actions {
            execute(store, a);
        }
    }
    store.gc_pending = false;
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether the kind an owner reference names is namespaced, or `None` if no served resource has
/// that group and kind.
fn owner_kind_namespaced(store: &Store, reference: &Value) -> Option<bool> {
    let api_version = reference.get("apiVersion").and_then(Value::as_str)?;
    let kind = reference.get("kind").and_then(Value::as_str)?;
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    store
        .resources
        .values()
        .find(|d| d.group == group && d.kind == kind && d.alias_of.is_none())
        .map(|d| d.namespaced)
}

fn plan(store: &Store, due: &HashSet<String>) -> Vec<Action> {
    // uid -> the owner as the garbage collector sees it.
    let mut owners: HashMap<&str, Owner<'_>> = HashMap::new();
    for table in store.objects.values() {
        for obj in table.values() {
            if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
                owners.insert(
                    uid,
                    Owner {
                        namespace: obj
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        kind: obj
                            .pointer("/kind")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        deleting: deleting(obj),
                        finalizers: strs(obj.pointer("/metadata/finalizers")),
                    },
                );
            }
        }
    }
    let mut actions = Vec::new();
    let mut referenced: HashSet<&str> = HashSet::new();
    let mut blocking: HashSet<&str> = HashSet::new();
    let mut terminating_ns: HashMap<&str, usize> = HashMap::new();
    let mut finalizable_ns: HashSet<&str> = HashSet::new();
    if let Some(table) = store.table("namespaces") {
        for obj in table.values().filter(|o| deleting(o)) {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !due.contains(name) {
                continue;
            }
            terminating_ns.insert(name, 0);
            let spec_pending = !strs(obj.pointer("/spec/finalizers")).is_empty();
            let meta_pending = !strs(obj.pointer("/metadata/finalizers")).is_empty();
            if spec_pending || !meta_pending {
                finalizable_ns.insert(name);
            }
        }
    }
    for (res, table) in &store.objects {
        for (key, obj) in table {
            if !key.0.is_empty()
                && let Some(count) = terminating_ns.get_mut(key.0.as_str())
            {
                *count += 1;
                if !deleting(obj) {
                    actions.push(Action::Delete(res.clone(), key.clone(), "Background"));
                    continue;
                }
            }
            let Some(refs) = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
            else {
                continue;
            };
            if refs.is_empty() {
                continue;
            }
            // Classify each reference as the real collector does: an owner that does not exist
            // (by uid, kind and namespace) is dangling; one being deleted in the foreground is
            // waiting; one being deleted with orphan propagation lets go of its dependents.
            let mut solid = 0;
            let mut waiting = 0;
            let mut dropped: Vec<&str> = Vec::new();
            // A reference the real collector cannot resolve keeps the object forever: its kind
            // is not served (no REST mapping), or a cluster-scoped object names a namespaced
            // owner (OwnerRefInvalidNamespace). Such objects are never collected.
            let unresolvable = refs.iter().any(|r| match owner_kind_namespaced(store, r) {
                None => true,
                Some(namespaced) => namespaced && key.0.is_empty(),
            });
            if unresolvable {
                continue;
            }
            for r in refs {
                let Some(uid) = r.get("uid").and_then(Value::as_str) else {
                    continue;
                };
                referenced.insert(uid);
                if r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                    blocking.insert(uid);
                }
                let owner = owners.get(uid).filter(|o| {
                    Some(o.kind) == r.get("kind").and_then(Value::as_str)
                        && (o.namespace.is_empty() || o.namespace == key.0)
                });
                match owner {
                    None => dropped.push(uid),
                    Some(o) if o.deleting && o.finalizers.contains(&"orphan") => {
                        actions.push(Action::RemoveOwnerRef(
                            res.clone(),
                            key.clone(),
                            uid.to_owned(),
                        ));
                    }
                    Some(o) if o.deleting && o.finalizers.contains(&"foregroundDeletion") => {
                        waiting += 1;
                        dropped.push(uid);
                    }
                    Some(_) => solid += 1,
                }
            }
            if solid > 0 {
                // Other owners remain: only the dangling and waiting references go.
                for uid in dropped {
                    actions.push(Action::RemoveOwnerRef(
                        res.clone(),
                        key.clone(),
                        uid.to_owned(),
                    ));
                }
            } else if !dropped.is_empty() && !deleting(obj) {
                let policy = if waiting > 0 {
                    "Foreground"
                } else {
                    "Background"
                };
                actions.push(Action::Delete(res.clone(), key.clone(), policy));
            }
        }
    }
    for (res, table) in &store.objects {
        for (key, obj) in table {
            if !deleting(obj) {
                continue;
            }
            let uid = obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let fins = strs(obj.pointer("/metadata/finalizers"));
            if fins.contains(&"orphan") && !referenced.contains(uid) {
                actions.push(Action::RemoveFinalizer(res.clone(), key.clone(), "orphan"));
            }
            if fins.contains(&"foregroundDeletion") && !blocking.contains(uid) {
                actions.push(Action::RemoveFinalizer(
                    res.clone(),
                    key.clone(),
                    "foregroundDeletion",
                ));
            }
            if fins.contains(&CRD_CLEANUP_FINALIZER)
                && let Ok(def) = crate::resources::from_crd(obj)
            {
                let cres = def.key();
                let left: Vec<(&ObjKey, &Arc<Value>)> = store
                    .table(&cres)
                    .map(|t| t.iter().collect())
                    .unwrap_or_default();
                if left.is_empty() {
                    actions.push(Action::RemoveFinalizer(
                        res.clone(),
                        key.clone(),
                        CRD_CLEANUP_FINALIZER,
                    ));
                } else {
                    for (k, o) in left {
                        if !deleting(o) {
                            actions.push(Action::Delete(cres.clone(), k.clone(), "Background"));
                        }
                    }
                }
            }
        }
    }
    for (ns, count) in terminating_ns {
        if count == 0 && finalizable_ns.contains(ns) {
            actions.push(Action::FinalizeNamespace(ns.to_owned()));
        }
    }
    actions
}

/// The collector's patches go through the field manager like any write: the fields they remove
/// leave every manager's set (an entry left empty is dropped). They only remove, so the
/// collector itself never becomes an owner.
fn track_removal(def: &ResourceDef, old: &Value, obj: &mut Value) {
    crate::sem::track_update(def, Some(old), obj, "kube-controller-manager", "");
}

fn execute(store: &mut Store, action: Action) {
    match action {
        Action::Delete(res, key, policy) => {
            if let Some(def) = store.resources.get(&res).cloned() {
                let opts = DeleteOpts {
                    propagation: Some(policy.to_owned()),
                    ..DeleteOpts::default()
                };
                let _ = api::delete_one(store, &def, &key, &opts);
            }
        }
        Action::RemoveOwnerRef(res, key, uid) => {
            let (Some(def), Some(obj)) = (
                store.resources.get(&res).cloned(),
                store.get(&res, &key).cloned(),
            ) else {
                return;
            };
            let old = obj.clone();
            let mut obj = (*obj).clone();
            if let Some(refs) = obj
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                if refs.is_empty()
                    && let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    m.remove("ownerReferences");
                }
            }
            track_removal(&def, &old, &mut obj);
            api::store_modified(store, &def, obj);
        }
        Action::RemoveFinalizer(res, key, fin) => {
            let (Some(def), Some(obj)) = (
                store.resources.get(&res).cloned(),
                store.get(&res, &key).cloned(),
            ) else {
                return;
            };
            let old = obj.clone();
            let mut obj = (*obj).clone();
            if let Some(f) = obj
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|x| x.as_str() != Some(fin));
                if f.is_empty()
                    && let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    m.remove("finalizers");
                }
            }
            track_removal(&def, &old, &mut obj);
            api::store_modified(store, &def, obj);
        }
        Action::FinalizeNamespace(name) => {
            let key = (String::new(), name);
            let (Some(def), Some(obj)) = (
                store.resources.get("namespaces").cloned(),
                store.get("namespaces", &key).cloned(),
            ) else {
                return;
            };
            let mut obj = (*obj).clone();
            let had = obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if had {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("finalizers".into(), Value::Array(Vec::new()));
                }
                api::store_modified(store, &def, obj);
            } else if obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                api::remove_object(store, &def, &key);
            }
        }
    }
}
