//! The one place the binary touches the sync engine: build it from the topology, expose its
//! readiness to the health server, run it until shutdown.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use cluster_topology::Topology;
use sync_engine::engine::{Engine, EngineMode, EngineOptions};

/// Readiness of an engine that may not exist yet: false until one is installed.
#[derive(Clone, Default)]
pub struct ReadyCell(Arc<OnceLock<sync_engine::engine::Readiness>>);

impl ReadyCell {
    /// Whether the engine's root caches have synced.
    pub fn is_ready(&self) -> bool {
        self.0.get().is_some_and(|r| r.is_ready())
    }
}

impl std::fmt::Debug for ReadyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReadyCell").field(&self.is_ready()).finish()
    }
}

/// Runs the engine over the topology's binding and app clusters until `shutdown` resolves.
pub async fn run(
    topology: &Topology,
    ready: &ReadyCell,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), sync_engine::engine::EngineError> {
    let mode = match topology.binding_root_namespace() {
        None => EngineMode::Default,
        Some(ns) => EngineMode::ControlPlane {
            binding_root_namespace: ns.to_owned(),
        },
    };
    let engine = Engine::new(
        topology.binding().clone().into(),
        topology.app().clone().into(),
        EngineOptions { mode },
    );
    // Only one engine runs per process; a second `set` cannot happen.
    let _ = ready.0.set(engine.readiness());
    engine.run(shutdown).await
}
