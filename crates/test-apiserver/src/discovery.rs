//! Discovery and OpenAPI documents (`/version`, `/api`, `/apis`, `/openapi/v3`) built from the
//! resources the store serves. Plain JSON values: the HTTP front end answers with them.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::resources::{ALL_VERBS, ResourceDef};
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
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources})
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
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{g}/{v}"), "resources": resources})
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

fn resource_entries(def: &ResourceDef) -> Vec<Value> {
    let mut out = vec![json!({
        "name": def.plural,
        "singularName": def.singular,
        "namespaced": def.namespaced,
        "kind": def.kind,
        "verbs": if def.review { &["create"][..] } else { ALL_VERBS },
        "shortNames": def.short_names,
        "categories": def.categories,
        "storageVersionHash": "",
    })];
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
