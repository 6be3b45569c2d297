//! The CustomResourceDefinitions of all six kinds, generated from the Rust types.
//!
//! `kube`'s derive produces most of each CRD; this module adds what the derive cannot express and
//! the reference CRDs (controller-gen output) have: the standard `apiVersion`/`kind`/`metadata`
//! properties, object-level CEL rules, `listKind`, and no `nullable` markers on optional fields
//! (controller-gen omits them; the API server drops `null` for non-nullable fields anyway).
//!
//! Deliberate differences from the reference CRDs (see `decisions.md`):
//! - P1: the `Resources` printer column of APIServiceBinding uses a well-formed JSONPath for the
//!   annotation `bind.klutch.anynines.com/resources`.
//! - V1: the name rule of APIServiceExport says what it checks instead of `informerScope is immutable`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    ValidationRule,
};
use kube::CustomResourceExt;

use crate::v1alpha1::{
    APIServiceBinding, APIServiceExport, APIServiceExportRequest, APIServiceNamespace,
    AppClusterBinding, ClusterBinding,
};

/// Message of the APIServiceExport name rule (fixes the reference's misleading text, V1).
pub const EXPORT_NAME_RULE_MESSAGE: &str = "metadata.name must be <spec.names.plural>.<spec.group>";

/// All six CRDs, ordered by name.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        api_service_binding(),
        api_service_export(),
        api_service_export_request(),
        api_service_namespace(),
        app_cluster_binding(),
        cluster_binding(),
    ];
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    crds
}

/// `apiservicebindings.klutch.anynines.com`, which the konnector installs in default mode.
pub fn api_service_binding() -> CustomResourceDefinition {
    finish(APIServiceBinding::crd(), Shape::default().spec_optional())
}

/// `apiserviceexports.klutch.anynines.com`.
pub fn api_service_export() -> CustomResourceDefinition {
    finish(
        APIServiceExport::crd(),
        Shape::default().rule(
            "self.metadata.name == self.spec.names.plural+\".\"+self.spec.group",
            EXPORT_NAME_RULE_MESSAGE,
        ),
    )
}

/// `apiserviceexportrequests.klutch.anynines.com`.
pub fn api_service_export_request() -> CustomResourceDefinition {
    finish(
        APIServiceExportRequest::crd(),
        Shape {
            status_default_empty: true,
            ..Shape::default()
        },
    )
}

/// `apiservicenamespaces.klutch.anynines.com`.
pub fn api_service_namespace() -> CustomResourceDefinition {
    finish(APIServiceNamespace::crd(), Shape::default().spec_optional())
}

/// `appclusterbindings.klutch.anynines.com`.
pub fn app_cluster_binding() -> CustomResourceDefinition {
    let mut crd = finish(
        AppClusterBinding::crd(),
        Shape::default().rule(
            "self.metadata.name == oldSelf.metadata.name",
            "name is immutable",
        ),
    );
    let overrides: Option<JSONSchemaProps> =
        serde_json::from_str(crate::v1alpha1::CONTAINER_OVERRIDES_SCHEMA).ok();
    let node = crd
        .spec
        .versions
        .iter_mut()
        .filter_map(|v| v.schema.as_mut()?.open_api_v3_schema.as_mut())
        .filter_map(|root| root.properties.as_mut()?.get_mut("spec"))
        .filter_map(|spec| spec.properties.as_mut()?.get_mut("konnector"))
        .filter_map(|konnector| konnector.properties.as_mut()?.get_mut("overrides"));
    for slot in node {
        if let Some(schema) = &overrides {
            *slot = schema.clone();
        }
    }
    crd
}

/// `clusterbindings.klutch.anynines.com`.
pub fn cluster_binding() -> CustomResourceDefinition {
    finish(
        ClusterBinding::crd(),
        Shape::default().rule(
            "self.metadata.name == \"cluster\"",
            "cluster binding name should be cluster",
        ),
    )
}

/// What a CRD needs beyond the derive.
#[derive(Default)]
struct Shape {
    spec_optional: bool,
    status_default_empty: bool,
    rules: Vec<(&'static str, &'static str)>,
}

impl Shape {
    fn spec_optional(mut self) -> Self {
        self.spec_optional = true;
        self
    }

    fn rule(mut self, rule: &'static str, message: &'static str) -> Self {
        self.rules.push((rule, message));
        self
    }
}

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object.\nServers should convert recognized schemas to the latest internal value, and\nmay reject unrecognized values.\nMore info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents.\nServers may infer this from the endpoint the client submits requests to.\nCannot be updated.\nIn CamelCase.\nMore info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

fn string_prop(description: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("string".into()),
        description: Some(description.into()),
        ..JSONSchemaProps::default()
    }
}

fn finish(mut crd: CustomResourceDefinition, shape: Shape) -> CustomResourceDefinition {
    let names = &mut crd.spec.names;
    if names.list_kind.is_none() {
        names.list_kind = Some(format!("{}List", names.kind));
    }
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        strip_nullable(root);
        root.title = None;
        let props = root.properties.get_or_insert_with(Default::default);
        props.insert("apiVersion".into(), string_prop(API_VERSION_DESCRIPTION));
        props.insert("kind".into(), string_prop(KIND_DESCRIPTION));
        props.insert(
            "metadata".into(),
            JSONSchemaProps {
                type_: Some("object".into()),
                ..JSONSchemaProps::default()
            },
        );
        if shape.status_default_empty
            && let Some(status) = props.get_mut("status")
        {
            status.default = Some(JSON(serde_json::json!({})));
        }
        if shape.spec_optional
            && let Some(required) = root.required.as_mut()
        {
            required.retain(|r| r != "spec");
            if required.is_empty() {
                root.required = None;
            }
        }
        if !shape.rules.is_empty() {
            root.x_kubernetes_validations = Some(
                shape
                    .rules
                    .iter()
                    .map(|(rule, message)| ValidationRule {
                        rule: (*rule).into(),
                        message: Some((*message).into()),
                        ..ValidationRule::default()
                    })
                    .collect(),
            );
        }
    }
    crd
}

/// Removes `nullable: true`, which the derive adds for every `Option` field.
fn strip_nullable(props: &mut JSONSchemaProps) {
    props.nullable = None;
    if let Some(children) = props.properties.as_mut() {
        children.values_mut().for_each(strip_nullable);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = props.items.as_mut() {
        strip_nullable(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = props.additional_properties.as_mut() {
        strip_nullable(extra);
    }
    for list in [&mut props.all_of, &mut props.any_of, &mut props.one_of]
        .into_iter()
        .flatten()
    {
        list.iter_mut().for_each(strip_nullable);
    }
}
