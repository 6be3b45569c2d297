//! Kubernetes Events: which ones to write and how, decided without I/O.
//!
//! A failing object is reported each time it is retried, and some things fail for hours. Written
//! one Event per report, that floods the API server (and etcd, where Events live for an hour) and
//! buries everything else in `kubectl describe`. client-go's recorder solves this, and
//! [`Correlator`] does what it does, with the same numbers:
//!
//! - **Series** (client-go `tools/events`): an event identical to one written less than six
//!   minutes ago (same object, type, reason, action and note) is not a new Event: the existing
//!   one's `series.count` and `series.lastObservedTime` are patched.
//! - **Aggregation** (client-go `EventAggregator`): from the tenth distinct note of the same
//!   object, type and reason within ten minutes on, the notes are no longer told apart: they
//!   become one Event `(combined from similar events): <note>`, counted in its series. The note of
//!   an `events.k8s.io/v1` Event cannot be changed, so the series keeps the first combined note.
//! - **Spam filter** (client-go `EventSourceObjectSpamFilter`): every object has a token bucket
//!   of 25 writes, refilled by one every five minutes; what exceeds it is dropped. A series keeps
//!   counting while its writes are dropped, so the next patch that gets through carries the true
//!   count.
//!
//! Notes never carry secret material ([`redact`]) and fit the 1 KiB the API allows
//! ([`sanitize_note`]). The clock is an argument, so all of this is tested without waiting.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use konnector_api::conditions::{Condition, ConditionStatus};
use konnector_api::events::{DEFAULT_REPORTING_INSTANCE, types};

/// The `type` of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Nothing to worry about.
    Normal,
    /// Something needs a look.
    Warning,
}

impl EventType {
    /// The API's string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => types::NORMAL,
            EventType::Warning => types::WARNING,
        }
    }
}

/// The object an Event is about: the identity fields of its `regarding` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Regarding {
    /// `apiVersion` of the object.
    pub api_version: String,
    /// `kind` of the object.
    pub kind: String,
    /// Namespace, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// uid, when known. `kubectl describe` selects Events by the object's uid, so an Event
    /// without it shows only in `kubectl get events`.
    pub uid: Option<String>,
}

impl Regarding {
    /// The identity of `reference`.
    pub fn from_reference(reference: &ObjectReference) -> Self {
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Regarding {
            api_version: reference.api_version.clone().unwrap_or_default(),
            kind: reference.kind.clone().unwrap_or_default(),
            namespace: non_empty(&reference.namespace),
            name: reference.name.clone().unwrap_or_default(),
            uid: non_empty(&reference.uid),
        }
    }

    /// The `regarding` reference of an Event.
    pub fn to_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            namespace: self.namespace.clone(),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }

    /// The namespace the Event is created in: the object's own; `default` for a cluster-scoped
    /// object (the API server accepts only `default` or `kube-system` there).
    pub fn event_namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// One event as a caller reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The object it is about.
    pub regarding: Regarding,
    /// Normal or Warning.
    pub type_: EventType,
    /// What happened (`konnector_api::events::reasons`).
    pub reason: String,
    /// What the konnector was doing (`konnector_api::events::actions`).
    pub action: String,
    /// Details for humans, already passed through [`sanitize_note`].
    pub note: String,
}

/// The identity of one written Event: every event with the same key is counted in its series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    regarding: Regarding,
    type_: EventType,
    reason: String,
    action: String,
    /// `None` for the combined Event of an aggregated group.
    note: Option<String>,
}

impl SeriesKey {
    /// The object the series is about.
    pub fn regarding(&self) -> &Regarding {
        &self.regarding
    }
}

/// The numbers of the correlator; the defaults are client-go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelatorConfig {
    /// An identical event within this time of the last one joins its series (client-go
    /// `tools/events`: 6 minutes).
    pub series_window: Duration,
    /// Distinct notes of one object, type and reason are counted over this time (client-go:
    /// 10 minutes)...
    pub aggregate_interval: Duration,
    /// ...and from this many on they are combined into one Event (client-go: 10).
    pub aggregate_max: usize,
    /// Writes an object may make at once (client-go: 25)...
    pub burst: u32,
    /// ...and how often it gets one more (client-go: one every 5 minutes).
    pub refill: Duration,
    /// Entries kept per table before the oldest are forgotten, so that memory stays bounded
    /// however many objects fail (client-go's caches: 4096).
    pub max_entries: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            series_window: Duration::from_secs(6 * 60),
            aggregate_interval: Duration::from_secs(10 * 60),
            aggregate_max: 10,
            burst: 25,
            refill: Duration::from_secs(5 * 60),
            max_entries: 4096,
        }
    }
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create a new Event with `note`, then tell the correlator its name
    /// ([`Correlator::created`]) or that it failed ([`Correlator::forget`]).
    Create {
        /// The series the Event starts.
        key: SeriesKey,
        /// Its note (combined, if aggregated).
        note: String,
    },
    /// Patch `series.count = count` (and `lastObservedTime`) of the existing Event.
    Patch {
        /// The series.
        key: SeriesKey,
        /// Namespace of the Event.
        namespace: String,
        /// Name of the Event.
        name: String,
        /// Occurrences so far, this one included (at least 2).
        count: i32,
        /// The note to create the Event with if it is gone (Events expire).
        note: String,
    },
    /// Dropped: the object used up its writes (spam filter).
    Drop,
}

#[derive(Debug)]
struct AggregateRecord {
    notes: HashSet<String>,
    last: Instant,
}

#[derive(Debug)]
struct SeriesRecord {
    count: i32,
    last: Instant,
    /// `(namespace, name)` of the Event once created.
    event: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

/// Decides, for each event, whether it becomes a new Event, a series update of an existing one,
/// or nothing (see the module documentation).
#[derive(Debug)]
pub struct Correlator {
    config: CorrelatorConfig,
    aggregates: HashMap<(Regarding, EventType, String), AggregateRecord>,
    series: HashMap<SeriesKey, SeriesRecord>,
    buckets: HashMap<Regarding, TokenBucket>,
    observed: u64,
}

/// The prefix of aggregated notes, as client-go writes it.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

impl Correlator {
    /// A correlator with `config`.
    pub fn new(config: CorrelatorConfig) -> Self {
        Correlator {
            config,
            aggregates: HashMap::new(),
            series: HashMap::new(),
            buckets: HashMap::new(),
            observed: 0,
        }
    }

    /// Decides what `event`, observed at `now`, becomes.
    pub fn observe(&mut self, event: EventRecord, now: Instant) -> Decision {
        self.observed += 1;
        if self.observed.is_multiple_of(128) || self.over_capacity() {
            self.collect(now);
        }
        // Aggregation: the tenth distinct note of an object, type and reason combines.
        let group = (event.regarding.clone(), event.type_, event.reason.clone());
        let record = self
            .aggregates
            .entry(group)
            .or_insert_with(|| AggregateRecord {
                notes: HashSet::new(),
                last: now,
            });
        if now.saturating_duration_since(record.last) > self.config.aggregate_interval {
            record.notes.clear();
        }
        record.last = now;
        if record.notes.len() < self.config.aggregate_max {
            record.notes.insert(event.note.clone());
        }
        let combined = record.notes.len() >= self.config.aggregate_max;
        let (key, note) = if combined {
            let note = sanitize_note(&format!("{COMBINED_PREFIX}{}", event.note));
            (
                SeriesKey {
                    regarding: event.regarding,
                    type_: event.type_,
                    reason: event.reason,
                    action: event.action,
                    note: None,
                },
                note,
            )
        } else {
            let note = event.note;
            (
                SeriesKey {
                    regarding: event.regarding,
                    type_: event.type_,
                    reason: event.reason,
                    action: event.action,
                    note: Some(note.clone()),
                },
                note,
            )
        };
        // Series: an identical event within the window is counted in the existing Event.
        let window = self.config.series_window;
        let existing = self
            .series
            .get_mut(&key)
            .filter(|s| now.saturating_duration_since(s.last) <= window);
        let patch = match existing {
            Some(series) => {
                series.count = series.count.saturating_add(1);
                series.last = now;
                series.event.clone().map(|e| (e, series.count))
            }
            None => None,
        };
        // Spam filter: every write, a new Event or a series update, takes a token.
        if !self.take_token(&key.regarding, now) {
            return Decision::Drop;
        }
        match patch {
            Some(((namespace, name), count)) => Decision::Patch {
                key,
                namespace,
                name,
                count,
                note,
            },
            None => {
                self.series.insert(
                    key.clone(),
                    SeriesRecord {
                        count: 1,
                        last: now,
                        event: None,
                    },
                );
                Decision::Create { key, note }
            }
        }
    }

    /// The Event of `key` was created as `namespace/name` (also after its predecessor
    /// vanished): the series starts over at one occurrence.
    pub fn created(&mut self, key: &SeriesKey, namespace: &str, name: &str) {
        if let Some(series) = self.series.get_mut(key) {
            series.count = 1;
            series.event = Some((namespace.to_string(), name.to_string()));
        }
    }

    /// Writing the Event of `key` failed: the next identical event creates one again.
    pub fn forget(&mut self, key: &SeriesKey) {
        self.series.remove(key);
    }

    /// Entries held (series, aggregation groups, token buckets), for tests of the bounds.
    pub fn len(&self) -> usize {
        self.series.len() + self.aggregates.len() + self.buckets.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_token(&mut self, regarding: &Regarding, now: Instant) -> bool {
        let burst = f64::from(self.config.burst);
        let per_second = 1.0 / self.config.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        let bucket = self
            .buckets
            .entry(regarding.clone())
            .or_insert(TokenBucket {
                tokens: burst,
                last: now,
            });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn over_capacity(&self) -> bool {
        let max = self.config.max_entries;
        self.series.len() > max || self.aggregates.len() > max || self.buckets.len() > max
    }

    /// Forgets what no longer matters at `now`, then the oldest entries of any table still over
    /// its bound.
    fn collect(&mut self, now: Instant) {
        let c = &self.config;
        self.series
            .retain(|_, s| now.saturating_duration_since(s.last) <= c.series_window);
        self.aggregates
            .retain(|_, a| now.saturating_duration_since(a.last) <= c.aggregate_interval);
        let burst = f64::from(c.burst);
        let per_second = 1.0 / c.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        // A bucket that has refilled is the same as no bucket.
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_second < burst
        });
        let max = c.max_entries;
        keep_newest(&mut self.series, max, |s| s.last);
        keep_newest(&mut self.aggregates, max, |a| a.last);
        keep_newest(&mut self.buckets, max, |b| b.last);
    }
}

/// Removes the oldest entries of `map` until at most `max` remain.
fn keep_newest<K: Clone + Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    last: impl Fn(&V) -> Instant,
) {
    if map.len() <= max {
        return;
    }
    let mut ages: Vec<(Instant, K)> = map.iter().map(|(k, v)| (last(v), k.clone())).collect();
    ages.sort_by_key(|(t, _)| *t);
    let excess = map.len() - max;
    for (_, k) in ages.into_iter().take(excess) {
        map.remove(&k);
    }
}

/// The most a note may hold, in bytes (`events.k8s.io/v1` validation).
pub const NOTE_LIMIT: usize = 1024;
/// The most a reason or an action may hold, in characters.
pub const REASON_LIMIT: usize = 128;
/// What stands in for removed secret material.
pub const REDACTED: &str = "[redacted]";

/// A note fit to be written: secret material removed ([`redact`]), then cut to [`NOTE_LIMIT`]
/// bytes on a character boundary, ending in `…` when cut.
pub fn sanitize_note(note: &str) -> String {
    truncate(&redact(note), NOTE_LIMIT)
}

/// `text` cut to at most `limit` bytes on a character boundary, ending in `…` when cut.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    const ELLIPSIS: &str = "…";
    let mut end = limit.saturating_sub(ELLIPSIS.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

/// `text` without anything that looks like a credential: PEM blocks (certificates, private
/// keys), the user info of URLs, `Bearer`/`Basic` credentials, the values of keys such as
/// `token`, `password`, `secret`, `client-key-data` or `authorization`, JWTs and long base64
/// runs (kubeconfig data). Errors are echoed into notes from API servers and libraries that may
/// quote what they were given; a false positive costs a word of a message, a miss leaks a
/// credential into an object every user with `get events` can read.
pub fn redact(text: &str) -> String {
    let text = redact_pem(text);
    let text = redact_url_userinfo(&text);
    let text = redact_keyed_values(&text);
    redact_opaque_runs(&text)
}

fn redact_pem(text: &str) -> String {
    const BEGIN: &str = "-----BEGIN";
    const END: &str = "-----END";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        out.push_str(&rest[..start]);
        out.push_str(REDACTED);
        let after = &rest[start + BEGIN.len()..];
        // The block ends after the dashes closing its END line; a cut block runs to the end.
        let end = after.find(END).and_then(|e| {
            let tail = &after[e + END.len()..];
            tail.find("-----")
                .map(|d| start + BEGIN.len() + e + END.len() + d + 5)
        });
        match end {
            Some(end) => rest = &rest[end..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

fn redact_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let authority_start = scheme + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        let authority_len = after
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..authority_len];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);
    out
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Keys whose values are secret, matched as parts of the key (`id-token`, `clientKeyData`...).
fn sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "token",
        "password",
        "passwd",
        "secret",
        "keydata",
        "key-data",
        "key_data",
        "certificate-data",
        "certificatedata",
        "certificate_data",
        "authorization",
        "apikey",
        "api-key",
        "api_key",
        "privatekey",
        "private-key",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// The byte range of the value after a key that ends at `at`: `key: v`, `key=v`, `"key": "v"`,
/// `\"key\":\"v\"`. `None` if no value follows, or the value is a structure (whose own keys
/// are looked at separately).
fn value_after_key(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let len = b.len();
    let mut k = at;
    if k + 1 < len && b[k] == b'\\' && b[k + 1] == b'"' {
        k += 2;
    } else if k < len && (b[k] == b'"' || b[k] == b'\'') {
        k += 1;
    }
    while k < len && b[k] == b' ' {
        k += 1;
    }
    if k >= len || !(b[k] == b':' || b[k] == b'=') {
        return None;
    }
    k += 1;
    while k < len && b[k] == b' ' {
        k += 1;
    }
    let mut quote = None;
    if k + 1 < len && b[k] == b'\\' && b[k + 1] == b'"' {
        quote = Some(b'"');
        k += 2;
    } else if k < len && (b[k] == b'"' || b[k] == b'\'') {
        quote = Some(b[k]);
        k += 1;
    }
    let start = k;
    if start < len && (b[start] == b'{' || b[start] == b'[') {
        return None;
    }
    let mut end = start;
    match quote {
        Some(q) => {
            while end < len && b[end] != q && b[end] != b'\\' {
                end += 1;
            }
        }
        None => {
            while end < len
                && !b[end].is_ascii_whitespace()
                && !matches!(
                    b[end],
                    b'"' | b'\'' | b',' | b'}' | b']' | b')' | b';' | b'&' | b'\\'
                )
            {
                end += 1;
            }
        }
    }
    (end > start).then_some((start, end))
}

/// Redacts the values of sensitive keys and the credentials after `Bearer` and `Basic`.
fn redact_keyed_values(text: &str) -> String {
    let b = text.as_bytes();
    let len = b.len();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    // Only ASCII bytes are ever cut at, so every slice below falls on a character boundary.
    while i < len {
        if !is_key_byte(b[i]) || (i > 0 && is_key_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i;
        while j < len && is_key_byte(b[j]) {
            j += 1;
        }
        let word = &text[start..j];
        if word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic") {
            let mut k = j;
            while k < len && b[k] == b' ' {
                k += 1;
            }
            let mut end = k;
            while end < len
                && !b[end].is_ascii_whitespace()
                && !matches!(b[end], b'"' | b'\'' | b',' | b'\\')
            {
                end += 1;
            }
            if k > j && end > k {
                out.push_str(&text[copied..k]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
                continue;
            }
        } else if sensitive_key(word)
            && let Some((vs, ve)) = value_after_key(b, j)
        {
            let value = &text[vs..ve];
            // `Authorization: Bearer x`: the scheme stays, the credential after it goes.
            if !(value.eq_ignore_ascii_case("bearer") || value.eq_ignore_ascii_case("basic")) {
                out.push_str(&text[copied..vs]);
                out.push_str(REDACTED);
                copied = ve;
                i = ve;
                continue;
            }
        }
        i = j;
    }
    out.push_str(&text[copied..]);
    out
}

fn is_opaque_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-' | b'.')
}

/// Whether one dot-separated part of a run looks like key material: long and mixing upper
/// case, lower case and digits (base64, JWT segments), or base64 with padding. Names, paths,
/// hex digests and uids do not mix cases.
fn looks_secret(part: &str) -> bool {
    let has = |f: fn(&u8) -> bool| part.as_bytes().iter().any(f);
    let mixed =
        has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit);
    let padded = part.len() >= 16
        && part.ends_with('=')
        && part
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    (part.len() >= 32 && mixed) || padded
}

/// Redacts runs of base64/JWT characters that look like key material.
fn redact_opaque_runs(text: &str) -> String {
    let b = text.as_bytes();
    let len = b.len();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < len {
        if !is_opaque_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < len && is_opaque_byte(b[i]) {
            i += 1;
        }
        let run = &text[start..i];
        if run.split('.').any(looks_secret) {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = i;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The name of a new Event about the object `regarding_name`, as client-go names them
/// (`<name>.<unix nanoseconds in hex>`), made a valid DNS subdomain of at most 253 characters
/// whatever the object's name is.
pub fn event_name(regarding_name: &str, nanos: u64) -> String {
    let suffix = format!(".{nanos:x}");
    let limit = 253 - suffix.len();
    let lower = regarding_name.to_ascii_lowercase();
    let mut base = String::new();
    for label in lower.split('.') {
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let clean = clean.trim_matches('-');
        if clean.is_empty() {
            continue;
        }
        let sep = usize::from(!base.is_empty());
        if base.len() + sep + clean.len() > limit {
            let room = limit.saturating_sub(base.len() + sep);
            let cut = clean[..room.min(clean.len())].trim_end_matches('-');
            if !cut.is_empty() {
                if sep == 1 {
                    base.push('.');
                }
                base.push_str(cut);
            }
            break;
        }
        if sep == 1 {
            base.push('.');
        }
        base.push_str(clean);
    }
    if base.is_empty() {
        base.push_str("konnector");
    }
    format!("{base}{suffix}")
}

/// `reportingInstance`: the pod name (`POD_NAME`, else `HOSTNAME`, which is the pod name in a
/// pod), else `konnector`; at most 128 characters as the API requires.
pub fn reporting_instance(pod_name: Option<String>, hostname: Option<String>) -> String {
    let name = pod_name
        .filter(|s| !s.trim().is_empty())
        .or(hostname.filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_REPORTING_INSTANCE.to_string());
    name.chars().take(REASON_LIMIT).collect()
}

/// Whether a newly computed condition is worth a Warning event: it is False and its status,
/// reason or message differs from the stored one. An unchanged condition (a restart, a
/// re-reconcile) records nothing, so a restart over a steady world writes no Events.
pub fn turned_false(stored: Option<&Condition>, new: &Condition) -> bool {
    new.status == ConditionStatus::False
        && stored.is_none_or(|s| {
            s.status != new.status || s.reason != new.reason || s.message != new.message
        })
}

/// An event a binding's condition change calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// One of [`konnector_api::events::reasons`].
    pub reason: &'static str,
    /// One of [`konnector_api::events::actions`].
    pub action: &'static str,
    /// What happened.
    pub note: String,
}

/// The events a binding gets when its conditions go from `stored` to `new` (only the types in
/// `new` are compared): `Connected` turning True or False, `SchemaInSync` turning False because
/// the schema differs. Comparing with the stored status keeps a restart over a steady world
/// silent.
pub fn binding_events(stored: &[Condition], new: &[Condition]) -> Vec<BindingEvent> {
    use konnector_api::events::{actions, reasons};
    use konnector_api::strings::condition_types::{CONNECTED, INFORMERS_SYNCED, SCHEMA_IN_SYNC};
    use konnector_api::strings::reasons as condition_reasons;
    let get = |t: &str| stored.iter().find(|c| c.type_ == t);
    let mut out = Vec::new();
    for c in new {
        let old = get(&c.type_);
        if c.type_ == CONNECTED {
            if c.status == ConditionStatus::True
                && old.is_none_or(|o| o.status != ConditionStatus::True)
            {
                out.push(BindingEvent {
                    type_: EventType::Normal,
                    reason: reasons::CONNECTED,
                    action: actions::CONNECT,
                    note: "Connected to the service provider; the export's CustomResourceDefinition is installed.".into(),
                });
            } else if turned_false(old, c) && c.reason != condition_reasons::PENDING {
                out.push(BindingEvent {
                    type_: EventType::Warning,
                    reason: reasons::DISCONNECTED,
                    action: actions::CONNECT,
                    note: format!("{}: {}", c.reason, c.message),
                });
            }
        } else if c.type_ == INFORMERS_SYNCED
            && c.reason == condition_reasons::CLAIM_WATCH_FORBIDDEN
            && turned_false(old, c)
        {
            out.push(BindingEvent {
                type_: EventType::Warning,
                reason: reasons::WATCH_FORBIDDEN,
                action: actions::WATCH,
                note: c.message.clone(),
            });
        } else if c.type_ == SCHEMA_IN_SYNC
            && c.reason == condition_reasons::SCHEMA_OUT_OF_SYNC
            && turned_false(old, c)
        {
            out.push(BindingEvent {
                type_: EventType::Warning,
                reason: reasons::SCHEMA_OUT_OF_SYNC,
                action: actions::INSTALL_CRD,
                note: c.message.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod binding_event_tests {
    use super::*;
    use konnector_api::conditions::Severity;
    use konnector_api::strings::condition_types::{CONNECTED, SCHEMA_IN_SYNC};

    fn reasons_of(events: &[BindingEvent]) -> Vec<&str> {
        events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn connection_changes_make_events_and_steady_states_none() {
        let up = Condition::true_(CONNECTED);
        let down = Condition::false_(CONNECTED, "ProviderUnreachable", Severity::Error, "refused");
        let pending = Condition::false_(CONNECTED, "Pending", Severity::Info, "waiting");
        assert_eq!(
            reasons_of(&binding_events(&[], std::slice::from_ref(&up))),
            ["Connected"]
        );
        assert_eq!(
            reasons_of(&binding_events(
                std::slice::from_ref(&pending),
                std::slice::from_ref(&up)
            )),
            ["Connected"]
        );
        assert!(binding_events(std::slice::from_ref(&up), std::slice::from_ref(&up)).is_empty());
        let lost = binding_events(std::slice::from_ref(&up), std::slice::from_ref(&down));
        assert_eq!(reasons_of(&lost), ["Disconnected"]);
        assert_eq!(lost[0].type_, EventType::Warning);
        assert!(lost[0].note.contains("ProviderUnreachable: refused"));
        assert!(
            binding_events(std::slice::from_ref(&down), std::slice::from_ref(&down)).is_empty()
        );
        assert!(binding_events(&[], &[pending]).is_empty());
    }

    #[test]
    fn schema_out_of_sync_is_a_warning_once() {
        let out = Condition::false_(
            SCHEMA_IN_SYNC,
            "SchemaOutOfSync",
            Severity::Warning,
            "differs",
        );
        let not_established = Condition::false_(
            SCHEMA_IN_SYNC,
            "CustomResourceDefinitionNotEstablished",
            Severity::Info,
            "soon",
        );
        assert_eq!(
            reasons_of(&binding_events(&[], std::slice::from_ref(&out))),
            ["SchemaOutOfSync"]
        );
        assert!(binding_events(std::slice::from_ref(&out), std::slice::from_ref(&out)).is_empty());
        assert!(binding_events(&[], &[not_established]).is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use konnector_api::conditions::Severity;

    fn regarding(name: &str) -> Regarding {
        Regarding {
            api_version: "klutch.anynines.com/v1alpha1".into(),
            kind: "APIServiceBinding".into(),
            namespace: Some("klutch-bind".into()),
            name: name.into(),
            uid: Some("u-1".into()),
        }
    }

    fn record(name: &str, reason: &str, note: &str) -> EventRecord {
        EventRecord {
            regarding: regarding(name),
            type_: EventType::Warning,
            reason: reason.into(),
            action: "Sync".into(),
            note: note.into(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn identical_events_become_one_event_with_a_series() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t0 = Instant::now();
        let Decision::Create { key, note } = c.observe(record("b", "SyncFailed", "boom"), t0)
        else {
            panic!("first event is created");
        };
        assert_eq!(note, "boom");
        c.created(&key, "klutch-bind", "b.1");
        for n in 2..=5 {
            let d = c.observe(record("b", "SyncFailed", "boom"), t0 + SECOND * n);
            let Decision::Patch {
                key: k,
                namespace,
                name,
                count,
                note,
            } = d
            else {
                panic!("an identical event patches: {d:?}")
            };
            assert_eq!(k, key);
            assert_eq!((namespace.as_str(), name.as_str()), ("klutch-bind", "b.1"));
            assert_eq!(count, i32::try_from(n).unwrap());
            assert_eq!(note, "boom");
        }
        // Another note, type or object is another Event.
        assert!(matches!(
            c.observe(record("b", "SyncFailed", "other"), t0 + SECOND * 6),
            Decision::Create { .. }
        ));
        assert!(matches!(
            c.observe(record("c", "SyncFailed", "boom"), t0 + SECOND * 6),
            Decision::Create { .. }
        ));
    }

    #[test]
    fn a_series_ends_after_six_quiet_minutes() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t0 = Instant::now();
        let Decision::Create { key, .. } = c.observe(record("b", "Disconnected", "down"), t0)
        else {
            panic!()
        };
        c.created(&key, "klutch-bind", "b.1");
        let later = t0 + Duration::from_secs(6 * 60) + SECOND;
        assert!(matches!(
            c.observe(record("b", "Disconnected", "down"), later),
            Decision::Create { .. }
        ));
    }

    #[test]
    fn a_failed_write_is_forgotten_and_created_again() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t0 = Instant::now();
        let Decision::Create { key, .. } = c.observe(record("b", "SyncFailed", "x"), t0) else {
            panic!()
        };
        c.forget(&key);
        assert!(matches!(
            c.observe(record("b", "SyncFailed", "x"), t0 + SECOND),
            Decision::Create { .. }
        ));
    }

    #[test]
    fn the_tenth_distinct_note_is_combined_and_further_ones_join_its_series() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t0 = Instant::now();
        for i in 0..9 {
            let d = c.observe(
                record("b", "SyncFailed", &format!("error {i}")),
                t0 + SECOND * i,
            );
            let Decision::Create { key, note } = d else {
                panic!("distinct notes below ten are Events of their own")
            };
            assert_eq!(note, format!("error {i}"));
            c.created(&key, "klutch-bind", &format!("b.{i}"));
        }
        let Decision::Create { key, note } =
            c.observe(record("b", "SyncFailed", "error 9"), t0 + SECOND * 9)
        else {
            panic!("the combined event is created")
        };
        assert_eq!(note, "(combined from similar events): error 9");
        c.created(&key, "klutch-bind", "b.combined");
        // Any further note of the group, new or seen, counts in the combined Event.
        for (n, text) in ["error 10", "error 3", "error 11"].iter().enumerate() {
            let d = c.observe(record("b", "SyncFailed", text), t0 + SECOND * 10);
            let Decision::Patch {
                key: k,
                name,
                count,
                note,
                ..
            } = d
            else {
                panic!("a combined event patches: {d:?}")
            };
            assert_eq!((k, name.as_str()), (key.clone(), "b.combined"));
            assert_eq!(count, i32::try_from(n).unwrap() + 2);
            assert_eq!(note, format!("(combined from similar events): {text}"));
        }
        // Another reason or object is another group.
        assert!(matches!(
            c.observe(record("b", "WatchForbidden", "error 12"), t0 + SECOND * 10),
            Decision::Create { note, .. } if note == "error 12"
        ));
        // Ten quiet minutes later the group starts over.
        let later = t0 + SECOND * 10 + Duration::from_secs(10 * 60) + SECOND;
        assert!(matches!(
            c.observe(record("b", "SyncFailed", "error 13"), later),
            Decision::Create { note, .. } if note == "error 13"
        ));
    }

    #[test]
    fn an_object_gets_25_writes_then_one_every_five_minutes() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..100u32 {
            // Distinct failures: the first nine are Events, the rest patch the combined one.
            match c.observe(
                record("b", &format!("Reason{}", i % 3), &format!("error {i}")),
                t0 + Duration::from_millis(u64::from(i)),
            ) {
                Decision::Create { key, .. } => {
                    c.created(&key, "ns", &format!("e{i}"));
                    written += 1;
                }
                Decision::Patch { .. } => written += 1,
                Decision::Drop => {}
            }
        }
        assert_eq!(written, 25);
        // Another object is not affected.
        assert!(matches!(
            c.observe(record("other", "Reason0", "x"), t0 + SECOND),
            Decision::Create { .. }
        ));
        // One more after five minutes, not two.
        let later = t0 + Duration::from_secs(5 * 60) + SECOND;
        assert_ne!(
            c.observe(record("b", "Reason0", "again"), later),
            Decision::Drop
        );
        assert_eq!(
            c.observe(record("b", "Reason0", "again 2"), later),
            Decision::Drop
        );
    }

    #[test]
    fn a_series_keeps_counting_while_its_writes_are_dropped() {
        let config = CorrelatorConfig {
            burst: 2,
            ..CorrelatorConfig::default()
        };
        let mut c = Correlator::new(config);
        let t0 = Instant::now();
        let Decision::Create { key, .. } = c.observe(record("b", "SyncFailed", "x"), t0) else {
            panic!()
        };
        c.created(&key, "ns", "b.1");
        assert!(matches!(
            c.observe(record("b", "SyncFailed", "x"), t0 + SECOND),
            Decision::Patch { count: 2, .. }
        ));
        for n in 2..5 {
            assert_eq!(
                c.observe(record("b", "SyncFailed", "x"), t0 + SECOND * n),
                Decision::Drop
            );
        }
        // A token later (five minutes after the last write), within the series window.
        let later = t0 + SECOND + Duration::from_secs(5 * 60);
        assert!(matches!(
            c.observe(record("b", "SyncFailed", "x"), later),
            Decision::Patch { count: 6, .. }
        ));
    }

    #[test]
    fn memory_stays_bounded() {
        let config = CorrelatorConfig {
            max_entries: 50,
            ..CorrelatorConfig::default()
        };
        let mut c = Correlator::new(config);
        let t0 = Instant::now();
        for i in 0..1000u64 {
            let d = c.observe(
                record(&format!("o{i}"), "SyncFailed", "x"),
                t0 + Duration::from_millis(i),
            );
            if let Decision::Create { key, .. } = d {
                c.created(&key, "ns", "n");
            }
        }
        assert!(c.len() <= 3 * 51, "{} entries", c.len());
        // Everything is forgotten once it no longer matters.
        let _ = c.observe(
            record("last", "SyncFailed", "x"),
            t0 + Duration::from_secs(24 * 3600),
        );
        for i in 0..127u64 {
            let _ = c.observe(
                record("last", "SyncFailed", "x"),
                t0 + Duration::from_secs(24 * 3600) + Duration::from_millis(i),
            );
        }
        assert!(c.len() <= 3, "{} entries", c.len());
    }

    #[test]
    fn notes_are_cut_to_one_kib_on_a_character_boundary() {
        let long = "ä".repeat(2000);
        let cut = sanitize_note(&long);
        assert!(cut.len() <= NOTE_LIMIT);
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("ää"));
        assert_eq!(sanitize_note("short"), "short");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn secret_material_is_redacted() {
        let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQzEyMyJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0.c2lnbmF0dXJlMTIzNDU2Nzg5MEFCQ0RFRg";
        let cases = [
            (
                format!("Unauthorized: Authorization: Bearer {jwt} rejected"),
                vec![jwt, "eyJ"],
            ),
            (
                "request failed: bearer abc123secret".to_string(),
                vec!["abc123secret"],
            ),
            (
                "token: s3cr3t-token-value\nserver: https://x".to_string(),
                vec!["s3cr3t-token-value"],
            ),
            (
                r#"{"password":"hunter 2","user":"bob"}"#.to_string(),
                vec!["hunter 2"],
            ),
            (
                r#"invalid object: {\"client-key-data\":\"LS0tLS1CRUdJTg\"}"#.to_string(),
                vec!["LS0tLS1CRUdJTg"],
            ),
            (
                "dial https://admin:pa55word@10.0.0.1:6443/api failed".to_string(),
                vec!["pa55word", "admin:"],
            ),
            (
                "cert -----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE----- ok".to_string(),
                vec!["MIIBszCCAVmgAwIBAgIU", "BEGIN CERTIFICATE"],
            ),
            (
                "key -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA (cut".to_string(),
                vec!["MIIEpAIBAAKCAQEA", "PRIVATE"],
            ),
            (
                "kubeconfig YXBpVmVyc2lvbjogdjEKY2x1c3RlcnM6Ci0gY2x1c3RlcjoKICAgIHNlcnZlcjogaHR0cHM6Ly8xMC4wLjAuMQo= is bad".to_string(),
                vec!["YXBpVmVyc2lvbjogdjEK"],
            ),
            (
                "?access_token=abcdef&watch=1".to_string(),
                vec!["abcdef"],
            ),
        ];
        for (text, secrets) in cases {
            let out = redact(&text);
            for s in secrets {
                assert!(!out.contains(s), "{s:?} left in {out:?} (from {text:?})");
            }
            assert!(out.contains(REDACTED), "{out:?}");
        }
        // The rest of a message stays readable.
        let out = redact(&format!(
            "Unauthorized: Authorization: Bearer {jwt} rejected"
        ));
        assert_eq!(
            out,
            "Unauthorized: Authorization: Bearer [redacted] rejected"
        );
        assert_eq!(
            redact("dial https://admin:pa55word@10.0.0.1:6443/api failed"),
            "dial https://[redacted]@10.0.0.1:6443/api failed"
        );
    }

    #[test]
    fn ordinary_messages_are_left_alone() {
        for text in [
            r#"secrets "kubeconfig" is forbidden: User "system:serviceaccount:klutch-bind:konnector" cannot list resource "secrets" in API group "" in the namespace "locked""#,
            "Kubeconfig secret klutch-bind/kubeconfig has an invalid kubeconfig: current context \"x\" has no namespace set",
            "admission webhook denied: mangodbs.mangodb.com \"db-1\" is invalid: spec.tier: Unsupported value",
            "Put \"https://10.0.0.1:6443/apis/mangodb.com/v1/namespaces/klutch-bind-p-team-a/mangodbs/db\": dial tcp 10.0.0.1:6443: connect: connection refused",
            "image sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef uid 3f1c2d9e-8a7b-4c6d-9e0f-1a2b3c4d5e6f",
            "CustomResourceDefinitionUpdateFailed on MangoDB",
            "the token was rejected",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn event_names_are_dns_subdomains() {
        assert_eq!(event_name("db-1", 255), "db-1.ff");
        assert_eq!(
            event_name("mangodbs.mangodb.com", 1),
            "mangodbs.mangodb.com.1"
        );
        assert_eq!(event_name("Weird_Name..x-", 1), "weird-name.x.1");
        assert_eq!(event_name("", 1), "konnector.1");
        let long = "a".repeat(300);
        let name = event_name(&long, u64::MAX);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with(".ffffffffffffffff"));
    }

    #[test]
    fn reporting_instance_is_the_pod_name() {
        assert_eq!(
            reporting_instance(Some("konnector-0".into()), Some("host".into())),
            "konnector-0"
        );
        assert_eq!(reporting_instance(None, Some("host".into())), "host");
        assert_eq!(reporting_instance(Some(" ".into()), None), "konnector");
        assert_eq!(reporting_instance(Some("x".repeat(200)), None).len(), 128);
    }

    #[test]
    fn only_a_changed_false_condition_is_worth_an_event() {
        let f = |reason: &str, message: &str| {
            Condition::false_("SecretValid", reason, Severity::Error, message)
        };
        let t = Condition::true_("SecretValid");
        assert!(turned_false(None, &f("A", "m")));
        assert!(turned_false(Some(&t), &f("A", "m")));
        assert!(!turned_false(Some(&f("A", "m")), &f("A", "m")));
        assert!(turned_false(Some(&f("A", "m")), &f("A", "other")));
        assert!(!turned_false(Some(&f("A", "m")), &t));
    }

    #[test]
    fn cluster_scoped_objects_have_their_events_in_default() {
        let mut r = regarding("x");
        assert_eq!(r.event_namespace(), "klutch-bind");
        r.namespace = None;
        assert_eq!(r.event_namespace(), "default");
        let back = Regarding::from_reference(&r.to_reference());
        assert_eq!(back, r);
    }
}
