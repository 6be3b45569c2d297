//! Steps the sync scenarios share: start the konnector over a [`World`], wait for a condition
//! with the konnector's log in the failure, read objects, build instances.
//!
//! Scenarios panic on failure (they are tests), so these do too, with what was waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

use crate::world::{STEP, World};
use crate::{Konnector, STARTUP_TIMEOUT, free_port, wait_until};

/// Starts the konnector binary `bin` for `w` and waits until `/readyz` answers 200.
pub async fn start(bin: impl AsRef<Path>, w: &World) -> Konnector {
    let port = free_port().unwrap_or_else(|e| panic!("no free port: {e}"));
    let args = w
        .konnector_args(port)
        .unwrap_or_else(|e| panic!("konnector arguments: {e:#}"));
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
