//! A bound world for end-to-end scenarios: an app cluster, a provider (in control-plane mode:
//! the control plane), and an in-test stand-in for the provider backend.
//!
//! The backend creates what the Klutch backend would: the provider namespace `P`, the
//! `ClusterBinding` `cluster` with its kubeconfig Secret, an `APIServiceExport` from the
//! provider's MangoDB CRD, and (control-plane mode) the APIServiceBinding CRD, the binding and
//! the app cluster's kubeconfig Secret in the root namespace. While running it fills in
//! `APIServiceNamespace.status.namespace = "<P>-<N>"` and creates that namespace, as the
//! backend does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{Backend, Cluster, ClusterOptions, KONNECTOR_USER, TempDir, wait_until};

/// The provider namespace (and, in control-plane mode, the binding root namespace).
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

/// Which mode the world is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Konnector in the app cluster.
    Default,
    /// Konnector on the control plane.
    ControlPlane,
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
    backend: JoinHandle<()>,
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
        self.backend.abort();
    }
}

async fn apply<K>(api: &Api<K>, obj: Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj["metadata"]["name"]
        .as_str()
        .context("object without name")?
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply("backend").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("apply {name}"))?;
    Ok(())
}

/// Creates `crd` and waits until it is Established.
pub async fn install_crd(
    client: &kube::Client,
    crd: CustomResourceDefinition,
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &crd)
        .await
        .with_context(|| format!("create CRD {name}"))?;
    wait_until(&format!("CRD {name} established"), STEP, || {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        }
    })
    .await
}

async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    apply(
        &api,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
}

fn secret(name: &str, kubeconfig: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// A kubeconfig of `user` on `cluster` whose context namespace is `namespace`.
pub fn kubeconfig_in(cluster: &Cluster, user: &str, namespace: &str) -> anyhow::Result<String> {
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&cluster.kubeconfig(user)?)?;
    kc["contexts"][0]["context"]["namespace"] = serde_yaml::Value::String(namespace.into());
    Ok(serde_yaml::to_string(&kc)?)
}

/// The APIServiceBinding for the export, with an accepted claim on provider-owned Secrets.
pub fn binding(namespace: &str, secret: &str) -> Value {
    json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding",
        "metadata": {"name": EXPORT, "namespace": namespace},
        "spec": {"kubeconfigSecretRef": {"name": secret, "namespace": namespace, "key": "kubeconfig"},
            "permissionClaims": [{"group": "", "resource": "secrets", "version": "v1",
                "selector": {"owner": "Provider"}, "state": "Accepted"}]}})
}

impl World {
    /// Builds the world for `mode` on `backend`; `extra_users` may do everything in both
    /// clusters (for credential rotation).
    pub async fn new(backend: Backend, mode: Mode, extra_users: &[&str]) -> anyhow::Result<Self> {
        Self::with(backend, mode, extra_users, ClusterOptions::default()).await
    }

    /// Like [`World::new`], the app cluster started with `app_options`.
    pub async fn with(
        backend: Backend,
        mode: Mode,
        extra_users: &[&str],
        app_options: ClusterOptions,
    ) -> anyhow::Result<Self> {
        let provider_name = match mode {
            Mode::ControlPlane => "control-plane",
            Mode::Default => "provider",
        };
        // Two real control planes start side by side in about the time of one.
        let (app, provider) = tokio::join!(
            Cluster::start_with(backend, "app", extra_users, app_options),
            Cluster::start_on(backend, provider_name, extra_users)
        );
        let (app, provider) = (app?, provider?);
        let app_admin = app.client().await?;
        let provider_admin = provider.client().await?;
        let dir = TempDir::new("konnector-e2e")?;
        for crd in [
            konnector_api::crds::cluster_binding(),
            konnector_api::crds::api_service_export(),
            konnector_api::crds::api_service_namespace(),
        ] {
            install_crd(&provider_admin, crd).await?;
        }
        let provider_crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": EXPORT},
            "spec": {"group": "mangodb.com", "scope": "Namespaced",
                "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": mangodb_schema()}}]}}))?;
        install_crd(&provider_admin, provider_crd).await?;
        namespace(&provider_admin, P).await?;
        // The kubeconfig Secret of the ClusterBinding: the provider's own kubeconfig (default
        // mode) or the app cluster's (control-plane mode, mirrored by the backend).
        let kubeconfig = match mode {
            Mode::Default => kubeconfig_in(&provider, KONNECTOR_USER, P)?,
            Mode::ControlPlane => app.kubeconfig(KONNECTOR_USER)?,
        };
        let provider_secrets: Api<Secret> = Api::namespaced(provider_admin.clone(), P);
        provider_secrets
            .create(&PostParams::default(), &secret("kubeconfig", &kubeconfig))
            .await?;
        apply(&Api::<DynamicObject>::namespaced_with(provider_admin.clone(), P, &ApiResource::erase::<konnector_api::v1alpha1::ClusterBinding>(&())), json!({
            "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "ClusterBinding", "metadata": {"name": "cluster"},
            "spec": {"kubeconfigSecretRef": {"name": "kubeconfig", "key": "kubeconfig"}, "providerPrettyName": "anynines"}})).await?;
        apply(&Api::<DynamicObject>::namespaced_with(provider_admin.clone(), P, &ApiResource::erase::<konnector_api::v1alpha1::APIServiceExport>(&())), json!({
            "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport", "metadata": {"name": EXPORT},
            "spec": {"group": "mangodb.com", "scope": "Namespaced", "informerScope": "Namespaced",
                "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": mangodb_schema()}}]}})).await?;
        let bindings_resource =
            ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&());
        match mode {
            Mode::Default => {
                // What `kubectl bind` leaves in the app cluster; the konnector installs the CRD.
                namespace(&app_admin, BIND_NS).await?;
                let app_secrets: Api<Secret> = Api::namespaced(app_admin.clone(), BIND_NS);
                app_secrets
                    .create(&PostParams::default(), &secret("kubeconfig", &kubeconfig))
                    .await?;
            }
            Mode::ControlPlane => {
                // The backend installs the binding CRD on the control plane and creates the
                // binding and the app cluster's kubeconfig Secret in the root namespace.
                install_crd(&provider_admin, konnector_api::crds::api_service_binding()).await?;
                provider_secrets
                    .create(
                        &PostParams::default(),
                        &secret("app-kubeconfig", &kubeconfig),
                    )
                    .await?;
                apply(
                    &Api::<DynamicObject>::namespaced_with(
                        provider_admin.clone(),
                        P,
                        &bindings_resource,
                    ),
                    binding(P, "kubeconfig"),
                )
                .await?;
            }
        }
        let backend = tokio::spawn(map_namespaces(provider_admin.clone(), P));
        Ok(World {
            mode,
            app,
            provider,
            app_admin,
            provider_admin,
            dir,
            backend,
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
        apply(&api, binding(BIND_NS, "kubeconfig")).await
    }

    /// The binding as the test sees it.
    pub fn bindings(&self) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<konnector_api::v1alpha1::APIServiceBinding>(&());
        match self.mode {
            Mode::Default => Api::namespaced_with(self.app_admin.clone(), BIND_NS, &resource),
            Mode::ControlPlane => Api::namespaced_with(self.provider_admin.clone(), P, &resource),
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
                format!("--app-cluster-kubeconfig-secret-namespace={P}"),
                "--app-cluster-kubeconfig-secret-key=kubeconfig".to_string(),
                format!("--binding-root-namespace={P}"),
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
            &format!("{P}-{ns}"),
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
    let api: Api<konnector_api::v1alpha1::APIServiceNamespace> =
        Api::namespaced(provider.clone(), p);
    loop {
        if let Ok(list) = api.list(&Default::default()).await {
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
                let target = format!("{p}-{name}");
                if namespace(&provider, &target).await.is_ok() {
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
        // A backend polls or watches; polling keeps the stand-in small. Not a test wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
