//! The REST verbs on stored objects, with the real server's object semantics: server-set
//! metadata, resourceVersion preconditions, the status subresource, generation, no-op writes,
//! finalizers and deletionTimestamp, namespace lifecycle, CRD registration and custom resource
//! validation, pruning and defaulting.
//!
//! Everything here runs under the store's write (or read) lock and is synchronous.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::clock::now;
use crate::error::{ApiError, ApiResult, Cause};
use crate::request::{RequestInfo, User};
use crate::resources::{ResourceDef, ResourceRef};
use crate::sem;
use crate::semantics::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, ObjKey, Store, Table, set_rv};

/// Namespaces that exist from the start and cannot be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];
/// Finalizer the CRD cleanup controller uses.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One resource request, already authenticated and authorized.
#[derive(Debug)]
pub struct Req<'a> {
    /// The resource.
    pub def: ResourceRef,
    /// The version in the URL.
    pub version: &'a str,
    /// Namespace in the URL (`""` if none).
    pub namespace: &'a str,
    /// Name in the URL (`""` for collections).
    pub name: &'a str,
    /// Subresource in the URL (`""` or `status`).
    pub subresource: &'a str,
    /// Query parameters.
    pub query: &'a HashMap<String, String>,
    /// The `User-Agent` header (the default field manager).
    pub user_agent: &'a str,
    /// With RBAC on: the caller and the request's attributes with the verb `create`. A write
    /// that creates its object without being a create (server-side apply, or an update of a
    /// missing object of a kind that allows it) must be allowed to `create` it too.
    pub create_authz: Option<(&'a User, RequestInfo)>,
    /// The resource the client addressed when it serves `def`'s objects converted
    /// (`events.k8s.io` Events are core Events): writes record their managed fields in its
    /// terms, as the real server does.
    pub view: Option<View>,
    /// Warnings for the client (the `Warning` headers of the response), e.g. unknown fields
    /// dropped under `fieldValidation=Warn`.
    pub warnings: std::cell::RefCell<Vec<String>>,
}

/// A resource served as another's objects converted, as a write through it sees them.
#[derive(Debug, Clone)]
pub struct View {
    /// The addressed resource.
    pub def: ResourceRef,
    /// A stored object as the addressed resource serves it.
    pub to_view: fn(&Value) -> Value,
}

impl Req<'_> {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn key(&self) -> ObjKey {
        (self.namespace.to_owned(), self.name.to_owned())
    }

    /// The field manager of a non-apply write: `fieldManager`, else the user agent up to `/`,
    /// else `unknown` (as the real server names a client that sends no user agent).
    fn manager(&self) -> String {
        field_manager(self.query, self.user_agent)
    }

    fn api_version(&self) -> String {
        self.def.api_version(self.version)
    }
}

/// What admission and the storage of a kind add after the writer's fields are recorded (pod
/// priority and tolerations, Service cluster IPs and node ports avoiding the other Services').
fn allocate(
    store: &Store,
    def: &ResourceDef,
    old: Option<&Value>,
    obj: &mut Value,
) -> ApiResult<()> {
    if old.is_none() {
        crate::builtin::admit(&def.group, &def.kind, obj);
    }
    if !(def.group.is_empty() && def.kind == "Service") {
        return Ok(());
    }
    let (mut ips, mut ports) = (Vec::new(), Vec::new());
    let me = (s(obj, "/metadata/namespace"), s(obj, "/metadata/name"));
    for svc in store.table(&def.key()).into_iter().flat_map(|t| t.values()) {
        if (s(svc, "/metadata/namespace"), s(svc, "/metadata/name")) != me {
            let (i, p) = crate::builtin::service_allocations(svc);
            ips.extend(i);
            ports.extend(p);
        }
    }
    crate::builtin::allocate_service(obj, old, &ips, &ports)
}

/// Records the fields a non-apply write changed as owned by `manager`, in the terms of the
/// resource the client addressed (see [`View`]).
fn track_update(r: &Req<'_>, old: Option<&Value>, obj: &mut Value, manager: &str) {
    let Some(view) = &r.view else {
        return sem::track_update(&r.def, old, obj, manager, r.subresource);
    };
    let old = old.map(view.to_view);
    let mut seen = (view.to_view)(obj);
    sem::track_update(&view.def, old.as_ref(), &mut seen, manager, r.subresource);
    match seen.pointer("/metadata/managedFields").cloned() {
        Some(mf) => meta_mut(obj).insert("managedFields".into(), mf),
        None => meta_mut(obj).remove("managedFields"),
    };
}

/// The field manager of a non-apply write: `fieldManager`, else the user agent up to `/`, else
/// `unknown` (as the real server names a client that sends no user agent).
pub fn field_manager(query: &HashMap<String, String>, user_agent: &str) -> String {
    match query.get("fieldManager") {
        Some(m) if !m.is_empty() => m.clone(),
        _ => {
            let ua = user_agent.split('/').next().unwrap_or_default();
            if ua.is_empty() {
                "unknown".to_owned()
            } else {
                ua.chars().take(128).collect()
            }
        }
    }
}

fn s<'v>(v: &'v Value, ptr: &str) -> &'v str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(o) = obj else {
        unreachable!("made an object above")
    };
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    let Value::Object(m) = m else {
        unreachable!("made an object above")
    };
    m
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, f: &[String]) {
    let meta = meta_mut(obj);
    if f.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(f));
    }
}

/// Whether the object is being deleted.
pub fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// A Role or ClusterRole without rules (absent or `[]`) is read back as `rules: null` (the field
/// has no `omitempty`), after the write recorded its ownership, as on the real server.
fn empty_rules_read_back_null(def: &ResourceDef, obj: &mut Value) {
    if def.group == "rbac.authorization.k8s.io"
        && matches!(def.kind.as_str(), "Role" | "ClusterRole")
        && let Some(o) = obj.as_object_mut()
        && o.get("rules")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
    {
        o.insert("rules".into(), Value::Null);
    }
}

/// Stores a new object as the server creates it: uid, creation time, a fresh resourceVersion.
fn put_new(store: &mut Store, def: &ResourceDef, mut obj: Value) {
    let rv = store.next_rv();
    let m = meta_mut(&mut obj);
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now()));
    m.insert("resourceVersion".into(), json!(rv.to_string()));
    store.put(def, rv, obj, EventType::Added);
}

/// Creates the namespaces every cluster has, and the RBAC bootstrap policy.
pub fn bootstrap(store: &mut Store) {
    for (plural, mut obj) in crate::rbac::bootstrap_policy() {
        let Some(def) = store
            .resources
            .get(&format!("{plural}.rbac.authorization.k8s.io"))
            .cloned()
        else {
            continue;
        };
        // Written by kube-apiserver, with managed fields like any create (an update of an
        // object without them would not be tracked).
        sem::track_update(&def, None, &mut obj, "kube-apiserver", "");
        put_new(store, &def, obj);
    }
    let Some(def) = store.resources.get("namespaces").cloned() else {
        return;
    };
    for ns in SYSTEM_NAMESPACES {
        let mut obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
        });
        sem::track_update(&def, None, &mut obj, "kube-apiserver", "");
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
        put_new(store, &def, obj);
    }
}

/// Objects are stored at the storage version (conversion strategy `None`: only `apiVersion`
/// changes between versions).
/// etcd refuses a request over its size limit; kube-apiserver passes that on as a 500 with
/// etcd's message (the object passed every validation).
fn check_size(store: &Store, obj: &Value) -> ApiResult<()> {
    match store.max_object_bytes {
        Some(limit) if serde_json::to_vec(obj).map_or(0, |b| b.len()) > limit => Err(
            ApiError::new(500, "InternalError", "etcdserver: request is too large"),
        ),
        _ => Ok(()),
    }
}

fn to_storage_version(def: &ResourceDef, obj: &mut Value) {
    let av = def.api_version(def.storage_version());
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(av));
    }
}

/// Sets `apiVersion` to the requested version (custom resources may be served at several).
fn at_version(obj: &Value, api_version: &str) -> Value {
    let mut o = obj.clone();
    if o.get("apiVersion").and_then(Value::as_str) != Some(api_version)
        && let Some(m) = o.as_object_mut()
    {
        m.insert("apiVersion".into(), json!(api_version));
    }
    o
}

/// A stored object as the storage serving the request reads it (pruned and defaulted by its
/// schema, for custom resources; see [`ResourceDef::read`]).
fn read_stored(def: &ResourceDef, raw: &Arc<Value>) -> Arc<Value> {
    def.read(raw).map_or_else(|| raw.clone(), Arc::new)
}

/// A stored object as a response or watch event carries it: read through the storage serving
/// the request and set to the requested version.
pub fn served(def: &ResourceDef, obj: &Value, api_version: &str) -> Value {
    match def.read(obj) {
        Some(read) => at_version(&read, api_version),
        None => at_version(obj, api_version),
    }
}

/// An item of a list response: built-in kinds' items carry no `apiVersion`/`kind` (the real
/// server encodes typed lists, whose items have an empty type), custom resources' items do.
fn list_item(def: &ResourceDef, obj: &Value, api_version: &str) -> Value {
    let mut item = served(def, obj, api_version);
    if !def.custom
        && let Some(m) = item.as_object_mut()
    {
        m.remove("apiVersion");
        m.remove("kind");
    }
    item
}

/// GET of one object (or its status subresource, which returns the whole object).
pub fn get(store: &Store, r: &Req<'_>) -> ApiResult<Value> {
    let obj = store
        .get(&r.def.key(), &r.key())
        .ok_or_else(|| ApiError::not_found(&r.def.plural, &r.def.group, r.name))?;
    Ok(served(&r.def, obj, &r.api_version()))
}

/// Parsed `labelSelector` and `fieldSelector`.
#[derive(Debug, Default)]
pub struct Selectors {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parses the selectors of a list or watch of `def` at `version` (`400 BadRequest` if
    /// malformed or selecting by a field the version does not offer).
    pub fn parse(
        query: &HashMap<String, String>,
        def: &ResourceDef,
        version: &str,
    ) -> ApiResult<Self> {
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut supported: Vec<&str> = vec!["metadata.name", "metadata.namespace"];
        match (def.group.as_str(), def.kind.as_str()) {
            ("", "Secret") => supported.push("type"),
            ("", "Namespace") => supported.push("status.phase"),
            // What `kubectl describe` selects an object's Events by (and `events.k8s.io`'s
            // `regarding.*`, translated to these on the way in).
            ("", "Event") => supported.extend([
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "type",
            ]),
            _ => {}
        }
        if let Some(v) = def.version(version) {
            supported.extend(v.selectable_fields.iter().map(String::as_str));
        }
        let fields = FieldSelector::parse_with(
            query.get("fieldSelector").map_or("", String::as_str),
            &supported,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self { labels, fields })
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
    ns: String,
}

fn encode_continue(rv: u64, last: &ObjKey) -> String {
    let t = ContinueToken {
        rv,
        ns: last.0.clone(),
        start: last.1.clone(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::bad_request("continue key is not valid: illegal base64 data at input byte 0")
        })
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid value: \"{s}\": resourceVersion must be a number"
        ))
    })
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// `504 Timeout` for a resourceVersion the server has not reached.
pub fn too_large(rv: u64, current: u64) -> ApiError {
    let mut e = ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {rv}, current: {current}"),
    );
    e.details.causes = vec![Cause {
        reason: "ResourceVersionTooLarge".into(),
        message: "Too large resource version".into(),
        field: String::new(),
    }];
    e.details.retry_after = Some(1);
    e
}

/// `422 Invalid` of the list's options (`ListOptions.meta.k8s.io`) about `resourceVersionMatch`.
fn list_options_invalid(reason: &str, message: &str) -> ApiError {
    ApiError::invalid_field(
        "ListOptions",
        "meta.k8s.io",
        "",
        reason,
        "resourceVersionMatch",
        message.to_owned(),
    )
}

/// LIST with selectors, pagination (`limit`/`continue`, consistent snapshots) and
/// `resourceVersion`/`resourceVersionMatch` semantics.
pub fn list(store: &Store, r: &Req<'_>) -> ApiResult<Value> {
    let def = &r.def;
    let sel = Selectors::parse(r.query, def, r.version)?;
    let res = def.key();
    let rv_param = r.q("resourceVersion").unwrap_or_default();
    let rv_match = r.q("resourceVersionMatch").unwrap_or_default();
    // A first page at `resourceVersion=0` (any version) is served whole from the watch cache:
    // the limit is ignored.
    let from_cache =
        rv_param == "0" && rv_match != "Exact" && r.q("continue").is_none_or(str::is_empty);
    let limit = r
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0 && !from_cache);
    let mut start: Option<ObjKey> = None;
    let snapshot: std::borrow::Cow<'_, Table>;
    let list_rv;
    if let Some(token) = r.q("continue").filter(|c| !c.is_empty()) {
        if !rv_param.is_empty() && rv_param != "0" {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let t = decode_continue(token)?;
        start = Some((t.ns, t.start));
        list_rv = t.rv;
        snapshot = if t.rv == store.rv {
            std::borrow::Cow::Borrowed(store.table(&res).ok_or_else(ApiError::no_route)?)
        } else {
            std::borrow::Cow::Owned(
                store
                    .snapshot_at(&res, t.rv)
                    .ok_or_else(|| ApiError::expired(CONTINUE_EXPIRED))?,
            )
        };
    } else {
        if !rv_match.is_empty() && rv_param.is_empty() {
            return Err(list_options_invalid(
                "FieldValueForbidden",
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        match rv_match {
            "Exact" => {
                let rv = parse_rv(rv_param)?;
                if rv > store.rv {
                    return Err(too_large(rv, store.rv));
                }
                list_rv = rv;
                snapshot = std::borrow::Cow::Owned(store.snapshot_at(&res, rv).ok_or_else(
                    || {
                        ApiError::expired(format!(
                            "The resourceVersion for the provided list is too old. (requested {rv}, oldest {})",
                            store.history_start
                        ))
                    },
                )?);
            }
            "" | "NotOlderThan" => {
                if !rv_param.is_empty() {
                    let rv = parse_rv(rv_param)?;
                    if rv > store.rv {
                        return Err(too_large(rv, store.rv));
                    }
                }
                list_rv = store.rv;
                snapshot =
                    std::borrow::Cow::Borrowed(store.table(&res).ok_or_else(ApiError::no_route)?);
            }
            other => {
                return Err(list_options_invalid(
                    "FieldValueNotSupported",
                    &format!(
                        "Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                    ),
                ));
            }
        }
    }
    let api_version = r.api_version();
    let ns = r.namespace;
    let lower: ObjKey = match &start {
        Some(k) => k.clone(),
        None => (ns.to_owned(), String::new()),
    };
    let mut items = Vec::new();
    let mut last: Option<ObjKey> = None;
    let mut remaining = 0usize;
    let mut more = false;
    for (key, obj) in snapshot.range(lower..) {
        if start.as_ref() == Some(key) {
            continue;
        }
        if !ns.is_empty() && key.0 != ns {
            break;
        }
        if !sel.matches(obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            remaining += 1;
            continue;
        }
        items.push(list_item(def, obj, &api_version));
        last = Some(key.clone());
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if more && let Some(last) = last {
        metadata["continue"] = json!(encode_continue(list_rv, &last));
        if sel.labels.is_empty() && sel.fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    } else if def.custom {
        // A custom resource list is unstructured on the real server: its (empty) `continue`
        // is written out.
        metadata["continue"] = json!("");
    }
    Ok(json!({
        "kind": def.list_kind,
        "apiVersion": api_version,
        "metadata": metadata,
        "items": items,
    }))
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
        ));
    }
    Ok(v)
}

/// Checks `apiVersion`/`kind` of a request body and fills them in when missing.
fn check_type(r: &Req<'_>, obj: &mut Value) -> ApiResult<()> {
    let want_av = r.api_version();
    let av = s(obj, "/apiVersion").to_owned();
    let kind = s(obj, "/kind").to_owned();
    if !kind.is_empty() && kind != r.def.kind {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the kind of the resource ({})",
            r.def.kind
        )));
    }
    if !av.is_empty() && av != want_av {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(want_av));
        m.insert("kind".into(), json!(r.def.kind));
    }
    Ok(())
}

fn valid_name(name: &str, label: bool) -> bool {
    let max = if label { 63 } else { 253 };
    if name.is_empty() || name.len() > max {
        return false;
    }
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    if label {
        ok_part(name)
    } else {
        name.split('.').all(ok_part)
    }
}

fn check_name(def: &ResourceDef, name: &str) -> ApiResult<()> {
    let label = def.kind == "Namespace";
    // RBAC objects accept any path segment name; everything else is a DNS name.
    if def.group == "rbac.authorization.k8s.io" {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ApiError::invalid_field(
                &def.kind,
                &def.group,
                name,
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: \"{name}\": may not contain '/'"),
            ));
        }
        return Ok(());
    }
    if !valid_name(name, label) {
        let what = if label {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        };
        return Err(ApiError::invalid_field(
            &def.kind,
            &def.group,
            name,
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": {what}"),
        ));
    }
    Ok(())
}

fn valid_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Why `key` is not a qualified name (label or annotation key), as `IsQualifiedName` words it.
fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !valid_name(p, false))
    {
        return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".to_owned());
    }
    if !valid_qualified_name_part(name) {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_owned());
    }
    None
}

/// Validates `metadata.labels` and annotation keys, as every kind's ObjectMeta validation does.
fn check_metadata(def: &ResourceDef, obj: &Value) -> ApiResult<()> {
    let name = s(obj, "/metadata/name");
    let mut causes = Vec::new();
    let mut too_long = false;
    let mut bad = |field: &str, value: &str, why: String| {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{value}\": {why}"),
            field: field.to_owned(),
        });
    };
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(why) = qualified_name_error(k) {
                bad("metadata.labels", k, why);
            }
            let v = v.as_str().unwrap_or_default();
            if v.len() > 63 {
                bad(
                    "metadata.labels",
                    v,
                    "must be no more than 63 characters".to_owned(),
                );
            } else if !v.is_empty() && !valid_qualified_name_part(v) {
                bad("metadata.labels", v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_owned());
            }
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Some(why) = qualified_name_error(&k.to_lowercase()) {
                bad("metadata.annotations", k, why);
            }
        }
        if total > 256 * 1024 {
            too_long = true;
        }
    }
    let standard = ["kubernetes", "orphan", "foregroundDeletion"];
    for (i, f) in finalizers(obj).iter().enumerate() {
        if !standard.contains(&f.as_str())
            && f.contains('/')
            && let Some(why) = qualified_name_error(f)
        {
            bad(&format!("metadata.finalizers[{i}]"), f, why);
        }
    }
    if let Some(refs) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    {
        let mut controllers = 0;
        for r in refs {
            for (k, what) in [
                ("apiVersion", "version"),
                ("kind", "kind"),
                ("name", "name"),
                ("uid", "uid"),
            ] {
                if s(r, &format!("/{k}")).is_empty() {
                    bad(
                        &format!("metadata.ownerReferences.{k}"),
                        "",
                        format!("{what} must not be empty"),
                    );
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            bad(
                "metadata.ownerReferences",
                "",
                "Only one reference can have Controller set to true".to_owned(),
            );
        }
    }
    if too_long {
        causes.push(Cause {
            reason: "FieldValueTooLong".into(),
            message: "Too long: may not be more than 262144 bytes".into(),
            field: "metadata.annotations".into(),
        });
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&def.kind, &def.group, name, causes))
    }
}

/// ConfigMaps and Secrets marked `immutable: true` keep their data (and the flag) forever.
fn check_immutable(def: &ResourceDef, old: &Value, obj: &Value) -> ApiResult<()> {
    if !def.group.is_empty()
        || !matches!(def.kind.as_str(), "ConfigMap" | "Secret")
        || old.get("immutable").and_then(Value::as_bool) != Some(true)
    {
        return Ok(());
    }
    let name = s(obj, "/metadata/name");
    let mut causes = Vec::new();
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: field is immutable when `immutable` is set".into(),
            field: "immutable".into(),
        });
    }
    for field in ["data", "binaryData"] {
        if old.get(field) != obj.get(field) {
            causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: field is immutable when `immutable` is set".into(),
                field: field.into(),
            });
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&def.kind, &def.group, name, causes))
    }
}

/// The namespace must exist and must not be terminating.
fn check_namespace_for_create(
    store: &Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> ApiResult<()> {
    if !def.namespaced {
        return Ok(());
    }
    let Some(nsobj) = store.get("namespaces", &(String::new(), ns.to_owned())) else {
        return Err(ApiError::not_found("namespaces", "", ns));
    };
    if deleting(nsobj) {
        let mut e = ApiError::forbidden(
            &def.plural,
            &def.group,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        );
        e.details.causes = vec![Cause {
            reason: "NamespaceTerminating".into(),
            message: format!("namespace {ns} is being terminated"),
            field: "metadata.namespace".into(),
        }];
        return Err(e);
    }
    Ok(())
}

fn generate_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// Kind-specific normalisation on every write (create and update, both endpoints).
fn prepare(store: &Store, r: &Req<'_>, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
    let def = &*r.def;
    let version = r.version;
    let name = s(obj, "/metadata/name").to_owned();
    if !def.custom {
        crate::builtin::check_decoding(&def.group, &def.kind, version, obj)?;
        crate::builtin::apply_defaults(&def.group, &def.kind, obj, old.is_none());
    }
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Secret") => {
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                let data = obj
                    .as_object_mut()
                    .map(|o| o.entry("data").or_insert_with(|| json!({})));
                if let Some(Value::Object(data)) = data {
                    for (k, v) in sd {
                        let text = v.as_str().unwrap_or_default().to_owned();
                        data.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(text)),
                        );
                    }
                }
            }
            if let Some(Value::Object(data)) = obj.get("data") {
                for (k, v) in data {
                    let ok = v.as_str().is_some_and(|t| {
                        base64::engine::general_purpose::STANDARD.decode(t).is_ok()
                    });
                    if !ok {
                        return Err(ApiError::bad_request(format!(
                            "error decoding from json: illegal base64 data in data[{k:?}]"
                        )));
                    }
                }
            }
            if let Some(o) = obj.as_object_mut() {
                o.entry("type").or_insert_with(|| json!("Opaque"));
            }
            if let Some(old) = old
                && old.get("type") != obj.get("type")
            {
                return Err(ApiError::invalid_field(
                    "Secret",
                    "",
                    &name,
                    "FieldValueInvalid",
                    "type",
                    format!(
                        "Invalid value: {}: field is immutable",
                        obj.get("type").cloned().unwrap_or_default()
                    ),
                ));
            }
            let causes = crate::builtin::validate_secret(obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid("Secret", "", &name, causes));
            }
        }
        ("", "ConfigMap") => {
            let causes = crate::builtin::validate_config_map(obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid("ConfigMap", "", &name, causes));
            }
        }
        ("", "Event") => {
            crate::builtin::shape_core_event(obj);
            let causes = crate::builtin::validate_event(obj, r.view.is_some(), old.is_none());
            if !causes.is_empty() {
                return Err(ApiError::invalid("Event", "", &name, causes));
            }
        }
        ("", "Pod" | "PodTemplate" | "ReplicationController") => {
            let causes = crate::builtin::validate_pods(&def.group, &def.kind, obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid(&def.kind, "", &name, causes));
            }
        }
        ("", "Namespace") => {
            // spec.finalizers only change through /finalize.
            if let Some(old) = old
                && r.subresource != "finalize"
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                match old.pointer("/spec/finalizers") {
                    Some(f) => spec.insert("finalizers".into(), f.clone()),
                    None => spec.remove("finalizers"),
                };
            }
            if let Some(o) = obj.as_object_mut() {
                // spec.finalizers is set on create after ownership is recorded (see
                // `prepare_for_create`).
                o.entry("spec").or_insert_with(|| json!({}));
                let status = o.entry("status").or_insert_with(|| json!({}));
                if old.is_none()
                    && let Some(st) = status.as_object_mut()
                {
                    st.insert("phase".into(), json!("Active"));
                }
            }
            let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            prepare_crd(store, old, obj)?;
        }
        ("rbac.authorization.k8s.io", kind) => {
            // The RBAC registry's own checks come first (its storage wraps the standard one).
            if let Some((user, _)) = &r.create_authz {
                let ns = if def.namespaced { r.namespace } else { "" };
                crate::rbac::check_escalation(store, user, kind, ns, old, obj)?;
            }
            if let Some(old) = old
                && matches!(kind, "RoleBinding" | "ClusterRoleBinding")
            {
                crate::rbac::check_role_ref_unchanged(kind, old, obj)?;
            }
        }
        _ => {}
    }
    if !def.custom {
        crate::semantics::types::omit_empty(&def.group, &def.kind, obj);
    }
    if def.custom {
        let schema = def.version(version).and_then(|v| v.structural.as_deref());
        if let Some(schema) = schema {
            // fieldValidation=Strict (kubectl's default) rejects what pruning would drop; Warn
            // (the server's default) warns about it.
            let validation = r.q("fieldValidation").unwrap_or("Warn");
            if validation == "Strict" || validation == "Warn" {
                let mut pruned = obj.clone();
                schema.prune(&mut pruned);
                let mut unknown = Vec::new();
                sem::removed_fields(obj, &pruned, "", &mut unknown);
                if validation == "Warn" {
                    r.warnings
                        .borrow_mut()
                        .extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
                } else if !unknown.is_empty() {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                        list.join(", "),
                        kind = def.kind,
                    )));
                }
            }
            let causes = sem::process_custom_resource(schema, obj, old);
            if !causes.is_empty() {
                return Err(ApiError::invalid(&def.kind, &def.group, &name, causes));
            }
        }
    }
    Ok(())
}

fn prepare_crd(store: &Store, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
    let name = s(obj, "/metadata/name").to_owned();
    default_crd_spec(obj);
    let def = crate::resources::from_crd(obj).map_err(|m| {
        let (field, msg) = m.split_once(": ").unwrap_or(("spec", m.as_str()));
        ApiError::invalid_field(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &name,
            "FieldValueInvalid",
            field,
            msg.to_owned(),
        )
    })?;
    let want = format!("{}.{}", def.plural, def.group);
    if name != want {
        return Err(ApiError::invalid_field(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &name,
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let storage: Vec<&Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .collect()
        })
        .unwrap_or_default();
    if storage.len() != 1 {
        return Err(ApiError::invalid_field(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &name,
            "FieldValueInvalid",
            "spec.versions",
            "Invalid value: []apiextensions.CustomResourceDefinitionVersion{...}: must have exactly one version marked as storage version".to_owned(),
        ));
    }
    let storage_version = s(storage[0], "/name").to_owned();
    // As the real server: a version that was ever stored must stay in spec.versions until a
    // storage migration removed it from status.storedVersions.
    if let Some(old) = old {
        let served: Vec<&str> = obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| s(v, "/name")).collect())
            .unwrap_or_default();
        let stored_before = old
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, v) in stored_before.iter().enumerate() {
            let v = v.as_str().unwrap_or_default();
            if !served.contains(&v) {
                return Err(ApiError::invalid_field(
                    "CustomResourceDefinition",
                    "apiextensions.k8s.io",
                    &name,
                    "FieldValueInvalid",
                    &format!("status.storedVersions[{i}]"),
                    format!(
                        "Invalid value: \"{v}\": missing from spec.versions; {v} was previously a storage version, and must remain in spec.versions until a storage migration ensures no data remains persisted in {v} and removes {v} from status.storedVersions"
                    ),
                ));
            }
        }
    }
    // A plural already served by a built-in kind cannot be taken over.
    if old.is_none()
        && store
            .resources
            .get(&want)
            .is_some_and(|existing| !existing.custom)
    {
        return Err(ApiError::already_exists(
            "customresourcedefinitions",
            "apiextensions.k8s.io",
            &name,
        ));
    }
    let mut stored: Vec<String> = old
        .and_then(|o| o.pointer("/status/storedVersions"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if !stored.contains(&storage_version) {
        stored.push(storage_version);
    }
    let status = match old {
        // As created, a CRD has no accepted names and no conditions yet: the naming and
        // establishing controllers set them with a status update right after.
        None => json!({
            "acceptedNames": {"kind": "", "plural": ""},
            "conditions": null,
            "storedVersions": stored,
        }),
        Some(old) => {
            let mut status = established_crd_status(old, &def);
            status["storedVersions"] = json!(stored);
            status
        }
    };
    if let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), status);
    }
    Ok(())
}

/// Defaults of a CRD's spec (`SetDefaults_CustomResourceDefinitionSpec`): conversion strategy
/// `None`, the singular name and the list kind from the kind.
fn default_crd_spec(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let conversion = spec
        .entry("conversion")
        .or_insert_with(|| json!({"strategy": "None"}));
    if let Some(c) = conversion.as_object_mut() {
        c.entry("strategy").or_insert_with(|| json!("None"));
    }
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if names
            .get("singular")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if !kind.is_empty()
            && names
                .get("listKind")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
}

/// Sets condition `t` of a CRD to `True` (its transition time changes only if its status does).
fn set_crd_condition(conditions: &mut Vec<Value>, t: &str, reason: &str, message: &str) {
    let ts = now();
    match conditions.iter_mut().find(|c| s(c, "/type") == t) {
        Some(c) => {
            if s(c, "/status") != "True" {
                c["lastTransitionTime"] = json!(ts);
            }
            c["status"] = json!("True");
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conditions.push(json!({
            "type": t, "status": "True", "lastTransitionTime": ts,
            "reason": reason, "message": message,
        })),
    }
}

/// `crd`'s status once the naming and establishing controllers accepted the names of `def` (the
/// resource it describes): `acceptedNames` and the `NamesAccepted` and `Established` conditions;
/// other conditions (`Terminating`) are kept.
fn established_crd_status(crd: &Value, def: &ResourceDef) -> Value {
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    set_crd_condition(
        &mut conditions,
        "NamesAccepted",
        "NoConflicts",
        "no conflicts found",
    );
    set_crd_condition(
        &mut conditions,
        "Established",
        "InitialNamesAccepted",
        "the initial names have been accepted",
    );
    let mut accepted = json!({"plural": def.plural, "singular": def.singular, "kind": def.kind, "listKind": def.list_kind});
    if !def.short_names.is_empty() {
        accepted["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        accepted["categories"] = json!(def.categories);
    }
    status["conditions"] = json!(conditions);
    status["acceptedNames"] = accepted;
    status
}

/// What the naming and establishing controllers do right after a CRD is created: a status
/// update (by `kube-apiserver`, through the `status` subresource) that accepts its names and
/// marks it established. Returns the established CRD.
fn establish_crd(store: &mut Store, crd_def: &ResourceDef, created: &Value) -> Arc<Value> {
    let mut obj = created.clone();
    if let Ok(def) = crate::resources::from_crd(created) {
        obj["status"] = established_crd_status(created, &def);
    }
    sem::track_update(crd_def, Some(created), &mut obj, "kube-apiserver", "status");
    let rv = store.next_rv();
    set_rv(&mut obj, rv);
    store.put(crd_def, rv, obj, EventType::Modified)
}

/// Everything except `metadata` (and `status` when it has its own endpoint): what a change of
/// bumps `metadata.generation`.
fn spec_part(def: &ResourceDef, obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if def.has_status {
            m.remove("status");
        }
    }
    o
}

fn without_resource_version(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    o
}

/// CREATE (POST to the collection).
pub fn create(store: &mut Store, r: &Req<'_>, body: &[u8]) -> ApiResult<(u16, Value)> {
    let mut obj = parse_body(body)?;
    check_type(r, &mut obj)?;
    let manager = r.manager();
    create_object(store, r, obj, Some(&manager), false)
}

/// Creates `obj` (from POST, or from an apply to a missing object when `manager` is `None`
/// because apply already recorded ownership). `by_other_verb`: the request is not a create (an
/// apply or an update that creates), so the caller must also be allowed to `create`.
fn create_object(
    store: &mut Store,
    r: &Req<'_>,
    mut obj: Value,
    manager: Option<&str>,
    by_other_verb: bool,
) -> ApiResult<(u16, Value)> {
    let def = r.def.clone();
    if def.custom
        && let Some(crd) = store.get(
            "customresourcedefinitions.apiextensions.k8s.io",
            &(String::new(), def.key()),
        )
        && deleting(crd)
    {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
        ));
    }
    {
        let body_ns = s(&obj, "/metadata/namespace").to_owned();
        let m = meta_mut(&mut obj);
        if def.namespaced {
            if !body_ns.is_empty() && body_ns != r.namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            m.insert("namespace".into(), json!(r.namespace));
        } else {
            m.remove("namespace");
        }
        if m.get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            let prefix = m
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid_field(
                    &def.kind,
                    &def.group,
                    "",
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required".to_owned(),
                ));
            }
            m.insert(
                "name".into(),
                json!(format!("{prefix}{}", generate_suffix())),
            );
        }
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ApiError::plain(
                "resourceVersion should not be set on objects to be created",
            ));
        }
    }
    let name = s(&obj, "/metadata/name").to_owned();
    if !r.name.is_empty() && r.name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            r.name
        )));
    }
    check_name(&def, &name)?;
    check_namespace_for_create(store, &def, r.namespace, &name)?;
    let key = (
        if def.namespaced {
            r.namespace.to_owned()
        } else {
            String::new()
        },
        name.clone(),
    );
    if store.get(&def.key(), &key).is_some() {
        return Err(ApiError::already_exists(&def.plural, &def.group, &name));
    }
    {
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
        if def.tracks_generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if def.has_status
        && def.custom
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    prepare(store, r, None, &mut obj)?;
    check_metadata(&def, &obj)?;
    // As on the real server: after the namespace checks and validation, before storing.
    if by_other_verb && let Some((user, info)) = &r.create_authz {
        crate::rbac::authorize(store, user, info)?;
    }
    if let Some(manager) = manager {
        track_update(r, None, &mut obj, manager);
    }
    allocate(store, &def, None, &mut obj)?;
    empty_rules_read_back_null(&def, &mut obj);
    prepare_for_create(&def, &mut obj);
    to_storage_version(&def, &mut obj);
    let rv = store.next_rv();
    set_rv(&mut obj, rv);
    // The collector checks new dependents: one whose owners do not exist is deleted.
    if obj.pointer("/metadata/ownerReferences").is_some() {
        store.gc_pending = true;
    }
    check_size(store, &obj)?;
    let stored = store.put(&def, rv, obj, EventType::Added);
    if def.key() == "customresourcedefinitions.apiextensions.k8s.io" {
        let established = establish_crd(store, &def, &stored);
        if let Ok(newdef) = crate::crd_storage::build(&established) {
            store.register(newdef);
        }
    }
    let mut created = at_version(&stored, &r.api_version());
    // A dry run is never written, so the object it answers has no resourceVersion yet.
    if r.q("dryRun") == Some("All") {
        meta_mut(&mut created).remove("resourceVersion");
    }
    Ok((201, created))
}

/// What the real strategies' `PrepareForCreate` sets: it runs in the storage, after the field
/// manager recorded the request's fields, so none of it is owned by anyone (a namespace's
/// `spec.finalizers`).
fn prepare_for_create(def: &ResourceDef, obj: &mut Value) {
    if def.group.is_empty()
        && def.kind == "Namespace"
        && let Some(o) = obj.as_object_mut()
    {
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            let f = spec.entry("finalizers").or_insert_with(|| json!([]));
            if !f.is_array() {
                *f = json!([]);
            }
            if let Some(f) = f.as_array_mut()
                && !f.iter().any(|x| x == "kubernetes")
            {
                f.push(json!("kubernetes"));
            }
        }
    }
}

/// UPDATE (PUT) of an object or its status.
pub fn update(store: &mut Store, r: &Req<'_>, body: &[u8]) -> ApiResult<(u16, Value)> {
    let mut obj = parse_body(body)?;
    check_type(r, &mut obj)?;
    let body_name = s(&obj, "/metadata/name").to_owned();
    if body_name != r.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            r.name
        )));
    }
    let body_ns = s(&obj, "/metadata/namespace").to_owned();
    if r.def.namespaced && !body_ns.is_empty() && body_ns != r.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let manager = r.manager();
    let Some(raw) = store.get(&r.def.key(), &r.key()).cloned() else {
        if !r.subresource.is_empty() || !creates_on_update(&r.def) {
            return Err(ApiError::not_found(&r.def.plural, &r.def.group, r.name));
        }
        // A resourceVersion in the body is no precondition for a missing object.
        meta_mut(&mut obj).remove("resourceVersion");
        return create_object(store, r, obj, Some(&manager), true);
    };
    let body_rv = s(&obj, "/metadata/resourceVersion").to_owned();
    // Custom resources, like some built-in kinds, refuse an unconditional update.
    if body_rv.is_empty()
        && (r.def.custom || !crate::builtin::allows_unconditional_update(&r.def.group, &r.def.kind))
    {
        // The real server names the resource (not the kind) in this one `Invalid`.
        return Err(ApiError::invalid_field(
            &r.def.plural,
            &r.def.group,
            r.name,
            "FieldValueInvalid",
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update".to_owned(),
        ));
    }
    if !body_rv.is_empty() && body_rv != s(&raw, "/metadata/resourceVersion") {
        return Err(ApiError::stale(&r.def.plural, &r.def.group, r.name));
    }
    write_update(store, r, &raw, obj, Some(&manager))
}

/// Whether an update (PUT) of a missing object creates it (the strategy's
/// `AllowCreateOnUpdate`). Checked on kube-apiserver 1.36: Leases, core Events (also through
/// `events.k8s.io`) and the four RBAC kinds do; custom resources, CRDs, Namespaces, ConfigMaps,
/// Secrets and ServiceAccounts answer `404`.
fn creates_on_update(def: &ResourceDef) -> bool {
    !def.custom
        && matches!(
            (def.group.as_str(), def.kind.as_str()),
            ("coordination.k8s.io", "Lease")
                | ("", "Event")
                | (
                    "rbac.authorization.k8s.io",
                    "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
                )
        )
}

/// The shared tail of update and patch: status rules, immutable metadata, kind preparation,
/// generation, ownership, no-op detection and deletion once the last finalizer is gone. `raw` is
/// the stored object; the update applies to it as the request's storage reads it, and is a no-op
/// only if it would store exactly `raw` again (as the real server compares the encoded bytes).
fn write_update(
    store: &mut Store,
    r: &Req<'_>,
    raw: &Arc<Value>,
    mut obj: Value,
    manager: Option<&str>,
) -> ApiResult<(u16, Value)> {
    let def = r.def.clone();
    let old = &read_stored(&def, raw);
    let status_endpoint = r.subresource == "status";
    if status_endpoint {
        // Only status (and managedFields) may change through /status.
        let mut merged = (**old).clone();
        if let Some(m) = merged.as_object_mut() {
            match obj.get("status") {
                Some(st) => m.insert("status".into(), st.clone()),
                None => m.remove("status"),
            };
        }
        if let Some(mf) = obj.pointer("/metadata/managedFields").cloned() {
            meta_mut(&mut merged).insert("managedFields".into(), mf);
        }
        obj = merged;
    } else if r.subresource == "finalize" {
        // Only spec.finalizers may change through a namespace's /finalize.
        let mut merged = (**old).clone();
        let fins = obj
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        if let Some(m) = merged.as_object_mut() {
            let spec = m.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.insert("finalizers".into(), fins);
            }
        }
        obj = merged;
    } else if def.has_status
        && let Some(o) = obj.as_object_mut()
    {
        match old.get("status") {
            Some(st) => o.insert("status".into(), st.clone()),
            None => o.remove("status"),
        };
    }
    {
        let old_meta = old
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let m = meta_mut(&mut obj);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.remove("selfLink");
        // An absent or empty managedFields keeps the current ones; `[{}]` clears them.
        let keep = match m.get("managedFields") {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if keep {
            match old_meta.get("managedFields") {
                Some(v) => m.insert("managedFields".into(), v.clone()),
                None => m.remove("managedFields"),
            };
        } else if m
            .get("managedFields")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().all(|e| e.as_object().is_some_and(Map::is_empty)))
        {
            m.remove("managedFields");
        }
    }
    if deleting(old) {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(&obj)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            // `ObjectMeta` update validation runs twice (the common fields, then the kind's own
            // update validation, custom resources' included), so the real server reports it
            // twice.
            let cause = Cause {
                reason: "FieldValueForbidden".to_owned(),
                message: format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
                field: "metadata.finalizers".to_owned(),
            };
            return Err(ApiError::invalid(
                &def.kind,
                &def.group,
                r.name,
                vec![cause; 2],
            ));
        }
    }
    prepare(store, r, Some(old), &mut obj)?;
    check_metadata(&def, &obj)?;
    check_immutable(&def, old, &obj)?;
    if def.tracks_generation {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let next = if spec_part(&def, old) != spec_part(&def, &obj) {
            g + 1
        } else {
            g
        };
        meta_mut(&mut obj).insert("generation".into(), json!(next));
    }
    if let Some(manager) = manager {
        track_update(r, Some(old), &mut obj, manager);
    }
    allocate(store, &def, Some(old), &mut obj)?;
    empty_rules_read_back_null(&def, &mut obj);
    // A write that changes nothing is not stored: same resourceVersion, no event. New
    // ownership alone (an apply of the values another manager set) is a change.
    if without_resource_version(&obj) == without_resource_version(raw) {
        return Ok((200, at_version(old, &r.api_version())));
    }
    if deleting(&obj) && finalizers(&obj).is_empty() && !is_namespace_pending(&obj) {
        // The update empties the finalizers and the object is deleted; the answer is the object
        // as that update left it (no finalizers, their ownership gone).
        remove_object(store, &def, &r.key());
        return Ok((200, at_version(&obj, &r.api_version())));
    }
    to_storage_version(&def, &mut obj);
    let rv = store.next_rv();
    set_rv(&mut obj, rv);
    let becomes_deleting = deleting(&obj);
    let refs_changed =
        obj.pointer("/metadata/ownerReferences") != old.pointer("/metadata/ownerReferences");
    check_size(store, &obj)?;
    let stored = store.put(&def, rv, obj, EventType::Modified);
    if becomes_deleting || refs_changed {
        store.gc_pending = true;
    }
    // A new spec (or new accepted names) replaces the storage of the CRD's resource, later.
    if def.key() == "customresourcedefinitions.apiextensions.k8s.io"
        && crate::crd_storage::changes_storage(raw, &stored)
    {
        store.crd_updates.push(stored.clone());
    }
    Ok((200, at_version(&stored, &r.api_version())))
}

/// A namespace keeps existing until its `spec.finalizers` are gone too.
fn is_namespace_pending(obj: &Value) -> bool {
    s(obj, "/kind") == "Namespace"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

/// Removes an object for good (publishing DELETED); removing a CRD first removes its remaining
/// objects and stops serving its resource.
pub fn remove_object(store: &mut Store, def: &ResourceDef, key: &ObjKey) -> Option<Arc<Value>> {
    if def.key() == "customresourcedefinitions.apiextensions.k8s.io"
        && let Some(Ok(d)) = store
            .get(&def.key(), key)
            .map(|crd| crate::resources::from_crd(crd))
    {
        let res = d.key();
        let left: Vec<ObjKey> = store
            .table(&res)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(cdef) = store.resources.get(&res).cloned() {
            for k in left {
                store.remove(&cdef, &k);
            }
        }
        store.unregister(&res);
    }
    store.remove(def, key)
}

/// Writes a server-side change (garbage collector, namespace controller) of `obj`, through the
/// current storage of its resource (`def`).
pub fn store_modified(store: &mut Store, def: &ResourceDef, mut obj: Value) {
    if let Some(read) = def.read(&obj) {
        obj = read;
    }
    let key = crate::store::obj_key(&obj);
    if deleting(&obj) && finalizers(&obj).is_empty() && !is_namespace_pending(&obj) {
        remove_object(store, def, &key);
        return;
    }
    let rv = store.next_rv();
    set_rv(&mut obj, rv);
    store.put(def, rv, obj, EventType::Modified);
}

/// PATCH (merge, JSON, strategic merge, apply) of an object or its status.
pub fn patch(
    store: &mut Store,
    r: &Req<'_>,
    content_type: &str,
    body: &[u8],
) -> ApiResult<(u16, Value)> {
    let def = r.def.clone();
    // The media type is checked before the object is looked up, as on a real server.
    let known = [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
        "application/apply-patch+json",
        "application/strategic-merge-patch+json",
    ];
    if !known.contains(&content_type)
        || (content_type == "application/strategic-merge-patch+json"
            && !crate::semantics::patch::strategic_merge_supported(def.custom))
    {
        let err = ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
            if def.custom {
                ""
            } else {
                ", application/strategic-merge-patch+json"
            }
        ));
        // A media type no patch handler takes is refused with empty details; a strategic merge
        // patch of a custom resource reaches its handler, which refuses it without.
        return Err(if known.contains(&content_type) {
            err
        } else {
            err.with_empty_details()
        });
    }
    let raw = store.get(&def.key(), &r.key()).cloned();
    if content_type == "application/apply-patch+yaml"
        || content_type == "application/apply-patch+json"
    {
        return apply(store, r, raw, body);
    }
    let raw = raw.ok_or_else(|| ApiError::not_found(&def.plural, &def.group, r.name))?;
    let old = read_stored(&def, &raw);
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let patched = match content_type {
        "application/merge-patch+json" => Ok(crate::semantics::patch::merge_patch(&old, &patch)),
        "application/json-patch+json" => crate::semantics::patch::json_patch(&old, &patch),
        "application/strategic-merge-patch+json" => {
            if !crate::semantics::patch::strategic_merge_supported(def.custom) {
                return Err(ApiError::unsupported_media_type(
                    crate::semantics::patch::UNSUPPORTED_PATCH_MESSAGE,
                ));
            }
            let types = crate::semantics::types::BuiltinTypes::for_kind(&def.group, &def.kind);
            crate::semantics::patch::strategic_merge_patch(&old, &patch, &types)
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}; got {other}",
                if def.custom {
                    ""
                } else {
                    ", application/strategic-merge-patch+json"
                }
            )));
        }
    };
    let mut patched = patched.map_err(|e| {
        if e.status_code() == 422 {
            // `NewGenericServerResponse` for no particular resource: empty details.
            ApiError::new(422, "Invalid", e.to_string()).with_empty_details()
        } else {
            ApiError::bad_request(e.to_string())
        }
    })?;
    if !patched.is_object() {
        return Err(ApiError::bad_request("patch did not produce an object"));
    }
    // A resourceVersion in the patch is a precondition.
    if s(&patched, "/metadata/resourceVersion") != s(&old, "/metadata/resourceVersion") {
        return Err(ApiError::stale(&def.plural, &def.group, r.name));
    }
    if s(&patched, "/metadata/name") != r.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            s(&patched, "/metadata/name"),
            r.name
        )));
    }
    check_type(r, &mut patched)?;
    let manager = r.manager();
    write_update(store, r, &raw, patched, Some(&manager))
}

/// PATCH of an object served through a converting view (`events.k8s.io` Events): the patch
/// applies to the converted object, which is converted back and stored like an update.
pub fn patch_converted(
    store: &mut Store,
    r: &Req<'_>,
    content_type: &str,
    body: &[u8],
    to_view: fn(&Value) -> Value,
    from_view: fn(&Value) -> Value,
) -> ApiResult<(u16, Value)> {
    let def = r.def.clone();
    let old = store
        .get(&def.key(), &r.key())
        .cloned()
        .ok_or_else(|| ApiError::not_found(&def.plural, &def.group, r.name))?;
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let view = to_view(&old);
    let patched = match content_type {
        "application/merge-patch+json" => Ok(crate::semantics::patch::merge_patch(&view, &patch)),
        "application/json-patch+json" => crate::semantics::patch::json_patch(&view, &patch),
        "application/strategic-merge-patch+json" => {
            let types = crate::semantics::types::BuiltinTypes::for_kind(&def.group, &def.kind);
            crate::semantics::patch::strategic_merge_patch(&view, &patch, &types)
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "test-apiserver serves {other} patches of this resource only through its storage API ({})",
                def.api_version(r.version)
            )));
        }
    }
    .map_err(|e| ApiError::new(e.status_code(), if e.status_code() == 422 { "Invalid" } else { "BadRequest" }, e.to_string()))?;
    let stored = from_view(&patched);
    update(store, r, &serde_json::to_vec(&stored).unwrap_or_default())
}

fn apply(
    store: &mut Store,
    r: &Req<'_>,
    raw: Option<Arc<Value>>,
    body: &[u8],
) -> ApiResult<(u16, Value)> {
    let def = r.def.clone();
    let old = raw.as_ref().map(|raw| read_stored(&def, raw));
    let manager = match r.q("fieldManager") {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => {
            return Err(ApiError::invalid_field(
                "PatchOptions",
                "meta.k8s.io",
                "",
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch".to_owned(),
            ));
        }
    };
    let force = r.q("force") == Some("true");
    let mut applied: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    let av = s(&applied, "/apiVersion").to_owned();
    let kind = s(&applied, "/kind").to_owned();
    if av.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request("invalid object type: /, Kind="));
    }
    check_type(r, &mut applied)?;
    let applied_name = s(&applied, "/metadata/name").to_owned();
    // The name is checked on the merged object: a configuration without one applied to an
    // existing object keeps the live name.
    if applied_name != r.name && !(applied_name.is_empty() && old.is_some()) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({applied_name}) does not match the name on the URL ({})",
            r.name
        )));
    }
    if let Some(old) = &old {
        let rv = s(&applied, "/metadata/resourceVersion");
        if !rv.is_empty() && rv != s(old, "/metadata/resourceVersion") {
            return Err(ApiError::stale(&def.plural, &def.group, r.name));
        }
    }
    let status_endpoint = r.subresource == "status";
    let merged = sem::apply(
        &def,
        r.version,
        old.as_deref(),
        &applied,
        &manager,
        force,
        r.subresource,
    )?;
    match raw {
        None => {
            if status_endpoint {
                return Err(ApiError::not_found(&def.plural, &def.group, r.name));
            }
            let mut obj = merged;
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            create_object(store, r, obj, None, true)
        }
        Some(raw) => write_update(store, r, &raw, merged, None),
    }
}

/// Options of a DELETE (body `DeleteOptions` and query parameters).
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl DeleteOpts {
    /// Reads the options from the body (if any) and the query.
    pub fn parse(query: &HashMap<String, String>, body: &[u8]) -> ApiResult<Self> {
        let mut o = Self::default();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
            o.propagation = v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
                && o.propagation.is_none()
            {
                o.propagation = Some("Orphan".into());
            }
            o.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned);
            o.resource_version = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if let Some(p) = query.get("propagationPolicy") {
            o.propagation = Some(p.clone());
        }
        if let Some(p) = &o.propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid_field(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                "FieldValueNotSupported",
                "propagationPolicy",
                format!(
                    "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            ));
        }
        Ok(o)
    }
}

/// DELETE of one object: an immediate deletion is answered with a success `Status` (custom
/// resources too), pending deletions, Namespaces and CRDs with the object.
pub fn delete(store: &mut Store, r: &Req<'_>, opts: &DeleteOpts) -> ApiResult<(u16, Value)> {
    let def = r.def.clone();
    let (code, obj) = delete_one(store, &def, &r.key(), opts)?;
    let gone = store.get(&def.key(), &r.key()).is_none();
    let obj = obj.map_or_else(|| json!({}), |o| served(&def, &o, &r.api_version()));
    let returns_object = def.kind == "Namespace" || def.kind == "CustomResourceDefinition";
    // ServiceAccounts answer with the deleted object, as their real registry does (without
    // managed fields, as the real answer has none).
    if gone && def.group.is_empty() && def.kind == "ServiceAccount" {
        let mut obj = obj;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        return Ok((200, obj));
    }
    if gone && !returns_object {
        return Ok((
            200,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": status_details(r.name, &def.group, &def.plural, s(&obj, "/metadata/uid")),
            }),
        ));
    }
    Ok((code, obj))
}

/// Deletes (or marks for deletion) one object; the flag says whether it is gone already.
pub fn delete_one(
    store: &mut Store,
    def: &ResourceDef,
    key: &ObjKey,
    opts: &DeleteOpts,
) -> ApiResult<(u16, Option<Arc<Value>>)> {
    let old = store
        .get(&def.key(), key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&def.plural, &def.group, &key.1))?;
    // Marking for deletion rewrites the object as the storage reads it.
    let old = read_stored(def, &old);
    // Preconditions are checked by `BeforeDelete`, which names the Kind, not the resource.
    if let Some(uid) = &opts.uid {
        let have = s(&old, "/metadata/uid");
        if uid != have {
            return Err(ApiError::conflict(
                &def.kind,
                &def.group,
                &key.1,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let have = s(&old, "/metadata/resourceVersion");
        if rv != have {
            return Err(ApiError::conflict(
                &def.kind,
                &def.group,
                &key.1,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                ),
            ));
        }
    }
    if def.kind == "Namespace"
        && def.group.is_empty()
        && SYSTEM_NAMESPACES.contains(&key.1.as_str())
    {
        return Err(ApiError::forbidden(
            &def.plural,
            "",
            &key.1,
            "this namespace may not be deleted",
        ));
    }
    let mut f = finalizers(&old);
    match opts.propagation.as_deref() {
        Some("Orphan") if !f.iter().any(|x| x == "orphan") => f.push("orphan".into()),
        Some("Foreground") if !f.iter().any(|x| x == "foregroundDeletion") => {
            f.push("foregroundDeletion".into())
        }
        _ => {}
    }
    // A CRD is deleted in two steps, as its REST storage does: the first request adds the
    // cleanup finalizer (its custom resources go first) and the `Terminating` condition.
    let is_crd = def.key() == "customresourcedefinitions.apiextensions.k8s.io";
    if is_crd && !deleting(&old) && !f.iter().any(|x| x == CRD_CLEANUP_FINALIZER) {
        f.push(CRD_CLEANUP_FINALIZER.to_owned());
    }
    if deleting(&old) {
        // Already being deleted: only the propagation finalizers may change.
        if f != finalizers(&old) {
            let mut obj = (*old).clone();
            set_finalizers(&mut obj, &f);
            store_modified(store, def, obj);
            store.gc_pending = true;
        }
        let cur = store.get(&def.key(), key).cloned();
        return Ok((200, cur.or(Some(old))));
    }
    if f.is_empty() && def.kind != "Namespace" {
        let gone = remove_object(store, def, key);
        return Ok((200, gone));
    }
    let mut obj = (*old).clone();
    set_finalizers(&mut obj, &f);
    {
        let m = meta_mut(&mut obj);
        m.insert("deletionTimestamp".into(), json!(now()));
        // A namespace's own delete sets only the timestamp (and the phase, below).
        if !is_crd && def.kind != "Namespace" {
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
    }
    if is_crd {
        let mut conditions: Vec<Value> = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        set_crd_condition(
            &mut conditions,
            "Terminating",
            "InstanceDeletionPending",
            "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        );
        if let Some(st) = obj.get_mut("status").filter(|st| st.is_object()) {
            st["conditions"] = json!(conditions);
        }
    }
    if def.kind == "Namespace"
        && let Some(o) = obj.as_object_mut()
    {
        let st = o.entry("status").or_insert_with(|| json!({}));
        if let Some(st) = st.as_object_mut() {
            st.insert("phase".into(), json!("Terminating"));
        }
    }
    let rv = store.next_rv();
    set_rv(&mut obj, rv);
    let stored = store.put(def, rv, obj, EventType::Modified);
    store.gc_pending = true;
    Ok((200, Some(stored)))
}

/// DELETECOLLECTION: deletes every selected object; answers with the list of them.
pub fn delete_collection(
    store: &mut Store,
    r: &Req<'_>,
    opts: &DeleteOpts,
) -> ApiResult<(u16, Value)> {
    let def = r.def.clone();
    let sel = Selectors::parse(r.query, &def, r.version)?;
    let keys: Vec<ObjKey> = store
        .table(&def.key())
        .map(|t| {
            t.iter()
                .filter(|(k, o)| (r.namespace.is_empty() || k.0 == r.namespace) && sel.matches(o))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut items = Vec::new();
    for k in keys {
        match delete_one(store, &def, &k, opts) {
            Ok((_, Some(o))) => items.push(list_item(&def, &o, &r.api_version())),
            Ok((_, None)) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if def.custom {
        // Unstructured, as a custom resource LIST.
        metadata["continue"] = json!("");
    }
    Ok((
        200,
        json!({
            "kind": def.list_kind, "apiVersion": r.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// `details` of a delete's `Status`: the real server leaves out an empty group (core kinds).
fn status_details(name: &str, group: &str, plural: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": plural, "uid": uid});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    details
}
