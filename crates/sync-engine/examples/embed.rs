//! Another operator embedding the konnector's sync engine as a library, without the `konnector`
//! binary. See `docs/embedding.md`.
//!
//! ```text
//! # The whole engine (binding supervisor, provider sessions, syncers):
//! cargo run -p sync-engine --example embed -- engine <binding-kubeconfig> [<app-kubeconfig>]
//!
//! # One exported resource, with a shared-watch hub of our own:
//! cargo run -p sync-engine --example embed -- export <app-kubeconfig> <provider-kubeconfig> \
//!     <provider-namespace> <group>/<version>/<Kind>/<plural>
//!
//! # The pure planning functions, no cluster needed:
//! cargo run -p sync-engine --example embed -- plan
//! ```
//!
//! Kubeconfig paths not given as arguments come from `BINDING_KUBECONFIG` and `APP_KUBECONFIG`
//! (`APP_KUBECONFIG` defaults to the binding kubeconfig: default mode, where the app cluster is
//! the binding cluster). Setting `BINDING_ROOT_NAMESPACE` runs the engine in control-plane mode.
//! `EMBED_RUN_FOR_SECS` stops after that many seconds; otherwise Ctrl-C stops.
//!
//! The host owns every piece of global state: this `main` chooses to install a tracing
//! subscriber and a Ctrl-C handler; the library installs neither.

use std::error::Error;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use konnector_api::v1alpha1::{APIServiceNamespace, APIServiceNamespaceStatus};
use kube::api::DynamicObject;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, ObjectMeta};
use sync_engine::engine::{Engine, EngineMode, EngineOptions};
use sync_engine::mapping::NamespaceMap;
use sync_engine::metrics::Metrics;
use sync_engine::plan::{ExportContext, plan_downstream};
use sync_engine::runtime::{Cluster, Clusters, ExportSyncConfig, ExportSyncer, WatchHub};

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "usage: embed engine [<binding-kubeconfig> [<app-kubeconfig>]]
       embed export <app-kubeconfig> <provider-kubeconfig> <provider-namespace> <group>/<version>/<Kind>/<plural>
       embed plan";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    // The host's choice: the engine logs through `tracing` and never installs a subscriber.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init()?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("engine") => run_engine(&args[1..]).await,
        Some("export") => run_export(&args[1..]).await,
        Some("plan") => plan_offline(),
        _ => Err(USAGE.into()),
    }
}

/// A `kube::Client` built by the host from a kubeconfig file. Any client works: in-cluster
/// config, a client with the host's own middleware, or a test server's.
async fn client_from(path: &Path) -> Result<kube::Client, BoxError> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("loading kubeconfig {}: {e}", path.display()))?;
    Ok(kube::Client::try_from(config)?)
}

/// The `index`-th argument, else the environment variable `env`.
fn path_arg(args: &[String], index: usize, env: &str) -> Option<PathBuf> {
    args.get(index)
        .cloned()
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
        .map(PathBuf::from)
}

/// The host's shutdown signal: Ctrl-C, or `EMBED_RUN_FOR_SECS` elapsed. An operator would pass
/// its own cancellation (for example a token cancelled when it loses its leader lease).
fn shutdown() -> impl Future<Output = ()> + Send + 'static {
    let run_for = std::env::var("EMBED_RUN_FOR_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    async move {
        let timer = async {
            match run_for {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = timer => {}
        }
    }
}

/// The whole engine over a binding cluster and an app cluster.
async fn run_engine(args: &[String]) -> Result<(), BoxError> {
    let binding_path = path_arg(args, 0, "BINDING_KUBECONFIG").ok_or(USAGE)?;
    let app_path = path_arg(args, 1, "APP_KUBECONFIG").unwrap_or_else(|| binding_path.clone());
    let binding = client_from(&binding_path).await?;
    let app = if app_path == binding_path {
        binding.clone()
    } else {
        client_from(&app_path).await?
    };
    let mode = match std::env::var("BINDING_ROOT_NAMESPACE") {
        Ok(ns) if !ns.is_empty() => EngineMode::ControlPlane {
            binding_root_namespace: ns,
        },
        _ => EngineMode::Default,
    };

    // Metrics go into a registry the host owns and serves wherever it likes.
    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);

    // The engine expects the APIServiceBinding CRD to be installed in the binding cluster (the
    // `konnector` binary does that at startup in default mode; a host does it its own way).
    let engine = Engine::new(
        Cluster::Fixed(binding),
        Cluster::Fixed(app),
        EngineOptions { mode },
    )
    .with_metrics(metrics);

    // Readiness is a cheap handle: put it behind the host's own /readyz.
    let readiness = engine.readiness();
    let reporter = tokio::spawn(async move {
        while !readiness.is_ready() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("engine ready: APIServiceBindings listed");
    });

    let result = engine.run(shutdown()).await;
    reporter.abort();
    result?;
    tracing::info!("engine stopped");

    // What a host's /metrics handler would answer.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    print!("{text}");
    Ok(())
}

/// `<group>/<version>/<Kind>/<plural>` (empty group for the core group).
fn parse_resource(s: &str) -> Option<ApiResource> {
    let mut parts = s.split('/');
    let (group, version, kind, plural) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version.is_empty() || kind.is_empty() || plural.is_empty() {
        return None;
    }
    Some(ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.to_string(),
        plural: plural.to_string(),
    })
}

/// One exported (namespaced) resource, without bindings, sessions or CRD installation: the host
/// has installed the CRD in the app cluster and the provider backend maintains the
/// APIServiceNamespaces in the provider namespace.
async fn run_export(args: &[String]) -> Result<(), BoxError> {
    let app_path = path_arg(args, 0, "APP_KUBECONFIG").ok_or(USAGE)?;
    let provider_path = path_arg(args, 1, "PROVIDER_KUBECONFIG").ok_or(USAGE)?;
    let provider_namespace = args.get(2).cloned().ok_or(USAGE)?;
    let resource = args.get(3).and_then(|s| parse_resource(s)).ok_or(USAGE)?;

    let clusters = Clusters {
        consumer: Cluster::Fixed(client_from(&app_path).await?),
        consumer_id: "app".to_string(),
        provider: Cluster::Fixed(client_from(&provider_path).await?),
        provider_id: "provider".to_string(),
    };
    let config = ExportSyncConfig {
        provider_namespace,
        // Only cluster-scoped resources need the uid of namespace P (owner references).
        provider_namespace_uid: None,
        resource,
        cluster_scoped: None,
        // `true` watches the provider per service namespace instead of in all namespaces.
        per_namespace_provider_watches: false,
        workers: sync_engine::runtime::export_sync::WORKERS,
    };

    // Every syncer started on this hub shares its watches (one per cluster, resource, scope).
    let hub = Arc::new(WatchHub::new());
    let syncer = ExportSyncer::start(&hub, clusters, config);

    let stop = shutdown();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => tracing::info!(
                reconciles = syncer.reconciles(),
                failures = syncer.failures(),
                queue_depth = syncer.queue_depth(),
                watches = hub.len(),
                "export syncer"
            ),
        }
    }
    // Dropping the syncer stops its tasks; the hub drops watches nobody uses any more.
    drop(syncer);
    tracing::info!(watches = hub.len(), "export syncer stopped");
    Ok(())
}

/// The planning functions are pure: observed objects in, writes out. No cluster, no runtime.
fn plan_offline() -> Result<(), BoxError> {
    let resource = ApiResource {
        group: "mangodb.com".into(),
        version: "v1".into(),
        api_version: "mangodb.com/v1".into(),
        kind: "MangoDB".into(),
        plural: "mangodbs".into(),
    };
    // The provider backend mapped consumer namespace `team-a` to service namespace `p-team-a`.
    let service_namespace = APIServiceNamespace {
        metadata: ObjectMeta {
            name: Some("team-a".into()),
            namespace: Some("p".into()),
            ..ObjectMeta::default()
        },
        spec: Default::default(),
        status: Some(APIServiceNamespaceStatus {
            namespace: Some("p-team-a".into()),
        }),
    };
    let namespaces = NamespaceMap::new([&service_namespace]);
    let ctx = ExportContext {
        provider_namespace: "p",
        provider_namespace_uid: None,
        resource: &resource,
        cluster_scoped: None,
        namespaces: &namespaces,
    };
    let mut downstream = DynamicObject::new("db1", &resource).within("team-a");
    downstream.metadata.resource_version = Some("1".into());
    downstream.data = serde_json::json!({"spec": {"tier": "small"}});

    // A new consumer object without an upstream copy: take ownership, then create upstream.
    for write in plan_downstream(&ctx, &downstream, None)? {
        println!(
            "{:>8} {:<20} {}",
            write.side.as_str(),
            write.object_key(),
            write.reason
        );
    }
    Ok(())
}
