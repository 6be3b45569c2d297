//! A fleet world: one control plane, many app clusters, and what the Klutch backend creates for
//! each `AppClusterBinding` `<FLEET_NS>/<name>`: the binding root namespace
//! `R = klutch-bind-<FLEET_NS>-<name>` with the ClusterBinding, the export, the app cluster's
//! kubeconfig Secret and the APIServiceBinding; and the namespace mapping loop of `R`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use konnector_api::v1alpha1::{APIServiceBinding, AppClusterBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::backend::{
    self, KUBECONFIG_SECRET, ProviderBackend, apply, create_kubeconfig_secret, install_crd,
};
use crate::world::{self, mangodb};
use crate::{Backend, Cluster, KONNECTOR_USER, TempDir};

/// Namespace of the `AppClusterBinding`s.
pub const FLEET_NS: &str = "fleet";
/// Name of the app kubeconfig Secret in each `R`, as the backend mirrors it.
pub const APP_KUBECONFIG: &str = "app-kubeconfig";
/// The consumer namespace the scenarios use in every app cluster.
pub const TEAM: &str = "team";

/// One app cluster of the fleet.
pub struct AppCluster {
    /// The `AppClusterBinding`'s name.
    pub name: String,
    /// Its binding root namespace on the control plane.
    pub r: &'static str,
    /// The cluster.
    pub cluster: Cluster,
    /// Test (admin) client of the app cluster.
    pub admin: kube::Client,
    loops: JoinHandle<()>,
}

impl std::fmt::Debug for AppCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCluster")
            .field("r", &self.r)
            .finish_non_exhaustive()
    }
}

impl Drop for AppCluster {
    fn drop(&mut self) {
        self.loops.abort();
    }
}

impl AppCluster {
    /// Instances in consumer namespace `ns` of the app cluster.
    pub fn downstream(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.admin.clone(), ns, &mangodb())
    }
}

/// The control plane and its app clusters.
pub struct FleetWorld {
    /// The control plane.
    pub cp: Cluster,
    /// Test (admin) client of the control plane.
    pub cp_admin: kube::Client,
    /// Kubeconfig files.
    pub dir: TempDir,
    /// The app clusters, in the order they were added.
    pub apps: Vec<AppCluster>,
    provide: JoinHandle<()>,
}

impl std::fmt::Debug for FleetWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetWorld")
            .field("apps", &self.apps)
            .finish_non_exhaustive()
    }
}

impl Drop for FleetWorld {
    fn drop(&mut self) {
        self.provide.abort();
    }
}

/// `R` of `AppClusterBinding` `FLEET_NS/name`.
pub fn root(name: &str) -> &'static str {
    Box::leak(cluster_topology::fleet::root_namespace(FLEET_NS, name).into_boxed_str())
}

impl FleetWorld {
    /// A control plane on `backend` with the klutch CRDs and the `AppClusterBinding`
    /// namespace, and a provider controller that marks every instance `phase: Ready`.
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        let cp = Cluster::start_on(backend, "fleet-cp", &[]).await?;
        let cp_admin = cp.client().await?;
        for crd in [
            konnector_api::crds::app_cluster_binding(),
            konnector_api::crds::api_service_binding(),
        ] {
            install_crd(&cp_admin, crd).await?;
        }
        backend::ensure_namespace(&cp_admin, FLEET_NS).await?;
        let provide = tokio::spawn(provider_backend("").provide(
            cp_admin.clone(),
            mangodb(),
            |o| (o["status"]["phase"] != "Ready").then(|| json!({"status": {"phase": "Ready"}})),
        ));
        Ok(FleetWorld {
            cp,
            cp_admin,
            dir: TempDir::new("konnector-fleet")?,
            apps: Vec::new(),
            provide,
        })
    }

    /// Starts an app cluster on `backend` and creates what the backend would for
    /// `AppClusterBinding` `FLEET_NS/name` (`extra` users may do everything in it).
    pub async fn add_app(
        &mut self,
        backend: Backend,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<usize> {
        let cluster = Cluster::start_on(backend, &format!("app-{name}"), extra).await?;
        self.attach(cluster, name, None).await
    }

    /// [`FleetWorld::add_app`], but the app kubeconfig Secret in `R` holds `secret` instead (a
    /// broken Secret, to be fixed later with [`FleetWorld::rotate`]).
    pub async fn add_app_with_secret(
        &mut self,
        backend: Backend,
        name: &str,
        secret: &str,
    ) -> anyhow::Result<usize> {
        let cluster = Cluster::start_on(backend, &format!("app-{name}"), &[]).await?;
        self.attach(cluster, name, Some(secret)).await
    }

    /// [`FleetWorld::add_app`] for several app clusters, started side by side (a real control
    /// plane takes seconds to start).
    pub async fn add_apps(
        &mut self,
        apps: &[(Backend, String)],
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let names: Vec<String> = apps.iter().map(|(_, n)| format!("app-{n}")).collect();
        let started = futures::future::join_all(
            apps.iter()
                .zip(&names)
                .map(|((backend, _), name)| Cluster::start_on(*backend, name, extra)),
        )
        .await;
        for ((_, name), cluster) in apps.iter().zip(started) {
            self.attach(cluster?, name, None).await?;
        }
        Ok(())
    }

    async fn attach(
        &mut self,
        cluster: Cluster,
        name: &str,
        secret: Option<&str>,
    ) -> anyhow::Result<usize> {
        let admin = cluster.client().await?;
        backend::ensure_namespace(&admin, TEAM).await?;
        let kubeconfig = cluster.kubeconfig(KONNECTOR_USER)?;
        let r = root(name);
        self.bind_with(name, &kubeconfig, secret).await?;
        let loops = tokio::spawn(provider_backend(r).map_namespaces(self.cp_admin.clone()));
        self.apps.push(AppCluster {
            name: name.to_owned(),
            r,
            cluster,
            admin,
            loops,
        });
        Ok(self.apps.len() - 1)
    }

    /// What the backend creates for `FLEET_NS/name` whose app cluster `kubeconfig` reaches.
    pub async fn bind(&self, name: &str, kubeconfig: &str) -> anyhow::Result<()> {
        self.bind_with(name, kubeconfig, None).await
    }

    /// [`FleetWorld::bind`], the app kubeconfig Secret holding `app_secret` if given.
    async fn bind_with(
        &self,
        name: &str,
        kubeconfig: &str,
        app_secret: Option<&str>,
    ) -> anyhow::Result<()> {
        let r = root(name);
        provider_backend(r)
            .set_up(&self.cp_admin, &world::mangodb_crd()?, kubeconfig)
            .await?;
        let app_secret = app_secret.unwrap_or(kubeconfig);
        create_kubeconfig_secret(&self.cp_admin, r, APP_KUBECONFIG, app_secret).await?;
        apply(
            &Api::<DynamicObject>::namespaced_with(
                self.cp_admin.clone(),
                r,
                &ApiResource::erase::<APIServiceBinding>(&()),
            ),
            world::binding(r, KUBECONFIG_SECRET),
        )
        .await?;
        apply(
            &Api::<AppClusterBinding>::namespaced(self.cp_admin.clone(), FLEET_NS),
            app_cluster_binding(name, r),
        )
        .await
    }

    /// Deletes the `AppClusterBinding` of app cluster `i` (the backend would tear `R` down
    /// later; the fleet must stop serving it at once).
    pub async fn unbind(&self, i: usize) -> anyhow::Result<()> {
        Api::<AppClusterBinding>::namespaced(self.cp_admin.clone(), FLEET_NS)
            .delete(&self.apps[i].name, &DeleteParams::default())
            .await?;
        Ok(())
    }

    /// Sets label `key=value` on app cluster `i`'s `AppClusterBinding`.
    pub async fn label(&self, i: usize, key: &str, value: &str) -> anyhow::Result<()> {
        Api::<AppClusterBinding>::namespaced(self.cp_admin.clone(), FLEET_NS)
            .patch(
                &self.apps[i].name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
            )
            .await?;
        Ok(())
    }

    /// Replaces app cluster `i`'s kubeconfig in its Secret with `kubeconfig`.
    pub async fn rotate(&self, i: usize, kubeconfig: &str) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.cp_admin.clone(), self.apps[i].r);
        let encoded = k8s_openapi::ByteString(kubeconfig.as_bytes().to_vec());
        secrets
            .patch(
                APP_KUBECONFIG,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {KUBECONFIG_SECRET: encoded}})),
            )
            .await?;
        Ok(())
    }

    /// The command line of a fleet replica whose health server listens on `health_port`.
    pub fn replica_args(&self, health_port: u16) -> anyhow::Result<Vec<String>> {
        let kubeconfig: PathBuf = self.cp.konnector_kubeconfig_file(&self.dir)?;
        Ok(vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--health-probe-bind-address=127.0.0.1:{health_port}"),
            "--control-plane-mode".to_string(),
            "--fleet".to_string(),
            format!("--lease-namespace={FLEET_NS}"),
        ])
    }

    /// The holder of every app cluster's Lease (`None`: free, or no Lease yet), by `R`.
    pub async fn holders(&self) -> BTreeMap<&'static str, Option<String>> {
        let leases: Api<Lease> = Api::all(self.cp_admin.clone());
        let list = leases
            .list(&ListParams::default().fields("metadata.name=klutch-bind"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        self.apps
            .iter()
            .map(|a| {
                let holder = list
                    .iter()
                    .find(|l| l.metadata.namespace.as_deref() == Some(a.r))
                    .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
                    .filter(|h| !h.is_empty());
                (a.r, holder)
            })
            .collect()
    }

    /// Instances in the service namespace of consumer namespace `ns` of app cluster `i`.
    pub fn upstream(&self, i: usize, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.cp_admin.clone(),
            &backend::service_namespace(self.apps[i].r, ns),
            &mangodb(),
        )
    }

    /// Whether the MangoDB `name` (created with `spec.tier: Dedicated`) in namespace `ns` of
    /// app cluster `i` reached the control plane, and the status the provider gave it there
    /// (`phase: Ready`) came back.
    pub async fn synced(&self, i: usize, ns: &str, name: &str) -> bool {
        let up = self.upstream(i, ns).get_opt(name).await.ok().flatten();
        let down = self.apps[i]
            .downstream(ns)
            .get_opt(name)
            .await
            .ok()
            .flatten();
        up.is_some_and(|u| u.data["spec"]["tier"] == "Dedicated")
            && down.is_some_and(|d| d.data["status"]["phase"] == "Ready")
    }

    /// The condition `type_` of the APIServiceBinding in root namespace `r`, if set.
    pub async fn binding_condition(&self, r: &str, type_: &str) -> Option<Value> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.cp_admin.clone(),
            r,
            &ApiResource::erase::<APIServiceBinding>(&()),
        );
        let b = api.get(world::EXPORT).await.ok()?;
        b.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    }
}

/// The backend stand-in of root namespace `r`.
fn provider_backend(r: &'static str) -> ProviderBackend {
    ProviderBackend {
        namespace: r,
        pretty_name: "anynines",
        poll: Duration::from_millis(200),
    }
}

/// `AppClusterBinding` `FLEET_NS/name` whose kubeconfig the backend mirrored into `r`.
pub fn app_cluster_binding(name: &str, r: &str) -> Value {
    json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "AppClusterBinding",
        "metadata": {"name": name, "namespace": FLEET_NS},
        "spec": {"kubeconfigSecretRef": {"name": APP_KUBECONFIG, "namespace": r, "key": KUBECONFIG_SECRET}}})
}
