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
//! What is compared: the status code; `Warning` headers; for a `Status`, its `reason`,
//! `details` and `code` (not the message, whose wording differs between versions); for an
//! object, the object (managedFields included); for a watch, the sequence of events. Uids,
//! resourceVersions, timestamps, tokens and generated names are normalised first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "conformance/behaviours.rs"]
mod behaviours;
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use behaviours::{Behaviour, Req, Until, Who, behaviours};

/// A response as compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    code: u16,
    body: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Replaces what differs between any two runs (ids, versions, times, tokens) with placeholders.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            // managedFields keys of owner references carry the owner's uid.
            if map.keys().any(|k| k.starts_with("k:{\"uid\":")) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| {
                        let k = if k.starts_with("k:{\"uid\":") {
                            "k:{\"uid\":\"<uid>\"}".to_string()
                        } else {
                            k
                        };
                        (k, v)
                    })
                    .collect();
            }
            // A name the server generated from `generateName`.
            let generated = map
                .get("generateName")
                .and_then(Value::as_str)
                .map(str::to_owned);
            for (k, v) in map.iter_mut() {
                match k.as_str() {
                    "uid"
                    | "resourceVersion"
                    | "creationTimestamp"
                    | "deletionTimestamp"
                    | "time"
                    | "lastTransitionTime"
                    | "continue"
                    | "selfLink"
                    | "serverAddress"
                    | "token"
                    | "expirationTimestamp" => {
                        if !v.is_null() {
                            *v = json!(format!("<{k}>"));
                        }
                    }
                    "name"
                        if generated
                            .as_deref()
                            .is_some_and(|g| v.as_str().is_some_and(|n| n.starts_with(g))) =>
                    {
                        *v = json!("<generated>");
                    }
                    _ => normalise(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        // A bound token's credential id.
        Value::String(s) if s.starts_with("JTI=") => *s = "JTI=<id>".to_string(),
        _ => {}
    }
}

/// Drops a `Status`'s messages: their wording is not compared.
fn drop_messages(value: &mut Value) {
    if value["kind"] != "Status" {
        return;
    }
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

/// What of a response body is compared.
fn comparable(body: &[u8]) -> Value {
    let mut value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| json!({"<text>": String::from_utf8_lossy(body)}));
    drop_messages(&mut value);
    normalise(&mut value);
    value
}

/// The parsed events of a watch body (one JSON object per line).
fn comparable_events(lines: &[Vec<u8>]) -> Value {
    Value::Array(
        lines
            .iter()
            .map(|l| {
                let mut event: Value = serde_json::from_slice(l)
                    .unwrap_or_else(|_| json!({"<text>": String::from_utf8_lossy(l)}));
                drop_messages(&mut event["object"]);
                normalise(&mut event);
                event
            })
            .collect(),
    )
}

/// One server under test, and how to reach it as each identity.
struct Target {
    config: kube::Config,
}

impl Target {
    async fn from_kubeconfig(yaml: &str) -> Self {
        let kc = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(common::WAIT);
        config.write_timeout = Some(common::WAIT);
        Self { config }
    }

    fn client(&self, who: &Who, vars: &BTreeMap<String, String>) -> kube::Client {
        let mut config = self.config.clone();
        let token = match who {
            Who::Admin => return kube::Client::try_from(config).unwrap(),
            Who::Anonymous => None,
            Who::BadToken => Some("not-a-valid-token".to_string()),
            Who::Token(var) => Some(
                vars.get(*var)
                    .unwrap_or_else(|| panic!("no variable {var} captured"))
                    .clone(),
            ),
        };
        config.auth_info = kube::config::AuthInfo {
            token: token.map(Into::into),
            ..Default::default()
        };
        kube::Client::try_from(config).unwrap()
    }
}

fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// How long a watch step reads when fewer events than expected arrive.
const WATCH_READ: Duration = Duration::from_secs(3);
/// How long an `until` step polls.
const UNTIL: Duration = Duration::from_secs(30);

/// Sends one request and returns the comparable response (`None` body parts for setup).
async fn send(target: &Target, r: &Req, vars: &mut BTreeMap<String, String>) -> Recorded {
    let deadline = tokio::time::Instant::now() + UNTIL;
    loop {
        let (recorded, raw) = send_once(target, r, vars).await;
        let done = match &r.until {
            None => true,
            Some(Until::Code(code)) => recorded.code == *code,
            Some(Until::Pointer(pointer, want)) => {
                let got = raw.pointer(pointer).cloned().unwrap_or(Value::Null);
                &got == want
            }
        };
        if done || tokio::time::Instant::now() >= deadline {
            for (var, pointer) in &r.capture {
                // Nothing to capture is a difference the comparison shows, not a panic.
                let v = match raw.pointer(pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => format!("<no {pointer}>"),
                };
                vars.insert(var.to_string(), v);
            }
            return recorded;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send_once(target: &Target, r: &Req, vars: &BTreeMap<String, String>) -> (Recorded, Value) {
    let path = substitute(&r.path, vars);
    let body = r
        .body
        .as_ref()
        .map(|b| substitute(&b.to_string(), vars).into_bytes())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(r.method)
        .uri(&path)
        .header("content-type", r.content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(body))
        .unwrap();
    let client = target.client(&r.who, vars);
    let what = format!("{} {path}", r.method);
    let response = common::bounded(&what, client.send(request))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|w| String::from_utf8_lossy(w.as_bytes()).into_owned())
        .collect();
    let mut body = response.into_body();
    if let (Some(want), 200) = (r.events, code) {
        // A watch: read events until `want` arrived, the stream ended, or WATCH_READ passed.
        let deadline = tokio::time::Instant::now() + WATCH_READ;
        let mut buf = Vec::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        while lines.len() < want {
            let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
                break;
            };
            let Some(Ok(frame)) = frame else { break };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                while let Some(at) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=at).collect();
                    if line.iter().any(|b| !b.is_ascii_whitespace()) {
                        lines.push(line);
                    }
                }
            }
        }
        let raw = Value::Array(
            lines
                .iter()
                .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
                .collect(),
        );
        let recorded = Recorded {
            code,
            body: comparable_events(&lines),
            warnings,
        };
        return (recorded, raw);
    }
    let bytes = body.collect().await.unwrap().to_bytes();
    let raw = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let recorded = Recorded {
        code,
        body: comparable(&bytes),
        warnings,
    };
    (recorded, raw)
}

/// A behaviour's namespace, named after it so that names derived from it (CRD groups and
/// their `storageVersionHash`) do not change when behaviours are added.
fn namespace_of(behaviour: &str) -> String {
    let name: String = behaviour
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("c-{name}")
}

/// How many behaviours run at once (each in its own namespace, so they do not interfere).
const PARALLEL: usize = 8;

/// Runs every behaviour against `target`, each in its own namespace.
async fn run_all(target: &Target) -> BTreeMap<String, Vec<Recorded>> {
    use futures::StreamExt as _;
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    let all = behaviours();
    let selected = all
        .iter()
        .filter(|b| only.as_deref().is_none_or(|o| b.name.contains(o)));
    futures::stream::iter(selected)
        .map(|b| run_one(target, b))
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

/// Runs one behaviour in its namespace: the comparable responses of its steps.
async fn run_one(target: &Target, behaviour: &Behaviour) -> (String, Vec<Recorded>) {
    let ns = namespace_of(behaviour.name);
    let mut vars = BTreeMap::from([("ns".to_string(), ns.clone())]);
    let create_ns = behaviours::post(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "{ns}"}}),
    );
    send(target, &create_ns, &mut vars).await;
    for r in &behaviour.setup {
        send(target, r, &mut vars).await;
    }
    let mut responses = Vec::new();
    for r in &behaviour.steps {
        let mut recorded = send(target, r, &mut vars).await;
        // The namespace is named after the behaviour: stable across servers.
        recorded.body =
            serde_json::from_str(&recorded.body.to_string().replace(&ns, "{ns}")).unwrap();
        responses.push(recorded);
    }
    (behaviour.name.to_string(), responses)
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
    // The garbage collector, namespace, ServiceAccount and ClusterRole aggregation
    // controllers run in kube-controller-manager.
    match kube_control_plane::ControlPlane::start(
        kube_control_plane::Options::default()
            .name("conformance")
            .controller_manager(true)
            .etcd_compaction_interval(behaviours::COMPACTION),
    )
    .await
    {
        Ok(cp) => {
            let live = run_all(&Target::from_kubeconfig(&cp.admin_kubeconfig()).await).await;
            if std::env::var_os("CONFORMANCE_RECORD").is_some() {
                // Merged into the recording (a `CONFORMANCE_ONLY` run records only some);
                // behaviours that no longer exist are dropped.
                let mut recording: BTreeMap<String, Vec<Recorded>> =
                    std::fs::read_to_string(recording_path())
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or_default();
                let names: Vec<&str> = behaviours().iter().map(|b| b.name).collect();
                recording.retain(|k, _| names.contains(&k.as_str()));
                recording.extend(live.clone());
                std::fs::create_dir_all(recording_path().parent().unwrap()).unwrap();
                std::fs::write(
                    recording_path(),
                    serde_json::to_string_pretty(&recording).unwrap() + "\n",
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

fn show(r: &Recorded) -> String {
    let mut s = format!("{} {}", r.code, r.body);
    if !r.warnings.is_empty() {
        s.push_str(&format!(" warnings {:?}", r.warnings));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_apiserver_behaves_as_the_real_server() {
    let (mut real, source) = reference().await;
    // Normalised again: a recording made before a normalisation rule was added.
    for responses in real.values_mut() {
        for r in responses.iter_mut() {
            normalise(&mut r.body);
        }
    }
    let server = common::start(
        test_apiserver::Options::default().compaction_interval(behaviours::COMPACTION),
    )
    .await;
    let ours =
        run_all(&Target::from_kubeconfig(&server.kubeconfig(test_apiserver::ADMIN).unwrap()).await)
            .await;
    let listed = listed_differences();
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    let mut agree = 0;
    let mut unlisted = Vec::new();
    let mut report = String::new();
    let all = behaviours();
    for behaviour in &all {
        let name = behaviour.name;
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let (Some(expected), Some(got)) = (real.get(name), ours.get(name)) else {
            unlisted.push(format!("{name}: not in {source}; record again"));
            continue;
        };
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
                    "    step {i}: real {}\n            ours {}\n",
                    show(e),
                    show(g)
                ));
            }
        }
    }
    let total = all.len();
    eprintln!("{agree}/{total} behaviours agree with {source}\n{report}");
    assert!(
        unlisted.is_empty(),
        "{} behaviours differ from {source} and are not listed in the README's Known differences: {unlisted:?}\n{report}",
        unlisted.len()
    );
}
