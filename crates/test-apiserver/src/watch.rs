//! WATCH: initial synthetic ADDED events (or replay from history), live events, selector
//! transitions (an object leaving the selector is a DELETED event), bookmarks, timeouts and
//! `410 Expired` for resourceVersions older than the retained history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::api::Selectors;
use crate::error::{ApiError, ApiResult, Cause};
use crate::resources::ResourceRef;
use crate::shared::Shared;
use crate::store::{Event, EventType};

/// Events to deliver before switching to the live channel.
struct Start {
    backlog: Vec<Arc<Event>>,
    synthetic: Vec<Value>,
    initial_end: Option<u64>,
    expired: Option<Bytes>,
    last_rv: u64,
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
}

struct Watcher {
    shared: Arc<Shared>,
    def: ResourceRef,
    res: String,
    api_version: String,
    namespace: String,
    sel: Selectors,
    bookmarks: bool,
    last_rv: u64,
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    drop_rx: tokio::sync::watch::Receiver<u64>,
    /// Set when the custom resource storage the watch was opened on is torn down.
    destroyed: Option<tokio::sync::watch::Receiver<bool>>,
    deadline: tokio::time::Instant,
    pending: Option<Vec<Bytes>>,
    done: bool,
    /// `Some(includeObject)` when the client asked for Table output (kubectl `get -w`).
    table: Option<String>,
    /// Serve `events.k8s.io/v1` Events converted from the stored core Events.
    alias: bool,
    /// Whether the Table column definitions went out with an earlier event.
    headers_sent: std::cell::Cell<bool>,
}

fn line(etype: &str, object_json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object_json.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(etype.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(object_json);
    b.put_slice(b"}\n");
    b.freeze()
}

fn error_line(err: &ApiError) -> Bytes {
    line(
        "ERROR",
        &serde_json::to_vec(&err.to_status()).unwrap_or_default(),
    )
}

/// The real server's `validateWatchOptions`: `sendInitialEvents` requires
/// `resourceVersionMatch=NotOlderThan`, which in turn is only allowed with `sendInitialEvents`.
fn validate_watch_options(query: &HashMap<String, String>) -> ApiResult<()> {
    let forbidden = |field: &str, message: &str| Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {message}"),
        field: field.into(),
    };
    let rv_match = query
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or_default();
    let send_initial = query.contains_key("sendInitialEvents");
    let mut causes = Vec::new();
    if send_initial && rv_match != "NotOlderThan" {
        causes.push(forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if !rv_match.is_empty() {
        if !send_initial {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if rv_match != "NotOlderThan" {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: \"{rv_match}\": supported values: \"NotOlderThan\""
                ),
                field: "resourceVersionMatch".into(),
            });
        }
        if query.get("continue").is_some_and(|c| !c.is_empty()) {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("ListOptions", "meta.k8s.io", "", causes))
    }
}

/// Starts a watch and returns the stream of its chunks (each one or more event lines), which the
/// HTTP front end sends as a chunked response body.
pub fn watch(
    shared: Arc<Shared>,
    def: ResourceRef,
    version: &str,
    namespace: &str,
    query: &HashMap<String, String>,
    table: Option<String>,
    alias: bool,
) -> ApiResult<BoxStream<'static, Bytes>> {
    validate_watch_options(query)?;
    let sel = Selectors::parse(query, &def, version)?;
    let api_version = def.api_version(version);
    let res = def.key();
    let rv_param = query.get("resourceVersion").cloned().unwrap_or_default();
    let send_initial_param = query.get("sendInitialEvents").map(|v| v == "true");
    let send_initial = send_initial_param == Some(true);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let start = {
        let store = shared
            .store
            .read()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        let rx = store.tx.subscribe();
        let matches_ns = |o: &Value, ns: &str| {
            namespace.is_empty()
                || o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
        };
        // `sendInitialEvents=false` without a resourceVersion starts at "now" with no ADDED events.
        if send_initial
            || (send_initial_param.is_none() && (rv_param.is_empty() || rv_param == "0"))
        {
            let mut synthetic = Vec::new();
            if let Some(table) = store.table(&res) {
                for (key, obj) in table {
                    if !namespace.is_empty() && key.0 != namespace {
                        continue;
                    }
                    if matches_ns(obj, namespace) && sel.matches(obj) {
                        synthetic.push(crate::api::served(&def, obj, &api_version));
                    }
                }
            }
            Start {
                backlog: Vec::new(),
                synthetic,
                // The initial-events-end marker is a bookmark, sent only to clients that allow them.
                initial_end: (send_initial && bookmarks).then_some(store.rv),
                expired: None,
                last_rv: store.rv,
                rx,
            }
        } else {
            // With `sendInitialEvents=false`, no resourceVersion (or `0`) means "from now".
            let rv = match rv_param.as_str() {
                "" | "0" => store.rv,
                _ => rv_param.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid value: \"{rv_param}\": resourceVersion must be a number"
                    ))
                })?,
            };
            if rv > store.rv {
                // The real watch cache waits briefly for a future RV, then gives up like this.
                Start {
                    backlog: Vec::new(),
                    synthetic: Vec::new(),
                    initial_end: None,
                    expired: Some(error_line(&crate::api::too_large(rv, store.rv))),
                    last_rv: rv,
                    rx,
                }
            } else if rv < store.history_start {
                Start {
                    backlog: Vec::new(),
                    synthetic: Vec::new(),
                    initial_end: None,
                    expired: Some(error_line(&ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        store.history_start + 1
                    )))),
                    last_rv: rv,
                    rx,
                }
            } else {
                let backlog = store
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && *e.res == *res)
                    .cloned()
                    .collect();
                Start {
                    backlog,
                    synthetic: Vec::new(),
                    initial_end: None,
                    expired: None,
                    last_rv: rv,
                    rx,
                }
            }
        }
    };
    let mut watcher = Watcher {
        drop_rx: shared.drop_watches.subscribe(),
        destroyed: def.storage.as_ref().map(|s| s.subscribe()),
        shared,
        def,
        res,
        api_version,
        namespace: namespace.to_owned(),
        sel,
        bookmarks,
        last_rv: start.last_rv,
        rx: start.rx,
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        pending: None,
        done: false,
        table,
        alias,
        headers_sent: std::cell::Cell::new(false),
    };
    let mut first: Vec<Bytes> = start
        .synthetic
        .iter()
        .map(|o| watcher.encode("ADDED", o))
        .collect();
    if let Some(rv) = start.initial_end {
        let bm = json!({
            "kind": watcher.def.kind, "apiVersion": watcher.api_version,
            "metadata": {"resourceVersion": rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}},
        });
        first.push(line(
            "BOOKMARK",
            &serde_json::to_vec(&bm).unwrap_or_default(),
        ));
    }
    if let Some(expired) = start.expired {
        first.push(expired);
        watcher.done = true;
    } else {
        for e in &start.backlog {
            if let Some(l) = watcher.render(e) {
                first.push(l);
            }
            watcher.last_rv = e.rv;
        }
    }
    watcher.pending = Some(first);
    Ok(futures::stream::unfold(watcher, |mut w| async move {
        let chunk = w.next_chunk().await?;
        Some((chunk, w))
    })
    .boxed())
}

/// Resolves once the storage behind `destroyed` is torn down; never without one.
async fn torn_down(destroyed: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(rx) = destroyed
        && rx.wait_for(|d| *d).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

fn versioned(obj: &Value, api_version: &str) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
    }
    o
}

impl Watcher {
    /// The wire line of `e` for this watcher, or `None` if it does not concern it.
    fn render(&self, e: &Event) -> Option<Bytes> {
        if *e.res != *self.res || (!self.namespace.is_empty() && e.namespace != self.namespace) {
            return None;
        }
        let now = self.sel.matches(&e.object);
        let before = e.old.as_ref().is_some_and(|o| self.sel.matches(o));
        let (etype, obj): (&str, Option<Value>) = match e.etype {
            EventType::Added if now => ("ADDED", None),
            EventType::Deleted if before || now => ("DELETED", None),
            EventType::Modified if now && before => ("MODIFIED", None),
            EventType::Modified if now => ("ADDED", None),
            EventType::Modified if before => {
                // Leaving the selector: the previous state with the new resourceVersion.
                let mut old = e.old.as_deref().cloned().unwrap_or(Value::Null);
                crate::store::set_rv(&mut old, e.rv);
                ("DELETED", Some(old))
            }
            _ => return None,
        };
        // The storage the watch was opened on reads the object through its own schema.
        let obj = match obj {
            Some(o) => Some(self.def.read(&o).unwrap_or(o)),
            None => self.def.read(&e.object),
        };
        let stored_av = e.object.get("apiVersion").and_then(Value::as_str);
        if self.table.is_some() || self.alias {
            return Some(self.encode(etype, obj.as_ref().unwrap_or(&e.object)));
        }
        match obj {
            Some(o) => Some(line(
                etype,
                &serde_json::to_vec(&versioned(&o, &self.api_version)).unwrap_or_default(),
            )),
            None if stored_av == Some(self.api_version.as_str()) => Some(line(etype, &e.json)),
            None => Some(line(
                etype,
                &serde_json::to_vec(&versioned(&e.object, &self.api_version)).unwrap_or_default(),
            )),
        }
    }

    /// Encodes one event for this watcher (as a one-row Table if asked for).
    fn encode(&self, etype: &str, obj: &Value) -> Bytes {
        let obj = versioned(obj, &self.api_version);
        let obj = if self.alias {
            crate::events::to_new(&obj)
        } else {
            obj
        };
        let body = match &self.table {
            Some(include) => {
                let printer = self
                    .def
                    .version(self.api_version.rsplit('/').next().unwrap_or_default())
                    .and_then(|v| v.printer_columns.as_ref());
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                let headers = !self.headers_sent.replace(true);
                crate::table::table(
                    &self.def,
                    printer,
                    std::slice::from_ref(&obj),
                    json!({"resourceVersion": rv}),
                    include,
                    headers,
                )
            }
            None => obj,
        };
        line(etype, &serde_json::to_vec(&body).unwrap_or_default())
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        let bm = json!({"kind": self.def.kind, "apiVersion": self.api_version, "metadata": {"resourceVersion": rv.to_string()}});
        line("BOOKMARK", &serde_json::to_vec(&bm).unwrap_or_default())
    }

    /// Appends what `e` means to this watcher to `out`.
    fn push(&mut self, e: &Event, out: &mut BytesMut) {
        if e.rv <= self.last_rv {
            return;
        }
        self.last_rv = e.rv;
        // The resource stopped being served: the real server closes its watches.
        if self.def.custom
            && e.etype == EventType::Deleted
            && &*e.res == "customresourcedefinitions.apiextensions.k8s.io"
            && e.object.pointer("/metadata/name").and_then(Value::as_str) == Some(self.res.as_str())
        {
            self.done = true;
            return;
        }
        if let Some(l) = self.render(e) {
            out.put_slice(&l);
        }
    }

    /// Recovers from a lagging receiver by replaying history; `false` if it is gone.
    fn catch_up(&mut self, out: &mut BytesMut) -> bool {
        let shared = self.shared.clone();
        let Ok(store) = shared.store.read() else {
            return false;
        };
        if self.last_rv < store.history_start {
            out.put_slice(&error_line(&ApiError::expired(format!(
                "too old resource version: {} ({})",
                self.last_rv,
                store.history_start + 1
            ))));
            return false;
        }
        let events: Vec<Arc<Event>> = store
            .history
            .iter()
            .filter(|e| e.rv > self.last_rv)
            .cloned()
            .collect();
        drop(store);
        for e in events {
            self.push(&e, out);
        }
        true
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.pending.take()
            && !first.is_empty()
        {
            let mut b = BytesMut::new();
            for l in first {
                b.put_slice(&l);
            }
            return Some(b.freeze());
        }
        if self.done {
            return None;
        }
        let interval = self.shared.options.bookmark_interval;
        loop {
            let mut out = BytesMut::new();
            tokio::select! {
                biased;
                _ = self.drop_rx.changed() => return None,
                // The storage is gone: the stream just ends, as on a real server.
                _ = torn_down(&mut self.destroyed) => return None,
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                    if self.bookmarks {
                        let rv = self.drain_for_bookmark(&mut out);
                        out.put_slice(&self.bookmark(rv));
                        return Some(out.freeze());
                    }
                    return None;
                }
                r = self.rx.recv() => match r {
                    Ok(e) => {
                        self.push(&e, &mut out);
                        // Batch whatever else is already queued into the same chunk.
                        for _ in 0..512 {
                            match self.rx.try_recv() {
                                Ok(e) => self.push(&e, &mut out),
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                                    if !self.catch_up(&mut out) {
                                        self.done = true;
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        if !self.catch_up(&mut out) {
                            self.done = true;
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(interval), if self.bookmarks => {
                    let rv = self.drain_for_bookmark(&mut out);
                    out.put_slice(&self.bookmark(rv));
                }
            }
            if !out.is_empty() {
                return Some(out.freeze());
            }
            if self.done {
                return None;
            }
        }
    }

    /// Delivers everything queued and returns an RV no newer than any undelivered event.
    fn drain_for_bookmark(&mut self, out: &mut BytesMut) -> u64 {
        let shared = self.shared.clone();
        let Ok(store) = shared.store.read() else {
            return self.last_rv;
        };
        let current = store.rv;
        loop {
            match self.rx.try_recv() {
                Ok(e) => self.push(&e, out),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    drop(store);
                    let _ = self.catch_up(out);
                    return self.last_rv;
                }
                Err(_) => break,
            }
        }
        self.last_rv = self.last_rv.max(current);
        self.last_rv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn fields(q: &[(&str, &str)]) -> Vec<(String, String)> {
        match validate_watch_options(&query(q)) {
            Ok(()) => Vec::new(),
            Err(e) => e
                .details
                .causes
                .iter()
                .map(|c| (c.field.clone(), c.reason.clone()))
                .collect(),
        }
    }

    #[test]
    fn send_initial_events_requires_not_older_than() {
        assert!(
            fields(&[
                ("sendInitialEvents", "true"),
                ("resourceVersionMatch", "NotOlderThan")
            ])
            .is_empty()
        );
        assert_eq!(
            fields(&[("sendInitialEvents", "true")]),
            [("resourceVersionMatch".into(), "FieldValueForbidden".into())]
        );
        assert_eq!(
            fields(&[("resourceVersionMatch", "Exact")]),
            [
                ("resourceVersionMatch".into(), "FieldValueForbidden".into()),
                (
                    "resourceVersionMatch".into(),
                    "FieldValueNotSupported".into()
                )
            ]
        );
        assert!(fields(&[("resourceVersion", "5")]).is_empty());
    }
}
