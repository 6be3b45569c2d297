//! Kubernetes Events (`events.k8s.io/v1`) of the konnector: what `kubectl describe` shows under
//! "Events" for a binding or a user's object.
//!
//! An [`EventSink`] is a cheap, cloneable handle. [`EventSink::publish`] never waits: it puts
//! the event into a bounded channel and returns; when the channel is full the event is dropped
//! and counted ([`EventSink::stats`]). A background task per cluster decides with
//! [`Correlator`] what each event becomes (a new Event, a series update of an identical one, a
//! combined Event, or nothing once the object used up its writes; see [`crate::plan::events`])
//! and writes it. So a failing object cannot flood the API server, and no reconcile ever waits
//! on Events. Only the leader writes Events, like every other write; a follower's are dropped.
//! Notes are redacted and cut to 1 KiB before they leave the process.
//!
//! There is one recorder per cluster, because an Event must live in the cluster of the object
//! it is about: bindings' Events go to the binding cluster, user objects' Events to the app
//! cluster (in control-plane mode these differ). The engine starts them and registers them in
//! the [`EventSinks`] of its [`WatchHub`](super::WatchHub), under the hub's cluster ids
//! ([`BINDING_CLUSTER`], [`APP_CLUSTER`]); everything that holds the hub reaches them with
//! `hub.events()`:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sync_engine::runtime::{SharedWatch, WatchHub};
//! # use sync_engine::runtime::status_writer::BindingKey;
//! # use kube::api::DynamicObject;
//! # use kube::core::ApiResource;
//! use konnector_api::events::{actions, reasons};
//! use sync_engine::runtime::events::EventType;
//! # fn example(hub: &WatchHub, bindings: &SharedWatch, key: &BindingKey,
//! #            resource: &ApiResource, obj: &DynamicObject, error: &kube::Error) {
//! // On a binding (its uid is taken from the bindings cache, for `kubectl describe`):
//! hub.events().binding().binding(
//!     bindings,
//!     key,
//!     EventType::Warning,
//!     reasons::SCHEMA_OUT_OF_SYNC,
//!     actions::INSTALL_CRD,
//!     format!("CustomResourceDefinition {} does not match the export's schema", key.1),
//! );
//! // On a user's object in the app cluster:
//! hub.events().app().object(
//!     resource,
//!     obj,
//!     EventType::Warning,
//!     reasons::SYNC_FAILED,
//!     actions::SYNC,
//!     format!("cannot be synced to the provider: {error}"),
//! );
//! # }
//! ```
//!
//! RBAC: `create` and `patch` on `events.k8s.io` `events` in the namespaces of those objects
//! (the chart grants them). Without them the recorder logs a warning at most once a minute and
//! carries on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use konnector_api::events::REPORTING_CONTROLLER;
use konnector_api::v1alpha1::APIServiceBinding;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::json;
use tokio::sync::mpsc;

pub use crate::plan::events::EventType;
use crate::plan::events::{
    Correlator, CorrelatorConfig, Decision, EventRecord, REASON_LIMIT, Regarding, event_name,
    reporting_instance, sanitize_note, truncate,
};

use super::cluster::Cluster;
use super::leadership::Leadership;
use super::status_writer::BindingKey;
use super::watch::SharedWatch;

/// Hub id of the binding cluster (APIServiceBindings; in control-plane mode also the provider).
pub const BINDING_CLUSTER: &str = "binding";
/// Hub id of the app cluster (CRDs of bound APIs, user objects).
pub const APP_CLUSTER: &str = "app";

/// How many events may wait for the writer before new ones are dropped.
const CHANNEL_CAPACITY: usize = 1024;
/// How long one Event write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning line per this interval about failed Event writes.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What a recorder did with the events it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events handed to [`EventSink::publish`].
    pub published: u64,
    /// New Events created.
    pub created: u64,
    /// Series updates of existing Events.
    pub patched: u64,
    /// Dropped because the channel to the writer was full.
    pub dropped_full: u64,
    /// Dropped by the spam filter (the object used up its writes).
    pub dropped_spam: u64,
    /// Dropped because this replica does not lead.
    pub dropped_not_leading: u64,
    /// Writes the API server refused or that failed.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    created: AtomicU64,
    patched: AtomicU64,
    dropped_full: AtomicU64,
    dropped_spam: AtomicU64,
    dropped_not_leading: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EventStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EventStats {
            published: get(&self.published),
            created: get(&self.created),
            patched: get(&self.patched),
            dropped_full: get(&self.dropped_full),
            dropped_spam: get(&self.dropped_spam),
            dropped_not_leading: get(&self.dropped_not_leading),
            failed: get(&self.failed),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One event on its way to the writer.
#[derive(Debug)]
struct Published {
    regarding: ObjectReference,
    type_: EventType,
    reason: String,
    action: String,
    note: String,
    at: Instant,
    wall: Timestamp,
}

/// Settings of a recorder.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Aggregation, series and spam filter numbers (client-go's by default).
    pub correlator: CorrelatorConfig,
    /// `reportingInstance` (default: `POD_NAME`, else `HOSTNAME`, else `konnector`).
    pub reporting_instance: String,
    /// Events that may wait for the writer.
    pub capacity: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            correlator: CorrelatorConfig::default(),
            reporting_instance: reporting_instance(
                std::env::var("POD_NAME").ok(),
                std::env::var("HOSTNAME").ok(),
            ),
            capacity: CHANNEL_CAPACITY,
        }
    }
}

/// Records Events in one cluster; cheap to clone. See the module documentation.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Published>>,
    counters: Arc<Counters>,
}

impl EventSink {
    /// A recorder writing to `cluster`'s `events.k8s.io/v1` Events while `leadership` leads,
    /// with client-go's numbers. Spawns its writer, so call it inside a Tokio runtime; the
    /// writer ends when the last clone of the sink is dropped.
    pub fn start(cluster: Cluster, leadership: Leadership) -> Self {
        Self::start_with(cluster, leadership, RecorderOptions::default())
    }

    /// Like [`EventSink::start`], with `options`.
    pub fn start_with(cluster: Cluster, leadership: Leadership, options: RecorderOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            cluster,
            leadership,
            counters: counters.clone(),
            correlator: Correlator::new(options.correlator),
            instance: options.reporting_instance,
            last_nanos: 0,
            failures: FailureLog::default(),
        };
        tokio::spawn(writer.run(rx));
        EventSink {
            tx: Some(tx),
            counters,
        }
    }

    /// A sink that records nothing (for a cluster without a recorder).
    pub fn disabled() -> Self {
        EventSink {
            tx: None,
            counters: Arc::new(Counters::default()),
        }
    }

    /// Records an event about `regarding` (its uid makes it show in `kubectl describe`). Never
    /// waits: a full channel drops the event.
    pub fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let Some(tx) = &self.tx else {
            return;
        };
        inc(&self.counters.published);
        let event = Published {
            regarding,
            type_,
            reason: reason.to_string(),
            action: action.to_string(),
            note: note.into(),
            at: Instant::now(),
            wall: Timestamp::now(),
        };
        if tx.try_send(event).is_err() {
            inc(&self.counters.dropped_full);
        }
    }

    /// Records an event about `obj`, an object of `resource` (whose apiVersion and kind are
    /// used, because objects read from lists may lack them).
    pub fn object(
        &self,
        resource: &ApiResource,
        obj: &DynamicObject,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let regarding = ObjectReference {
            api_version: Some(resource.api_version.clone()),
            kind: Some(resource.kind.clone()),
            namespace: obj.metadata.namespace.clone(),
            name: obj.metadata.name.clone(),
            uid: obj.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        self.publish(regarding, type_, reason, action, note);
    }

    /// Records an event about a typed object (e.g. an [`APIServiceBinding`]).
    pub fn resource<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) where
        K: kube::Resource<DynamicType = ()>,
    {
        self.publish(obj.object_ref(&()), type_, reason, action, note);
    }

    /// Records an event about the APIServiceBinding `key`, with its uid from `bindings` (the
    /// binding cluster's binding watch) when it is cached.
    pub fn binding(
        &self,
        bindings: &SharedWatch,
        key: &BindingKey,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let uid = bindings
            .get(Some(&key.0), &key.1)
            .and_then(|b| b.metadata.uid.clone());
        self.publish(binding_reference(key, uid), type_, reason, action, note);
    }

    /// What this recorder did so far.
    pub fn stats(&self) -> EventStats {
        self.counters.snapshot()
    }
}

/// The `regarding` reference of APIServiceBinding `key`.
pub fn binding_reference(key: &BindingKey, uid: Option<String>) -> ObjectReference {
    let resource = ApiResource::erase::<APIServiceBinding>(&());
    ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(resource.kind),
        namespace: Some(key.0.clone()).filter(|ns| !ns.is_empty()),
        name: Some(key.1.clone()),
        uid,
        ..ObjectReference::default()
    }
}

/// The recorders of the clusters an engine talks to, by hub cluster id.
#[derive(Debug, Default)]
pub struct EventSinks {
    sinks: RwLock<HashMap<String, EventSink>>,
}

impl EventSinks {
    /// Registers the recorder of `cluster` (a hub cluster id), replacing any other.
    pub fn register(&self, cluster: &str, sink: EventSink) {
        let mut sinks = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        sinks.insert(cluster.to_string(), sink);
    }

    /// The recorder of `cluster`, registered with `start` unless one is already.
    pub fn get_or_register(&self, cluster: &str, start: impl FnOnce() -> EventSink) -> EventSink {
        let mut sinks = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        sinks
            .entry(cluster.to_string())
            .or_insert_with(start)
            .clone()
    }

    /// The recorder of `cluster`; one that records nothing when none is registered.
    pub fn get(&self, cluster: &str) -> EventSink {
        let sinks = self.sinks.read().unwrap_or_else(|e| e.into_inner());
        sinks
            .get(cluster)
            .cloned()
            .unwrap_or_else(EventSink::disabled)
    }

    /// The recorder of the binding cluster: for Events about APIServiceBindings.
    pub fn binding(&self) -> EventSink {
        self.get(BINDING_CLUSTER)
    }

    /// The recorder of the app cluster: for Events about user objects and CRDs there.
    pub fn app(&self) -> EventSink {
        self.get(APP_CLUSTER)
    }
}

/// Logs failed writes at most once per [`LOG_INTERVAL`], with how many were not logged.
#[derive(Debug, Default)]
struct FailureLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    fn failed(&mut self, record: &EventRecord, error: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let r = &record.regarding;
        tracing::warn!(
            kind = %r.kind,
            namespace = r.namespace.as_deref().unwrap_or_default(),
            name = %r.name,
            reason = %record.reason,
            error = %error,
            not_logged_since_last = self.suppressed,
            "cannot record event"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// At most this many events are held while not leading.
const HOLD_MAX: usize = 256;
/// Held events older than this when leadership comes are dropped.
const HOLD_FOR: Duration = Duration::from_secs(60);

/// The background task of one recorder.
struct Writer {
    cluster: Cluster,
    leadership: Leadership,
    counters: Arc<Counters>,
    correlator: Correlator,
    instance: String,
    /// Event names carry the time in nanoseconds; kept strictly increasing so that two Events
    /// about one object never get the same name.
    last_nanos: u64,
    failures: FailureLog,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Published>) {
        // Events published while this replica does not lead (yet): the engine reports what it
        // sees from the start, while the lease is often taken a moment later, and it reports a
        // change only once. Kept for a while, written if leadership comes in time.
        let mut held: VecDeque<Published> = VecDeque::new();
        let leadership = self.leadership.clone();
        loop {
            tokio::select! {
                p = rx.recv() => match p {
                    None => break,
                    Some(p) if self.leadership.is_leading() => {
                        self.flush(&mut held).await;
                        self.record(p).await;
                    }
                    Some(p) => {
                        if held.len() >= HOLD_MAX {
                            held.pop_front();
                            inc(&self.counters.dropped_not_leading);
                        }
                        held.push_back(p);
                    }
                },
                () = leadership.leading(), if !held.is_empty() => self.flush(&mut held).await,
            }
        }
    }

    /// Writes the held events that are recent enough; older ones are dropped (a follower that
    /// takes over much later does not replay what it saw long ago).
    async fn flush(&mut self, held: &mut VecDeque<Published>) {
        while let Some(p) = held.pop_front() {
            if p.at.elapsed() <= HOLD_FOR {
                self.record(p).await;
            } else {
                inc(&self.counters.dropped_not_leading);
            }
        }
    }

    async fn record(&mut self, p: Published) {
        let record = EventRecord {
            regarding: Regarding::from_reference(&p.regarding),
            type_: p.type_,
            reason: truncate(&p.reason, REASON_LIMIT),
            action: truncate(&p.action, REASON_LIMIT),
            note: sanitize_note(&p.note),
        };
        match self.correlator.observe(record.clone(), p.at) {
            Decision::Drop => inc(&self.counters.dropped_spam),
            Decision::Create { key, note } => match self.create(&record, note, p.wall).await {
                Ok((namespace, name)) => self.correlator.created(&key, &namespace, &name),
                Err(()) => self.correlator.forget(&key),
            },
            Decision::Patch {
                key,
                namespace,
                name,
                count,
                note,
            } => {
                let api: Api<Event> = Api::namespaced(self.cluster.client(), &namespace);
                let patch = json!({"series": EventSeries {
                    count,
                    last_observed_time: MicroTime(p.wall),
                }});
                let sent = tokio::time::timeout(
                    WRITE_TIMEOUT,
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await;
                match sent {
                    Ok(Ok(_)) => inc(&self.counters.patched),
                    // Gone (Events expire after an hour): start a new one.
                    Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
                        match self.create(&record, note, p.wall).await {
                            Ok((namespace, name)) => {
                                self.correlator.created(&key, &namespace, &name);
                            }
                            Err(()) => self.correlator.forget(&key),
                        }
                    }
                    Ok(Err(e)) => {
                        inc(&self.counters.failed);
                        self.failures.failed(&record, &e.to_string());
                    }
                    Err(_) => {
                        inc(&self.counters.failed);
                        self.failures.failed(&record, "timed out");
                    }
                }
            }
        }
    }

    /// The Event for `record` with `note`, named for now.
    fn event(&mut self, record: &EventRecord, note: String, wall: Timestamp) -> Event {
        let nanos = u64::try_from(wall.as_nanosecond()).unwrap_or_default();
        self.last_nanos = nanos.max(self.last_nanos + 1);
        let r = &record.regarding;
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&r.name, self.last_nanos)),
                namespace: Some(r.event_namespace().to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(wall)),
            action: Some(record.action.clone()),
            reason: Some(record.reason.clone()),
            note: Some(note).filter(|n| !n.is_empty()),
            regarding: Some(r.to_reference()),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(record.type_.as_str().to_string()),
            ..Event::default()
        }
    }

    /// Creates a new Event; `(namespace, name)` when the server took it.
    async fn create(
        &mut self,
        record: &EventRecord,
        note: String,
        wall: Timestamp,
    ) -> Result<(String, String), ()> {
        let event = self.event(record, note, wall);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.cluster.client(), &namespace);
        let sent =
            tokio::time::timeout(WRITE_TIMEOUT, api.create(&PostParams::default(), &event)).await;
        match sent {
            Ok(Ok(_)) => {
                inc(&self.counters.created);
                Ok((namespace, name))
            }
            Ok(Err(e)) => {
                inc(&self.counters.failed);
                self.failures.failed(record, &e.to_string());
                Err(())
            }
            Err(_) => {
                inc(&self.counters.failed);
                self.failures.failed(record, "timed out");
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_reference_names_the_binding() {
        let r = binding_reference(&("klutch-bind".into(), "mangodbs.mangodb.com".into()), None);
        assert_eq!(
            r.api_version.as_deref(),
            Some("klutch.anynines.com/v1alpha1")
        );
        assert_eq!(r.kind.as_deref(), Some("APIServiceBinding"));
        assert_eq!(r.namespace.as_deref(), Some("klutch-bind"));
        assert_eq!(r.name.as_deref(), Some("mangodbs.mangodb.com"));
    }

    #[test]
    fn a_disabled_sink_and_an_unknown_cluster_record_nothing() {
        let sinks = EventSinks::default();
        let sink = sinks.get("nowhere");
        sink.publish(
            ObjectReference::default(),
            EventType::Normal,
            "Connected",
            "Connect",
            "x",
        );
        assert_eq!(sink.stats(), EventStats::default());
    }

    #[tokio::test]
    async fn a_full_channel_drops_instead_of_blocking() {
        // A client that is never reached: the writer waits on the leadership gate... which is
        // closed, so nothing is written and the channel fills up.
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let leadership = Leadership::from_receiver(rx);
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let sink = EventSink::start_with(
            Cluster::Fixed(client),
            leadership,
            RecorderOptions {
                capacity: 4,
                ..RecorderOptions::default()
            },
        );
        for i in 0..1000 {
            sink.publish(
                binding_reference(&("ns".into(), "b".into()), None),
                EventType::Warning,
                "SyncFailed",
                "Sync",
                format!("error {i}"),
            );
        }
        let stats = sink.stats();
        assert_eq!(stats.published, 1000);
        assert!(stats.dropped_full >= 990, "{stats:?}");
    }
}
