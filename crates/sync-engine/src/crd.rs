//! The consumer-side CRD of an export (reference 6.3, 5.6) and whether it is in sync (S4).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresources,
    JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use konnector_api::strings::{API_VERSION, GROUP};
use konnector_api::v1alpha1::{APIServiceBinding, APIServiceExport, ResourceNames, Scope};
use serde_json::Value;

/// Why an export cannot become a CRD.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrdError {
    /// A version's `openAPIV3Schema` is not a valid schema.
    #[error("failed to unmarshal schema for version {version:?}: {message}")]
    Schema {
        /// The version.
        version: String,
        /// What was wrong.
        message: String,
    },
    /// The export has no name.
    #[error("APIServiceExport has no name")]
    NoName,
    /// A subresource or printer column does not convert.
    #[error("invalid {what} in version {version:?}: {message}")]
    Field {
        /// Which field.
        what: &'static str,
        /// The version.
        version: String,
        /// What was wrong.
        message: String,
    },
}

/// The CRD to install in the app cluster for `export`, owned by `binding`.
pub fn crd_for_export(
    export: &APIServiceExport,
    binding: &APIServiceBinding,
) -> Result<CustomResourceDefinition, CrdError> {
    let name = export.metadata.name.clone().ok_or(CrdError::NoName)?;
    let spec = &export.spec;
    let versions = spec
        .versions
        .iter()
        .map(|v| {
            let schema = if v.schema.open_api_v3_schema.is_null()
                || v.schema.open_api_v3_schema == Value::Object(Default::default())
            {
                None
            } else {
                Some(
                    serde_json::from_value::<JSONSchemaProps>(v.schema.open_api_v3_schema.clone())
                        .map_err(|e| CrdError::Schema {
                            version: v.name.clone(),
                            message: e.to_string(),
                        })?,
                )
            };
            let convert = |what: &'static str, value: Value| CrdError::Field {
                what,
                version: v.name.clone(),
                message: value.to_string(),
            };
            let subresources: CustomResourceSubresources = match &v.subresources {
                Some(s) => serde_json::to_value(s)
                    .and_then(serde_json::from_value)
                    .map_err(|e| convert("subresources", Value::String(e.to_string())))?,
                None => CustomResourceSubresources::default(),
            };
            let columns: Vec<CustomResourceColumnDefinition> =
                serde_json::to_value(&v.additional_printer_columns)
                    .and_then(serde_json::from_value)
                    .map_err(|e| convert("additionalPrinterColumns", Value::String(e.to_string())))?;
            Ok(CustomResourceDefinitionVersion {
                name: v.name.clone(),
                served: v.served,
                storage: v.storage,
                deprecated: v.deprecated.then_some(true),
                deprecation_warning: v.deprecation_warning.clone(),
                additional_printer_columns: (!columns.is_empty()).then_some(columns),
                schema: schema.map(|s| {
                    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceValidation {
                        open_api_v3_schema: Some(s),
                    }
                }),
                subresources: Some(subresources),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, CrdError>>()?;
    Ok(CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(name),
            owner_references: Some(vec![owner_reference(binding)]),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: spec.group.clone(),
            names: names(&spec.names),
            scope: match spec.scope {
                Scope::Cluster => "Cluster".into(),
                Scope::Namespaced => "Namespaced".into(),
            },
            versions,
            ..Default::default()
        },
        status: None,
    })
}

fn names(n: &ResourceNames) -> CustomResourceDefinitionNames {
    CustomResourceDefinitionNames {
        categories: n.categories.clone(),
        kind: n.kind.clone(),
        list_kind: n.list_kind.clone(),
        plural: n.plural.clone(),
        short_names: n.short_names.clone(),
        singular: n.singular.clone(),
    }
}

/// The controller owner reference of a binding (reference 5.6).
pub fn owner_reference(binding: &APIServiceBinding) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_string(),
        kind: "APIServiceBinding".to_string(),
        name: binding.metadata.name.clone().unwrap_or_default(),
        uid: binding.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Whether `crd` is owned by `binding` (the guard against overwriting someone else's CRD):
/// an owner reference of group `klutch.anynines.com`, kind `APIServiceBinding`, the binding's
/// name, and its uid (or the binding has no uid yet).
pub fn is_owned_by(crd: &CustomResourceDefinition, binding: &APIServiceBinding) -> bool {
    let name = binding.metadata.name.as_deref().unwrap_or_default();
    let uid = binding.metadata.uid.as_deref().unwrap_or_default();
    crd.metadata.owner_references.iter().flatten().any(|r| {
        r.api_version.split('/').next() == Some(GROUP)
            && r.kind == "APIServiceBinding"
            && r.name == name
            && (uid.is_empty() || r.uid == uid)
    })
}

/// Whether the installed CRD already has everything the desired one says (fields the API server
/// adds, such as `conversion`, are ignored), so that it is updated only when needed.
pub fn spec_in_sync(
    installed: &CustomResourceDefinition,
    desired: &CustomResourceDefinition,
) -> bool {
    match (
        serde_json::to_value(&desired.spec),
        serde_json::to_value(&installed.spec),
    ) {
        (Ok(d), Ok(i)) => contains(&d, &i),
        _ => false,
    }
}

/// `desired` ⊆ `live`, with lists compared element by element (same length). A schema
/// (`openAPIV3Schema`) must be equal: the API server adds nothing inside it, and a property or
/// `x-kubernetes-preserve-unknown-fields` the provider removed is a change like any other.
fn contains(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| {
            l.get(k).is_some_and(|lv| {
                if k == "openAPIV3Schema" {
                    contains(dv, lv) && contains(lv, dv)
                } else {
                    contains(dv, lv)
                }
            })
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| contains(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (d, l) => d == l,
    }
}

/// State of the consumer CRD against the export (the `SchemaInSync` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// The installed CRD serves the export's schema.
    InSync,
    /// The installed CRD's spec differs from the export's.
    OutOfSync,
    /// The CRD has the export's spec but is not Established with it yet.
    NotEstablished,
}

/// Compares the installed CRD with the desired one and its conditions.
pub fn schema_state(
    installed: &CustomResourceDefinition,
    desired: &CustomResourceDefinition,
) -> SchemaState {
    if !spec_in_sync(installed, desired) {
        return SchemaState::OutOfSync;
    }
    if is_established(installed) {
        SchemaState::InSync
    } else {
        SchemaState::NotEstablished
    }
}

/// Whether the CRD's `Established` condition is `True`.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use konnector_api::v1alpha1::{
        APIServiceBindingSpec, APIServiceExportSpec, ClusterSecretKeyRef,
    };

    fn export() -> APIServiceExport {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "APIServiceExport",
            "metadata": {"name": "mangodbs.mangodb.com", "namespace": "p"},
            "spec": {"group": "mangodb.com", "scope": "Namespaced", "informerScope": "Namespaced",
                "names": {"kind": "MangoDB", "plural": "mangodbs", "singular": "mangodb", "listKind": "MangoDBList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                        "properties": {"tier": {"type": "string", "default": "Shared"}}}}}},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Tier", "type": "string", "jsonPath": ".spec.tier"}]}]}
        }))
        .unwrap()
    }

    fn binding(uid: Option<&str>) -> APIServiceBinding {
        let mut b = APIServiceBinding::new(
            "mangodbs.mangodb.com",
            APIServiceBindingSpec {
                kubeconfig_secret_ref: ClusterSecretKeyRef::default(),
                permission_claims: vec![],
            },
        );
        b.metadata.uid = uid.map(String::from);
        b
    }

    #[test]
    fn export_becomes_an_owned_crd_with_schema_columns_and_subresources() {
        let crd = crd_for_export(&export(), &binding(Some("b-uid"))).unwrap();
        assert_eq!(crd.metadata.name.as_deref(), Some("mangodbs.mangodb.com"));
        let owner = &crd.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            (
                "klutch.anynines.com/v1alpha1",
                "APIServiceBinding",
                "b-uid",
                Some(true)
            )
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        assert_eq!(
            v.additional_printer_columns.as_ref().unwrap()[0].json_path,
            ".spec.tier"
        );
        let schema = v
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let tier = &schema.properties.as_ref().unwrap()["spec"]
            .properties
            .as_ref()
            .unwrap()["tier"];
        assert_eq!(
            tier.default.as_ref().unwrap().0,
            serde_json::json!("Shared")
        );
        assert!(is_owned_by(&crd, &binding(Some("b-uid"))));
        assert!(is_owned_by(&crd, &binding(None)));
        assert!(!is_owned_by(&crd, &binding(Some("other"))));
    }

    #[test]
    fn invalid_schema_is_reported_with_the_version() {
        let mut e = export();
        e.spec.versions[0].schema.open_api_v3_schema = serde_json::json!({"type": 5});
        let err = crd_for_export(&e, &binding(None)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to unmarshal schema for version \"v1\": "),
            "{err}"
        );
    }

    #[test]
    fn foreign_crds_are_not_owned() {
        let mut crd = crd_for_export(&export(), &binding(None)).unwrap();
        crd.metadata.owner_references = None;
        assert!(!is_owned_by(&crd, &binding(None)));
    }

    #[test]
    fn schema_state_follows_spec_and_established() {
        let desired = crd_for_export(&export(), &binding(None)).unwrap();
        let mut installed = desired.clone();
        // Server-added fields do not make it out of sync.
        installed.spec.conversion = Some(Default::default());
        assert_eq!(
            schema_state(&installed, &desired),
            SchemaState::NotEstablished
        );
        installed.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Established", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
            "acceptedNames": {"kind": "MangoDB", "plural": "mangodbs"}
        }))
        .unwrap();
        assert_eq!(schema_state(&installed, &desired), SchemaState::InSync);
        let mut changed = export();
        changed.spec.versions[0].schema.open_api_v3_schema["properties"]["spec"]["properties"]["size"] =
            serde_json::json!({"type": "integer"});
        let newer = crd_for_export(&changed, &binding(None)).unwrap();
        assert_eq!(schema_state(&installed, &newer), SchemaState::OutOfSync);
        let _ = APIServiceExportSpec::default();
    }

    #[test]
    fn a_schema_that_lost_something_is_out_of_sync() {
        // Installed: spec keeps unknown fields; the export now prunes them.
        let mut keeping = export();
        keeping.spec.versions[0].schema.open_api_v3_schema["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] =
            serde_json::json!(true);
        let mut installed = crd_for_export(&keeping, &binding(None)).unwrap();
        installed.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Established", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]
        }))
        .unwrap();
        let strict = crd_for_export(&export(), &binding(None)).unwrap();
        assert_eq!(schema_state(&installed, &strict), SchemaState::OutOfSync);
        // And the other way round: a property removed.
        let mut fewer = export();
        fewer.spec.versions[0].schema.open_api_v3_schema["properties"]["spec"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("tier");
        let fewer = crd_for_export(&fewer, &binding(None)).unwrap();
        let mut installed = strict.clone();
        installed.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Established", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]
        }))
        .unwrap();
        assert_eq!(schema_state(&installed, &strict), SchemaState::InSync);
        assert_eq!(schema_state(&installed, &fewer), SchemaState::OutOfSync);
    }
}
