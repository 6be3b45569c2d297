//! The provider-backend stand-in that the e2e worlds ([`crate::world`]) and `cargo xtask demo`
//! share: in-process, it creates what the Klutch backend would.
//!
//! - On the provider: the klutch CRDs and the provider's API CRD, the provider namespace with the
//!   `ClusterBinding` `cluster` and its kubeconfig Secret, and the `APIServiceExport` built from
//!   the API CRD ([`ProviderBackend::set_up`]).
//! - Default mode, in the app cluster: what `kubectl bind` leaves there, the binding namespace
//!   and the kubeconfig Secret ([`kubectl_bind_secret`]); later the APIServiceBinding
//!   ([`binding`]).
//! - Control-plane mode: the APIServiceBinding CRD on the control plane (the konnector does not
//!   install it there) and the bindings in the root namespace.
//! - While running: every `APIServiceNamespace` `N` in the provider namespace `P` gets
//!   `status.namespace = "<P>-<N>"` and that namespace ([`ProviderBackend::map_namespaces`]); a
//!   provider controller may "provision" instances by writing their status
//!   ([`ProviderBackend::provide`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use konnector_api::v1alpha1::{
    APIServiceExport, APIServiceExportSpec, APIServiceNamespace, ClusterBinding, Scope,
};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::wait_until;

/// Field manager of the backend's server-side applies.
pub const FIELD_MANAGER: &str = "backend";
/// Name of the ClusterBinding the backend creates in the provider namespace.
pub const CLUSTER_BINDING: &str = "cluster";
/// Name (and data key) of the kubeconfig Secrets.
pub const KUBECONFIG_SECRET: &str = "kubeconfig";
/// Upper bound of waiting for a CRD to be Established.
const CRD_TIMEOUT: Duration = Duration::from_secs(30);

/// The provider backend of one consumer: its provider namespace, how it names itself in the
/// ClusterBinding, and how often its loops poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderBackend {
    /// The provider namespace (Klutch's backend creates one per ClusterBinding); in
    /// control-plane mode also the binding root namespace.
    pub namespace: &'static str,
    /// `ClusterBinding.spec.providerPrettyName`.
    pub pretty_name: &'static str,
    /// Interval of [`ProviderBackend::map_namespaces`] and [`ProviderBackend::provide`]: a
    /// backend polls or watches; polling keeps the stand-in small and retries for free.
    pub poll: Duration,
}

impl ProviderBackend {
    /// What the backend has set up on `provider` by the time a konnector connects: the klutch
    /// CRDs (ClusterBinding, APIServiceExport, APIServiceNamespace) and `api`, the provider
    /// namespace, the kubeconfig Secret holding `kubeconfig` (the provider's own in default
    /// mode, the app cluster's in control-plane mode), the ClusterBinding `cluster` pointing at
    /// it, and the APIServiceExport of `api`.
    pub async fn set_up(
        &self,
        provider: &kube::Client,
        api: &CustomResourceDefinition,
        kubeconfig: &str,
    ) -> anyhow::Result<()> {
        for crd in [
            konnector_api::crds::cluster_binding(),
            konnector_api::crds::api_service_export(),
            konnector_api::crds::api_service_namespace(),
            api.clone(),
        ] {
            install_crd(provider, crd).await?;
        }
        ensure_namespace(provider, self.namespace).await?;
        create_kubeconfig_secret(provider, self.namespace, KUBECONFIG_SECRET, kubeconfig).await?;
        apply(
            &Api::<ClusterBinding>::namespaced(provider.clone(), self.namespace),
            json!({
                "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "ClusterBinding",
                "metadata": {"name": CLUSTER_BINDING},
                "spec": {
                    "kubeconfigSecretRef": {"name": KUBECONFIG_SECRET, "key": KUBECONFIG_SECRET},
                    "providerPrettyName": self.pretty_name,
                },
            }),
        )
        .await?;
        apply(
            &Api::<APIServiceExport>::namespaced(provider.clone(), self.namespace),
            serde_json::to_value(export_from_crd(api)?)?,
        )
        .await
    }

    /// The provider namespace that holds the objects of consumer namespace `consumer`.
    pub fn service_namespace(&self, consumer: &str) -> String {
        service_namespace(self.namespace, consumer)
    }

    /// The backend's namespace mapping: every APIServiceNamespace `N` in the provider namespace
    /// gets `status.namespace = "<namespace>-<N>"`, and that namespace is created. Errors are
    /// retried on the next round. Runs until aborted.
    pub async fn map_namespaces(self, provider: kube::Client) {
        let api: Api<APIServiceNamespace> = Api::namespaced(provider.clone(), self.namespace);
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
                    let target = self.service_namespace(&name);
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
            tokio::time::sleep(self.poll).await;
        }
    }

    /// A provider controller: "provisions" every instance of `resource` on the provider that is
    /// not being deleted by merging `status(object)` into its status, where that is `Some`.
    /// Runs until aborted.
    pub async fn provide(
        self,
        provider: kube::Client,
        resource: ApiResource,
        status: fn(&Value) -> Option<Value>,
    ) {
        let api: Api<DynamicObject> = Api::all_with(provider.clone(), &resource);
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                for obj in list.items {
                    let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name)
                    else {
                        continue;
                    };
                    if obj.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let Some(status) = status(&obj.data) else {
                        continue;
                    };
                    let namespaced: Api<DynamicObject> =
                        Api::namespaced_with(provider.clone(), ns, &resource);
                    let _ = namespaced
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                        .await;
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// The provider namespace that holds the objects of consumer namespace `consumer`: the backend
/// names it `<provider namespace>-<consumer namespace>` and reports it in
/// `APIServiceNamespace.status.namespace`.
pub fn service_namespace(provider_namespace: &str, consumer: &str) -> String {
    format!("{provider_namespace}-{consumer}")
}

/// What `kubectl bind` leaves in the app cluster in default mode: `namespace` and in it the
/// Secret `kubeconfig` with the provider kubeconfig.
pub async fn kubectl_bind_secret(
    app: &kube::Client,
    namespace: &str,
    kubeconfig: &str,
) -> anyhow::Result<()> {
    ensure_namespace(app, namespace).await?;
    create_kubeconfig_secret(app, namespace, KUBECONFIG_SECRET, kubeconfig).await
}

/// The APIServiceBinding `name` in `namespace` whose kubeconfig is key `kubeconfig` of Secret
/// `secret` in the same namespace.
pub fn binding(name: &str, namespace: &str, secret: &str) -> Value {
    json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"kubeconfigSecretRef": {
            "name": secret, "namespace": namespace, "key": KUBECONFIG_SECRET}}})
}

/// The APIServiceExport a provider backend publishes for `crd`: the same name, names, scope and
/// versions (schema, subresources, printer columns). A real backend (Klutch's) does the same
/// when a provider offers an API; the konnector turns it back into a CRD in the app cluster.
pub fn export_from_crd(crd: &CustomResourceDefinition) -> anyhow::Result<APIServiceExport> {
    let name = crd.metadata.name.clone().context("the CRD has no name")?;
    let scope = match crd.spec.scope.as_str() {
        "Namespaced" => Scope::Namespaced,
        "Cluster" => bail!("{name}: the backend stand-in exports namespaced APIs only"),
        other => bail!("{name}: unknown scope {other:?}"),
    };
    // Field names and shapes are the CRD's, so a JSON round trip is the exact conversion (and
    // fails loudly if the export types ever diverge from the CRD's).
    let names = serde_json::from_value(serde_json::to_value(&crd.spec.names)?)
        .context("CRD names -> export names")?;
    let versions = serde_json::from_value(serde_json::to_value(&crd.spec.versions)?)
        .context("CRD versions -> export versions")?;
    let spec = APIServiceExportSpec {
        group: crd.spec.group.clone(),
        names,
        scope,
        versions,
        permission_claims: Vec::new(),
        informer_scope: Scope::Namespaced,
        cluster_scoped_isolation: None,
    };
    Ok(APIServiceExport::new(&name, spec))
}

/// Server-side apply of `obj` (named by its `metadata.name`) as [`FIELD_MANAGER`].
pub async fn apply<K>(api: &Api<K>, obj: Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj["metadata"]["name"]
        .as_str()
        .context("object without name")?
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("apply {} {name}", obj["kind"].as_str().unwrap_or("object")))?;
    Ok(())
}

/// Creates `crd` (or keeps it, if it is there already) and waits (bounded) until it is
/// Established.
pub async fn install_crd(
    client: &kube::Client,
    crd: CustomResourceDefinition,
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &crd).await {
        // Installed already, e.g. by another scenario on a shared control plane.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        created => {
            created.with_context(|| format!("create CRD {name}"))?;
        }
    }
    wait_until(&format!("CRD {name} established"), CRD_TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get(&name).await.is_ok_and(|c| is_established(&c)) }
    })
    .await
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

/// Creates or keeps the namespace `name`.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    apply(
        &api,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
}

/// A Secret `name` holding `kubeconfig` under the key `kubeconfig`.
pub fn kubeconfig_secret(name: &str, kubeconfig: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            KUBECONFIG_SECRET.to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Creates [`kubeconfig_secret`] `name` in `namespace`.
pub async fn create_kubeconfig_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    kubeconfig: &str,
) -> anyhow::Result<()> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &kubeconfig_secret(name, kubeconfig))
        .await
        .with_context(|| format!("create Secret {namespace}/{name}"))?;
    Ok(())
}

/// `kubeconfig` (YAML) with its first context's namespace set to `namespace`: how a konnector
/// learns from its provider kubeconfig where its ClusterBinding and exports are.
pub fn with_namespace(kubeconfig: &str, namespace: &str) -> anyhow::Result<String> {
    let mut kc: serde_yaml::Value = serde_yaml::from_str(kubeconfig)?;
    kc["contexts"][0]["context"]["namespace"] = serde_yaml::Value::String(namespace.into());
    Ok(serde_yaml::to_string(&kc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(scope: &str) -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "foos.example.com"},
            "spec": {"group": "example.com", "scope": scope,
                "names": {"kind": "Foo", "plural": "foos", "singular": "foo", "listKind": "FooList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}}))
        .unwrap()
    }

    /// The export carries the CRD's names and versions, nothing more.
    #[test]
    fn export_mirrors_the_crd() {
        let export = serde_json::to_value(export_from_crd(&crd("Namespaced")).unwrap()).unwrap();
        assert_eq!(
            export,
            json!({"apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport",
                "metadata": {"name": "foos.example.com"},
                "spec": {"group": "example.com", "scope": "Namespaced", "informerScope": "Namespaced",
                    "names": {"kind": "Foo", "plural": "foos", "singular": "foo", "listKind": "FooList"},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "subresources": {"status": {}},
                        "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
        );
    }

    #[test]
    fn cluster_scoped_crds_are_refused() {
        let err = export_from_crd(&crd("Cluster")).unwrap_err().to_string();
        assert!(err.contains("namespaced APIs only"), "{err}");
    }

    #[test]
    fn service_namespace_is_provider_dash_consumer() {
        let backend = ProviderBackend {
            namespace: "kube-bind-demo",
            pretty_name: "demo provider",
            poll: Duration::from_millis(20),
        };
        assert_eq!(
            backend.service_namespace("default"),
            "kube-bind-demo-default"
        );
    }

    #[test]
    fn with_namespace_sets_the_context_namespace() {
        let kc = "contexts:\n- name: c\n  context:\n    cluster: c\n    namespace: default\n";
        let out = with_namespace(kc, "p").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["contexts"][0]["context"]["namespace"].as_str(), Some("p"));
        assert_eq!(v["contexts"][0]["context"]["cluster"].as_str(), Some("c"));
    }
}
