//! Discovery and OpenAPI documents (`/version`, `/api`, `/apis`, `/openapi/v3`) built from the
//! resources the store serves. Plain JSON values: the HTTP front end answers with them.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::resources::{
    ALL_VERBS, CUSTOM_RESOURCE_VERBS, ResourceDef, kube_version_order, storage_version_hash,
};
use crate::store::Store;

/// The document at the non-resource path `segs` (split at `/`); `404` for an unknown path.
pub fn document(store: &Store, segs: &[&str]) -> ApiResult<Value> {
    let value = match segs {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-test-apiserver",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
            "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }),
        ["api", "v1"] => {
            let resources: Vec<Value> = store
                .resources
                .values()
                .filter(|d| d.group.is_empty())
                .flat_map(|d| resource_entries(d))
                .collect();
            // The core list has no `apiVersion` (the group lists do).
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": by_name(resources)})
        }
        ["apis"] => {
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for d in store.resources.values().filter(|d| !d.group.is_empty()) {
                let entry = match groups.iter_mut().find(|(g, _)| *g == d.group) {
                    Some(e) => e,
                    None => {
                        groups.push((d.group.clone(), Vec::new()));
                        let last = groups.len() - 1;
                        &mut groups[last]
                    }
                };
                for v in &d.versions {
                    if !entry.1.contains(&v.name) {
                        entry.1.push(v.name.clone());
                    }
                }
                entry.1.sort_by(|a, b| kube_version_order(a, b));
            }
            let groups: Vec<Value> = groups.iter().map(|(g, vs)| api_group(g, vs)).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["apis", g] => {
            let mut vs: Vec<String> = Vec::new();
            for d in store.resources.values().filter(|d| d.group == *g) {
                for v in &d.versions {
                    if !vs.contains(&v.name) {
                        vs.push(v.name.clone());
                    }
                }
            }
            if vs.is_empty() {
                return Err(ApiError::no_route());
            }
            vs.sort_by(|a, b| kube_version_order(a, b));
            api_group(g, &vs)
        }
        ["apis", g, v] => {
            let resources: Vec<Value> = store
                .resources
                .values()
                .filter(|d| d.group == *g && d.version(v).is_some())
                .flat_map(|d| resource_entries(d))
                .collect();
            if resources.is_empty() {
                return Err(ApiError::no_route());
            }
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{g}/{v}"), "resources": by_name(resources)})
        }
        ["openapi", "v3"] => {
            let mut paths = serde_json::Map::new();
            for d in store.resources.values() {
                for v in &d.versions {
                    let gv = if d.group.is_empty() {
                        format!("api/{}", v.name)
                    } else {
                        format!("apis/{}/{}", d.group, v.name)
                    };
                    paths.insert(
                        gv.clone(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", store.rv)}),
                    );
                }
            }
            json!({ "paths": paths })
        }
        ["openapi", "v3", "api", v] => openapi_gv(store, "", v),
        ["openapi", "v3", "apis", g, v] => openapi_gv(store, g, v),
        _ => return Err(ApiError::no_route()),
    };
    Ok(value)
}

/// Whether the path `segs` lies under an API the server has handlers for: `/api` and the groups
/// of its resources. Anything else gets the real server's plain text `404 page not found`
/// instead of a `Status`.
pub fn serves_path(store: &Store, segs: &[&str]) -> bool {
    match segs {
        ["api", ..] | ["apis"] => true,
        ["apis", group, ..] => store.resources.values().any(|d| d.group == *group),
        _ => false,
    }
}

/// The verbs a resource answers (others get `405`): reviews are only created, and Namespaces
/// have no `deletecollection`.
pub fn verbs(def: &ResourceDef) -> &'static [&'static str] {
    if def.review {
        &["create"]
    } else if def.custom {
        CUSTOM_RESOURCE_VERBS
    } else if def.group.is_empty() && def.kind == "Namespace" {
        &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ]
    } else {
        ALL_VERBS
    }
}

/// The group and version a resource's objects are stored as, which its `storageVersionHash`
/// is made of: CRDs are still stored as `apiextensions.k8s.io/v1beta1`, `events.k8s.io` Events
/// as core Events.
fn storage_group_version(def: &ResourceDef) -> (&str, &str) {
    match (def.group.as_str(), def.kind.as_str()) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => (&def.group, "v1beta1"),
        _ if def.alias_of.is_some() => ("", "v1"),
        _ => (&def.group, def.storage_version()),
    }
}

fn resource_entries(def: &ResourceDef) -> Vec<Value> {
    let mut out = vec![json!({
        "name": def.plural,
        "singularName": def.singular,
        "namespaced": def.namespaced,
        "kind": def.kind,
        "verbs": verbs(def),
        "shortNames": def.short_names,
        "categories": def.categories,
        "storageVersionHash": if def.review {
            String::new()
        } else {
            let (group, version) = storage_group_version(def);
            storage_version_hash(group, version, &def.kind)
        },
    })];
    if def.review
        && let Some(o) = out[0].as_object_mut()
    {
        o.remove("storageVersionHash");
    }
    // Subresources served besides `status`.
    if def.group.is_empty() && def.kind == "Namespace" {
        out.push(json!({
            "name": "namespaces/finalize",
            "singularName": "",
            "namespaced": false,
            "kind": "Namespace",
            "verbs": ["update"],
        }));
    }
    if def.group.is_empty() && def.kind == "ServiceAccount" {
        out.push(json!({
            "name": "serviceaccounts/token",
            "singularName": "",
            "namespaced": true,
            "group": "authentication.k8s.io",
            "version": "v1",
            "kind": "TokenRequest",
            "verbs": ["create"],
        }));
    }
    if def.has_status {
        out.push(json!({
            "name": format!("{}/status", def.plural),
            "singularName": "",
            "namespaced": def.namespaced,
            "kind": def.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    for entry in &mut out {
        if let Some(o) = entry.as_object_mut() {
            for k in ["shortNames", "categories"] {
                if o.get(k)
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
                {
                    o.remove(k);
                }
            }
        }
    }
    out
}

/// Discovery entries in the real server's order: by name, subresources after their resource.
fn by_name(mut entries: Vec<Value>) -> Vec<Value> {
    entries.sort_by(|a, b| {
        let name = |v: &Value| {
            v.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        name(a).cmp(&name(b))
    });
    entries
}

fn api_group(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": preferred})
}

/// A minimal OpenAPI v3 document for one group/version: the PATCH operations with their
/// group/version/kind and the `fieldValidation` parameter. kubectl reads exactly this to decide
/// that the server validates fields itself (instead of downloading schemas for client-side
/// validation); no schemas are published.
fn openapi_gv(store: &Store, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for d in store
        .resources
        .values()
        .filter(|d| d.group == group && d.version(version).is_some())
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": d.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}},
        ]);
        paths.insert(
            item,
            json!({
                "parameters": params.clone(),
                "patch": {
                    "parameters": params,
                    "operationId": format!("patch{}", d.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK"}},
                },
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}
