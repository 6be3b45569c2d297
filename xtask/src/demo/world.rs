//! The demo's world: two in-memory clusters and, played in-process, everything around the
//! konnector that a real installation has — klutch's provider backend (what `kubectl bind`
//! sets up) and a provider controller that "provisions" instances by writing their status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use konnector_api::v1alpha1::{APIServiceBinding, APIServiceNamespace, ClusterBinding};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::json;
use test_apiserver::{ADMIN, Options, TestApiServer, User};
use tokio::task::JoinHandle;

use super::example;

/// The provider namespace of this consumer (klutch's backend creates one per ClusterBinding).
/// In control-plane mode it is also `--binding-root-namespace`.
pub const PROVIDER_NAMESPACE: &str = "kube-bind-demo";
/// Where `kubectl bind` leaves the binding's kubeconfig Secret in the app cluster (default mode).
pub const APP_BINDING_NAMESPACE: &str = "klutch-bind";
/// Name (and data key) of the kubeconfig Secrets.
pub const KUBECONFIG_SECRET: &str = "kubeconfig";
/// The user the konnector authenticates as; the demo itself uses `admin`.
const KONNECTOR_USER: &str = "konnector";
/// The backend and the provider controller poll at this interval: a few lines, retries for
/// free, and the in-memory servers don't mind.
const POLL: Duration = Duration::from_millis(20);

/// Where the konnector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the app cluster; bindings and provider kubeconfig Secrets live there.
    Default,
    /// On the control plane (which is also the provider); reaches the app cluster through a
    /// kubeconfig Secret.
    ControlPlane,
}

impl Mode {
    /// Short name for output lines.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::ControlPlane => "control-plane",
        }
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory named after the process and the time.
    pub fn new(prefix: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `sub/name` and returns the path.
    fn write(&self, sub: &str, name: &str, contents: &str) -> Result<PathBuf> {
        let dir = self.0.join(sub);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two clusters, their clients and kubeconfig files, and the provider's background tasks.
pub struct World {
    pub mode: Mode,
    /// The app cluster, where users create instances.
    pub app: TestApiServer,
    /// The provider cluster; in control-plane mode the control plane.
    pub provider: TestApiServer,
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
        // HTTPS (each server with its own CA in the kubeconfigs): kubectl sends no bearer token
        // over plain HTTP, and `--keep` is there for kubectl.
        let options = || Options::default().user(User::new(KONNECTOR_USER, &["system:masters"]));
        let app = TestApiServer::start(options())
            .await
            .context("starting the app cluster")?;
        let provider = TestApiServer::start(options())
            .await
            .context("starting the provider cluster")?;
        let sub = mode.label();
        let provider_name = match mode {
            Mode::Default => "provider",
            Mode::ControlPlane => "control-plane",
        };
        let app_kubeconfig = dir.write(sub, "app.kubeconfig", &kubeconfig(&app, ADMIN)?)?;
        let provider_kubeconfig = dir.write(
            sub,
            &format!("{provider_name}.kubeconfig"),
            &kubeconfig(&provider, ADMIN)?,
        )?;
        // The konnector's own user, on the cluster it runs in.
        let konnector_home = match mode {
            Mode::Default => &app,
            Mode::ControlPlane => &provider,
        };
        let konnector_kubeconfig = dir.write(
            sub,
            "konnector.kubeconfig",
            &kubeconfig(konnector_home, KONNECTOR_USER)?,
        )?;
        let crd = example::crd()?;
        let resource = example::api_resource(&crd)?;
        Ok(Self {
            mode,
            app_admin: client(&kubeconfig(&app, ADMIN)?).await?,
            provider_admin: client(&kubeconfig(&provider, ADMIN)?).await?,
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

    /// What klutch's backend has set up by the time a konnector connects: the klutch CRDs and
    /// the example CRD on the provider, the provider namespace with its ClusterBinding `cluster`
    /// and kubeconfig Secret, and the APIServiceExport of the example API. Default mode: the
    /// provider kubeconfig Secret in the app cluster (what `kubectl bind` leaves there).
    /// Control-plane mode: the APIServiceBinding CRD on the control plane (the konnector does
    /// not install it there) and the app cluster's kubeconfig in the root namespace.
    pub async fn set_up_provider(&self) -> Result<()> {
        let provider = &self.provider_admin;
        let mut crds = vec![
            konnector_api::crds::cluster_binding(),
            konnector_api::crds::api_service_export(),
            konnector_api::crds::api_service_namespace(),
            self.crd.clone(),
        ];
        if self.mode == Mode::ControlPlane {
            crds.push(konnector_api::crds::api_service_binding());
        }
        for crd in crds {
            install_crd(provider, crd).await?;
        }
        ensure_namespace(provider, PROVIDER_NAMESPACE).await?;
        let secret_kubeconfig = match self.mode {
            // The provider kubeconfig points into the provider namespace.
            Mode::Default => provider_kubeconfig(&self.provider)?,
            Mode::ControlPlane => kubeconfig(&self.app, KONNECTOR_USER)?,
        };
        apply_secret(provider, PROVIDER_NAMESPACE, &secret_kubeconfig).await?;
        apply(
            &Api::<ClusterBinding>::namespaced(provider.clone(), PROVIDER_NAMESPACE),
            "cluster",
            json!({
                "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "ClusterBinding",
                "metadata": {"name": "cluster"},
                "spec": {
                    "kubeconfigSecretRef": {"name": KUBECONFIG_SECRET, "key": KUBECONFIG_SECRET},
                    "providerPrettyName": "demo provider",
                },
            }),
        )
        .await?;
        let export = example::export_from_crd(&self.crd)?;
        let export_name = export.metadata.name.clone().unwrap_or_default();
        let exports: Api<konnector_api::v1alpha1::APIServiceExport> =
            Api::namespaced(provider.clone(), PROVIDER_NAMESPACE);
        apply(&exports, &export_name, serde_json::to_value(&export)?).await?;
        if self.mode == Mode::Default {
            ensure_namespace(&self.app_admin, APP_BINDING_NAMESPACE).await?;
            apply_secret(&self.app_admin, APP_BINDING_NAMESPACE, &secret_kubeconfig).await?;
        }
        Ok(())
    }

    /// Creates the APIServiceBinding for the example API (in default mode `kubectl bind` does
    /// this in the app cluster, in control-plane mode the backend on the control plane).
    pub async fn create_binding(&self) -> Result<String> {
        let (client, namespace) = self.binding_cluster();
        let name = self.crd.metadata.name.clone().unwrap_or_default();
        let bindings: Api<APIServiceBinding> = Api::namespaced(client.clone(), namespace);
        apply(
            &bindings,
            &name,
            json!({
                "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding",
                "metadata": {"name": name},
                "spec": {"kubeconfigSecretRef": {
                    "name": KUBECONFIG_SECRET, "namespace": namespace, "key": KUBECONFIG_SECRET,
                }},
            }),
        )
        .await?;
        Ok(name)
    }

    /// Starts the backend's namespace mapping and the provider controller in the background.
    pub fn start_provider_loops(&mut self) {
        self.tasks
            .push(tokio::spawn(map_namespaces(self.provider_admin.clone())));
        self.tasks.push(tokio::spawn(provide(
            self.provider_admin.clone(),
            self.resource.clone(),
        )));
    }
}

/// The backend's namespace mapping: every APIServiceNamespace the konnector creates gets a
/// provider namespace `<provider namespace>-<consumer namespace>`, reported in its status.
async fn map_namespaces(provider: kube::Client) {
    let api: Api<APIServiceNamespace> = Api::namespaced(provider.clone(), PROVIDER_NAMESPACE);
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for sn in list.items {
                let Some(name) = sn.metadata.name.clone() else {
                    continue;
                };
                if sn
                    .status
                    .as_ref()
                    .and_then(|s| s.namespace.as_ref())
                    .is_some()
                {
                    continue;
                }
                let target = example::service_namespace(PROVIDER_NAMESPACE, &name);
                // Errors are retried on the next round.
                if ensure_namespace(&provider, &target).await.is_ok() {
                    let _ = api
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"namespace": target}})),
                        )
                        .await;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The example provider controller: "provisions" every instance on the provider by setting its
/// status (see [`example::provider_status`]), which the konnector then copies back.
async fn provide(provider: kube::Client, resource: ApiResource) {
    let api: Api<DynamicObject> = Api::all_with(provider.clone(), &resource);
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for obj in list.items {
                let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name) else {
                    continue;
                };
                if obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let Some(status) = example::provider_status(&obj.data) else {
                    continue;
                };
                let namespaced: Api<DynamicObject> =
                    Api::namespaced_with(provider.clone(), ns, &resource);
                let _ = namespaced
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                    .await;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn kubeconfig(server: &TestApiServer, user: &str) -> Result<String> {
    server
        .kubeconfig(user)
        .with_context(|| format!("no user {user} on {}", server.url()))
}

/// The konnector's provider kubeconfig: its context namespace is the provider namespace, which
/// is how the konnector learns where its ClusterBinding and exports are.
fn provider_kubeconfig(provider: &TestApiServer) -> Result<String> {
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&kubeconfig(provider, KONNECTOR_USER)?)?;
    kc["contexts"][0]["context"]["namespace"] = PROVIDER_NAMESPACE.into();
    Ok(serde_yaml::to_string(&kc)?)
}

/// A client from kubeconfig YAML.
pub async fn client(yaml: &str) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Server-side apply as the demo's field manager.
async fn apply<K>(api: &Api<K>, name: &str, obj: serde_json::Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("konnector-demo").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| {
        format!(
            "applying {} {name}",
            obj["kind"].as_str().unwrap_or("object")
        )
    })?;
    Ok(())
}

pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    apply(
        &api,
        name,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
}

async fn apply_secret(client: &kube::Client, namespace: &str, kubeconfig: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let data = BTreeMap::from([(
        KUBECONFIG_SECRET.to_string(),
        ByteString(kubeconfig.as_bytes().to_vec()),
    )]);
    apply(
        &api,
        KUBECONFIG_SECRET,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": KUBECONFIG_SECRET},
            "data": data,
        }),
    )
    .await
}

/// Installs `crd` and waits (bounded) until the server reports it Established.
pub async fn install_crd(client: &kube::Client, crd: CustomResourceDefinition) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    let mut obj = serde_json::to_value(&crd)?;
    obj["apiVersion"] = "apiextensions.k8s.io/v1".into();
    obj["kind"] = "CustomResourceDefinition".into();
    apply(&api, &name, obj).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(crd) = api.get(&name).await
            && is_established(&crd)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("CRD {name} was not Established within 10 s");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether a CRD's `Established` condition is True.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}
