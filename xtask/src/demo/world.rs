//! The demo's world: two in-memory clusters and, played in-process, everything around the
//! konnector that a real installation has — klutch's provider backend (what `kubectl bind`
//! sets up) and a provider controller that "provisions" instances by writing their status.
//! Both are the stand-in the end-to-end tests use too ([`e2e::backend`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::backend::{self, KUBECONFIG_SECRET, ProviderBackend};
use e2e::{Cluster, KONNECTOR_USER, TempDir};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use konnector_api::v1alpha1::APIServiceBinding;
use kube::api::Api;
use kube::core::ApiResource;
use test_apiserver::ADMIN;
use tokio::task::JoinHandle;

use super::example;

/// The provider namespace of this consumer (klutch's backend creates one per ClusterBinding).
/// In control-plane mode it is also `--binding-root-namespace`.
pub const PROVIDER_NAMESPACE: &str = "kube-bind-demo";
/// Where `kubectl bind` leaves the binding's kubeconfig Secret in the app cluster (default mode).
pub const APP_BINDING_NAMESPACE: &str = "klutch-bind";
/// The demo's provider backend. Its loops poll at 20 ms: a few lines, retries for free, and the
/// in-memory servers don't mind.
pub const BACKEND: ProviderBackend = ProviderBackend {
    namespace: PROVIDER_NAMESPACE,
    pretty_name: "demo provider",
    poll: Duration::from_millis(20),
};

/// Where the konnector runs: in the app cluster (bindings and provider kubeconfig Secrets live
/// there) or on the control plane (which is also the provider; it reaches the app cluster
/// through a kubeconfig Secret). The modes of the e2e worlds.
pub use e2e::world::Mode;

/// Short names of the modes, for output lines.
pub trait Label {
    /// `default` or `control-plane`.
    fn label(self) -> &'static str;
}

impl Label for Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::ControlPlane => "control-plane",
        }
    }
}

/// Two clusters, their clients and kubeconfig files, and the provider's background tasks.
pub struct World {
    pub mode: Mode,
    /// The app cluster, where users create instances.
    pub app: Cluster,
    /// The provider cluster; in control-plane mode the control plane.
    pub provider: Cluster,
    pub app_admin: kube::Client,
    pub provider_admin: kube::Client,
    /// `admin` kubeconfig files, for the `--keep` hints.
    pub app_kubeconfig: PathBuf,
    pub provider_kubeconfig: PathBuf,
    /// The kubeconfig the konnector gets with `--kubeconfig`.
    pub konnector_kubeconfig: PathBuf,
    /// The example provider API.
    pub crd: CustomResourceDefinition,
    pub resource: ApiResource,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl World {
    /// Starts both clusters and writes their kubeconfigs into `dir`.
    pub async fn start(mode: Mode, dir: &TempDir) -> Result<Self> {
        let provider_name = match mode {
            Mode::Default => "provider",
            Mode::ControlPlane => "control-plane",
        };
        // In-memory clusters on HTTPS (each server with its own CA in the kubeconfigs): kubectl
        // sends no bearer token over plain HTTP, and `--keep` is there for kubectl.
        let app = Cluster::start("app")
            .await
            .context("starting the app cluster")?;
        let provider = Cluster::start(provider_name)
            .await
            .context("starting the provider cluster")?;
        let sub = mode.label();
        let sub_dir = dir.path().join(sub);
        std::fs::create_dir_all(&sub_dir)
            .with_context(|| format!("creating {}", sub_dir.display()))?;
        let write = |name: &str, contents: &str| dir.write(&format!("{sub}/{name}"), contents);
        let app_kubeconfig = write("app.kubeconfig", &app.kubeconfig(ADMIN)?)?;
        let provider_kubeconfig = write(
            &format!("{provider_name}.kubeconfig"),
            &provider.kubeconfig(ADMIN)?,
        )?;
        // The konnector's own user, on the cluster it runs in.
        let konnector_home = match mode {
            Mode::Default => &app,
            Mode::ControlPlane => &provider,
        };
        let konnector_kubeconfig = write(
            "konnector.kubeconfig",
            &konnector_home.kubeconfig(KONNECTOR_USER)?,
        )?;
        let crd = example::crd()?;
        let resource = example::api_resource(&crd)?;
        Ok(Self {
            mode,
            app_admin: app.client().await?,
            provider_admin: provider.client().await?,
            app,
            provider,
            app_kubeconfig,
            provider_kubeconfig,
            konnector_kubeconfig,
            crd,
            resource,
            tasks: Vec::new(),
        })
    }

    /// The URLs of the app cluster and the provider.
    pub fn urls(&self) -> (String, String) {
        let url = |c: &Cluster| c.memory().map(|s| s.url()).unwrap_or_default();
        (url(&self.app), url(&self.provider))
    }

    /// Where APIServiceBindings and their Secrets live: the app cluster in default mode, the
    /// control plane's root namespace in control-plane mode.
    pub fn binding_cluster(&self) -> (&kube::Client, &'static str) {
        match self.mode {
            Mode::Default => (&self.app_admin, APP_BINDING_NAMESPACE),
            Mode::ControlPlane => (&self.provider_admin, PROVIDER_NAMESPACE),
        }
    }

    /// The konnector's flags (besides the health and metrics addresses) in this mode.
    pub fn konnector_args(&self) -> Vec<String> {
        let mut args = vec![
            "--kubeconfig".to_string(),
            self.konnector_kubeconfig.display().to_string(),
        ];
        match self.mode {
            Mode::Default => args.extend(["--lease-namespace".into(), "kube-system".into()]),
            Mode::ControlPlane => args.extend(
                [
                    "--control-plane-mode",
                    "--app-cluster-kubeconfig-secret-name",
                    KUBECONFIG_SECRET,
                    "--app-cluster-kubeconfig-secret-namespace",
                    PROVIDER_NAMESPACE,
                    "--app-cluster-kubeconfig-secret-key",
                    KUBECONFIG_SECRET,
                    "--binding-root-namespace",
                    PROVIDER_NAMESPACE,
                    "--lease-namespace",
                    PROVIDER_NAMESPACE,
                ]
                .map(String::from),
            ),
        }
        args
    }

    /// What klutch's backend has set up by the time a konnector connects (see
    /// [`ProviderBackend::set_up`]), the example API exported. Default mode: the provider
    /// kubeconfig Secret in the app cluster (what `kubectl bind` leaves there). Control-plane
    /// mode: the APIServiceBinding CRD on the control plane (the konnector does not install it
    /// there); the app cluster's kubeconfig is the ClusterBinding's Secret in the root namespace.
    pub async fn set_up_provider(&self) -> Result<()> {
        let secret_kubeconfig = match self.mode {
            // The provider kubeconfig points into the provider namespace.
            Mode::Default => backend::with_namespace(
                &self.provider.kubeconfig(KONNECTOR_USER)?,
                PROVIDER_NAMESPACE,
            )?,
            Mode::ControlPlane => self.app.kubeconfig(KONNECTOR_USER)?,
        };
        BACKEND
            .set_up(&self.provider_admin, &self.crd, &secret_kubeconfig)
            .await?;
        match self.mode {
            Mode::Default => {
                backend::kubectl_bind_secret(
                    &self.app_admin,
                    APP_BINDING_NAMESPACE,
                    &secret_kubeconfig,
                )
                .await
            }
            Mode::ControlPlane => {
                backend::install_crd(
                    &self.provider_admin,
                    konnector_api::crds::api_service_binding(),
                )
                .await
            }
        }
    }

    /// Creates the APIServiceBinding for the example API (in default mode `kubectl bind` does
    /// this in the app cluster, in control-plane mode the backend on the control plane).
    pub async fn create_binding(&self) -> Result<String> {
        let (client, namespace) = self.binding_cluster();
        let name = self.crd.metadata.name.clone().unwrap_or_default();
        let bindings: Api<APIServiceBinding> = Api::namespaced(client.clone(), namespace);
        backend::apply(
            &bindings,
            backend::binding(&name, namespace, KUBECONFIG_SECRET),
        )
        .await?;
        Ok(name)
    }

    /// Starts the backend's namespace mapping and the example provider controller (see
    /// [`example::provider_status`]) in the background.
    pub fn start_provider_loops(&mut self) {
        self.tasks.push(tokio::spawn(
            BACKEND.map_namespaces(self.provider_admin.clone()),
        ));
        self.tasks.push(tokio::spawn(BACKEND.provide(
            self.provider_admin.clone(),
            self.resource.clone(),
            example::provider_status,
        )));
    }
}
