//! The in-memory storage: one map per resource under a single lock, a global resourceVersion and
//! a bounded history of events from which watches are served.
//!
//! Every write happens under the store's write lock and publishes its event on a broadcast
//! channel *while the lock is held*, so a watcher that subscribes under the read lock sees
//! exactly the events after the resourceVersion it observed: no gaps, no duplicates. Each event
//! carries its object already serialized, so fanning out to many watchers never re-serializes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::resources::{ResourceDef, ResourceRef, builtins};

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

/// One change of one object.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// `plural.group` of the object.
    pub res: Arc<str>,
    /// The kind of change.
    pub etype: EventType,
    /// Namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// The object after the change (for deletions: the last state, with the deletion's RV).
    pub object: Arc<Value>,
    /// The object before the change (for selector transitions and exact-RV lists).
    pub old: Option<Arc<Value>>,
    /// `object` serialized once.
    pub json: Bytes,
}

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);

/// Objects of one resource, ordered by key (list order and continue tokens depend on it).
pub type Table = BTreeMap<ObjKey, Arc<Value>>;

/// What the server keeps of a ServiceAccount token it issued (a `TokenRequest`), to
/// authenticate it later: the real server verifies the JWT's signature and then these claims
/// against the live objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundToken {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub name: String,
    /// The ServiceAccount's uid when the token was issued.
    pub uid: String,
    /// The object the token is bound to: (`plural`, name, uid), `secrets` or `pods`.
    pub bound: Option<(String, String, String)>,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
    /// The token's unique id (`jti` claim).
    pub jti: String,
}

/// The whole state of one server.
#[derive(Debug)]
pub struct Store {
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Served resources by `plural.group`.
    pub resources: BTreeMap<String, ResourceRef>,
    /// Objects by `plural.group`.
    pub objects: HashMap<String, Table>,
    /// Retained events, oldest first.
    pub history: VecDeque<Arc<Event>>,
    /// Every event with an RV greater than this is in `history`.
    pub history_start: u64,
    /// The revision the (simulated) etcd was compacted to: exact reads before it expire.
    pub compacted: u64,
    /// How many events to retain.
    pub history_limit: usize,
    /// Live fan-out of events.
    pub tx: broadcast::Sender<Arc<Event>>,
    /// Set when the garbage collector has work (a deletion or a new deletionTimestamp).
    pub gc_pending: bool,
    /// Set when a ClusterRole changed: the aggregation controller has work.
    pub aggregation_pending: bool,
    /// CRDs (as stored) whose update changed `spec` or accepted names: their storage is to be
    /// replaced (see [`crate::crd_switch::schedule`]).
    pub crd_updates: Vec<Arc<Value>>,
    /// etcd's request size limit (`--max-request-bytes`): larger objects are refused with the
    /// real server's 500 `etcdserver: request is too large`. `None`: no limit.
    pub max_object_bytes: Option<usize>,
    /// ServiceAccount tokens issued by `TokenRequest`, by token.
    pub tokens: HashMap<String, BoundToken>,
}

impl Store {
    /// An empty store serving the built-in resources.
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(8192);
        let mut store = Self {
            rv: 0,
            resources: BTreeMap::new(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_start: 0,
            compacted: 0,
            history_limit: history_limit.max(1),
            tx,
            gc_pending: false,
            aggregation_pending: false,
            crd_updates: Vec::new(),
            max_object_bytes: None,
            tokens: HashMap::new(),
        };
        for def in builtins() {
            store.register(def);
        }
        store
    }

    /// Serves a resource (or replaces its definition, keeping its objects).
    pub fn register(&mut self, def: ResourceDef) {
        let key = def.key();
        if def.alias_of.is_none() {
            self.objects.entry(key.clone()).or_default();
        }
        self.resources.insert(key, Arc::new(def));
    }

    /// Stops serving a resource; its objects must already be gone.
    pub fn unregister(&mut self, key: &str) {
        self.resources.remove(key);
        self.objects.remove(key);
    }

    /// Finds a served resource by group, version and plural name.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceRef> {
        let def = self
            .resources
            .get(&crate::resources::resource_key(plural, group))?;
        def.version(version)?;
        Some(def.clone())
    }

    /// The object at `key` of resource `res`.
    pub fn get(&self, res: &str, key: &ObjKey) -> Option<&Arc<Value>> {
        self.objects.get(res)?.get(key)
    }

    /// The objects of resource `res`.
    pub fn table(&self, res: &str) -> Option<&Table> {
        self.objects.get(res)
    }

    /// Hands out the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` (whose resourceVersion must already be set to a fresh RV) and publishes the
    /// event.
    pub fn put(&mut self, def: &ResourceDef, rv: u64, obj: Value, etype: EventType) -> Arc<Value> {
        let key = obj_key(&obj);
        let res = def.key();
        let obj = Arc::new(obj);
        let old = self
            .objects
            .entry(res.clone())
            .or_default()
            .insert(key.clone(), obj.clone());
        self.publish(res, rv, etype, key.0, obj.clone(), old);
        obj
    }

    /// Removes the object at `key`, publishing a DELETED event carrying a fresh RV.
    pub fn remove(&mut self, def: &ResourceDef, key: &ObjKey) -> Option<Arc<Value>> {
        let res = def.key();
        let old = self.objects.get_mut(&res)?.remove(key)?;
        let rv = self.next_rv();
        let mut last = (*old).clone();
        set_rv(&mut last, rv);
        let last = Arc::new(last);
        self.publish(
            res,
            rv,
            EventType::Deleted,
            key.0.clone(),
            last.clone(),
            Some(old),
        );
        self.gc_pending = true;
        Some(last)
    }

    fn publish(
        &mut self,
        res: String,
        rv: u64,
        etype: EventType,
        namespace: String,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        self.aggregation_pending |= res == crate::resources::CLUSTERROLES;
        let json = Bytes::from(serde_json::to_vec(&*object).unwrap_or_default());
        let event = Arc::new(Event {
            rv,
            res: Arc::from(res.as_str()),
            etype,
            namespace,
            object,
            old,
            json,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.history_start = e.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(event);
    }

    /// A detached copy for `dryRun=All` requests: same objects and resources, no history and no
    /// watchers, so nothing done to it is visible.
    pub fn scratch(&self) -> Self {
        let (tx, _) = broadcast::channel(1);
        Self {
            rv: self.rv,
            resources: self.resources.clone(),
            objects: self.objects.clone(),
            history: VecDeque::new(),
            history_start: self.rv,
            history_limit: 1,
            tx,
            gc_pending: false,
            aggregation_pending: false,
            crd_updates: Vec::new(),
            max_object_bytes: self.max_object_bytes,
            tokens: self.tokens.clone(),
            compacted: self.compacted,
        }
    }

    /// Forgets all history: watches and exact lists from older RVs then get `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.history_start = self.rv;
    }

    /// etcd compaction to a revision: exact reads (lists at a resourceVersion, continue
    /// tokens) before it expire, while watches are still served from the history, as a real
    /// server serves them from its watch cache.
    pub fn compact_to(&mut self, rv: u64) {
        self.compacted = self.compacted.max(rv.min(self.rv));
    }

    /// The objects of `res` as they were at `rv`, reconstructed by undoing later events; `None`
    /// if that RV is no longer covered by the history.
    pub fn snapshot_at(&self, res: &str, rv: u64) -> Option<Table> {
        if rv < self.history_start || rv < self.compacted {
            return None;
        }
        let mut table = self.objects.get(res).cloned().unwrap_or_default();
        for e in self.history.iter().rev() {
            if e.rv <= rv {
                break;
            }
            if &*e.res != res {
                continue;
            }
            let key = obj_key(&e.object);
            match (e.etype, &e.old) {
                (EventType::Added, _) => {
                    table.remove(&key);
                }
                (_, Some(old)) => {
                    table.insert(key, old.clone());
                }
                (_, None) => {}
            }
        }
        Some(table)
    }
}

/// `(namespace, name)` of an object.
pub fn obj_key(obj: &Value) -> ObjKey {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// Sets `metadata.resourceVersion`.
pub fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configmap(store: &mut Store, name: &str) -> u64 {
        let def = builtins()
            .into_iter()
            .find(|d| d.plural == "configmaps")
            .expect("configmaps are built in");
        let rv = store.next_rv();
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}});
        set_rv(&mut obj, rv);
        store.put(&def, rv, obj, EventType::Added);
        rv
    }

    #[test]
    fn compaction_expires_exact_reads_but_keeps_watch_history() {
        let mut store = Store::new(100);
        let first = configmap(&mut store, "a");
        let second = configmap(&mut store, "b");
        let res = "configmaps";
        assert!(store.snapshot_at(res, first).is_some());
        store.compact_to(second);
        // etcd refuses reads before the compacted revision, not at it.
        assert!(store.snapshot_at(res, first).is_none());
        assert!(store.snapshot_at(res, second).is_some());
        // The watch history (the real server's watch cache) is untouched.
        assert_eq!(store.history_start, 0);
        assert_eq!(store.history.len(), 2);
        // Compaction never goes backwards nor past the current revision.
        store.compact_to(first);
        assert_eq!(store.compacted, second);
        store.compact_to(u64::MAX);
        assert_eq!(store.compacted, store.rv);
    }
}
