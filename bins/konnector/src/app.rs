//! The startup sequence (reference §2, with decisions H1): validate -> health listener ->
//! topology -> APIServiceBinding CRD (default mode) -> engine until shutdown.

use std::sync::Arc;

use anyhow::Context as _;
use cluster_topology::{Mode, Topology, TopologyOptions};

use crate::cli::{Cli, parse_bind_address};
use crate::engine::ReadyCell;
use crate::{crd, engine, health, leader, metrics_server, signals};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::watch;

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
    let metrics_addr = parse_bind_address("--metrics-bind-address", &cli.metrics_bind_address)?;
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

    // Metrics: one registry for the process, served from the start.
    let metrics = sync_engine::metrics::Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    if let Some(addr) = metrics_addr {
        let listener = metrics_server::bind(addr).await?;
        tokio::spawn(metrics_server::serve(
            listener,
            Arc::new(registry),
            shutdown.requested(),
        ));
    }

    if let Mode::Fleet { selector } = &mode {
        return run_fleet(&cli, selector.clone(), &ready, metrics, shutdown).await;
    }

    let startup = async {
        let topology = Topology::connect(TopologyOptions {
            kubeconfig: cli.kubeconfig_path(),
            mode: mode.clone(),
            client: cli.client_options(),
        })
        .await?;
        // Throttling, transport errors and reachability of the local clusters' clients (one
        // label per cluster: `app` in default mode; `binding` and `app` in control-plane mode).
        for health in [topology.binding().health(), topology.app().health()] {
            metrics.register_client(health.label(), &health);
        }
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
            Mode::ControlPlane { .. } | Mode::Fleet { .. } => {}
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

    // Credential reloads of Secret-sourced kubeconfigs (control-plane mode) are counted.
    let mut credential_events = topology.credential_events();
    let reload_metrics = metrics.clone();
    tokio::spawn(async move {
        loop {
            match credential_events.recv().await {
                Ok(event) => reload_metrics.credential_event(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    // Only the lease holder runs the engine (and so writes); losing the lease stops it at once.
    let identity = leader::identity(std::env::var("POD_NAME").ok());
    let leases: Api<Lease> = Api::namespaced(topology.binding().client(), &cli.lease_namespace);
    let (leading_tx, leading) = watch::channel(None);
    tracing::info!(lease = %cli.lease_name, namespace = %cli.lease_namespace, %identity, "trying to acquire the lock");
    let election = tokio::spawn(leader::run(
        leases,
        cli.lease_name.clone(),
        identity,
        leading_tx,
        shutdown.requested(),
    ));
    let mut leader_gauge = leading.clone();
    let gauge = metrics.leader.clone();
    tokio::spawn(async move {
        loop {
            gauge.set(i64::from(leader_gauge.borrow_and_update().is_some()));
            if leader_gauge.changed().await.is_err() {
                break;
            }
        }
    });
    // Every replica runs the engine, so its caches stay warm; only the lease holder's workers
    // plan and write (the engine's leadership gate).
    engine::run(
        &topology,
        &ready,
        metrics.clone(),
        sync_engine::runtime::leadership::Leadership::from_deadlines(leading),
        cli.sync_workers,
        shutdown.requested(),
    )
    .await?;
    // The election task releases the lease when shutdown is requested.
    let _ = election.await;
    tracing::info!("konnector stopped");
    Ok(())
}

/// Fleet mode: the control plane only; every app cluster is reached through its
/// AppClusterBinding, served while this replica holds its Lease.
async fn run_fleet(
    cli: &Cli,
    selector: cluster_topology::fleet::LabelSelector,
    ready: &ReadyCell,
    metrics: sync_engine::metrics::Metrics,
    shutdown: signals::Shutdown,
) -> anyhow::Result<()> {
    let control_plane = cluster_topology::connect_control_plane(
        cli.kubeconfig_path().as_deref(),
        &cli.client_options(),
    )?;
    metrics.register_client(control_plane.health().label(), &control_plane.health());
    let identity = leader::identity(std::env::var("POD_NAME").ok());
    tracing::info!(
        control_plane = %control_plane.current().server(),
        %identity,
        lease_namespace = %cli.lease_namespace,
        "fleet mode: serving the app clusters of the AppClusterBindings on the control plane"
    );
    let fleet = sync_engine::fleet::Fleet::new(
        control_plane,
        sync_engine::fleet::FleetOptions {
            identity,
            lease_namespace: cli.lease_namespace.clone(),
            lease_name: cli.lease_name.clone(),
            selector,
            client: cli.client_options(),
            sync_workers: cli.sync_workers,
        },
        metrics,
    );
    ready.set_fleet(fleet.readiness());
    fleet.run(shutdown.requested()).await?;
    tracing::info!("konnector stopped");
    Ok(())
}
