//! `APIServiceExportRequest`: a request for exports (written by `kubectl bind` or the backend,
//! never by the konnector).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::claims::PermissionClaim;
use crate::conditions::Condition;

/// One requested resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct APIServiceExportRequestResource {
    /// group is the name of an API group.
    /// For core groups this is the empty string '""'.
    #[serde(default)]
    #[schemars(regex(pattern = r"^(|[a-z0-9]([-a-z0-9]*[a-z0-9](\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?)$"), extend("default" = ""))]
    pub group: String,
    /// resource is the name of the resource.
    /// Note: it is worth noting that you can not ask for permissions for resource provided by a CRD
    /// not provided by an service binding export.
    #[schemars(regex(pattern = r"^[a-z][-a-z0-9]*[a-z0-9]$"))]
    pub resource: String,
    /// versions is a list of versions that should be exported. If this is empty
    /// a sensible default is chosen by the service provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<String>>")]
    pub versions: Vec<String>,
    /// permissionClaims are claims for other resources of this export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<PermissionClaim>>")]
    pub permission_claims: Vec<PermissionClaim>,
}

/// spec specifies how an API service from a service provider should be bound in the
/// local consumer cluster.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "klutch.anynines.com",
    version = "v1alpha1",
    kind = "APIServiceExportRequest",
    plural = "apiserviceexportrequests",
    singular = "apiserviceexportrequest",
    namespaced,
    status = "APIServiceExportRequestStatus",
    category = "kube-bindings",
    doc = "APIServiceExportRequest is represents a request session of kubectl-bind-apiservice.\n\nThe service provider can prune these objects after some time.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct APIServiceExportRequestSpec {
    /// parameters holds service provider specific parameters for this binding
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "immutable_parameters")]
    pub parameters: Option<serde_json::Value>,
    /// resources is a list of resources that should be exported.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "resources are immutable", "rule": "self == oldSelf"}]))]
    pub resources: Vec<APIServiceExportRequestResource>,
}

fn immutable_parameters(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-validations": [{"message": "parameters are immutable", "rule": "self == oldSelf"}],
    })
}

/// Phase of an export request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum APIServiceExportRequestPhase {
    /// Not processed yet.
    #[default]
    Pending,
    /// The request cannot be fulfilled.
    Failed,
    /// Exports were created.
    Succeeded,
}

/// status contains reconciliation information for a service binding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct APIServiceExportRequestStatus {
    /// phase is the current phase of the binding request. It starts in Pending
    /// and transitions to Succeeded or Failed. See the condition for detailed
    /// information.
    #[serde(default)]
    #[schemars(with = "Option<APIServiceExportRequestPhase>", extend("default" = "Pending"))]
    pub phase: APIServiceExportRequestPhase,
    /// terminalMessage is a human readable message that describes the reason
    /// for the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_message: Option<String>,
    /// conditions is a list of conditions that apply to the ClusterBinding. It is
    /// updated by the konnector and the service provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<Condition>>")]
    pub conditions: Vec<Condition>,
}
