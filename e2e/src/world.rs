//! A bound world for end-to-end scenarios: an app cluster, a provider (in control-plane mode:
//! the control plane), and the in-process stand-in for the provider backend
//! ([`crate::backend`]).
//!
//! The backend creates what the Klutch backend would: the provider namespace `P`, the
//! `ClusterBinding` `cluster` with its kubeconfig Secret, an `APIServiceExport` from the
//! provider's MangoDB CRD, and (control-plane mode) the APIServiceBinding CRD, the binding and
//! the app cluster's kubeconfig Secret in the root namespace. While running it fills in
//! `APIServiceNamespace.status.namespace = "<P>-<N>"` and creates that namespace, as the
//! backend does.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use crate::backend::install_crd;
use crate::backend::{self, KUBECONFIG_SECRET, ProviderBackend, apply};
use crate::proxy::{TcpProxy, server_addr};
use crate::{Backend, Cluster, ClusterOptions, KONNECTOR_USER, TempDir, wait_until};

/// The provider namespace (and, in control-plane mode, the binding root namespace) of a world
/// with a provider of its own; on a shared real control plane each world has its own
/// ([`World::p`]).
pub const P: &str = "klutch-bind-p";
/// Namespace of bindings and their Secrets in default mode (as `kubectl bind` uses).
pub const BIND_NS: &str = "klutch-bind";
/// The bound export (= binding = CRD name).
pub const EXPORT: &str = "mangodbs.mangodb.com";
/// How long any single step may take.
pub const STEP: Duration = Duration::from_secs(30);

/// The synced resource.
pub fn mangodb() -> ApiResource {
    ApiResource {
        group: "mangodb.com".into(),
        version: "v1".into(),
        api_version: "mangodb.com/v1".into(),
        kind: "MangoDB".into(),
        plural: "mangodbs".into(),
    }
}

fn mangodb_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
            "tier": {"type": "string", "default": "Shared"}}},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}})
}

/// The provider's CRD of [`mangodb`].
pub fn mangodb_crd() -> anyhow::Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": EXPORT},
        "spec": {"group": "mangodb.com", "scope": "Namespaced",
            "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": mangodb_schema()}}]}}))?)
}

/// The backend of a world: its provider namespace, polling every 100 ms.
const BACKEND: ProviderBackend = ProviderBackend {
    namespace: P,
    pretty_name: "anynines",
    poll: Duration::from_millis(100),
};

/// Which mode the world is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Konnector in the app cluster.
    Default,
    /// Konnector on the control plane.
    ControlPlane,
}

/// How a world is built, beyond its backend and mode.
#[derive(Debug, Clone, Default)]
pub struct WorldOptions {
    /// Users allowed everything in both clusters (for credential rotation).
    pub extra_users: Vec<String>,
    /// How the app cluster is started.
    pub app: ClusterOptions,
    /// Serves the app cluster with this backend instead of the world's (for example an
    /// in-memory app cluster that takes objects a real provider's etcd refuses).
    pub app_backend: Option<Backend>,
    /// How the provider is started; `Some` gives the world a provider of its own.
    pub provider: Option<ClusterOptions>,
    /// The konnector reaches its remote cluster (the provider in default mode, the app cluster
    /// in control-plane mode) through a [`TcpProxy`] ([`World::proxy`]), which the scenario can
    /// cut.
    pub proxy_remote: bool,
}

/// The clusters, kubeconfig files and backend of one scenario.
pub struct World {
    /// The mode.
    pub mode: Mode,
    /// The app cluster.
    pub app: Cluster,
    /// The provider (control plane in control-plane mode).
    pub provider: Cluster,
    /// Test (admin) client of the app cluster.
    pub app_admin: kube::Client,
    /// Test (admin) client of the provider.
    pub provider_admin: kube::Client,
    /// Temporary files (kubeconfigs, HOME of the konnector).
    pub dir: TempDir,
    /// The provider namespace `P` (and, in control-plane mode, the binding root namespace).
    pub p: &'static str,
    /// The proxy between the konnector and its remote cluster
    /// ([`WorldOptions::proxy_remote`]).
    pub proxy: Option<TcpProxy>,
    backend: ProviderBackend,
    loops: JoinHandle<()>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.loops.abort();
    }
}

/// A kubeconfig of `user` on `cluster` whose context namespace is `namespace`.
pub fn kubeconfig_in(cluster: &Cluster, user: &str, namespace: &str) -> anyhow::Result<String> {
    backend::with_namespace(&cluster.kubeconfig(user)?, namespace)
}

/// The APIServiceBinding for the export, with an accepted claim on provider-owned Secrets.
pub fn binding(namespace: &str, secret: &str) -> Value {
    let mut binding = backend::binding(EXPORT, namespace, secret);
    binding["spec"]["permissionClaims"] = json!([{"group": "", "resource": "secrets",
        "version": "v1", "selector": {"owner": "Provider"}, "state": "Accepted"}]);
    binding
}

impl World {
    /// Builds the world for `mode` on `backend`; `extra_users` may do everything in both
    /// clusters (for credential rotation).
    pub async fn new(backend: Backend, mode: Mode, extra_users: &[&str]) -> anyhow::Result<Self> {
        Self::with(backend, mode, extra_users, ClusterOptions::default()).await
    }

    /// Like [`World::new`], the app cluster started with `app_options`. On the real backend
    /// the provider is a control plane the scenarios of the test process share, each in a
    /// provider namespace of its own; [`World::isolated`] gives the world a provider to itself.
    pub async fn with(
        backend: Backend,
        mode: Mode,
        extra_users: &[&str],
        app_options: ClusterOptions,
    ) -> anyhow::Result<Self> {
        Self::build(
            backend,
            mode,
            WorldOptions {
                extra_users: extra_users.iter().map(|u| u.to_string()).collect(),
                app: app_options,
                ..WorldOptions::default()
            },
        )
        .await
    }

    /// Like [`World::with`], with a provider of its own: for scenarios that change what the
    /// whole provider cluster sees (CRDs, cluster-scoped objects, its API server).
    pub async fn isolated(
        backend: Backend,
        mode: Mode,
        extra_users: &[&str],
        app_options: ClusterOptions,
    ) -> anyhow::Result<Self> {
        Self::build(
            backend,
            mode,
            WorldOptions {
                extra_users: extra_users.iter().map(|u| u.to_string()).collect(),
                app: app_options,
                provider: Some(ClusterOptions::default()),
                ..WorldOptions::default()
            },
        )
        .await
    }

    /// Builds the world for `mode` on `backend` with `options`.
    pub async fn build(
        backend: Backend,
        mode: Mode,
        options: WorldOptions,
    ) -> anyhow::Result<Self> {
        let WorldOptions {
            extra_users,
            app: app_options,
            provider: provider_options,
            proxy_remote,
            app_backend,
        } = options;
        let extra_users: Vec<&str> = extra_users.iter().map(String::as_str).collect();
        let extra_users: &[&str] = &extra_users;
        let share_provider = provider_options.is_none();
        let provider_name = match mode {
            Mode::ControlPlane => "control-plane",
            Mode::Default => "provider",
        };
        let shared = share_provider && backend == Backend::Real;
        let provider = async {
            if shared {
                Cluster::start_shared("provider", extra_users).await
            } else {
                Cluster::start_with(
                    backend,
                    provider_name,
                    extra_users,
                    provider_options.unwrap_or_default(),
                )
                .await
            }
        };
        // Two real control planes start side by side in about the time of one.
        let (app, provider) = tokio::join!(
            Cluster::start_with(
                app_backend.unwrap_or(backend),
                "app",
                extra_users,
                app_options
            ),
            provider
        );
        let (app, provider) = (app?, provider?);
        let p: &'static str = if shared {
            Box::leak(format!("{P}-s{}", crate::unique_id()).into_boxed_str())
        } else {
            P
        };
        let backend = ProviderBackend {
            namespace: p,
            ..BACKEND
        };
        let app_admin = app.client().await?;
        let provider_admin = provider.client().await?;
        let dir = TempDir::new("konnector-e2e")?;
        // The kubeconfig Secret of the ClusterBinding: the provider's own kubeconfig (default
        // mode) or the app cluster's (control-plane mode, mirrored by the backend).
        let kubeconfig = match mode {
            Mode::Default => kubeconfig_in(&provider, KONNECTOR_USER, p)?,
            Mode::ControlPlane => app.kubeconfig(KONNECTOR_USER)?,
        };
        let (kubeconfig, proxy) = if proxy_remote {
            let proxy = TcpProxy::start(server_addr(&kubeconfig)?).await?;
            (proxy.kubeconfig(&kubeconfig)?, Some(proxy))
        } else {
            (kubeconfig, None)
        };
        backend
            .set_up(&provider_admin, &mangodb_crd()?, &kubeconfig)
            .await?;
        match mode {
            // What `kubectl bind` leaves in the app cluster; the konnector installs the CRD.
            Mode::Default => backend::kubectl_bind_secret(&app_admin, BIND_NS, &kubeconfig).await?,
            Mode::ControlPlane => {
                // The backend installs the binding CRD on the control plane and creates the
                // binding and the app cluster's kubeconfig Secret in the root namespace.
                install_crd(&provider_admin, konnector_api::crds::api_service_binding()).await?;
                backend::create_kubeconfig_secret(
                    &provider_admin,
                    p,
                    "app-kubeconfig",
                    &kubeconfig,
                )
                .await?;
                apply(
                    &Api::<DynamicObject>::namespaced_with(
                        provider_admin.clone(),
                        p,
                        &ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&()),
                    ),
                    binding(p, KUBECONFIG_SECRET),
                )
                .await?;
            }
        }
        let loops = tokio::spawn(backend.map_namespaces(provider_admin.clone()));
        Ok(World {
            mode,
            app,
            provider,
            app_admin,
            provider_admin,
            dir,
            p,
            proxy,
            backend,
            loops,
        })
    }

    /// Creates the APIServiceBinding (default mode: in the app cluster, once the konnector
    /// installed its CRD; control-plane mode: already done by the backend).
    pub async fn bind(&self) -> anyhow::Result<()> {
        if self.mode == Mode::ControlPlane {
            return Ok(());
        }
        let crds: Api<CustomResourceDefinition> = Api::all(self.app_admin.clone());
        wait_until(
            "APIServiceBinding CRD installed by the konnector",
            STEP,
            || {
                let crds = crds.clone();
                async move {
                    crds.get("apiservicebindings.klutch.anynines.com")
                        .await
                        .is_ok()
                }
            },
        )
        .await?;
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.app_admin.clone(),
            BIND_NS,
            &ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&()),
        );
        apply(&api, binding(BIND_NS, KUBECONFIG_SECRET)).await
    }

    /// The binding as the test sees it.
    pub fn bindings(&self) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&());
        match self.mode {
            Mode::Default => Api::namespaced_with(self.app_admin.clone(), BIND_NS, &resource),
            Mode::ControlPlane => {
                Api::namespaced_with(self.provider_admin.clone(), self.p, &resource)
            }
        }
    }

    /// The konnector's command line for this world.
    pub fn konnector_args(&self, health_port: u16) -> anyhow::Result<Vec<String>> {
        let kubeconfig: PathBuf = match self.mode {
            Mode::Default => self.app.konnector_kubeconfig_file(&self.dir)?,
            Mode::ControlPlane => self.provider.konnector_kubeconfig_file(&self.dir)?,
        };
        let mut args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--health-probe-bind-address=127.0.0.1:{health_port}"),
            "--metrics-bind-address=0".to_string(),
            "-v=4".to_string(),
        ];
        if self.mode == Mode::ControlPlane {
            args.extend([
                "--control-plane-mode".to_string(),
                "--app-cluster-kubeconfig-secret-name=app-kubeconfig".to_string(),
                format!("--app-cluster-kubeconfig-secret-namespace={}", self.p),
                "--app-cluster-kubeconfig-secret-key=kubeconfig".to_string(),
                format!("--binding-root-namespace={}", self.p),
                // The lease of this consumer's konnector, as the chart places it.
                format!("--lease-namespace={}", self.p),
            ]);
        }
        Ok(args)
    }

    /// Instances in consumer namespace `ns`.
    pub fn downstream(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.app_admin.clone(), ns, &mangodb())
    }

    /// Instances in the service namespace of consumer namespace `ns`.
    pub fn upstream(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.provider_admin.clone(),
            &self.backend.service_namespace(ns),
            &mangodb(),
        )
    }

    /// The binding's condition `type_`, if set.
    pub async fn binding_condition(&self, type_: &str) -> Option<Value> {
        let b = self.bindings().get(EXPORT).await.ok()?;
        b.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    }

    /// The konnector's writes on both clusters since their requests were cleared, but for
    /// `marker`'s own sync, the replica's Lease and a due heartbeat: what a restart over a
    /// synced world must leave empty.
    pub async fn restart_writes(&self, marker: &str) -> Vec<test_apiserver::RecordedRequest> {
        self.app
            .konnector_writes()
            .await
            .into_iter()
            .chain(self.provider.konnector_writes().await)
            .filter(|r| {
                r.name != marker
                    && !(r.resource == "clusterbindings" && r.subresource == "status")
                    && r.resource != "leases"
            })
            .collect()
    }

    /// Waits until the binding is Ready and Connected.
    pub async fn wait_bound(&self) -> anyhow::Result<()> {
        wait_until("binding Ready and Connected", STEP, || async {
            let ready = self.binding_condition("Ready").await;
            let connected = self.binding_condition("Connected").await;
            ready.is_some_and(|c| c["status"] == "True")
                && connected.is_some_and(|c| c["status"] == "True")
        })
        .await
    }
}

/// The backend's namespace mapping: every APIServiceNamespace `N` in `p` gets
/// `status.namespace = "<p>-<N>"`, and that namespace is created. Runs until aborted.
pub async fn map_namespaces(provider: kube::Client, p: &'static str) {
    ProviderBackend {
        namespace: p,
        ..BACKEND
    }
    .map_namespaces(provider)
    .await
}
