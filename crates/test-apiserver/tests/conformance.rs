//! Differential conformance: scripted request sequences run against `test-apiserver` and
//! against a real kube-apiserver, responses normalised and compared behaviour by behaviour.
//!
//! The real server's responses are recorded in `tests/conformance/recorded.json`, so the
//! comparison also runs where the control plane's binaries are absent. With the binaries (as
//! found by `kube-control-plane`), the suite runs live against the real server as well;
//! `CONFORMANCE_RECORD=1 cargo test -p test-apiserver --test conformance` re-records.
//!
//! A behaviour that differs fails the suite unless the crate README lists it under "Known
//! differences" (with the reason and what it means for a test relying on it).
//!
//! What is compared: the status code; for a `Status`, its `reason`, `details` and `code`
//! (not the message, whose wording is checked where a behaviour says so); for an object, the
//! object. Uids, resourceVersions, timestamps and the like are normalised first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use http_body_util::BodyExt as _;
use serde_json::{Value, json};

/// One request of a behaviour. `{ns}` in the path or body is the behaviour's own namespace.
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    body: Option<Value>,
    content_type: &'static str,
}

fn req(method: &'static str, path: &str) -> Req {
    Req {
        method,
        path: path.to_string(),
        body: None,
        content_type: "application/json",
    }
}

fn get(path: &str) -> Req {
    req("GET", path)
}

fn delete(path: &str) -> Req {
    req("DELETE", path)
}

fn post(path: &str, body: Value) -> Req {
    Req {
        body: Some(body),
        ..req("POST", path)
    }
}

fn put(path: &str, body: Value) -> Req {
    Req {
        body: Some(body),
        ..req("PUT", path)
    }
}

fn patch(path: &str, content_type: &'static str, body: Value) -> Req {
    Req {
        body: Some(body),
        content_type,
        ..req("PATCH", path)
    }
}

const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// A scripted behaviour: `setup` runs first (its responses are not compared), then `steps`,
/// whose responses are.
struct Behaviour {
    name: &'static str,
    setup: Vec<Req>,
    steps: Vec<Req>,
}

fn b(name: &'static str, setup: Vec<Req>, steps: Vec<Req>) -> Behaviour {
    Behaviour { name, setup, steps }
}

fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

const CMS: &str = "/api/v1/namespaces/{ns}/configmaps";

fn cm_path(name: &str) -> String {
    format!("{CMS}/{name}")
}

/// The behaviours, by area.
fn behaviours() -> Vec<Behaviour> {
    let created = || vec![post(CMS, cm("a", json!({"k": "v"})))];
    vec![
        // Protocol and discovery.
        b("discovery/api-versions", vec![], vec![get("/api")]),
        b("discovery/core-v1-configmaps", vec![], vec![get("/api/v1")]),
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
        // CRUD.
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
            vec![
                post(CMS, cm("a", json!({}))),
                post(CMS, cm("b", json!({}))),
                post(CMS, cm("c", json!({}))),
            ],
            vec![get(&format!("{CMS}?limit=2"))],
        ),
        b(
            "crud/list-label-selector",
            vec![
                post(
                    CMS,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "a", "labels": {"team": "x"}}}),
                ),
                post(CMS, cm("b", json!({}))),
            ],
            vec![get(&format!("{CMS}?labelSelector=team%3Dx"))],
        ),
        b(
            "crud/list-field-selector-name",
            vec![post(CMS, cm("a", json!({}))), post(CMS, cm("b", json!({})))],
            vec![get(&format!("{CMS}?fieldSelector=metadata.name%3Db"))],
        ),
        // Patch types.
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
        // Server-side apply.
        b(
            "ssa/apply-creates",
            vec![],
            vec![
                Req {
                    path: format!("{}?fieldManager=m1", cm_path("s")),
                    ..patch("", APPLY, cm("s", json!({"k": "v"})))
                },
                get(&cm_path("s")),
            ],
        ),
        b(
            "ssa/apply-conflict-409",
            vec![Req {
                path: format!("{}?fieldManager=m1", cm_path("s")),
                ..patch("", APPLY, cm("s", json!({"k": "v"})))
            }],
            vec![Req {
                path: format!("{}?fieldManager=m2", cm_path("s")),
                ..patch("", APPLY, cm("s", json!({"k": "other"})))
            }],
        ),
        b(
            "ssa/apply-without-field-manager-400",
            vec![],
            vec![patch(&cm_path("s"), APPLY, cm("s", json!({"k": "v"})))],
        ),
        // Finalizers and deletion.
        b(
            "delete/finalizer-keeps-object-deleting",
            vec![post(
                CMS,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "f", "finalizers": ["example.com/hold"]}}),
            )],
            vec![delete(&cm_path("f")), get(&cm_path("f"))],
        ),
        b(
            "delete/removing-last-finalizer-deletes",
            vec![
                post(
                    CMS,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "f", "finalizers": ["example.com/hold"]}}),
                ),
                delete(&cm_path("f")),
            ],
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
            "delete/uid-precondition-mismatch-409",
            created(),
            vec![Req {
                body: Some(json!({"kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})),
                ..delete(&cm_path("a"))
            }],
        ),
        // Namespaces.
        b(
            "namespace/create-in-missing-namespace-404",
            vec![],
            vec![post(
                "/api/v1/namespaces/no-such-ns/configmaps",
                cm("a", json!({})),
            )],
        ),
    ]
}

/// A response as compared: the status code and the normalised body.
type Recorded = (u16, Value);

/// Replaces what differs between any two runs (ids, versions, times) with placeholders.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match k.as_str() {
                    "uid" | "resourceVersion" | "creationTimestamp" | "deletionTimestamp"
                    | "time" | "continue" | "selfLink" | "serverAddress" => {
                        if !v.is_null() {
                            *v = json!(format!("<{k}>"));
                        }
                    }
                    _ => normalise(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// What of a response is compared.
fn comparable(code: u16, body: &[u8]) -> Recorded {
    let mut value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| json!({"<text>": String::from_utf8_lossy(body)}));
    if value["kind"] == "Status" {
        // The message's wording is compared only where a behaviour says so.
        if let Some(m) = value.as_object_mut() {
            m.remove("message");
            if let Some(Value::Object(details)) = m.get_mut("details")
                && let Some(Value::Array(causes)) = details.get_mut("causes")
            {
                for c in causes.iter_mut() {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("message");
                    }
                }
            }
        }
    }
    normalise(&mut value);
    (code, value)
}

/// Runs every behaviour against the server behind `client`, each in its own namespace.
async fn run_all(client: &kube::Client) -> BTreeMap<String, Vec<Recorded>> {
    let mut out = BTreeMap::new();
    for (i, behaviour) in behaviours().iter().enumerate() {
        let ns = format!("conformance-{i}");
        send(
            client,
            &post(
                "/api/v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
            &ns,
        )
        .await;
        for r in &behaviour.setup {
            send(client, r, &ns).await;
        }
        let mut responses = Vec::new();
        for r in &behaviour.steps {
            let (code, body) = send(client, r, &ns).await;
            let mut recorded = comparable(code, &body);
            // The namespace's name is the behaviour's index: stable across servers.
            recorded.1 =
                serde_json::from_str(&recorded.1.to_string().replace(&ns, "{ns}")).unwrap();
            responses.push(recorded);
        }
        out.insert(behaviour.name.to_string(), responses);
    }
    out
}

async fn send(client: &kube::Client, r: &Req, ns: &str) -> (u16, Vec<u8>) {
    let path = r.path.replace("{ns}", ns);
    let body = r
        .body
        .as_ref()
        .map(|b| b.to_string().replace("{ns}", ns).into_bytes())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(r.method)
        .uri(&path)
        .header("content-type", r.content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(body))
        .unwrap();
    let response = common::bounded(&format!("{} {path}", r.method), client.send(request))
        .await
        .unwrap_or_else(|e| panic!("{} {path}: {e}", r.method));
    let code = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, bytes.to_vec())
}

fn recording_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/recorded.json")
}

/// The behaviour names the crate README lists under "Known differences".
fn listed_differences() -> Vec<String> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let Some((_, section)) = readme.split_once("## Known differences") else {
        return Vec::new();
    };
    let section = section.split("\n## ").next().unwrap_or_default();
    // Every backticked `area/name` in the section.
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            t.split_once('/').is_some_and(|(area, name)| {
                !area.is_empty()
                    && area.chars().all(|c| c.is_ascii_lowercase())
                    && !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
        })
        .map(str::to_string)
        .collect()
}

/// The real server's responses: live when the binaries are found (recorded again with
/// `CONFORMANCE_RECORD=1`), else the recording.
async fn reference() -> (BTreeMap<String, Vec<Recorded>>, &'static str) {
    match kube_control_plane::ControlPlane::start(
        kube_control_plane::Options::default()
            .name("conformance")
            .controller_manager(false),
    )
    .await
    {
        Ok(cp) => {
            let client = cp.admin_client().await.unwrap();
            let live = run_all(&client).await;
            if std::env::var_os("CONFORMANCE_RECORD").is_some() {
                std::fs::create_dir_all(recording_path().parent().unwrap()).unwrap();
                std::fs::write(
                    recording_path(),
                    serde_json::to_string_pretty(&live).unwrap() + "\n",
                )
                .unwrap();
                eprintln!(
                    "recorded {} behaviours in {}",
                    live.len(),
                    recording_path().display()
                );
            }
            (live, "the real kube-apiserver (live)")
        }
        Err(kube_control_plane::Error::NotFound(e)) => {
            eprintln!("{e}: comparing with the recording");
            let text = std::fs::read_to_string(recording_path()).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; record it with CONFORMANCE_RECORD=1 where the binaries are",
                    recording_path().display()
                )
            });
            (
                serde_json::from_str(&text).unwrap(),
                "the recording of the real kube-apiserver",
            )
        }
        Err(e) => panic!("starting the real control plane: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_apiserver_behaves_as_the_real_server() {
    let (real, source) = reference().await;
    let server = common::start(test_apiserver::Options::default()).await;
    let ours = run_all(&common::admin(&server).await).await;
    let listed = listed_differences();
    let mut agree = 0;
    let mut unlisted = Vec::new();
    let mut report = String::new();
    for behaviour in behaviours() {
        let name = behaviour.name;
        let Some(expected) = real.get(name) else {
            unlisted.push(format!("{name}: not in {source}; record again"));
            continue;
        };
        let got = &ours[name];
        if got == expected {
            agree += 1;
            if listed.iter().any(|l| l == name) {
                report.push_str(&format!(
                    "  {name}: agrees now; remove it from the README\n"
                ));
            }
            continue;
        }
        let mark = if listed.iter().any(|l| l == name) {
            "listed"
        } else {
            unlisted.push(name.to_string());
            "NOT LISTED"
        };
        report.push_str(&format!("  {name} ({mark}):\n"));
        for (i, (e, g)) in expected.iter().zip(got.iter()).enumerate() {
            if e != g {
                report.push_str(&format!(
                    "    step {i}: real {} {}\n             ours {} {}\n",
                    e.0, e.1, g.0, g.1
                ));
            }
        }
    }
    let total = behaviours().len();
    eprintln!("{agree}/{total} behaviours agree with {source}\n{report}");
    assert!(
        unlisted.is_empty(),
        "{} behaviours differ from {source} and are not listed in the README's Known differences: {unlisted:?}\n{report}",
        unlisted.len()
    );
}
