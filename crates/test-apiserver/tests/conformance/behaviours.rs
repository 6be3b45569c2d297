//! The scripted behaviours of the conformance suite, by area.
//!
//! Each behaviour runs in its own namespace (`{ns}` in a path or body); `{name}` is a value an
//! earlier request captured. Custom resource definitions are named after the namespace, so
//! behaviours never share an object.

use serde_json::{Value, json};

/// Whose credentials a request carries.
#[derive(Debug, Clone)]
pub enum Who {
    /// The cluster admin (`system:masters`).
    Admin,
    /// No credentials at all.
    Anonymous,
    /// A bearer token no authenticator accepts.
    BadToken,
    /// The bearer token captured into this variable.
    Token(&'static str),
}

/// When a polled request is done.
#[derive(Debug, Clone)]
pub enum Until {
    /// The response has this status code.
    Code(u16),
    /// The body has this value at the JSON pointer (`null`: absent).
    Pointer(&'static str, Value),
}

/// One request of a behaviour.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
    pub content_type: &'static str,
    pub who: Who,
    /// Variables set from the response: (name, JSON pointer).
    pub capture: Vec<(&'static str, &'static str)>,
    /// A watch: how many events to read (fewer when the stream ends or stays silent).
    pub events: Option<usize>,
    /// Repeat the request until this holds (bounded); the last response counts.
    pub until: Option<Until>,
}

impl Req {
    pub fn as_(mut self, who: Who) -> Self {
        self.who = who;
        self
    }
    pub fn capture(mut self, var: &'static str, pointer: &'static str) -> Self {
        self.capture.push((var, pointer));
        self
    }
    pub fn events(mut self, n: usize) -> Self {
        self.events = Some(n);
        self
    }
    pub fn until_code(mut self, code: u16) -> Self {
        self.until = Some(Until::Code(code));
        self
    }
    pub fn until(mut self, pointer: &'static str, value: Value) -> Self {
        self.until = Some(Until::Pointer(pointer, value));
        self
    }
    pub fn query(mut self, q: &str) -> Self {
        self.path
            .push(if self.path.contains('?') { '&' } else { '?' });
        self.path.push_str(q);
        self
    }
}

pub fn req(method: &'static str, path: &str) -> Req {
    Req {
        method,
        path: path.to_string(),
        body: None,
        content_type: "application/json",
        who: Who::Admin,
        capture: Vec::new(),
        events: None,
        until: None,
    }
}

pub fn get(path: &str) -> Req {
    req("GET", path)
}

pub fn delete(path: &str) -> Req {
    req("DELETE", path)
}

pub fn delete_with(path: &str, options: Value) -> Req {
    Req {
        body: Some(options),
        ..req("DELETE", path)
    }
}

pub fn post(path: &str, body: Value) -> Req {
    Req {
        body: Some(body),
        ..req("POST", path)
    }
}

pub fn put(path: &str, body: Value) -> Req {
    Req {
        body: Some(body),
        ..req("PUT", path)
    }
}

pub fn patch(path: &str, content_type: &'static str, body: Value) -> Req {
    Req {
        body: Some(body),
        content_type,
        ..req("PATCH", path)
    }
}

/// A server-side apply as `manager`.
pub fn apply(path: &str, manager: &str, body: Value) -> Req {
    patch(path, APPLY, body).query(&format!("fieldManager={manager}"))
}

/// A watch from the captured resourceVersion `{rv}`, reading `n` events.
pub fn watch_from_rv(collection: &str, n: usize) -> Req {
    get(collection)
        .query("watch=1&resourceVersion={rv}")
        .events(n)
}

pub const MERGE: &str = "application/merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const APPLY: &str = "application/apply-patch+yaml";

/// A scripted behaviour: `setup` runs first (its responses are not compared), then `steps`,
/// whose responses are.
pub struct Behaviour {
    pub name: &'static str,
    pub setup: Vec<Req>,
    pub steps: Vec<Req>,
}

fn b(name: &'static str, setup: Vec<Req>, steps: Vec<Req>) -> Behaviour {
    Behaviour { name, setup, steps }
}

fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn cm_labelled(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})
}

fn cm_meta(metadata: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})
}

const CMS: &str = "/api/v1/namespaces/{ns}/configmaps";
const SECRETS: &str = "/api/v1/namespaces/{ns}/secrets";
const SAS: &str = "/api/v1/namespaces/{ns}/serviceaccounts";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const WIDGETS: &str = "/apis/{ns}.example.com/v1/namespaces/{ns}/widgets";
const CRD_NAME: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{ns}.example.com";
const ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles";
const ROLEBINDINGS: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings";
const CLUSTERROLES: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
const SSR: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

fn cm_path(name: &str) -> String {
    format!("{CMS}/{name}")
}

fn widget_path(name: &str) -> String {
    format!("{WIDGETS}/{name}")
}

/// The schema of the test CRD's `spec`: one field per feature checked.
fn widget_spec_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
            "color": {"type": "string", "default": "blue"},
            "label": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "nullable": {"type": "string", "nullable": true},
            "nested": {"type": "object", "properties": {"a": {"type": "string", "default": "x"}}},
            "req": {"type": "object", "required": ["must"], "properties": {"must": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "ports": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "port": {"type": "integer"}}}
            }
        }
    })
}

fn widget_version(name: &str, storage: bool) -> Value {
    json!({
        "name": name, "served": true, "storage": storage,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": widget_spec_schema(),
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
        }}},
        "subresources": {"status": {}},
        "selectableFields": [{"jsonPath": ".spec.color"}]
    })
}

/// The test CRD, `widgets.{ns}.example.com`.
fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.{ns}.example.com"},
        "spec": {
            "group": "{ns}.example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                "listKind": "WidgetList", "shortNames": ["wg"], "categories": ["conformance"]},
            "versions": [widget_version("v1", true)]
        }
    })
}

/// Creates the test CRD and waits until its resources are served.
fn with_crd() -> Vec<Req> {
    vec![post(CRDS, widget_crd()), get(WIDGETS).until_code(200)]
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "{ns}.example.com/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec})
}

fn with_widget(spec: Value) -> Vec<Req> {
    let mut setup = with_crd();
    setup.push(post(WIDGETS, widget("w", spec)));
    setup
}

fn secret(name: &str, type_: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "type": type_, "data": data})
}

/// A ServiceAccount `sa` and a token for it in `{tok}`.
fn with_service_account_token() -> Vec<Req> {
    vec![
        post(
            SAS,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
        ),
        post(
            &format!("{SAS}/sa/token"),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}),
        )
        .capture("tok", "/status/token"),
    ]
}

fn role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name}, "rules": rules})
}

fn binding_to_sa(name: &str, role_kind: &str, role: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "{ns}"}]})
}

fn ssr() -> Req {
    post(
        SSR,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
}

fn ssar(verb: &str, resource: &str) -> Req {
    post(
        SSAR,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "{ns}", "verb": verb,
                "resource": resource}}}),
    )
}

fn lease(spec: Value) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": spec})
}

fn owner_ref(kind: &str, name: &str, uid_var: &str) -> Value {
    json!([{"apiVersion": "v1", "kind": kind, "name": name, "uid": format!("{{{uid_var}}}")}])
}

/// An owner ConfigMap `o` (uid in `{ouid}`) and its dependent `d`.
fn owner_and_dependent() -> Vec<Req> {
    vec![
        post(CMS, cm("o", json!({}))).capture("ouid", "/metadata/uid"),
        post(
            CMS,
            cm_meta(json!({"name": "d", "ownerReferences": owner_ref("ConfigMap", "o", "ouid")})),
        ),
    ]
}

/// How often both servers compact their history (etcd compaction on the real one), so that
/// resourceVersions a few seconds old expire.
pub const COMPACTION: std::time::Duration = std::time::Duration::from_secs(2);

/// The behaviours, by area.
pub fn behaviours() -> Vec<Behaviour> {
    let mut all = Vec::new();
    all.extend(protocol());
    all.extend(crud());
    all.extend(patches());
    all.extend(server_side_apply());
    all.extend(deletion());
    all.extend(namespaces());
    all.extend(garbage_collection());
    all.extend(watches());
    all.extend(custom_resources());
    all.extend(klutch_bindings());
    all.extend(authentication());
    all.extend(authorization());
    all.extend(builtin_kinds());
    all
}

fn protocol() -> Vec<Behaviour> {
    vec![
        b("discovery/api-versions", vec![], vec![get("/api")]),
        b("discovery/core-v1-configmaps", vec![], vec![get("/api/v1")]),
        b(
            "discovery/coordination-group",
            vec![],
            vec![
                get("/apis/coordination.k8s.io"),
                get("/apis/coordination.k8s.io/v1"),
            ],
        ),
        b(
            "discovery/rbac-resources",
            vec![],
            vec![get("/apis/rbac.authorization.k8s.io/v1")],
        ),
        b(
            "discovery/apiextensions-resources",
            vec![],
            vec![get("/apis/apiextensions.k8s.io/v1")],
        ),
        b(
            "protocol/unknown-path-404",
            vec![],
            vec![get("/apis/nope.example.com/v1/things")],
        ),
        b(
            "protocol/unknown-namespace-get-404",
            vec![],
            vec![get("/api/v1/namespaces/no-such-ns/configmaps/x")],
        ),
        b(
            "protocol/unknown-resource-404",
            vec![],
            vec![get("/api/v1/namespaces/{ns}/nothings")],
        ),
        b(
            "protocol/unknown-version-404",
            vec![],
            vec![get("/apis/coordination.k8s.io/v9/namespaces/{ns}/leases")],
        ),
        b(
            "protocol/healthz",
            vec![],
            vec![get("/healthz"), get("/readyz"), get("/livez")],
        ),
        b(
            "protocol/post-to-object-path-405",
            vec![],
            vec![post(&cm_path("a"), cm("a", json!({})))],
        ),
        b(
            "protocol/non-object-body-400",
            vec![],
            vec![Req {
                body: Some(json!("{not json")),
                ..post(CMS, json!(null))
            }],
        ),
        b(
            "protocol/kind-mismatch-400",
            vec![],
            vec![post(CMS, secret("a", "Opaque", json!({})))],
        ),
        b(
            "protocol/api-version-mismatch-400",
            vec![],
            vec![post(
                CMS,
                json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            )],
        ),
    ]
}

fn crud() -> Vec<Behaviour> {
    let created = || vec![post(CMS, cm("a", json!({"k": "v"})))];
    let three = || {
        vec![
            post(CMS, cm("a", json!({}))),
            post(CMS, cm("b", json!({}))),
            post(CMS, cm("c", json!({}))),
        ]
    };
    vec![
        b(
            "crud/create-201",
            vec![],
            vec![post(CMS, cm("a", json!({"k": "v"})))],
        ),
        b(
            "crud/create-exists-409",
            created(),
            vec![post(CMS, cm("a", json!({"k": "other"})))],
        ),
        b("crud/get", created(), vec![get(&cm_path("a"))]),
        b(
            "crud/get-missing-404",
            vec![],
            vec![get(&cm_path("missing"))],
        ),
        b(
            "crud/create-invalid-name-422",
            vec![],
            vec![post(CMS, cm("Not_Valid", json!({})))],
        ),
        b(
            "crud/create-namespace-mismatch-400",
            vec![],
            vec![post(
                CMS,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "a", "namespace": "elsewhere"}}),
            )],
        ),
        b(
            "crud/create-generate-name",
            vec![],
            vec![post(CMS, cm_meta(json!({"generateName": "gen-"})))],
        ),
        b(
            "crud/create-dry-run",
            vec![],
            vec![
                post(CMS, cm("a", json!({"k": "v"}))).query("dryRun=All"),
                get(&cm_path("a")),
            ],
        ),
        b(
            "crud/create-with-resourceversion",
            vec![],
            vec![post(
                CMS,
                cm_meta(json!({"name": "a", "resourceVersion": "5"})),
            )],
        ),
        b(
            "crud/put-without-resourceversion",
            created(),
            vec![put(&cm_path("a"), cm("a", json!({"k": "put"})))],
        ),
        b(
            "crud/put-stale-resourceversion-409",
            created(),
            vec![put(
                &cm_path("a"),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "a", "resourceVersion": "1"}, "data": {"k": "x"}}),
            )],
        ),
        b(
            "crud/put-name-mismatch-400",
            created(),
            vec![put(&cm_path("a"), cm("b", json!({"k": "x"})))],
        ),
        b(
            "crud/put-missing-creates-nothing-404",
            vec![],
            vec![put(&cm_path("ghost"), cm("ghost", json!({})))],
        ),
        b(
            "crud/delete-returns-status-or-object",
            created(),
            vec![delete(&cm_path("a")), get(&cm_path("a"))],
        ),
        b(
            "crud/delete-missing-404",
            vec![],
            vec![delete(&cm_path("missing"))],
        ),
        b(
            "crud/list-after-two-creates",
            vec![post(CMS, cm("a", json!({}))), post(CMS, cm("b", json!({})))],
            vec![get(CMS)],
        ),
        b(
            "crud/list-limit-continue",
            three(),
            vec![get(&format!("{CMS}?limit=2"))],
        ),
        b(
            "crud/list-continue-second-page",
            three(),
            vec![
                get(&format!("{CMS}?limit=2")).capture("next", "/metadata/continue"),
                get(&format!("{CMS}?limit=2&continue={{next}}")),
            ],
        ),
        b(
            "crud/list-resource-version-0-ignores-limit",
            three(),
            vec![get(&format!("{CMS}?limit=1&resourceVersion=0"))],
        ),
        b(
            "crud/list-resource-version-match-without-version-400",
            vec![],
            vec![get(&format!("{CMS}?resourceVersionMatch=NotOlderThan"))],
        ),
        b(
            "crud/list-exact-compacted-410",
            vec![
                post(CMS, cm("a", json!({}))).capture("rv", "/metadata/resourceVersion"),
                post(CMS, cm("b", json!({}))),
            ],
            // Waits for the server's compaction (every `COMPACTION`) to pass `{rv}`.
            vec![
                get(CMS)
                    .query("resourceVersion={rv}&resourceVersionMatch=Exact")
                    .until_code(410),
            ],
        ),
        b(
            "crud/list-label-selector",
            vec![
                post(CMS, cm_labelled("a", json!({"team": "x"}))),
                post(CMS, cm("b", json!({}))),
            ],
            vec![get(&format!("{CMS}?labelSelector=team%3Dx"))],
        ),
        b(
            "crud/list-set-label-selector",
            vec![
                post(CMS, cm_labelled("a", json!({"team": "x"}))),
                post(CMS, cm_labelled("b", json!({"team": "y"}))),
                post(CMS, cm("c", json!({}))),
            ],
            vec![
                get(&format!("{CMS}?labelSelector=team%20in%20(x,y)")),
                get(&format!("{CMS}?labelSelector=!team")),
            ],
        ),
        b(
            "crud/list-invalid-label-selector-400",
            vec![],
            vec![get(&format!("{CMS}?labelSelector=a%3D%3D%3Db"))],
        ),
        b(
            "crud/list-field-selector-name",
            vec![post(CMS, cm("a", json!({}))), post(CMS, cm("b", json!({})))],
            vec![get(&format!("{CMS}?fieldSelector=metadata.name%3Db"))],
        ),
        b(
            "crud/list-unsupported-field-selector-400",
            vec![],
            vec![get(&format!("{CMS}?fieldSelector=data.k%3Dv"))],
        ),
        b(
            "crud/list-all-namespaces",
            vec![post(CMS, cm_labelled("a", json!({"conformance": "{ns}"})))],
            vec![get("/api/v1/configmaps?labelSelector=conformance%3D{ns}")],
        ),
    ]
}

fn patches() -> Vec<Behaviour> {
    let created = || vec![post(CMS, cm("a", json!({"k": "v"})))];
    vec![
        b(
            "patch/merge",
            created(),
            vec![patch(&cm_path("a"), MERGE, json!({"data": {"k2": "v2"}}))],
        ),
        b(
            "patch/merge-null-removes",
            created(),
            vec![patch(&cm_path("a"), MERGE, json!({"data": {"k": null}}))],
        ),
        b(
            "patch/merge-with-field-manager",
            created(),
            vec![
                patch(&cm_path("a"), MERGE, json!({"data": {"k2": "v2"}}))
                    .query("fieldManager=patcher"),
            ],
        ),
        b(
            "patch/merge-stale-resourceversion-409",
            created(),
            vec![patch(
                &cm_path("a"),
                MERGE,
                json!({"metadata": {"resourceVersion": "1"}, "data": {"k": "x"}}),
            )],
        ),
        b(
            "patch/json-patch-add",
            created(),
            vec![patch(
                &cm_path("a"),
                JSON_PATCH,
                json!([{"op": "add", "path": "/data/k2", "value": "v2"}]),
            )],
        ),
        b(
            "patch/json-patch-test-fails-422",
            created(),
            vec![patch(
                &cm_path("a"),
                JSON_PATCH,
                json!([{"op": "test", "path": "/data/k", "value": "nope"}]),
            )],
        ),
        b(
            "patch/json-patch-remove-missing-422",
            created(),
            vec![patch(
                &cm_path("a"),
                JSON_PATCH,
                json!([{"op": "remove", "path": "/data/missing"}]),
            )],
        ),
        b(
            "patch/strategic-merge",
            created(),
            vec![patch(
                &cm_path("a"),
                STRATEGIC,
                json!({"data": {"k3": "v3"}}),
            )],
        ),
        b(
            "patch/merge-missing-404",
            vec![],
            vec![patch(&cm_path("missing"), MERGE, json!({"data": {}}))],
        ),
        b(
            "patch/unsupported-media-type-415",
            created(),
            vec![patch(&cm_path("a"), "text/plain", json!({}))],
        ),
        b(
            "patch/strategic-on-custom-resource-415",
            with_widget(json!({"size": 1})),
            vec![patch(
                &widget_path("w"),
                STRATEGIC,
                json!({"spec": {"size": 2}}),
            )],
        ),
    ]
}

fn server_side_apply() -> Vec<Behaviour> {
    let s = || cm_path("s");
    vec![
        b(
            "ssa/apply-creates",
            vec![],
            vec![apply(&s(), "m1", cm("s", json!({"k": "v"}))), get(&s())],
        ),
        b(
            "ssa/apply-conflict-409",
            vec![apply(&s(), "m1", cm("s", json!({"k": "v"})))],
            vec![apply(&s(), "m2", cm("s", json!({"k": "other"})))],
        ),
        b(
            "ssa/apply-without-field-manager-400",
            vec![],
            vec![patch(&s(), APPLY, cm("s", json!({"k": "v"})))],
        ),
        b(
            "ssa/shared-ownership-same-value",
            vec![apply(&s(), "m1", cm("s", json!({"k": "v"})))],
            vec![apply(&s(), "m2", cm("s", json!({"k": "v"}))), get(&s())],
        ),
        b(
            "ssa/force-takes-ownership",
            vec![apply(&s(), "m1", cm("s", json!({"k": "v", "k2": "v2"})))],
            vec![apply(&s(), "m2", cm("s", json!({"k": "x"}))).query("force=true")],
        ),
        b(
            "ssa/omitted-field-removed",
            vec![apply(&s(), "m1", cm("s", json!({"k": "v", "k2": "v2"})))],
            vec![apply(&s(), "m1", cm("s", json!({"k": "v"})))],
        ),
        b(
            "ssa/omitted-shared-field-kept",
            vec![
                apply(&s(), "m1", cm("s", json!({"k": "v", "k2": "v2"}))),
                apply(&s(), "m2", cm("s", json!({"k": "v"}))),
            ],
            vec![apply(&s(), "m1", cm("s", json!({"k2": "v2"})))],
        ),
        b(
            "ssa/conflict-with-update-manager-409",
            vec![post(CMS, cm("s", json!({"k": "v"})))],
            vec![apply(&s(), "m1", cm("s", json!({"k": "x"})))],
        ),
        b(
            "ssa/apply-dry-run",
            vec![],
            vec![
                apply(&s(), "m1", cm("s", json!({"k": "v"}))).query("dryRun=All"),
                get(&s()),
            ],
        ),
        b(
            "ssa/apply-stale-resourceversion-409",
            vec![apply(&s(), "m1", cm("s", json!({"k": "v"})))],
            vec![apply(
                &s(),
                "m1",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "s", "resourceVersion": "1"}, "data": {"k": "x"}}),
            )],
        ),
        b(
            "ssa/apply-labels-annotations",
            vec![],
            vec![apply(
                &s(),
                "m1",
                cm_meta(json!({"name": "s", "labels": {"a": "1"}, "annotations": {"b": "2"}})),
            )],
        ),
        b(
            "ssa/apply-without-name-to-existing",
            vec![post(CMS, cm("s", json!({"k": "v"})))],
            vec![apply(
                &s(),
                "m1",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k2": "v2"}}),
            )],
        ),
        b(
            "ssa/apply-kind-mismatch-400",
            vec![],
            vec![apply(&s(), "m1", secret("s", "Opaque", json!({})))],
        ),
    ]
}

fn deletion() -> Vec<Behaviour> {
    let held = || {
        post(
            CMS,
            cm_meta(json!({"name": "f", "finalizers": ["example.com/hold"]})),
        )
    };
    vec![
        b(
            "delete/finalizer-keeps-object-deleting",
            vec![held()],
            vec![delete(&cm_path("f")), get(&cm_path("f"))],
        ),
        b(
            "delete/removing-last-finalizer-deletes",
            vec![held(), delete(&cm_path("f"))],
            vec![
                patch(
                    &cm_path("f"),
                    MERGE,
                    json!({"metadata": {"finalizers": null}}),
                ),
                get(&cm_path("f")),
            ],
        ),
        b(
            "delete/new-finalizer-on-deleting-object-422",
            vec![held(), delete(&cm_path("f"))],
            vec![patch(
                &cm_path("f"),
                MERGE,
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}),
            )],
        ),
        b(
            "delete/empty-finalizers-with-resourceversion-deletes",
            vec![
                held(),
                delete(&cm_path("f")).capture("rv", "/metadata/resourceVersion"),
            ],
            // What the konnector sends to drop its finalizer.
            vec![
                patch(
                    &cm_path("f"),
                    MERGE,
                    json!({"metadata": {"resourceVersion": "{rv}", "finalizers": []}}),
                ),
                get(&cm_path("f")),
            ],
        ),
        b(
            "delete/finalizer-patch-keeps-others",
            vec![
                post(
                    CMS,
                    cm_meta(json!({"name": "f", "finalizers": ["example.com/a", "example.com/b"]})),
                )
                .capture("rv", "/metadata/resourceVersion"),
            ],
            vec![patch(
                &cm_path("f"),
                MERGE,
                json!({"metadata": {"resourceVersion": "{rv}", "finalizers": ["example.com/b"]}}),
            )],
        ),
        b(
            "delete/uid-precondition-mismatch-409",
            vec![post(CMS, cm("a", json!({})))],
            vec![delete_with(
                &cm_path("a"),
                json!({"kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}}),
            )],
        ),
        b(
            "delete/resourceversion-precondition-mismatch-409",
            vec![post(CMS, cm("a", json!({})))],
            vec![delete_with(
                &cm_path("a"),
                json!({"kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": {"resourceVersion": "1"}}),
            )],
        ),
        b(
            "delete/dry-run-keeps-object",
            vec![post(CMS, cm("a", json!({})))],
            vec![
                delete(&cm_path("a")).query("dryRun=All"),
                get(&cm_path("a")),
            ],
        ),
        b(
            "delete/collection-by-label",
            vec![
                post(CMS, cm_labelled("a", json!({"x": "1"}))),
                post(CMS, cm_labelled("b", json!({"x": "1"}))),
                post(CMS, cm("c", json!({}))),
            ],
            vec![delete(CMS).query("labelSelector=x%3D1"), get(CMS)],
        ),
        b(
            "delete/invalid-propagation-policy-422",
            vec![post(CMS, cm("a", json!({})))],
            vec![delete_with(
                &cm_path("a"),
                json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Bogus"}),
            )],
        ),
    ]
}

fn namespaces() -> Vec<Behaviour> {
    vec![
        b(
            "namespace/create-in-missing-namespace-404",
            vec![],
            vec![post(
                "/api/v1/namespaces/no-such-ns/configmaps",
                cm("a", json!({})),
            )],
        ),
        b(
            "namespace/get",
            vec![],
            vec![get("/api/v1/namespaces/{ns}")],
        ),
        b(
            "namespace/create-duplicate-409",
            vec![],
            vec![post(
                "/api/v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "{ns}"}}),
            )],
        ),
        b(
            "namespace/terminating-refuses-new-objects",
            vec![post(
                CMS,
                cm_meta(json!({"name": "f", "finalizers": ["example.com/hold"]})),
            )],
            vec![
                delete("/api/v1/namespaces/{ns}"),
                post(CMS, cm("new", json!({}))),
                get(&cm_path("f")),
                patch(
                    &cm_path("f"),
                    MERGE,
                    json!({"metadata": {"finalizers": null}}),
                ),
                get("/api/v1/namespaces/{ns}").until_code(404),
            ],
        ),
    ]
}

fn garbage_collection() -> Vec<Behaviour> {
    vec![
        b(
            "gc/background-deletes-dependents",
            owner_and_dependent(),
            vec![delete(&cm_path("o")), get(&cm_path("d")).until_code(404)],
        ),
        b(
            "gc/foreground-waits-for-dependents",
            owner_and_dependent(),
            vec![
                delete_with(
                    &cm_path("o"),
                    json!({"kind": "DeleteOptions", "apiVersion": "v1",
                        "propagationPolicy": "Foreground"}),
                ),
                get(&cm_path("o")).until_code(404),
                get(&cm_path("d")),
            ],
        ),
        b(
            "gc/orphan-keeps-dependents",
            owner_and_dependent(),
            vec![
                delete_with(
                    &cm_path("o"),
                    json!({"kind": "DeleteOptions", "apiVersion": "v1",
                        "propagationPolicy": "Orphan"}),
                ),
                get(&cm_path("o")).until_code(404),
                get(&cm_path("d")).until("/metadata/ownerReferences", json!(null)),
            ],
        ),
        b(
            "gc/missing-owner-deletes-dependent",
            vec![],
            vec![
                post(
                    CMS,
                    cm_meta(json!({"name": "d", "ownerReferences": [{"apiVersion": "v1",
                        "kind": "ConfigMap", "name": "gone",
                        "uid": "00000000-0000-0000-0000-000000000001"}]})),
                ),
                get(&cm_path("d")).until_code(404),
            ],
        ),
        b(
            "gc/owner-of-another-kind",
            vec![
                post(SECRETS, secret("o", "Opaque", json!({}))).capture("ouid", "/metadata/uid"),
                post(
                    CMS,
                    cm_meta(
                        json!({"name": "d", "ownerReferences": owner_ref("Secret", "o", "ouid")}),
                    ),
                ),
            ],
            vec![
                get(&cm_path("d")),
                delete(&format!("{SECRETS}/o")),
                get(&cm_path("d")).until_code(404),
            ],
        ),
    ]
}

fn watches() -> Vec<Behaviour> {
    let first = || post(CMS, cm("first", json!({}))).capture("rv", "/metadata/resourceVersion");
    vec![
        b(
            "watch/resume-from-resource-version",
            vec![
                first(),
                post(CMS, cm("b", json!({}))),
                patch(&cm_path("first"), MERGE, json!({"data": {"k": "v"}})),
            ],
            vec![watch_from_rv(CMS, 2)],
        ),
        b(
            "watch/compacted-resource-version-served-from-cache",
            vec![
                first(),
                post(CMS, cm("b", json!({}))),
                // Waits for the server's compaction (every `COMPACTION`) to pass `{rv}`.
                get(CMS)
                    .query("resourceVersion={rv}&resourceVersionMatch=Exact")
                    .until_code(410),
            ],
            vec![watch_from_rv(CMS, 1)],
        ),
        b(
            "watch/initial-events-end-bookmark",
            vec![post(CMS, cm("a", json!({}))), post(CMS, cm("b", json!({})))],
            vec![
                get(CMS)
                    .query(
                        "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
                     &allowWatchBookmarks=true",
                    )
                    .events(3),
            ],
        ),
        b(
            "watch/send-initial-events-without-match-422",
            vec![],
            vec![get(CMS).query("watch=1&sendInitialEvents=true").events(1)],
        ),
        b(
            "watch/send-initial-events-without-bookmarks",
            vec![],
            // Accepted; no bookmark ends the (empty) initial events.
            vec![
                get(CMS)
                    .query(
                        "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
                         &timeoutSeconds=1",
                    )
                    .events(1),
            ],
        ),
        b(
            "watch/label-selector-transitions",
            vec![
                first(),
                post(CMS, cm_labelled("a", json!({"team": "x"}))),
                post(CMS, cm("b", json!({}))),
                patch(
                    &cm_path("a"),
                    MERGE,
                    json!({"metadata": {"labels": {"team": "y"}}}),
                ),
                patch(
                    &cm_path("b"),
                    MERGE,
                    json!({"metadata": {"labels": {"team": "x"}}}),
                ),
            ],
            vec![
                get(CMS)
                    .query("watch=1&resourceVersion={rv}&labelSelector=team%3Dx")
                    .events(3),
            ],
        ),
        b(
            "watch/field-selector-name",
            vec![
                first(),
                post(CMS, cm("a", json!({}))),
                post(CMS, cm("b", json!({}))),
            ],
            vec![
                get(CMS)
                    .query("watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Db")
                    .events(1),
            ],
        ),
        b(
            "watch/delete-event",
            vec![first(), delete(&cm_path("first"))],
            vec![watch_from_rv(CMS, 1)],
        ),
        b(
            "watch/without-resource-version-lists-existing",
            vec![post(CMS, cm("a", json!({}))), post(CMS, cm("b", json!({})))],
            vec![get(CMS).query("watch=1").events(2)],
        ),
        b(
            "watch/resource-version-0-lists-existing",
            vec![post(CMS, cm("a", json!({}))), post(CMS, cm("b", json!({})))],
            vec![get(CMS).query("watch=1&resourceVersion=0").events(2)],
        ),
        b(
            "watch/finalizer-deletion-events",
            vec![
                post(
                    CMS,
                    cm_meta(json!({"name": "f", "finalizers": ["example.com/hold"]})),
                )
                .capture("rv", "/metadata/resourceVersion"),
                delete(&cm_path("f")),
                patch(
                    &cm_path("f"),
                    MERGE,
                    json!({"metadata": {"finalizers": null}}),
                ),
            ],
            vec![watch_from_rv(CMS, 2)],
        ),
        b(
            "watch/timeout-ends-stream",
            vec![first()],
            vec![
                get(CMS)
                    .query("watch=1&resourceVersion={rv}&timeoutSeconds=1")
                    .events(1),
            ],
        ),
        b(
            "watch/all-namespaces-by-label",
            vec![
                first(),
                post(CMS, cm_labelled("a", json!({"conformance": "{ns}"}))),
            ],
            vec![
                get("/api/v1/configmaps")
                    .query("watch=1&resourceVersion={rv}&labelSelector=conformance%3D{ns}")
                    .events(1),
            ],
        ),
        b(
            "watch/initial-events-with-selector",
            vec![
                post(CMS, cm_labelled("a", json!({"team": "x"}))),
                post(CMS, cm("b", json!({}))),
            ],
            vec![
                get(CMS)
                    .query(
                        "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
                     &allowWatchBookmarks=true&labelSelector=team%3Dx",
                    )
                    .events(2),
            ],
        ),
        b(
            "watch/custom-resource-status",
            {
                let mut s = with_crd();
                s.push(
                    post(WIDGETS, widget("w", json!({"size": 1})))
                        .capture("rv", "/metadata/resourceVersion"),
                );
                s.push(patch(
                    &format!("{}/status", widget_path("w")),
                    MERGE,
                    json!({"status": {"phase": "Ready"}}),
                ));
                s
            },
            vec![watch_from_rv(WIDGETS, 1)],
        ),
    ]
}

/// The Klutch project's `APIServiceBinding` CRD, as the konnector installs it.
fn binding_crd() -> Value {
    serde_yaml::from_str(include_str!(
        "fixtures/klutch.anynines.com_apiservicebindings.yaml"
    ))
    .expect("the fixture is YAML")
}

const BINDINGS: &str = "/apis/klutch.anynines.com/v1alpha1/namespaces/{ns}/apiservicebindings";

/// The binding CRD (shared by the behaviours using it: a second create is a harmless 409)
/// and a binding `b` with one accepted claim.
fn with_binding() -> Vec<Req> {
    vec![
        post(CRDS, binding_crd()),
        get(BINDINGS).until_code(200),
        post(
            BINDINGS,
            json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding",
            "metadata": {"name": "b"},
            "spec": {
                "kubeconfigSecretRef": {"key": "kubeconfig", "name": "kc", "namespace": "{ns}"},
                "permissionClaims": [{"group": "", "resource": "secrets", "version": "v1",
                    "state": "Accepted", "selector": {}}]
            }}),
        ),
    ]
}

fn klutch_bindings() -> Vec<Behaviour> {
    let b_path = || format!("{BINDINGS}/b");
    vec![
        b(
            "crd/klutch-binding-defaults",
            with_binding(),
            vec![get(&b_path())],
        ),
        b(
            "crd/klutch-binding-status-conditions",
            with_binding(),
            vec![patch(
                &format!("{}/status", b_path()),
                MERGE,
                json!({"status": {"providerPrettyName": "Provider", "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Synced", "message": "ok",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
            )],
        ),
        b(
            "crd/klutch-binding-cel-immutable-422",
            with_binding(),
            vec![patch(
                &b_path(),
                MERGE,
                json!({"spec": {"kubeconfigSecretRef": {"name": "other"}}}),
            )],
        ),
    ]
}

fn custom_resources() -> Vec<Behaviour> {
    let w = || widget_path("w");
    vec![
        b(
            "crd/create-and-establish",
            vec![],
            vec![
                post(CRDS, widget_crd()),
                get(CRD_NAME).until("/status/conditions/1/status", json!("True")),
            ],
        ),
        b(
            "crd/invalid-name-422",
            vec![],
            vec![post(CRDS, {
                let mut crd = widget_crd();
                crd["metadata"]["name"] = json!("wrong.{ns}.example.com");
                crd
            })],
        ),
        b(
            "crd/discovery",
            with_crd(),
            vec![
                get("/apis/{ns}.example.com"),
                get("/apis/{ns}.example.com/v1"),
            ],
        ),
        b(
            "crd/multi-version-discovery",
            vec![
                post(CRDS, {
                    let mut crd = widget_crd();
                    crd["spec"]["versions"] = json!([
                        widget_version("v1beta1", false),
                        widget_version("v1", true),
                        widget_version("v2alpha1", false),
                    ]);
                    crd
                }),
                get(WIDGETS).until_code(200),
            ],
            vec![
                get("/apis/{ns}.example.com"),
                get("/apis/{ns}.example.com/v2alpha1"),
            ],
        ),
        b(
            "crd/create-with-defaults",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"size": 1})))],
        ),
        b(
            "crd/nested-default-needs-parent",
            with_crd(),
            vec![
                post(WIDGETS, widget("w", json!({"size": 1, "nested": {}}))),
                post(WIDGETS, widget("w2", json!({"size": 1}))),
            ],
        ),
        b(
            "crd/null-pruned-unless-nullable",
            with_crd(),
            vec![post(
                WIDGETS,
                widget("w", json!({"size": 1, "color": null, "nullable": null})),
            )],
        ),
        b(
            "crd/unknown-fields-pruned-with-warning",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"size": 1, "bogus": 1})))],
        ),
        b(
            "crd/preserve-unknown-fields",
            with_crd(),
            vec![post(
                WIDGETS,
                widget("w", json!({"size": 1, "free": {"any": {"deep": [1, "x"]}}})),
            )],
        ),
        b(
            "crd/field-validation-strict-400",
            with_crd(),
            vec![
                post(WIDGETS, widget("w", json!({"size": 1, "bogus": 1})))
                    .query("fieldValidation=Strict"),
            ],
        ),
        b(
            "crd/field-validation-ignore",
            with_crd(),
            vec![
                post(WIDGETS, widget("w", json!({"size": 1, "bogus": 1})))
                    .query("fieldValidation=Ignore"),
            ],
        ),
        b(
            "crd/validation-type-422",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"size": "big"})))],
        ),
        b(
            "crd/validation-range-422",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"size": 11})))],
        ),
        b(
            "crd/validation-pattern-length-422",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"label": "ABCDEFG"})))],
        ),
        b(
            "crd/validation-enum-422",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"mode": "c"})))],
        ),
        b(
            "crd/validation-required-422",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"req": {}})))],
        ),
        b(
            "crd/put-without-resourceversion-422",
            with_widget(json!({"size": 1})),
            vec![put(&w(), widget("w", json!({"size": 2})))],
        ),
        b(
            "crd/main-resource-ignores-status",
            with_crd(),
            vec![post(WIDGETS, {
                let mut o = widget("w", json!({"size": 1}));
                o["status"] = json!({"phase": "Forged"});
                o
            })],
        ),
        b(
            "crd/status-subresource-ignores-spec",
            with_widget(json!({"size": 1})),
            vec![patch(
                &format!("{}/status", w()),
                MERGE,
                json!({"spec": {"size": 5}, "status": {"phase": "Ready"}}),
            )],
        ),
        b(
            "crd/status-patch-with-resourceversion",
            {
                let mut s = with_crd();
                s.push(
                    post(WIDGETS, widget("w", json!({"size": 1})))
                        .capture("rv", "/metadata/resourceVersion"),
                );
                s
            },
            // What the konnector sends to write an export's status: the first wins, the
            // second (same, now stale, resourceVersion) conflicts.
            vec![
                patch(
                    &format!("{}/status", w()),
                    MERGE,
                    json!({"metadata": {"resourceVersion": "{rv}"}, "status": {"phase": "A"}}),
                ),
                patch(
                    &format!("{}/status", w()),
                    MERGE,
                    json!({"metadata": {"resourceVersion": "{rv}"}, "status": {"phase": "B"}}),
                ),
            ],
        ),
        b(
            "crd/generation-follows-spec",
            with_widget(json!({"size": 1})),
            vec![
                patch(&w(), MERGE, json!({"spec": {"size": 2}})),
                patch(&w(), MERGE, json!({"metadata": {"labels": {"a": "b"}}})),
            ],
        ),
        b(
            "crd/selectable-fields",
            {
                let mut s = with_crd();
                s.push(post(WIDGETS, widget("red", json!({"color": "red"}))));
                s.push(post(WIDGETS, widget("blue", json!({}))));
                s
            },
            vec![get(WIDGETS).query("fieldSelector=spec.color%3Dred")],
        ),
        b(
            "crd/unselectable-field-400",
            with_crd(),
            vec![get(WIDGETS).query("fieldSelector=spec.mode%3Da")],
        ),
        b(
            "crd/list",
            with_widget(json!({"size": 1})),
            vec![get(WIDGETS)],
        ),
        b(
            "crd/delete-custom-resource",
            with_widget(json!({"size": 1})),
            vec![delete(&w()), get(&w())],
        ),
        b(
            "crd/delete-definition-removes-resources",
            with_widget(json!({"size": 1})),
            vec![
                delete(CRD_NAME),
                get(CRD_NAME).until_code(404),
                get(WIDGETS),
            ],
        ),
        b(
            "crd/apply-list-map-shared",
            with_crd(),
            vec![
                apply(
                    &w(),
                    "m1",
                    widget("w", json!({"ports": [{"name": "a", "port": 1}]})),
                ),
                apply(
                    &w(),
                    "m2",
                    widget("w", json!({"ports": [{"name": "b", "port": 2}]})),
                ),
            ],
        ),
        b(
            "crd/apply-force-moves-ownership",
            vec![
                post(CRDS, widget_crd()),
                get(WIDGETS).until_code(200),
                apply(&w(), "app", widget("w", json!({"size": 1, "color": "red"}))),
            ],
            vec![apply(&w(), "konnector", widget("w", json!({"size": 2}))).query("force=true")],
        ),
        b(
            "crd/apply-status",
            with_widget(json!({"size": 1})),
            vec![apply(
                &format!("{}/status", w()),
                "status-writer",
                json!({"apiVersion": "{ns}.example.com/v1", "kind": "Widget",
                    "metadata": {"name": "w"}, "status": {"phase": "Ready"}}),
            )],
        ),
        b(
            "crd/invalid-name-422-resource",
            with_crd(),
            vec![post(WIDGETS, widget("Bad_Name", json!({})))],
        ),
        b(
            "crd/set-list-duplicate-422",
            with_crd(),
            vec![post(WIDGETS, widget("w", json!({"tags": ["a", "a"]})))],
        ),
    ]
}

fn authentication() -> Vec<Behaviour> {
    vec![
        b(
            "authn/anonymous-forbidden-403",
            vec![],
            vec![get(CMS).as_(Who::Anonymous)],
        ),
        b(
            "authn/anonymous-healthz",
            vec![],
            vec![get("/healthz").as_(Who::Anonymous)],
        ),
        b(
            "authn/anonymous-discovery-403",
            vec![],
            vec![get("/api").as_(Who::Anonymous)],
        ),
        b(
            "authn/bad-token-401",
            vec![],
            vec![get(CMS).as_(Who::BadToken)],
        ),
        b(
            "authn/token-request",
            vec![post(
                SAS,
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
            )],
            vec![post(
                &format!("{SAS}/sa/token"),
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": 3600}}),
            )],
        ),
        b(
            "authn/token-request-too-short-422",
            vec![post(
                SAS,
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
            )],
            vec![post(
                &format!("{SAS}/sa/token"),
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": 60}}),
            )],
        ),
        b(
            "authn/token-request-missing-account-404",
            vec![],
            vec![post(
                &format!("{SAS}/nobody/token"),
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {}}),
            )],
        ),
        b("authn/self-subject-review-admin", vec![], vec![ssr()]),
        b(
            "authn/self-subject-review-service-account",
            with_service_account_token(),
            vec![
                ssr().as_(Who::Token("tok")),
                get("/api").as_(Who::Token("tok")),
            ],
        ),
        b(
            "authn/token-bound-to-secret-revoked-with-it",
            vec![
                post(
                    SAS,
                    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
                ),
                post(SECRETS, secret("s", "Opaque", json!({}))).capture("suid", "/metadata/uid"),
                post(
                    &format!("{SAS}/sa/token"),
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"expirationSeconds": 3600, "boundObjectRef":
                            {"kind": "Secret", "apiVersion": "v1", "name": "s", "uid": "{suid}"}}}),
                )
                .capture("tok", "/status/token"),
            ],
            vec![
                ssr().as_(Who::Token("tok")),
                delete(&format!("{SECRETS}/s")),
                ssr().as_(Who::Token("tok")).until_code(401),
            ],
        ),
        b(
            "authn/token-revoked-with-service-account",
            with_service_account_token(),
            vec![
                delete(&format!("{SAS}/sa")),
                ssr().as_(Who::Token("tok")).until_code(401),
            ],
        ),
    ]
}

fn authorization() -> Vec<Behaviour> {
    let read_cms =
        || json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]);
    let granted = || {
        let mut s = with_service_account_token();
        s.push(post(ROLES, role("reader", read_cms())));
        s.push(post(
            ROLEBINDINGS,
            binding_to_sa("reader", "Role", "reader"),
        ));
        s
    };
    vec![
        b(
            "rbac/service-account-forbidden-403",
            with_service_account_token(),
            vec![get(CMS).as_(Who::Token("tok"))],
        ),
        b(
            "rbac/role-binding-grants",
            granted(),
            vec![
                get(CMS).as_(Who::Token("tok")).until_code(200),
                post(CMS, cm("a", json!({}))).as_(Who::Token("tok")),
            ],
        ),
        b(
            "rbac/self-subject-access-review",
            granted(),
            vec![
                ssar("list", "configmaps")
                    .as_(Who::Token("tok"))
                    .until("/status/allowed", json!(true)),
                ssar("delete", "configmaps").as_(Who::Token("tok")),
            ],
        ),
        b(
            "rbac/cluster-role-aggregation",
            vec![
                post(
                    CLUSTERROLES,
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": {"name": "{ns}-aggregated"},
                        "aggregationRule": {"clusterRoleSelectors": [
                            {"matchLabels": {"example.com/aggregate-to": "{ns}"}}]}}),
                ),
                post(
                    CLUSTERROLES,
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": {"name": "{ns}-part",
                            "labels": {"example.com/aggregate-to": "{ns}"}},
                        "rules": read_cms()}),
                ),
            ],
            vec![
                get(&format!("{CLUSTERROLES}/{{ns}}-aggregated"))
                    .until("/rules/0/resources/0", json!("configmaps")),
                patch(
                    &format!("{CLUSTERROLES}/{{ns}}-part"),
                    MERGE,
                    json!({"metadata": {"labels": null}}),
                ),
                get(&format!("{CLUSTERROLES}/{{ns}}-aggregated")).until("/rules/0", json!(null)),
            ],
        ),
        b(
            "rbac/aggregated-role-grants",
            {
                let mut s = with_service_account_token();
                s.push(post(
                    CLUSTERROLES,
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": {"name": "{ns}-aggregated"},
                        "aggregationRule": {"clusterRoleSelectors": [
                            {"matchLabels": {"example.com/aggregate-to": "{ns}"}}]}}),
                ));
                s.push(post(
                    ROLEBINDINGS,
                    binding_to_sa("agg", "ClusterRole", "{ns}-aggregated"),
                ));
                s.push(get(CMS).as_(Who::Token("tok")).until_code(403));
                s.push(post(
                    CLUSTERROLES,
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": {"name": "{ns}-part",
                            "labels": {"example.com/aggregate-to": "{ns}"}},
                        "rules": read_cms()}),
                ));
                s
            },
            vec![get(CMS).as_(Who::Token("tok")).until_code(200)],
        ),
        b(
            "rbac/escalation-forbidden-403",
            {
                let mut s = with_service_account_token();
                s.push(post(
                    ROLES,
                    role(
                        "role-writer",
                        json!([{"apiGroups": ["rbac.authorization.k8s.io"],
                            "resources": ["roles"], "verbs": ["create"]}]),
                    ),
                ));
                s.push(post(
                    ROLEBINDINGS,
                    binding_to_sa("role-writer", "Role", "role-writer"),
                ));
                s
            },
            vec![
                post(ROLES, role("probe", json!([])))
                    .as_(Who::Token("tok"))
                    .until_code(201),
                post(
                    ROLES,
                    role(
                        "more",
                        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
                    ),
                )
                .as_(Who::Token("tok")),
            ],
        ),
        b(
            "rbac/rolebinding-roleref-immutable-422",
            vec![
                post(ROLES, role("r1", json!([]))),
                post(ROLEBINDINGS, binding_to_sa("rb", "Role", "r1")),
            ],
            vec![patch(
                &format!("{ROLEBINDINGS}/rb"),
                MERGE,
                json!({"roleRef": {"name": "r2"}}),
            )],
        ),
        b(
            "rbac/role-create",
            vec![],
            vec![post(ROLES, role("r", read_cms()))],
        ),
    ]
}

fn builtin_kinds() -> Vec<Behaviour> {
    let event_core = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "e1"},
        "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "namespace": "{ns}"},
        "reason": "Tested", "message": "hello", "type": "Normal",
        "source": {"component": "conformance"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1});
    let event_new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e2"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "example.com/conformance", "reportingInstance": "i1",
        "action": "Sync", "reason": "Synced", "note": "hi", "type": "Normal",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "namespace": "{ns}"}});
    vec![
        b(
            "builtin/lease-create-microtime",
            vec![],
            vec![post(
                LEASES,
                lease(json!({"holderIdentity": "a", "leaseDurationSeconds": 15,
                    "acquireTime": "2026-01-01T00:00:00Z",
                    "renewTime": "2026-01-01T00:00:00.123456Z", "leaseTransitions": 0})),
            )],
        ),
        b(
            "builtin/lease-update-stale-409",
            vec![post(LEASES, lease(json!({"holderIdentity": "a"})))],
            vec![put(
                &format!("{LEASES}/l"),
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "l", "resourceVersion": "1"},
                    "spec": {"holderIdentity": "b"}}),
            )],
        ),
        b(
            "builtin/lease-put-unconditional",
            vec![post(LEASES, lease(json!({"holderIdentity": "a"})))],
            vec![put(
                &format!("{LEASES}/l"),
                lease(json!({"holderIdentity": "b"})),
            )],
        ),
        b(
            "builtin/event-core-create",
            vec![],
            vec![post("/api/v1/namespaces/{ns}/events", event_core)],
        ),
        b(
            "builtin/event-events-v1-create-and-read-as-core",
            vec![],
            vec![
                post("/apis/events.k8s.io/v1/namespaces/{ns}/events", event_new),
                get("/api/v1/namespaces/{ns}/events/e2"),
            ],
        ),
        b(
            "builtin/lease-renew-as-leader-election-does",
            vec![
                post(
                    LEASES,
                    lease(json!({"holderIdentity": "a", "leaseDurationSeconds": 15,
                        "acquireTime": "2026-01-01T00:00:00.000000Z",
                        "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 0})),
                )
                .capture("rv", "/metadata/resourceVersion"),
            ],
            vec![put(
                &format!("{LEASES}/l"),
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "l", "resourceVersion": "{rv}"},
                    "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                        "acquireTime": "2026-01-01T00:00:00.000000Z",
                        "renewTime": "2026-01-01T00:00:10.500000Z", "leaseTransitions": 0}}),
            )],
        ),
        b(
            "builtin/event-series-merge-patch",
            vec![post(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                    "metadata": {"name": "e3"},
                    "eventTime": "2026-01-01T00:00:00.000000Z",
                    "reportingController": "example.com/conformance", "reportingInstance": "i1",
                    "action": "Sync", "reason": "Synced", "note": "hi", "type": "Normal",
                    "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "a",
                        "namespace": "{ns}"}}),
            )],
            vec![patch(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/e3",
                MERGE,
                json!({"series": {"count": 2,
                    "lastObservedTime": "2026-01-01T00:00:05.000000Z"}}),
            )],
        ),
        b(
            "builtin/secret-string-data",
            vec![],
            vec![post(
                SECRETS,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                    "stringData": {"a": "b"}}),
            )],
        ),
        b(
            "builtin/secret-invalid-base64-400",
            vec![],
            vec![post(SECRETS, secret("s", "Opaque", json!({"a": "%%%"})))],
        ),
        b(
            "builtin/secret-tls-required-keys-422",
            vec![],
            vec![post(SECRETS, secret("s", "kubernetes.io/tls", json!({})))],
        ),
        b(
            "builtin/secret-dockerconfigjson-required-key-422",
            vec![],
            vec![post(
                SECRETS,
                secret("s", "kubernetes.io/dockerconfigjson", json!({})),
            )],
        ),
        b(
            "builtin/secret-basic-auth",
            vec![],
            vec![
                post(SECRETS, secret("s", "kubernetes.io/basic-auth", json!({}))),
                post(
                    SECRETS,
                    secret(
                        "s2",
                        "kubernetes.io/basic-auth",
                        json!({"username": "YQ=="}),
                    ),
                ),
            ],
        ),
        b(
            "builtin/secret-service-account-token-needs-annotation-422",
            vec![],
            vec![post(
                SECRETS,
                secret("s", "kubernetes.io/service-account-token", json!({})),
            )],
        ),
        b(
            "builtin/secret-type-immutable-422",
            vec![post(SECRETS, secret("s", "Opaque", json!({})))],
            vec![patch(
                &format!("{SECRETS}/s"),
                MERGE,
                json!({"type": "example.com/other"}),
            )],
        ),
        b(
            "builtin/configmap-immutable-422",
            vec![post(
                CMS,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
                    "data": {"k": "v"}, "immutable": true}),
            )],
            vec![patch(&cm_path("a"), MERGE, json!({"data": {"k": "x"}}))],
        ),
        b(
            "builtin/configmap-binary-data",
            vec![],
            vec![post(
                CMS,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
                    "binaryData": {"b": "AAE="}}),
            )],
        ),
        b(
            "builtin/serviceaccount-create",
            vec![],
            vec![post(
                SAS,
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
            )],
        ),
        b(
            "builtin/podtemplate-create",
            vec![],
            vec![post(
                "/api/v1/namespaces/{ns}/podtemplates",
                json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "p"},
                    "template": {"metadata": {"labels": {"a": "b"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}),
            )],
        ),
    ]
}
