//! The one place the binary touches the sync engine: build it from the topology, expose its
//! readiness to the health server, run it until shutdown.

use std::future::Future;
use std::sync::{Arc, Mutex};

use cluster_topology::Topology;
use sync_engine::engine::{Engine, EngineMode, EngineOptions};

/// Where this replica is in its life.
#[derive(Clone, Default)]
enum Phase {
    /// Connecting, bootstrapping the CRD: not ready.
    #[default]
    Starting,
    /// The engine stopped (shutting down): still answering, nothing to wait for.
    Following,
    /// Running the engine (leading or following): ready once its root caches have synced.
    Running(sync_engine::engine::Readiness),
    /// Running a fleet: ready once its control-plane caches synced and its heartbeat is held.
    Fleet(sync_engine::fleet::FleetReadiness),
}

/// Readiness of this replica, shared with the health server.
#[derive(Clone, Default)]
pub struct ReadyCell(Arc<Mutex<Phase>>);

impl ReadyCell {
    /// Whether this replica is ready.
    pub fn is_ready(&self) -> bool {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Starting => false,
            Phase::Following => true,
            Phase::Running(r) => r.is_ready(),
            Phase::Fleet(r) => r.is_ready(),
        }
    }

    /// Follows a fleet's readiness from now on.
    pub fn set_fleet(&self, readiness: sync_engine::fleet::FleetReadiness) {
        self.set(Phase::Fleet(readiness));
    }

    fn set(&self, phase: Phase) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = phase;
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
    metrics: sync_engine::metrics::Metrics,
    leadership: sync_engine::runtime::leadership::Leadership,
    sync_workers: std::num::NonZeroUsize,
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
    )
    .with_metrics(metrics)
    .with_leadership(leadership)
    .with_credential_events(topology.credential_events())
    .with_client_options(topology.client_options().clone())
    .with_sync_workers(sync_workers);
    ready.set(Phase::Running(engine.readiness()));
    let result = engine.run(shutdown).await;
    ready.set(Phase::Following);
    result
}
