//! The pure parts of the demo: the example provider API and the example provider controller's
//! decision. Nothing here talks to a cluster, so all of it is unit-tested (with the export the
//! backend stand-in, [`e2e::backend`], builds from it).

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::ApiResource;
use serde_json::{Value, json};

/// `examples/provider-api/crd.yaml`, compiled in so the demo runs from any directory.
const CRD_YAML: &str = include_str!("../../../examples/provider-api/crd.yaml");

/// The example provider API's CRD.
pub fn crd() -> Result<CustomResourceDefinition> {
    serde_yaml::from_str(CRD_YAML).context("parsing examples/provider-api/crd.yaml")
}

/// The served version of `crd` that the demo uses, as a dynamic resource.
pub fn api_resource(crd: &CustomResourceDefinition) -> Result<ApiResource> {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.served)
        .context("the example CRD serves no version")?;
    let group = &crd.spec.group;
    Ok(ApiResource {
        group: group.clone(),
        version: version.name.clone(),
        api_version: format!("{group}/{}", version.name),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    })
}

/// The phase the example provider controller reports once it has "provisioned" an instance.
pub const RUNNING: &str = "Running";

/// What the example provider controller writes to an instance's status: `None` when the status
/// already says Running (so it writes once per object, not on every event).
pub fn provider_status(object: &Value) -> Option<Value> {
    if object["status"]["phase"] == RUNNING {
        return None;
    }
    let spec = &object["spec"];
    let engine = spec["engine"].as_str().unwrap_or("database");
    let plan = spec["plan"].as_str().unwrap_or("default");
    Some(json!({"status": {
        "phase": RUNNING,
        "message": format!("{plan} {engine} provisioned by the demo provider"),
    }}))
}

#[cfg(test)]
mod tests {
    use e2e::backend::export_from_crd;
    use konnector_api::v1alpha1::{APIServiceExport, Scope};

    use super::*;

    /// The example CRD is a valid, namespaced CRD with a status subresource.
    #[test]
    fn example_crd_parses() {
        let crd = crd().unwrap();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("databases.demo.konnector.dev")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let r = api_resource(&crd).unwrap();
        assert_eq!(r.api_version, "demo.konnector.dev/v1alpha1");
        assert_eq!(r.plural, "databases");
    }

    /// The export carries everything the konnector needs to install the same CRD downstream,
    /// and is accepted by the APIServiceExport CRD's schema shape (a serde round trip).
    #[test]
    fn export_mirrors_the_crd() {
        let crd = crd().unwrap();
        let export = export_from_crd(&crd).unwrap();
        assert_eq!(
            export.metadata.name.as_deref(),
            Some("databases.demo.konnector.dev")
        );
        let spec = &export.spec;
        assert_eq!(spec.group, "demo.konnector.dev");
        assert_eq!(spec.names.kind, "Database");
        assert_eq!(spec.names.plural, "databases");
        assert_eq!(spec.names.short_names, Some(vec!["db".to_string()]));
        assert_eq!(spec.scope, Scope::Namespaced);
        assert_eq!(spec.informer_scope, Scope::Namespaced);
        assert!(spec.cluster_scoped_isolation.is_none());
        let version = spec.first_served_version().unwrap();
        assert_eq!(version.name, "v1alpha1");
        assert!(version.storage);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        assert_eq!(
            version
                .additional_printer_columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["Engine", "Plan", "Phase", "Age"]
        );
        let schema = &version.schema.open_api_v3_schema;
        assert_eq!(
            schema["properties"]["spec"]["properties"]["plan"]["default"],
            "small"
        );
        assert_eq!(
            schema["properties"]["status"]["properties"]["phase"]["enum"][2],
            "Running"
        );
        let json = serde_json::to_value(&export).unwrap();
        assert_eq!(json["apiVersion"], "klutch.anynines.com/v1alpha1");
        assert_eq!(json["kind"], "APIServiceExport");
        let back: APIServiceExport = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, export.spec);
    }

    /// An API server with the APIServiceExport CRD accepts the export and, after pruning and
    /// defaulting against that CRD's schema, stores exactly what the backend sent.
    #[tokio::test]
    async fn export_is_accepted_by_the_export_crd() {
        use e2e::backend::{ensure_namespace, install_crd};
        use kube::api::{Api, PostParams};

        let server = e2e::Cluster::start("export-check").await.unwrap();
        let client = server.client().await.unwrap();
        install_crd(&client, konnector_api::crds::api_service_export())
            .await
            .unwrap();
        ensure_namespace(&client, "p").await.unwrap();
        let export = export_from_crd(&crd().unwrap()).unwrap();
        let api: Api<APIServiceExport> = Api::namespaced(client, "p");
        let stored = api.create(&PostParams::default(), &export).await.unwrap();
        assert_eq!(stored.spec, export.spec);
    }

    #[test]
    fn provider_controller_writes_running_once() {
        let fresh = json!({"spec": {"engine": "postgresql", "plan": "small"}});
        let status = provider_status(&fresh).unwrap();
        assert_eq!(status["status"]["phase"], "Running");
        assert_eq!(
            status["status"]["message"],
            "small postgresql provisioned by the demo provider"
        );
        let running = json!({"spec": {}, "status": {"phase": "Running"}});
        assert_eq!(provider_status(&running), None);
    }
}
