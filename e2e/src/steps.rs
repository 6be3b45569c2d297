//! Steps the sync scenarios share: start the konnector over a [`World`], wait for a condition
//! with the konnector's log in the failure, read objects, build instances.
//!
//! Scenarios panic on failure (they are tests), so these do too, with what was waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::json;

use crate::world::{STEP, World};
use crate::{Konnector, STARTUP_TIMEOUT, free_port, wait_until};

/// Starts the konnector binary `bin` for `w` and waits until `/readyz` answers 200.
pub async fn start(bin: impl AsRef<Path>, w: &World) -> Konnector {
    spawn_ready(bin, w, None).await
}

/// Like [`start`], with `/metrics` served; returns its address too.
pub async fn start_with_metrics(bin: impl AsRef<Path>, w: &World) -> (Konnector, SocketAddr) {
    let metrics_port = free_port().unwrap_or_else(|e| panic!("no free port: {e}"));
    let k = spawn_ready(bin, w, Some(metrics_port)).await;
    (k, SocketAddr::from(([127, 0, 0, 1], metrics_port)))
}

async fn spawn_ready(bin: impl AsRef<Path>, w: &World, metrics_port: Option<u16>) -> Konnector {
    let port = free_port().unwrap_or_else(|e| panic!("no free port: {e}"));
    let args: Vec<String> = w
        .konnector_args(port)
        .unwrap_or_else(|e| panic!("konnector arguments: {e:#}"))
        .into_iter()
        .map(|a| match metrics_port {
            Some(m) if a.starts_with("--metrics-bind-address=") => {
                format!("--metrics-bind-address=127.0.0.1:{m}")
            }
            _ => a,
        })
        .collect();
    let mut k = Konnector::spawn(bin, &args, &w.dir).unwrap_or_else(|e| panic!("{e:#}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(e) = k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT).await {
        panic!(
            "konnector not ready: {e}\n--- stderr ---\n{}",
            tail(&k.stderr())
        );
    }
    k
}

/// The lines of the konnector's `/metrics` at `addr` whose name starts with one of `prefixes`
/// (without `# HELP`/`# TYPE` lines), for a scenario to print.
pub async fn metric_lines(addr: SocketAddr, prefixes: &[&str]) -> Vec<String> {
    match crate::http_get(addr, "/metrics").await {
        Ok((200, body)) => body
            .lines()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .map(str::to_owned)
            .collect(),
        other => vec![format!("/metrics: {other:?}")],
    }
}

/// The `events.k8s.io/v1` Events about the object `name` in namespace `ns`, as `kubectl describe`
/// shows them (empty when they cannot be listed).
pub async fn events_about(client: &kube::Client, ns: &str, name: &str) -> Vec<serde_json::Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::core::ApiResource {
            group: "events.k8s.io".into(),
            version: "v1".into(),
            api_version: "events.k8s.io/v1".into(),
            kind: "Event".into(),
            plural: "events".into(),
        },
    );
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|e| e.data)
                .filter(|e| e["regarding"]["name"] == name)
                .collect()
        })
        .unwrap_or_default()
}

/// The last 40 lines of `s`.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits for `condition` (at most [`STEP`]), failing with the konnector's last log lines.
pub async fn step<F, Fut>(k: &Konnector, what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if let Err(e) = wait_until(what, STEP, condition).await {
        panic!("{e}\n--- konnector stderr ---\n{}", tail(&k.stderr()));
    }
}

/// Creates `obj` through `down` (the app cluster) and waits until the konnector has it through
/// `up` (the provider).
pub async fn create_synced(
    k: &Konnector,
    down: &Api<DynamicObject>,
    up: &Api<DynamicObject>,
    obj: &DynamicObject,
) {
    let name = obj.metadata.name.clone().unwrap_or_default();
    if let Err(e) = down.create(&PostParams::default(), obj).await {
        panic!("create {name}: {e}");
    }
    step(k, &format!("{name} upstream"), || async {
        exists(up, &name).await
    })
    .await;
}

/// Whether `name` exists.
pub async fn exists(api: &Api<DynamicObject>, name: &str) -> bool {
    api.get_opt(name).await.ok().flatten().is_some()
}

/// The value at `pointer` (a JSON pointer) in object `name`, if both exist.
pub async fn field(
    api: &Api<DynamicObject>,
    name: &str,
    pointer: &str,
) -> Option<serde_json::Value> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()?
        .data
        .pointer(pointer)
        .cloned()
}

/// A MangoDB instance `name`, with `spec.tier` when given.
pub fn mango(name: &str, tier: Option<&str>) -> DynamicObject {
    let spec = match tier {
        Some(t) => json!({"tier": t}),
        None => json!({}),
    };
    DynamicObject::new(name, &crate::world::mangodb()).data(json!({"spec": spec}))
}

/// What a fault scenario checks at its end, in consumer namespace `ns`: every app-cluster
/// instance exists exactly once on the provider with the same spec, every provider status is
/// back in the app cluster, nothing upstream lacks its app-cluster original, and the binding is
/// `Ready=True`. `Err` says what is still missing.
pub async fn converged(w: &World, ns: &str) -> Result<(), String> {
    use std::collections::BTreeMap;
    let list = |api: Api<DynamicObject>| async move {
        api.list(&Default::default())
            .await
            .map_err(|e| format!("list: {e}"))
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
                    .collect::<BTreeMap<_, _>>()
            })
    };
    let down = list(w.downstream(ns)).await?;
    let up = list(w.upstream(ns)).await?;
    let mut missing = Vec::new();
    for (name, d) in &down {
        match up.get(name) {
            None => missing.push(format!("{name} not upstream")),
            Some(u) if u.data["spec"] != d.data["spec"] => missing.push(format!(
                "{name}: spec {} upstream, {} downstream",
                u.data["spec"], d.data["spec"]
            )),
            Some(u) if !u.data["status"].is_null() && u.data["status"] != d.data["status"] => {
                missing.push(format!(
                    "{name}: status {} upstream, {} downstream",
                    u.data["status"], d.data["status"]
                ))
            }
            Some(_) => {}
        }
    }
    for name in up.keys() {
        if !down.contains_key(name) {
            missing.push(format!("{name} upstream without an app-cluster original"));
        }
    }
    let ready = w.binding_condition("Ready").await;
    if !ready.as_ref().is_some_and(|c| c["status"] == "True") {
        missing.push(format!("binding not Ready: {ready:?}"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let n = missing.len();
        missing.truncate(5);
        Err(format!("{n} differences, first: {missing:?}"))
    }
}

/// Waits until [`converged`] holds (at most `timeout`), failing with the differences left and
/// the konnector's last log lines; returns how long it took.
pub async fn wait_converged(
    k: &Konnector,
    w: &World,
    ns: &str,
    timeout: std::time::Duration,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match converged(w, ns).await {
            Ok(()) => return start.elapsed(),
            Err(e) => last = e,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "not converged within {timeout:?}: {last}\n--- konnector stderr ---\n{}",
        tail(&k.stderr())
    );
}
