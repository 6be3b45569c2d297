//! Compatibility of our generated CRDs with the reference CRDs in `tests/fixtures/klutch-crds/`.
//!
//! For every fixture: names, scope, versions, subresources and printer columns match; every
//! schema path of the fixture exists in ours with the same type, enum, required-ness, default,
//! validation keywords and `x-kubernetes-*` extensions (CEL rules included), and ours has no path
//! the fixture lacks. Then sample objects of each kind are validated against both schemas: what
//! the fixture accepts, ours accepts, and what it rejects, ours rejects. Every difference is
//! printed; the test fails on any difference that is not in `KNOWN_DIFFERENCES`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a test failure with its location

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};

/// Deliberate differences (decisions.md P1 and V1), as `(crd, path, what)`.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "apiservicebindings.klutch.anynines.com",
        "versions[v1alpha1].additionalPrinterColumns[Resources].jsonPath",
        "P1: well-formed JSONPath for annotation bind.klutch.anynines.com/resources",
    ),
    (
        "apiserviceexports.klutch.anynines.com",
        "<root>.x-kubernetes-validations",
        "V1: the name rule's message says what it checks",
    ),
];

/// Schema keywords compared on every node (descriptions are not).
const COMPARED_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "default",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "uniqueItems",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/klutch-crds")
}

fn fixtures() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

fn ours(name: &str) -> Value {
    let crd = konnector_api::crds::all()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no generated CRD named {name}"));
    serde_json::to_value(crd).unwrap()
}

/// Collects differences as `(path, message)`.
#[derive(Default)]
struct Diff(Vec<(String, String)>);

impl Diff {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }

    fn eq(&mut self, path: &str, fixture: &Value, ours: &Value) {
        if fixture != ours {
            self.push(path, format!("fixture {fixture} != ours {ours}"));
        }
    }
}

fn compare_schema(path: &str, fixture: &Value, ours: &Value, diff: &mut Diff) {
    for key in COMPARED_KEYWORDS {
        let (f, o) = (&fixture[key], &ours[key]);
        if key == &"x-kubernetes-validations" {
            // Compare rule and message only; order of rules does not matter to the server.
            let norm = |v: &Value| -> BTreeSet<String> {
                v.as_array()
                    .map(|rules| {
                        rules
                            .iter()
                            .map(|r| format!("{} :: {}", r["rule"], r["message"]))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if norm(f) != norm(o) {
                diff.push(format!("{path}.{key}"), format!("fixture {f} != ours {o}"));
            }
        } else {
            diff.eq(&format!("{path}.{key}"), f, o);
        }
    }
    // Required-ness of each child.
    let required = |v: &Value| -> BTreeSet<String> {
        v["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    if required(fixture) != required(ours) {
        diff.push(
            format!("{path}.required"),
            format!(
                "fixture {:?} != ours {:?}",
                required(fixture),
                required(ours)
            ),
        );
    }
    let empty = serde_json::Map::new();
    let fp = fixture["properties"].as_object().unwrap_or(&empty);
    let op = ours["properties"].as_object().unwrap_or(&empty);
    for (name, child) in fp {
        match op.get(name) {
            Some(o) => compare_schema(&format!("{path}.{name}"), child, o, diff),
            None => diff.push(format!("{path}.{name}"), "missing in ours"),
        }
    }
    for name in op.keys().filter(|n| !fp.contains_key(*n)) {
        diff.push(format!("{path}.{name}"), "only in ours");
    }
    for key in ["items", "additionalProperties"] {
        match (&fixture[key], &ours[key]) {
            (Value::Null, Value::Null) => {}
            (f @ Value::Object(_), o @ Value::Object(_)) => {
                compare_schema(&format!("{path}.{key}"), f, o, diff)
            }
            (f, o) => diff.eq(&format!("{path}.{key}"), f, o),
        }
    }
    for key in ["anyOf", "allOf", "oneOf"] {
        diff.eq(&format!("{path}.{key}"), &fixture[key], &ours[key]);
    }
}

fn compare_crd(fixture: &Value, ours: &Value) -> Diff {
    let mut diff = Diff::default();
    let (fs, os) = (&fixture["spec"], &ours["spec"]);
    diff.eq("group", &fs["group"], &os["group"]);
    diff.eq("scope", &fs["scope"], &os["scope"]);
    diff.eq("names", &fs["names"], &os["names"]);
    let fv = fs["versions"].as_array().unwrap();
    let ov = os["versions"].as_array().unwrap();
    diff.eq("versions.length", &json!(fv.len()), &json!(ov.len()));
    for f in fv {
        let name = f["name"].as_str().unwrap();
        let Some(o) = ov.iter().find(|o| o["name"] == f["name"]) else {
            diff.push(format!("versions[{name}]"), "missing in ours");
            continue;
        };
        let vp = format!("versions[{name}]");
        for key in ["served", "storage", "deprecated", "subresources"] {
            diff.eq(&format!("{vp}.{key}"), &f[key], &o[key]);
        }
        let empty = vec![];
        let fc = f["additionalPrinterColumns"].as_array().unwrap_or(&empty);
        let oc = o["additionalPrinterColumns"].as_array().unwrap_or(&empty);
        let col_names =
            |cols: &Vec<Value>| cols.iter().map(|c| c["name"].clone()).collect::<Vec<_>>();
        diff.eq(
            &format!("{vp}.additionalPrinterColumns.names"),
            &json!(col_names(fc)),
            &json!(col_names(oc)),
        );
        for (a, b) in fc.iter().zip(oc) {
            for key in ["type", "jsonPath", "priority", "format", "description"] {
                diff.eq(
                    &format!(
                        "{vp}.additionalPrinterColumns[{}].{key}",
                        a["name"].as_str().unwrap_or("")
                    ),
                    &a[key],
                    &b[key],
                );
            }
        }
        compare_schema(
            &format!("{vp}.schema"),
            &f["schema"]["openAPIV3Schema"],
            &o["schema"]["openAPIV3Schema"],
            &mut diff,
        );
    }
    // Root-level paths are reported as `<root>` for readability.
    for entry in &mut diff.0 {
        entry.0 = entry.0.replace("versions[v1alpha1].schema.", "<root>.");
    }
    diff
}

#[test]
fn generated_crds_match_the_reference_crds() {
    let fixtures = fixtures();
    assert_eq!(
        fixtures.len(),
        6,
        "expected six reference CRDs in {}",
        fixture_dir().display()
    );
    let mut unexpected = Vec::new();
    let mut seen_known = BTreeSet::new();
    for fixture in &fixtures {
        let name = fixture["metadata"]["name"].as_str().unwrap();
        let diff = compare_crd(fixture, &ours(name));
        for (path, message) in diff.0 {
            match KNOWN_DIFFERENCES
                .iter()
                .find(|(crd, p, _)| *crd == name && *p == path)
            {
                Some((_, _, why)) => {
                    println!("known difference   {name} {path}: {message} ({why})");
                    seen_known.insert((name.to_string(), path));
                }
                None => {
                    println!("UNEXPECTED         {name} {path}: {message}");
                    unexpected.push(format!("{name} {path}: {message}"));
                }
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} unexpected differences:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    for (crd, path, why) in KNOWN_DIFFERENCES {
        assert!(
            seen_known.contains(&(crd.to_string(), path.to_string())),
            "known difference no longer present, remove it from the list: {crd} {path} ({why})"
        );
    }
}

#[test]
fn deliberate_fixes_are_what_decisions_md_says() {
    let binding = ours("apiservicebindings.klutch.anynines.com");
    let cols = binding["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap();
    let resources = cols.iter().find(|c| c["name"] == "Resources").unwrap();
    assert_eq!(
        resources["jsonPath"],
        r".metadata.annotations.bind\.klutch\.anynines\.com/resources"
    );
    let export = ours("apiserviceexports.klutch.anynines.com");
    let rules =
        &export["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"];
    assert_eq!(
        rules[0]["rule"],
        "self.metadata.name == self.spec.names.plural+\".\"+self.spec.group"
    );
    assert_eq!(
        rules[0]["message"],
        konnector_api::crds::EXPORT_NAME_RULE_MESSAGE
    );
}

// ---------------------------------------------------------------------------------------------
// Sample objects.

fn validator(crd: &Value) -> jsonschema::Validator {
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    jsonschema::draft4::new(schema).unwrap()
}

fn errors(v: &jsonschema::Validator, obj: &Value) -> Vec<String> {
    v.iter_errors(obj)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// `(kind plural, valid objects, invalid objects)`.
fn samples() -> Vec<(&'static str, Vec<Value>, Vec<Value>)> {
    let meta = json!({"name": "x", "namespace": "default"});
    let secret_ref = json!({"name": "kubeconfig", "namespace": "klutch-bind", "key": "kubeconfig"});
    let claim = json!({
        "group": "", "resource": "secrets", "version": "v1",
        "selector": {"owner": "Provider", "names": ["*"], "namespaces": ["*"], "labelSelectors": [{"app": "db"}], "fieldSelectors": ["metadata.name=x"]},
        "required": true, "read": {"labels": [{"pattern": "*"}], "overrideAnnotations": [{"pattern": "a/*"}]},
        "create": {"replaceExisting": true}, "autoAdopt": true,
        "onConflict": {"recreateWhenConsumerSideDeleted": false},
        "update": {"fields": ["spec"], "preserving": ["status"], "alwaysRecreate": true, "labels": [{"pattern": "x"}]}
    });
    let mut accepted = claim.clone();
    accepted["state"] = json!("Accepted");
    let condition = json!({"type": "Ready", "status": "False", "severity": "Error", "reason": "R", "message": "m", "lastTransitionTime": "2024-01-01T00:00:00Z"});
    let export_spec = json!({
        "group": "mangodb.com", "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList", "shortNames": ["mdb"], "categories": ["all"]},
        "scope": "Namespaced", "informerScope": "Namespaced",
        "versions": [{"name": "v1", "served": true, "storage": true,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}},
            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.r", "statusReplicasPath": ".status.r"}},
            "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 0}]}],
        "permissionClaims": [claim]
    });
    let mut cluster_export = export_spec.clone();
    cluster_export["scope"] = json!("Cluster");
    cluster_export["informerScope"] = json!("Cluster");
    cluster_export["clusterScopedIsolation"] = json!("Prefixed");
    // A copy of `base` with the value at `pointer` set (the last segment may be new).
    let with = |base: &Value, pointer: &str, value: Value| {
        let mut v = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match v.pointer_mut(parent).unwrap() {
            Value::Object(m) => {
                m.insert(key.to_string(), value);
            }
            Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
            other => panic!("cannot set {pointer} in {other}"),
        }
        v
    };
    let binding = json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding", "metadata": meta,
        "spec": {"kubeconfigSecretRef": secret_ref, "permissionClaims": [accepted]},
        "status": {"providerPrettyName": "anynines", "conditions": [condition]}});
    let export = json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport", "metadata": meta,
        "spec": export_spec, "status": {"acceptedNames": {"kind": "MangoDB", "plural": "mangodbs"}, "storedVersions": ["v1"], "conditions": [condition]}});
    let cluster_binding = json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "ClusterBinding", "metadata": {"name": "cluster", "namespace": "p"},
        "spec": {"kubeconfigSecretRef": {"name": "kubeconfig", "key": "kubeconfig"}, "providerPrettyName": "anynines", "serviceProviderSpec": {"region": "eu", "tiers": [1, 2]}},
        "status": {"lastHeartbeatTime": "2024-01-01T00:00:00Z", "heartbeatInterval": "5m0s", "konnectorVersion": "v1.4.0", "conditions": [condition]}});
    let request = json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExportRequest", "metadata": meta,
        "spec": {"parameters": {"any": {"thing": 1}}, "resources": [{"group": "mangodb.com", "resource": "mangodbs", "versions": ["v1"], "permissionClaims": [claim]}]},
        "status": {"phase": "Succeeded", "terminalMessage": "ok", "conditions": [condition]}});
    let app = json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "AppClusterBinding", "metadata": meta,
        "spec": {"kubeconfigSecretRef": secret_ref, "apiExports": [{"group": "mangodb.com", "resource": "mangodbs"}],
            "konnector": {"deploy": true, "overrides": {"image": "konnector:dev", "args": ["--v=4"],
                "env": [{"name": "A", "value": "b"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "1", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                "securityContext": {"runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}}}},
        "status": {"conditions": [condition]}});
    let namespace = json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceNamespace", "metadata": meta,
        "spec": {}, "status": {"namespace": "p-default"}});
    vec![
        (
            "apiservicebindings",
            vec![
                binding.clone(),
                json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding", "metadata": meta, "spec": {"kubeconfigSecretRef": secret_ref}}),
            ],
            vec![
                with(&binding, "/spec/kubeconfigSecretRef/key", json!("config")),
                with(&binding, "/spec/kubeconfigSecretRef/name", json!("")),
                with(&binding, "/spec/permissionClaims/0/state", json!("Maybe")),
                with(
                    &binding,
                    "/spec/permissionClaims/0/resource",
                    json!("Secrets"),
                ),
                with(
                    &binding,
                    "/spec/permissionClaims/0/selector/owner",
                    json!("Nobody"),
                ),
                with(
                    &binding,
                    "/status/conditions/0/lastTransitionTime",
                    json!("yesterday"),
                ),
            ],
        ),
        (
            "apiserviceexports",
            vec![export.clone(), with(&export, "/spec", cluster_export)],
            vec![
                with(&export, "/spec/versions", json!([])),
                with(&export, "/spec/versions/0/name", json!("1")),
                with(&export, "/spec/scope", json!("Global")),
                with(&export, "/spec/clusterScopedIsolation", json!("Separate")),
            ],
        ),
        ("apiservicenamespaces", vec![namespace], vec![]),
        (
            "clusterbindings",
            vec![cluster_binding.clone()],
            vec![
                with(&cluster_binding, "/spec/providerPrettyName", json!("")),
                with(
                    &cluster_binding,
                    "/spec/kubeconfigSecretRef/key",
                    json!("token"),
                ),
            ],
        ),
        (
            "apiserviceexportrequests",
            vec![request.clone()],
            vec![
                with(&request, "/spec/resources", json!([])),
                with(&request, "/status/phase", json!("Done")),
            ],
        ),
        (
            "appclusterbindings",
            vec![app.clone()],
            vec![
                with(
                    &app,
                    "/spec/konnector/overrides/ports/0",
                    json!({"protocol": "TCP"}),
                ),
                with(&app, "/spec/apiExports/0/resource", json!("MangoDBs")),
            ],
        ),
    ]
}

#[test]
fn objects_the_fixtures_accept_ours_accept_and_the_rest_both_reject() {
    let fixtures = fixtures();
    for (plural, valid, invalid) in samples() {
        let name = format!("{plural}.klutch.anynines.com");
        let fixture = fixtures
            .iter()
            .find(|f| f["metadata"]["name"] == name.as_str())
            .unwrap();
        let (theirs, ours) = (validator(fixture), validator(&self::ours(&name)));
        for obj in &valid {
            assert_eq!(
                errors(&theirs, obj),
                Vec::<String>::new(),
                "fixture rejects a sample {plural}"
            );
            assert_eq!(
                errors(&ours, obj),
                Vec::<String>::new(),
                "ours rejects a {plural} the fixture accepts: {obj}"
            );
        }
        for obj in &invalid {
            assert!(
                !errors(&theirs, obj).is_empty(),
                "fixture accepts an invalid sample {plural}: {obj}"
            );
            assert!(
                !errors(&ours, obj).is_empty(),
                "ours accepts a {plural} the fixture rejects: {obj}"
            );
        }
    }
}

/// The Rust types read every sample and write it back in a form the fixture accepts, so the
/// konnector never writes an object that the reference CRD (or the Go konnector) would reject.
#[test]
fn rust_types_round_trip_samples_into_valid_objects() {
    use konnector_api::v1alpha1::*;
    fn round_trip<K: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Value {
        let typed: K = serde_json::from_value(obj.clone()).unwrap();
        serde_json::to_value(typed).unwrap()
    }
    let fixtures = fixtures();
    for (plural, valid, _) in samples() {
        let name = format!("{plural}.klutch.anynines.com");
        let fixture = fixtures
            .iter()
            .find(|f| f["metadata"]["name"] == name.as_str())
            .unwrap();
        let theirs = validator(fixture);
        for obj in &valid {
            let back = match plural {
                "apiservicebindings" => round_trip::<APIServiceBinding>(obj),
                "apiserviceexports" => round_trip::<APIServiceExport>(obj),
                "apiservicenamespaces" => round_trip::<APIServiceNamespace>(obj),
                "clusterbindings" => round_trip::<ClusterBinding>(obj),
                "apiserviceexportrequests" => round_trip::<APIServiceExportRequest>(obj),
                "appclusterbindings" => round_trip::<AppClusterBinding>(obj),
                other => panic!("no type for {other}"),
            };
            assert_eq!(
                errors(&theirs, &back),
                Vec::<String>::new(),
                "{plural} written back is invalid: {back}"
            );
            // Nothing a user wrote is lost on the way through the types.
            assert_eq!(
                strip_nulls(&back),
                strip_nulls(obj),
                "{plural} changed on a round trip"
            );
        }
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}
