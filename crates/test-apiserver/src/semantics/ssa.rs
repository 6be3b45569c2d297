//! Server-side apply and `managedFields`, following `sigs.k8s.io/structured-merge-diff` as the
//! real API server uses it.
//!
//! Public API:
//! - [`apply`]`(live: Option<&Value>, applied: &Value, mgr: &Manager, force: bool,
//!   types: &dyn TypeInfo) -> Result<Value, ApplyError>`: merges the applied configuration into
//!   the live object, removes fields this manager applied before but no longer applies (unless
//!   someone else owns them), checks conflicts with other managers and returns the new object
//!   with updated `metadata.managedFields`.
//! - [`record_update`]`(old: Option<&Value>, new: &Value, mgr: &Manager, types: &dyn TypeInfo)
//!   -> Value`: ownership bookkeeping for every other write (create, PUT, the three patch types):
//!   the manager (operation `Update`) takes every field it added or changed, away from the others.
//! - [`FieldSet`] with [`FieldSet::from_fields_v1`] / [`FieldSet::to_fields_v1`] (the `FieldsV1`
//!   encoding: `f:name`, `k:{"name":"x"}`, `v:"value"`, `.` for an owned node) and
//!   [`managed_fields`] to read the entries back.
//! - [`ApplyError::Conflicts`] renders like the real 409: `Apply failed with 1 conflict: conflict
//!   with "crossplane" using v1: .spec.replicas`; [`ApplyConflicts::causes`] gives the
//!   `FieldManagerConflict` causes.
//!
//! Scope: a write through `/status` ([`Manager::subresource`] = `status`) only tracks `status`; a
//! write through the main endpoint of a kind with a status subresource
//! ([`Manager::status_subresource`]) never tracks `status` (the server resets it), as the real
//! strategies' reset fields do. `apiVersion`, `kind` and the server-set metadata (`name`,
//! `namespace`, `uid`, `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`, …)
//! are never tracked.
//!
//! Simplifications: no version conversion of field sets (one version per kind), no cap on the
//! number of `Update` entries, merged list order is "live order, new items appended".

use crate::semantics::types::{ListType, MapType, Seg, TypeInfo};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Who writes, through which endpoint, when.
#[derive(Debug, Clone, Copy)]
pub struct Manager<'a> {
    /// The `fieldManager` (or the user agent derived name for non-apply writes).
    pub name: &'a str,
    /// `apiVersion` of the request, e.g. `v1` or `klutch.anynines.com/v1alpha1`.
    pub api_version: &'a str,
    /// `Some("status")` for writes through `/status`.
    pub subresource: Option<&'a str>,
    /// The kind has a `status` subresource (then the main endpoint never owns `status`).
    pub status_subresource: bool,
    /// RFC 3339 time of the write, stored in the entry's `time`.
    pub time: &'a str,
}

impl Manager<'_> {
    fn in_scope(&self, top: &str) -> bool {
        if self.subresource == Some("status") {
            top == "status"
        } else if self.status_subresource {
            top != "status"
        } else {
            true
        }
    }
}

/// One apply conflict: a field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// How the real server prints the manager: `"name"`, `"name" using v1`,
    /// `"name" with subresource "status" using v1`.
    pub manager_display: String,
    /// The field, as structured-merge-diff prints paths: `.spec.replicas`, `.spec.ports[name="x"]`.
    pub field: String,
}

/// All conflicts of one apply (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflicts {
    /// The conflicts, grouped by manager in manager order.
    pub conflicts: Vec<Conflict>,
}

impl ApplyConflicts {
    /// `Status.details.causes`: `(type, message, field)` triples, type `FieldManagerConflict`.
    pub fn causes(&self) -> Vec<(String, String, String)> {
        self.conflicts
            .iter()
            .map(|c| {
                (
                    "FieldManagerConflict".to_owned(),
                    format!("conflict with {}", c.manager_display),
                    c.field.clone(),
                )
            })
            .collect()
    }
}

impl fmt::Display for ApplyConflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [c] = self.conflicts.as_slice() {
            return write!(
                f,
                "Apply failed with 1 conflict: conflict with {}: {}",
                c.manager_display, c.field
            );
        }
        let mut lines = Vec::new();
        let mut last: Option<&str> = None;
        for c in &self.conflicts {
            if last != Some(c.manager_display.as_str()) {
                lines.push(format!("conflicts with {}:", c.manager_display));
                last = Some(c.manager_display.as_str());
            }
            lines.push(format!("- {}", c.field));
        }
        write!(
            f,
            "Apply failed with {} conflicts: {}",
            self.conflicts.len(),
            lines.join("\n")
        )
    }
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Other managers own fields the applied configuration changes (`409 Conflict`).
    #[error("{0}")]
    Conflicts(ApplyConflicts),
    /// The applied configuration is unusable (`422`/`400`), e.g. a map-list item without its key.
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------------------------
// Field sets

/// A set of field paths as a trie; each path element is its `FieldsV1` key (`f:spec`,
/// `k:{"name":"a"}`, `v:"x"`, `i:0`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Decodes a `fieldsV1` object: `{}` is a member leaf, `".": {}` marks a member node.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(m) = v {
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                    continue;
                }
                let mut c = FieldSet::from_fields_v1(child);
                if c.children.is_empty() {
                    c.member = true;
                }
                set.children.insert(k.clone(), c);
            }
        }
        set
    }

    /// Encodes as `fieldsV1` (the root itself is never a member).
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for (k, c) in &self.children {
            m.insert(k.clone(), c.encode_child());
        }
        Value::Object(m)
    }

    fn encode_child(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".to_owned(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.encode_child());
        }
        Value::Object(m)
    }

    /// Adds `path` as a member.
    pub fn insert(&mut self, path: &[String]) {
        let mut cur = self;
        for e in path {
            cur = cur.children.entry(e.clone()).or_default();
        }
        cur.member = true;
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut cur = self;
        for e in path {
            cur = cur.children.get(e)?;
        }
        Some(cur)
    }

    /// True if `path` is a member.
    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// True if `path` or anything below it is a member.
    fn has_at_or_below(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// True if there is no member.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Every member path, parents before children.
    pub fn members(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union_with(c);
        }
    }

    /// Members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    /// Members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Removes `path` and everything below it.
    fn remove_subtree(&mut self, path: &[String]) {
        match path {
            [] => *self = FieldSet::default(),
            [last] => {
                self.children.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove_subtree(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }
}

/// Renders a path like structured-merge-diff: `.spec.ports[name="a"].port`, `[="x"]`, `[0]`.
pub fn path_to_string(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let parts: Vec<String> = match serde_json::from_str::<Map<String, Value>>(k) {
                Ok(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                Err(_) => vec![k.to_owned()],
            };
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = e.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        } else {
            s.push_str(e);
        }
    }
    s
}

/// Fields the server sets or that identify the object: never owned by anyone.
const STRIPPED: &[&[&str]] = &[
    &["f:apiVersion"],
    &["f:kind"],
    &["f:metadata", "f:name"],
    &["f:metadata", "f:namespace"],
    &["f:metadata", "f:uid"],
    &["f:metadata", "f:resourceVersion"],
    &["f:metadata", "f:generation"],
    &["f:metadata", "f:creationTimestamp"],
    &["f:metadata", "f:selfLink"],
    &["f:metadata", "f:clusterName"],
    &["f:metadata", "f:managedFields"],
    &["f:metadata", "f:deletionTimestamp"],
    &["f:metadata", "f:deletionGracePeriodSeconds"],
];

fn strip(set: &mut FieldSet) {
    for p in STRIPPED {
        let p: Vec<String> = p.iter().map(|s| (*s).to_owned()).collect();
        set.remove_subtree(&p);
    }
    // `metadata` itself only matters through its children.
    if let Some(m) = set.children.get_mut("f:metadata") {
        m.member = false;
        if m.is_empty() {
            set.children.remove("f:metadata");
        }
    }
}

fn key_element(item: &Value, keys: &[String], path: &str) -> Result<String, ApplyError> {
    let mut m = BTreeMap::new();
    for k in keys {
        match item.get(k) {
            Some(v) if !v.is_null() => {
                m.insert(k.clone(), v.clone());
            }
            _ => {
                return Err(ApplyError::Invalid(format!(
                    "{path}: associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                )));
            }
        }
    }
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    Ok(format!("k:{{{}}}", parts.join(",")))
}

fn value_element(item: &Value) -> String {
    format!("v:{item}")
}

/// Walks a value the way structured-merge-diff does; the closure sees every node.
struct Walker<'t> {
    types: &'t dyn TypeInfo,
    /// Refuse duplicate set values / map keys (applied configurations; stored objects may
    /// carry duplicates from non-apply writes and are tolerated).
    strict: bool,
}

#[derive(Debug, Clone, Copy)]
enum Node<'v> {
    /// An object or associative list whose children are walked separately.
    Inner,
    /// A scalar, null, empty object, atomic list or atomic map: compared as a whole.
    Leaf(&'v Value),
}

impl Walker<'_> {
    /// `ToFieldSet`: leaves, list items and map keys are members; declared struct fields holding
    /// objects are not (they are owned through their children, so `spec: {}` owns nothing).
    fn to_field_set(&self, v: &Value) -> Result<FieldSet, ApplyError> {
        let mut set = FieldSet::default();
        let mut segs = Vec::new();
        let mut elems = Vec::new();
        self.fs_walk(v, &mut segs, &mut elems, &mut set)?;
        Ok(set)
    }

    fn fs_walk<'a>(
        &self,
        v: &'a Value,
        segs: &mut Vec<Seg<'a>>,
        elems: &mut Vec<String>,
        set: &mut FieldSet,
    ) -> Result<(), ApplyError> {
        match v {
            Value::Object(m) => {
                if !segs.is_empty() && self.types.map_type(segs) == MapType::Atomic {
                    set.insert(elems);
                    return Ok(());
                }
                for (k, child) in m {
                    segs.push(Seg::Field(k));
                    elems.push(format!("f:{k}"));
                    self.fs_walk(child, segs, elems, set)?;
                    if !self.types.is_declared_field(segs) {
                        set.insert(elems);
                    }
                    segs.pop();
                    elems.pop();
                }
            }
            Value::Array(items) => match self.types.list_type(segs) {
                ListType::Atomic => set.insert(elems),
                ListType::Set => {
                    let shown = path_to_string(elems);
                    for it in items {
                        let e = value_element(it);
                        self.check_duplicate(set, elems, &e, &shown)?;
                        elems.push(e);
                        set.insert(elems);
                        elems.pop();
                    }
                }
                ListType::Map(keys) => {
                    let shown = path_to_string(elems);
                    segs.push(Seg::Item);
                    for it in items {
                        let e = key_element(it, &keys, &shown)?;
                        self.check_duplicate(set, elems, &e, &shown)?;
                        elems.push(e);
                        self.fs_walk(it, segs, elems, set)?;
                        set.insert(elems);
                        elems.pop();
                    }
                    segs.pop();
                }
            },
            _ => set.insert(elems),
        }
        Ok(())
    }

    fn check_duplicate(
        &self,
        set: &FieldSet,
        list: &[String],
        elem: &str,
        shown: &str,
    ) -> Result<(), ApplyError> {
        let mut p = list.to_vec();
        p.push(elem.to_owned());
        if self.strict && set.contains(&p) {
            return Err(ApplyError::Invalid(format!(
                "{shown}: duplicate entries for key {}",
                path_to_string(&p[list.len()..])
            )));
        }
        Ok(())
    }

    /// Every node of `v` by path, for comparisons. Items of map lists without their keys are
    /// indexed by position (`i:`), which only happens for objects the server already stores.
    fn flatten<'v>(&self, v: &'v Value) -> BTreeMap<Vec<String>, Node<'v>> {
        let mut out = BTreeMap::new();
        let mut segs = Vec::new();
        let mut elems = Vec::new();
        self.fl_walk(v, &mut segs, &mut elems, &mut out);
        out
    }

    fn fl_walk<'v>(
        &self,
        v: &'v Value,
        segs: &mut Vec<Seg<'v>>,
        elems: &mut Vec<String>,
        out: &mut BTreeMap<Vec<String>, Node<'v>>,
    ) {
        let root = elems.is_empty();
        match v {
            Value::Object(m) => {
                if !root && (m.is_empty() || self.types.map_type(segs) == MapType::Atomic) {
                    out.insert(elems.clone(), Node::Leaf(v));
                    return;
                }
                if !root {
                    out.insert(elems.clone(), Node::Inner);
                }
                for (k, child) in m {
                    segs.push(Seg::Field(k));
                    elems.push(format!("f:{k}"));
                    self.fl_walk(child, segs, elems, out);
                    segs.pop();
                    elems.pop();
                }
            }
            Value::Array(items) => match self.types.list_type(segs) {
                ListType::Atomic => {
                    out.insert(elems.clone(), Node::Leaf(v));
                }
                ListType::Set => {
                    out.insert(elems.clone(), Node::Inner);
                    for it in items {
                        elems.push(value_element(it));
                        out.insert(elems.clone(), Node::Leaf(it));
                        elems.pop();
                    }
                }
                ListType::Map(keys) => {
                    out.insert(elems.clone(), Node::Inner);
                    segs.push(Seg::Item);
                    for (i, it) in items.iter().enumerate() {
                        let e = key_element(it, &keys, "").unwrap_or_else(|_| format!("i:{i}"));
                        elems.push(e);
                        self.fl_walk(it, segs, elems, out);
                        elems.pop();
                    }
                    segs.pop();
                }
            },
            _ => {
                out.insert(elems.clone(), Node::Leaf(v));
            }
        }
    }

    /// Added, modified and removed paths from `old` to `new`.
    fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let a = self.flatten(old);
        let b = self.flatten(new);
        let mut c = Comparison::default();
        for (p, nb) in &b {
            match (a.get(p), nb) {
                (None, _) => c.added.insert(p),
                (Some(Node::Inner), Node::Inner) => {}
                (Some(Node::Leaf(x)), Node::Leaf(y)) if json_eq(x, y) => {}
                // An empty object that gains children (or loses all of them) is not itself
                // modified: only its children are added or removed (`emptyPromoteToLeaf`).
                (Some(Node::Leaf(Value::Object(m))), Node::Inner) if m.is_empty() => {}
                (Some(Node::Inner), Node::Leaf(Value::Object(m))) if m.is_empty() => {}
                // Likewise a `null` (a nil slice such as a CRD's initial `status.conditions`)
                // that gains items.
                (Some(Node::Leaf(Value::Null)), Node::Inner) => {}
                (Some(_), _) => c.modified.insert(p),
            }
        }
        for p in a.keys() {
            if !b.contains_key(p) {
                c.removed.insert(p);
            }
        }
        strip(&mut c.added);
        strip(&mut c.modified);
        strip(&mut c.removed);
        c
    }

    /// Merges the applied configuration onto the live object.
    fn merge<'a>(&self, live: Option<&Value>, cfg: &'a Value, segs: &mut Vec<Seg<'a>>) -> Value {
        match (live, cfg) {
            (Some(Value::Object(l)), Value::Object(c))
                if segs.is_empty() || self.types.map_type(segs) == MapType::Granular =>
            {
                let mut out = l.clone();
                for (k, v) in c {
                    segs.push(Seg::Field(k));
                    let merged = self.merge(l.get(k), v, segs);
                    segs.pop();
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (Some(Value::Array(l)), Value::Array(c)) => match self.types.list_type(segs) {
                ListType::Atomic => cfg.clone(),
                ListType::Set => {
                    let mut out = l.clone();
                    for it in c {
                        if !out.iter().any(|x| json_eq(x, it)) {
                            out.push(it.clone());
                        }
                    }
                    Value::Array(out)
                }
                ListType::Map(keys) => {
                    let mut out = l.clone();
                    segs.push(Seg::Item);
                    for it in c {
                        let pos = out.iter().position(|x| {
                            keys.iter()
                                .all(|k| x.get(k).is_some() && x.get(k) == it.get(k))
                        });
                        match pos {
                            Some(i) => out[i] = self.merge(Some(&out[i].clone()), it, segs),
                            None => out.push(it.clone()),
                        }
                    }
                    segs.pop();
                    Value::Array(out)
                }
            },
            _ => cfg.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

/// JSON equality where `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Removes the value at `path` (FieldsV1 elements) from `v`; missing paths are ignored.
fn remove_path(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(f) = first.strip_prefix("f:") {
        if let Value::Object(m) = v {
            if rest.is_empty() {
                m.remove(f);
            } else if let Some(c) = m.get_mut(f) {
                remove_path(c, rest);
            }
        }
        return;
    }
    let Value::Array(items) = v else { return };
    let pos = if let Some(k) = first.strip_prefix("k:") {
        let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
            return;
        };
        items
            .iter()
            .position(|it| key.iter().all(|(k, val)| it.get(k) == Some(val)))
    } else if let Some(val) = first.strip_prefix("v:") {
        let Ok(val) = serde_json::from_str::<Value>(val) else {
            return;
        };
        items.iter().position(|it| json_eq(it, &val))
    } else if let Some(i) = first.strip_prefix("i:") {
        i.parse::<usize>().ok().filter(|i| *i < items.len())
    } else {
        None
    };
    if let Some(pos) = pos {
        if rest.is_empty() {
            items.remove(pos);
        } else {
            remove_path(&mut items[pos], rest);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Managed fields entries

/// One `metadata.managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// `manager`.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `apiVersion`.
    pub api_version: String,
    /// `time`.
    pub time: Option<String>,
    /// `subresource` (`None` for the main resource).
    pub subresource: Option<String>,
    /// `fieldsV1`, decoded.
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    /// structured-merge-diff's manager identity: Apply entries ignore the apiVersion.
    fn same_identity(&self, other: &ManagedFieldsEntry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == "Apply" || self.api_version == other.api_version)
    }

    /// How conflict messages name this manager.
    fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }

    fn from_value(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|x| !x.is_empty()),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }
}

/// The decoded `metadata.managedFields` of an object (malformed entries are skipped).
pub fn managed_fields(obj: &Value) -> Vec<ManagedFieldsEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(ManagedFieldsEntry::from_value)
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the entries sorted like the real server (operation, time, manager, apiVersion,
/// subresource); no entries means no `managedFields` key.
fn write_managed_fields(obj: &mut Value, mut entries: Vec<ManagedFieldsEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Value::Object(root) = obj else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else { return };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(ManagedFieldsEntry::to_value).collect()),
        );
    }
}

/// The part of `v` a manager's writes are tracked on (top-level fields out of scope removed).
fn scoped(v: &Value, mgr: &Manager<'_>) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| mgr.in_scope(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

// ---------------------------------------------------------------------------------------------
// Apply

/// Server-side apply of `applied` by `mgr` onto `live` (`None` = create).
///
/// Returns the merged object carrying the new `metadata.managedFields`; server-set metadata
/// (uid, resourceVersion, …) is left to the caller.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    mgr: &Manager<'_>,
    force: bool,
    types: &dyn TypeInfo,
) -> Result<Value, ApplyError> {
    let Value::Object(cfg_map) = applied else {
        return Err(ApplyError::Invalid(
            "apply patch must be an object".to_owned(),
        ));
    };
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".to_owned(),
        ));
    }
    let w = Walker {
        types,
        strict: true,
    };
    let lenient = Walker {
        types,
        strict: false,
    };
    let live_obj = live.cloned().unwrap_or_else(empty_object);
    let mut entries = managed_fields(&live_obj);
    let now = Some(mgr.time.to_owned());

    // An object nobody has applied to yet: its existing fields belong to "before-first-apply".
    if live.is_some() && entries.is_empty() {
        let mut base = live_obj.clone();
        if let Some(Value::Object(meta)) = base.get_mut("metadata") {
            meta.remove("managedFields");
        }
        let mut set = lenient.to_field_set(&base)?;
        strip(&mut set);
        if !set.is_empty() {
            entries.push(ManagedFieldsEntry {
                manager: "before-first-apply".to_owned(),
                operation: "Update".to_owned(),
                api_version: live_obj
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(mgr.api_version)
                    .to_owned(),
                time: now.clone(),
                subresource: None,
                fields: set,
            });
        }
    }

    // The configuration this endpoint may change; identity fields always come along.
    let cfg: Value = Value::Object(
        cfg_map
            .iter()
            .filter(|(k, _)| mgr.in_scope(k) || matches!(k.as_str(), "apiVersion" | "kind"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let mut new_set = w.to_field_set(&scoped(&cfg, mgr))?;
    strip(&mut new_set);

    let me = ManagedFieldsEntry {
        manager: mgr.name.to_owned(),
        operation: "Apply".to_owned(),
        api_version: mgr.api_version.to_owned(),
        time: now.clone(),
        subresource: mgr.subresource.map(str::to_owned),
        fields: new_set.clone(),
    };
    let mine = entries.iter().position(|e| e.same_identity(&me));
    let last_set = mine.map(|i| entries[i].fields.clone()).unwrap_or_default();

    let mut merged = w.merge(Some(&live_obj), &cfg, &mut Vec::new());

    // Fields this manager applied before but not now, and nobody else owns, go away.
    let mut keep = new_set.clone();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != mine {
            keep.union_with(&e.fields);
        }
    }
    // A node is removed as a whole (its descendants with it) unless something below it is
    // kept; descendants of a removed node are not visited (their keys would be gone).
    let gone: Vec<Vec<String>> = last_set
        .difference(&keep)
        .members()
        .into_iter()
        .filter(|p| !keep.has_at_or_below(p))
        .collect();
    for p in &gone {
        let ancestor_gone = gone.iter().any(|a| a.len() < p.len() && p.starts_with(a));
        if !ancestor_gone {
            remove_path(&mut merged, p);
        }
    }

    let cmp = w.compare(&scoped(&live_obj, mgr), &scoped(&merged, mgr));
    let mut changed = cmp.modified.clone();
    changed.union_with(&cmp.added);

    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == mine {
            continue;
        }
        let c = e.fields.intersection(&changed);
        for p in c.members() {
            conflicts.push((i, p));
        }
    }
    if !conflicts.is_empty() && !force {
        let mut list: Vec<Conflict> = conflicts
            .iter()
            .map(|(i, p)| Conflict {
                manager: entries[*i].manager.clone(),
                manager_display: entries[*i].display(),
                field: path_to_string(p),
            })
            .collect();
        list.sort_by(|a, b| a.manager_display.cmp(&b.manager_display));
        return Err(ApplyError::Conflicts(ApplyConflicts { conflicts: list }));
    }
    for (i, p) in &conflicts {
        entries[*i].fields.remove_subtree(p);
    }
    for e in &mut entries {
        e.fields = e.fields.difference(&cmp.removed);
    }
    let object_changed =
        !cmp.added.is_empty() || !cmp.modified.is_empty() || !cmp.removed.is_empty();
    // As structured-merge-diff's managed fields updater: the applier's entry gets a new time
    // only when its apply changed the object; one that changed nothing (the same values as
    // another manager's) is recorded without a time.
    match mine {
        Some(i) => {
            let e = &mut entries[i];
            if object_changed {
                e.time = now;
            }
            e.fields = new_set;
            e.api_version = mgr.api_version.to_owned();
        }
        None => {
            let mut me = me;
            if !object_changed {
                me.time = None;
            }
            entries.push(me)
        }
    }
    write_managed_fields(&mut merged, entries);
    Ok(merged)
}

// ---------------------------------------------------------------------------------------------
// Update

/// Ownership bookkeeping for a non-apply write of `new` (replacing `old`, `None` on create) by
/// `mgr`: it takes every field it added or changed (from everyone else), fields that disappeared
/// leave every set, empty entries are dropped. Returns `new` with the resulting
/// `metadata.managedFields`.
///
/// A client may send `managedFields` itself: a changed non-empty list replaces the stored one,
/// and a list holding one empty entry (`[{}]`) clears them, as on a real server.
pub fn record_update(
    old: Option<&Value>,
    new: &Value,
    mgr: &Manager<'_>,
    types: &dyn TypeInfo,
) -> Value {
    let w = Walker {
        types,
        strict: false,
    };
    let old_entries = old.map(managed_fields).unwrap_or_default();
    let sent = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    let mut result = new.clone();
    let mut entries = match sent {
        Some(list) if list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty) => {
            write_managed_fields(&mut result, Vec::new());
            return result;
        }
        Some(list)
            if !list.is_empty()
                && Some(list)
                    != old
                        .and_then(|o| o.pointer("/metadata/managedFields"))
                        .and_then(Value::as_array) =>
        {
            managed_fields(new)
        }
        _ => old_entries,
    };
    let empty = empty_object();
    let cmp = w.compare(&scoped(old.unwrap_or(&empty), mgr), &scoped(new, mgr));
    let mut taken = cmp.modified.clone();
    taken.union_with(&cmp.added);

    let me = ManagedFieldsEntry {
        manager: mgr.name.to_owned(),
        operation: "Update".to_owned(),
        api_version: mgr.api_version.to_owned(),
        time: Some(mgr.time.to_owned()),
        subresource: mgr.subresource.map(str::to_owned),
        fields: FieldSet::default(),
    };
    let mine = entries.iter().position(|e| e.same_identity(&me));
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != mine {
            e.fields = e.fields.difference(&taken);
        }
        e.fields = e.fields.difference(&cmp.removed);
    }
    if !taken.is_empty() {
        match mine {
            Some(i) => {
                entries[i].fields.union_with(&taken);
                entries[i].time = me.time.clone();
            }
            None => {
                let mut me = me;
                me.fields = taken;
                entries.push(me);
            }
        }
    }
    write_managed_fields(&mut result, entries);
    result
}

/// Paths of a set as strings (`.spec.a`), sorted; handy in tests and debugging output.
pub fn field_paths(set: &FieldSet) -> BTreeSet<String> {
    set.members().iter().map(|p| path_to_string(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semantics::schema::StructuralSchema;
    use crate::semantics::types::{BuiltinTypes, DefaultTypes};
    use serde_json::json;

    const CR_VERSION: &str = "klutch.anynines.com/v1alpha1";
    const KLUTCH: &str = "klutch.anynines.com";

    fn mgr<'a>(name: &'a str, time: &'a str) -> Manager<'a> {
        Manager {
            name,
            api_version: CR_VERSION,
            subresource: None,
            status_subresource: true,
            time,
        }
    }

    fn cr(spec: Value) -> Value {
        json!({"apiVersion": CR_VERSION, "kind": "Claim", "metadata": {"name": "c", "namespace": "ns"}, "spec": spec})
    }

    fn owned(obj: &Value, manager: &str) -> BTreeSet<String> {
        managed_fields(obj)
            .iter()
            .filter(|e| e.manager == manager)
            .map(|e| field_paths(&e.fields))
            .next()
            .unwrap_or_default()
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}},
            "f:spec": {"f:ports": {"k:{\"name\":\"x\"}": {".": {}, "f:name": {}, "f:port": {}}},
                       "f:fin": {"v:\"a\"": {}}}});
        let s = FieldSet::from_fields_v1(&v);
        assert_eq!(s.to_fields_v1(), v);
        assert_eq!(
            field_paths(&s),
            set(&[
                ".metadata.labels",
                ".metadata.labels.a",
                ".spec.fin[=\"a\"]",
                ".spec.ports[name=\"x\"]",
                ".spec.ports[name=\"x\"].name",
                ".spec.ports[name=\"x\"].port",
            ])
        );
    }

    #[test]
    fn two_managers_share_one_object() {
        // The konnector applies spec.a; Crossplane writes spec.resourceRef into the same claim.
        let a1 = apply(
            None,
            &cr(json!({"a": 1})),
            &mgr(KLUTCH, "t1"),
            true,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(owned(&a1, KLUTCH), set(&[".spec.a"]));
        let entry = &a1["metadata"]["managedFields"][0];
        assert_eq!(entry["operation"], "Apply");
        assert_eq!(entry["apiVersion"], CR_VERSION);
        assert_eq!(entry["fieldsType"], "FieldsV1");
        assert_eq!(entry["time"], "t1");
        assert_eq!(entry["fieldsV1"], json!({"f:spec": {"f:a": {}}}));

        // Crossplane merge-patches (an Update).
        let mut patched = a1.clone();
        patched["spec"]["resourceRef"] = json!({"name": "x"});
        let a2 = record_update(Some(&a1), &patched, &mgr("crossplane", "t2"), &DefaultTypes);
        assert_eq!(
            owned(&a2, "crossplane"),
            set(&[".spec.resourceRef", ".spec.resourceRef.name"])
        );

        // The konnector applies again without resourceRef: resourceRef survives.
        let a3 = apply(
            Some(&a2),
            &cr(json!({"a": 2})),
            &mgr(KLUTCH, "t3"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(a3["spec"], json!({"a": 2, "resourceRef": {"name": "x"}}));
        assert_eq!(owned(&a3, "crossplane").len(), 2);

        // Applying an empty spec removes what only the konnector owned.
        let a4 = apply(
            Some(&a3),
            &cr(json!({})),
            &mgr(KLUTCH, "t4"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(a4["spec"], json!({"resourceRef": {"name": "x"}}));
        // `spec: {}` owns nothing, so the konnector's entry is gone.
        assert!(managed_fields(&a4).iter().all(|e| e.manager != KLUTCH));
        assert_eq!(owned(&a4, "crossplane").len(), 2);
    }

    #[test]
    fn two_managers_share_a_claim_with_a_preserve_unknown_spec() {
        let s = StructuralSchema::from_value(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}))
        .unwrap();
        let a1 = apply(
            None,
            &cr(json!({"a": 1, "params": {"size": "s"}})),
            &mgr(KLUTCH, "t1"),
            true,
            &s,
        )
        .unwrap();
        assert_eq!(
            owned(&a1, KLUTCH),
            set(&[".spec.a", ".spec.params", ".spec.params.size"])
        );
        let mut patched = a1.clone();
        patched["spec"]["resourceRef"] = json!({"name": "x"});
        let a2 = record_update(Some(&a1), &patched, &mgr("crossplane", "t2"), &s);
        let a3 = apply(
            Some(&a2),
            &cr(json!({"a": 2})),
            &mgr(KLUTCH, "t3"),
            false,
            &s,
        )
        .unwrap();
        assert_eq!(a3["spec"], json!({"a": 2, "resourceRef": {"name": "x"}}));
        let a4 = apply(Some(&a3), &cr(json!({})), &mgr(KLUTCH, "t4"), false, &s).unwrap();
        assert_eq!(a4["spec"], json!({"resourceRef": {"name": "x"}}));
        // Crossplane changing the konnector's field through an update takes it over.
        let mut stolen = a3.clone();
        stolen["spec"]["a"] = json!(9);
        let a5 = record_update(Some(&a3), &stolen, &mgr("crossplane", "t5"), &s);
        assert!(!owned(&a5, KLUTCH).contains(".spec.a"));
        let err = apply(
            Some(&a5),
            &cr(json!({"a": 2})),
            &mgr(KLUTCH, "t6"),
            false,
            &s,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Apply failed with 1 conflict: conflict with \"crossplane\" using {CR_VERSION}: .spec.a"
            )
        );
    }

    #[test]
    fn two_appliers_share_one_object() {
        let a1 = apply(
            None,
            &cr(json!({"a": 1})),
            &mgr(KLUTCH, "t1"),
            true,
            &DefaultTypes,
        )
        .unwrap();
        let a2 = apply(
            Some(&a1),
            &cr(json!({"resourceRef": {"name": "x"}})),
            &mgr("crossplane", "t2"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(owned(&a2, "crossplane"), set(&[".spec.resourceRef.name"]));
        let a3 = apply(
            Some(&a2),
            &cr(json!({"a": 2})),
            &mgr(KLUTCH, "t3"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(a3["spec"], json!({"a": 2, "resourceRef": {"name": "x"}}));
        // Crossplane stops applying resourceRef: it goes, the konnector's field stays.
        let a4 = apply(
            Some(&a3),
            &cr(json!({})),
            &mgr("crossplane", "t4"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(a4["spec"], json!({"a": 2, "resourceRef": {}}));
    }

    #[test]
    fn conflict_without_force_and_force_takes_over() {
        let a1 = apply(
            None,
            &cr(json!({"replicas": 1})),
            &mgr("other-manager", "t1"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        let mut put = a1.clone();
        put["spec"]["replicas"] = json!(3);
        let m = Manager {
            api_version: "v1",
            ..mgr("kubectl-edit", "t2")
        };
        let a2 = record_update(Some(&a1), &put, &m, &DefaultTypes);
        // The field moved to the updater.
        assert!(owned(&a2, "other-manager").is_empty());
        assert_eq!(owned(&a2, "kubectl-edit"), set(&[".spec.replicas"]));

        let err = apply(
            Some(&a2),
            &cr(json!({"replicas": 5})),
            &mgr(KLUTCH, "t3"),
            false,
            &DefaultTypes,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .spec.replicas"
        );
        let ApplyError::Conflicts(c) = &err else {
            panic!("{err}")
        };
        assert_eq!(
            c.causes(),
            vec![(
                "FieldManagerConflict".to_owned(),
                "conflict with \"kubectl-edit\" using v1".to_owned(),
                ".spec.replicas".to_owned()
            )]
        );

        // Same value: no conflict, shared ownership.
        let shared = apply(
            Some(&a2),
            &cr(json!({"replicas": 3})),
            &mgr(KLUTCH, "t3"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(owned(&shared, KLUTCH), set(&[".spec.replicas"]));
        assert_eq!(owned(&shared, "kubectl-edit"), set(&[".spec.replicas"]));

        // Force: the value changes and ownership moves; the loser's empty entry disappears.
        let forced = apply(
            Some(&a2),
            &cr(json!({"replicas": 5})),
            &mgr(KLUTCH, "t3"),
            true,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        assert_eq!(owned(&forced, KLUTCH), set(&[".spec.replicas"]));
        assert!(
            managed_fields(&forced)
                .iter()
                .all(|e| e.manager != "kubectl-edit")
        );
    }

    #[test]
    fn conflicts_with_several_fields_and_appliers() {
        let a1 = apply(
            None,
            &cr(json!({"a": 1, "b": 1})),
            &mgr("one", "t1"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        let err = apply(
            Some(&a1),
            &cr(json!({"a": 2, "b": 2})),
            &mgr("two", "t2"),
            false,
            &DefaultTypes,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"one\":\n- .spec.a\n- .spec.b"
        );
    }

    #[test]
    fn filling_an_empty_object_is_no_conflict() {
        let s = StructuralSchema::from_value(&json!({"type": "object", "properties": {"spec": {
            "type": "object", "properties": {"ref": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}))
        .unwrap();
        let a1 = apply(None, &cr(json!({"ref": {}})), &mgr("one", "t1"), false, &s).unwrap();
        // `ref` is declared and empty: owned by nobody.
        assert!(managed_fields(&a1).is_empty());
        let a2 = apply(
            Some(&a1),
            &cr(json!({"ref": {"x": 1}})),
            &mgr("two", "t2"),
            false,
            &s,
        )
        .unwrap();
        // Keys of a preserved-unknown map are owned as nodes.
        assert_eq!(owned(&a2, "two"), set(&[".spec.ref.x"]));
        let mut next = a2.clone();
        next["spec"]["ref"]["y"] = json!({"z": 1});
        let u = record_update(Some(&a2), &next, &mgr("three", "t3"), &s);
        assert_eq!(owned(&u, "three"), set(&[".spec.ref.y", ".spec.ref.y.z"]));
        assert_eq!(owned(&u, "two"), set(&[".spec.ref.x"]));
    }

    #[test]
    fn removed_field_owned_by_another_applier_stays() {
        let a1 = apply(
            None,
            &cr(json!({"a": 1})),
            &mgr("one", "t1"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        let a2 = apply(
            Some(&a1),
            &cr(json!({"a": 1})),
            &mgr("two", "t2"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        let a3 = apply(
            Some(&a2),
            &cr(json!({})),
            &mgr("one", "t3"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(a3["spec"]["a"], 1);
        assert_eq!(owned(&a3, "two"), set(&[".spec.a"]));
    }

    #[test]
    fn an_apply_that_changes_nothing_leaves_no_time() {
        let time_of = |obj: &Value, manager: &str| {
            managed_fields(obj)
                .into_iter()
                .find(|e| e.manager == manager)
                .and_then(|e| e.time)
        };
        let a1 = apply(
            None,
            &cr(json!({"a": 1, "b": 2})),
            &mgr("one", "t1"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        let a2 = apply(
            Some(&a1),
            &cr(json!({"a": 1})),
            &mgr("two", "t2"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(time_of(&a2, "two"), None);
        // Dropping a field another manager keeps changes nothing: the applier's time stays.
        let a3 = apply(
            Some(&a2),
            &cr(json!({"b": 2})),
            &mgr("one", "t3"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(time_of(&a3, "one").as_deref(), Some("t1"));
    }

    fn list_schema() -> StructuralSchema {
        StructuralSchema::from_value(&json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            "args": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}
        }}}}))
        .unwrap()
    }

    #[test]
    fn set_and_map_lists_merge_items_from_two_managers() {
        let s = list_schema();
        let a1 = apply(
            None,
            &cr(json!({"tags": ["a"], "ports": [{"name": "http", "port": 80}], "args": ["x"]})),
            &mgr("one", "t1"),
            false,
            &s,
        )
        .unwrap();
        let a2 = apply(
            Some(&a1),
            &cr(json!({"tags": ["b"], "ports": [{"name": "grpc", "port": 90}]})),
            &mgr("two", "t2"),
            false,
            &s,
        )
        .unwrap();
        assert_eq!(a2["spec"]["tags"], json!(["a", "b"]));
        assert_eq!(
            a2["spec"]["ports"],
            json!([{"name": "http", "port": 80}, {"name": "grpc", "port": 90}])
        );
        assert_eq!(
            owned(&a2, "two"),
            set(&[
                ".spec.ports[name=\"grpc\"]",
                ".spec.ports[name=\"grpc\"].name",
                ".spec.ports[name=\"grpc\"].port",
                ".spec.tags[=\"b\"]"
            ])
        );
        assert_eq!(
            a2["metadata"]["managedFields"][1]["fieldsV1"],
            json!({"f:spec": {"f:ports": {"k:{\"name\":\"grpc\"}": {".": {}, "f:name": {}, "f:port": {}}}, "f:tags": {"v:\"b\"": {}}}})
        );
        // "one" drops its items: only its items go.
        let a3 = apply(Some(&a2), &cr(json!({})), &mgr("one", "t3"), false, &s).unwrap();
        assert_eq!(a3["spec"]["tags"], json!(["b"]));
        assert_eq!(a3["spec"]["ports"], json!([{"name": "grpc", "port": 90}]));
        assert!(a3["spec"].get("args").is_none());
        // An atomic list is owned as a whole: another value conflicts.
        let err = apply(
            Some(&a2),
            &cr(json!({"args": ["y"]})),
            &mgr("two", "t3"),
            false,
            &s,
        )
        .unwrap_err();
        assert!(err.to_string().ends_with(": .spec.args"), "{err}");
        // Duplicate set values and map keys in an applied configuration are refused.
        let dup = apply(
            Some(&a2),
            &cr(json!({"tags": ["b", "b"]})),
            &mgr("two", "t3"),
            false,
            &s,
        )
        .unwrap_err();
        assert_eq!(
            dup.to_string(),
            ".spec.tags: duplicate entries for key [=\"b\"]"
        );
        let dup = apply(
            Some(&a2),
            &cr(json!({"ports": [{"name": "a"}, {"name": "a"}]})),
            &mgr("two", "t3"),
            false,
            &s,
        );
        assert!(matches!(dup, Err(ApplyError::Invalid(_))));
        // Map-list items without their key are refused.
        let bad = apply(
            Some(&a2),
            &cr(json!({"ports": [{"port": 1}]})),
            &mgr("two", "t3"),
            false,
            &s,
        )
        .unwrap_err();
        assert!(matches!(bad, ApplyError::Invalid(_)), "{bad}");
    }

    #[test]
    fn map_keys_are_owned_as_nodes() {
        let s = list_schema();
        let a1 = apply(
            None,
            &cr(json!({"labels": {"x": "1"}})),
            &mgr("one", "t1"),
            false,
            &s,
        )
        .unwrap();
        assert_eq!(owned(&a1, "one"), set(&[".spec.labels.x"]));
    }

    #[test]
    fn update_takes_changed_fields_and_drops_removed_ones() {
        let m1 = Manager {
            api_version: "v1",
            status_subresource: false,
            ..mgr("creator", "t1")
        };
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "1", "labels": {"a": "b"}}, "data": {"k1": "v", "k2": "v"}});
        let types = BuiltinTypes::for_kind("", "ConfigMap");
        let c = record_update(None, &cm, &m1, &types);
        assert_eq!(
            owned(&c, "creator"),
            set(&[
                ".data",
                ".data.k1",
                ".data.k2",
                ".metadata.labels",
                ".metadata.labels.a"
            ])
        );
        let mut next = c.clone();
        next["data"] = json!({"k1": "changed"});
        let m2 = Manager {
            api_version: "v1",
            status_subresource: false,
            ..mgr("editor", "t2")
        };
        let u = record_update(Some(&c), &next, &m2, &types);
        assert_eq!(owned(&u, "editor"), set(&[".data.k1"]));
        assert_eq!(
            owned(&u, "creator"),
            set(&[".data", ".metadata.labels", ".metadata.labels.a"])
        );
        // A write that changes nothing records nothing.
        let same = record_update(
            Some(&u),
            &u,
            &Manager {
                api_version: "v1",
                ..mgr("noop", "t3")
            },
            &types,
        );
        assert!(managed_fields(&same).iter().all(|e| e.manager != "noop"));
        assert_eq!(managed_fields(&same), managed_fields(&u));
    }

    #[test]
    fn status_is_tracked_only_through_the_subresource() {
        let mut obj = cr(json!({"a": 1}));
        obj["status"] = json!({"ready": true});
        let created = record_update(None, &obj, &mgr("creator", "t1"), &DefaultTypes);
        assert_eq!(owned(&created, "creator"), set(&[".spec", ".spec.a"]));
        let mut next = created.clone();
        next["status"] = json!({"ready": false, "phase": "x"});
        let st = Manager {
            subresource: Some("status"),
            ..mgr("ctrl", "t2")
        };
        let u = record_update(Some(&created), &next, &st, &DefaultTypes);
        let e = managed_fields(&u)
            .into_iter()
            .find(|e| e.manager == "ctrl")
            .unwrap();
        assert_eq!(e.subresource.as_deref(), Some("status"));
        assert_eq!(
            field_paths(&e.fields),
            set(&[".status.phase", ".status.ready"])
        );
        assert_eq!(
            u["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["manager"] == "ctrl")
                .unwrap()["subresource"],
            "status"
        );
        // Applying status through the main endpoint neither owns nor changes it.
        let mut applied = cr(json!({"a": 1}));
        applied["status"] = json!({"ready": true});
        let a = apply(Some(&u), &applied, &mgr("app", "t3"), false, &DefaultTypes).unwrap();
        assert_eq!(a["status"], json!({"ready": false, "phase": "x"}));
        assert_eq!(owned(&a, "app"), set(&[".spec.a"]));
    }

    #[test]
    fn identity_and_server_fields_are_never_owned() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n", "uid": "u",
            "resourceVersion": "5", "generation": 1, "creationTimestamp": "t"}, "data": {"a": "b"}});
        let a = apply(
            None,
            &obj,
            &Manager {
                api_version: "v1",
                ..mgr("m", "t1")
            },
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(owned(&a, "m"), set(&[".data.a"]));
    }

    #[test]
    fn first_apply_on_unmanaged_object_creates_before_first_apply() {
        let live = cr(json!({"a": 1, "b": 2}));
        let a = apply(
            Some(&live),
            &cr(json!({"a": 1})),
            &mgr("m", "t1"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        assert_eq!(
            owned(&a, "before-first-apply"),
            set(&[".spec.a", ".spec.b"])
        );
        assert_eq!(owned(&a, "m"), set(&[".spec.a"]));
        // Changing b would conflict with the previous, unnamed owner.
        assert!(
            apply(
                Some(&live),
                &cr(json!({"b": 3})),
                &mgr("m", "t1"),
                false,
                &DefaultTypes
            )
            .is_err()
        );
    }

    #[test]
    fn managed_fields_in_the_request() {
        let a = apply(
            None,
            &cr(json!({"a": 1})),
            &mgr("m", "t1"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        let mut cleared = a.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        let u = record_update(Some(&a), &cleared, &mgr("x", "t2"), &DefaultTypes);
        assert!(u["metadata"].get("managedFields").is_none());
        let mut bad = cr(json!({}));
        bad["metadata"]["managedFields"] = json!([]);
        assert!(matches!(
            apply(Some(&a), &bad, &mgr("m", "t1"), false, &DefaultTypes),
            Err(ApplyError::Invalid(_))
        ));
    }

    #[test]
    fn finalizers_are_a_set_on_every_kind() {
        let mut o1 = cr(json!({}));
        o1["metadata"]["finalizers"] = json!(["a"]);
        let a1 = apply(None, &o1, &mgr("one", "t1"), false, &DefaultTypes).unwrap();
        let mut o2 = cr(json!({}));
        o2["metadata"]["finalizers"] = json!(["b"]);
        let a2 = apply(Some(&a1), &o2, &mgr("two", "t2"), false, &DefaultTypes).unwrap();
        assert_eq!(a2["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(owned(&a2, "two"), set(&[".metadata.finalizers[=\"b\"]"]));
    }

    #[test]
    fn entries_are_sorted_like_the_real_server() {
        let a = apply(
            None,
            &cr(json!({"a": 1})),
            &mgr("z-apply", "t1"),
            false,
            &DefaultTypes,
        )
        .unwrap();
        let mut next = a.clone();
        next["spec"]["b"] = json!(1);
        let u = record_update(Some(&a), &next, &mgr("a-update", "t0"), &DefaultTypes);
        let ops: Vec<&str> = u["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["operation"].as_str().unwrap())
            .collect();
        assert_eq!(ops, vec!["Apply", "Update"]);
    }
}
