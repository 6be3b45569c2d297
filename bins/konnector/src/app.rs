//! The startup sequence (reference §2, with decisions H1): validate -> health listener ->
//! topology -> APIServiceBinding CRD (default mode) -> engine until shutdown.

use std::sync::Arc;

use anyhow::Context as _;
use cluster_topology::{Mode, Topology, TopologyOptions};

use crate::cli::{Cli, parse_bind_address};
use crate::engine::ReadyCell;
use crate::{crd, engine, health, signals};

/// The version this binary reports (`konnector version <ver>`, and on the ClusterBinding).
pub fn version() -> String {
    let git = sync_engine::version::git_version();
    sync_engine::version::binary_version(&git).unwrap_or_else(|e| {
        eprintln!("failed to get version: {e}");
        "<unknown>".to_owned()
    })
}

/// Runs the konnector. Every error is a startup failure whose Display is the exact text to
/// print; the caller exits 1.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing::info!(version = %version(), "Starting konnector");
    let mode = cli.mode_flags().validate()?;
    let health_addr = parse_bind_address(
        "--health-probe-bind-address",
        &cli.health_probe_bind_address,
    )?;
    // Parsed now so that a typo fails at startup; the metrics server is not served yet.
    parse_bind_address("--metrics-bind-address", &cli.metrics_bind_address)?;
    let shutdown = signals::install().context("failed to install signal handlers")?;

    // Bound before any cluster is contacted: a port conflict fails fast and writes nothing.
    let ready = ReadyCell::default();
    if let Some(addr) = health_addr {
        let listener = health::bind(addr).await?;
        let cell = ready.clone();
        tokio::spawn(health::serve(
            listener,
            Arc::new(move || cell.is_ready()),
            shutdown.requested(),
        ));
    }

    let startup = async {
        let topology = Topology::connect(TopologyOptions {
            kubeconfig: cli.kubeconfig_path(),
            mode: mode.clone(),
        })
        .await?;
        match &mode {
            Mode::Default => {
                crd::bootstrap(
                    topology.binding().client(),
                    &konnector_api::crds::api_service_binding(),
                )
                .await?;
            }
            // The backend installs the CRDs on the control plane; the konnector may not even
            // have the rights to.
            Mode::ControlPlane { .. } => {}
        }
        anyhow::Ok(topology)
    };
    let topology = tokio::select! {
        topology = startup => topology?,
        () = shutdown.requested() => {
            tracing::info!("shutdown requested during startup");
            return Ok(());
        }
    };

    engine::run(&topology, &ready, shutdown.requested()).await?;
    tracing::info!("konnector stopped");
    Ok(())
}
