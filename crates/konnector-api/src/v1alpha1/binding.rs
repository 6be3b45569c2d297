//! `APIServiceBinding`: binds one exported API into the app cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::claims::AcceptablePermissionClaim;
use super::refs::ClusterSecretKeyRef;
use crate::conditions::Condition;

/// spec specifies how an API service from a service provider should be bound in the
/// local consumer cluster.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "klutch.anynines.com",
    version = "v1alpha1",
    kind = "APIServiceBinding",
    plural = "apiservicebindings",
    singular = "apiservicebinding",
    namespaced,
    status = "APIServiceBindingStatus",
    shortname = "sb",
    category = "kube-bindings",
    doc = "APIServiceBinding binds an API service represented by a APIServiceExport\nin a service provider cluster into a consumer cluster. This object lives in\nthe consumer cluster.",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.providerPrettyName"}"#,
    printcolumn = r#"{"name":"Resources","type":"string","priority":1,"jsonPath":".metadata.annotations.bind\\.klutch\\.anynines\\.com/resources"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct APIServiceBindingSpec {
    /// kubeconfigSecretName is the secret ref that contains the kubeconfig of the service cluster.
    #[schemars(extend("x-kubernetes-validations" = [{"message": "kubeconfigSecretRef is immutable", "rule": "self == oldSelf"}]))]
    pub kubeconfig_secret_ref: ClusterSecretKeyRef,
    /// permissionClaims records decisions about permission claims requested by the API service provider.
    /// Individual claims can be accepted or rejected. If accepted, the API service provider gets the
    /// requested access to the specified resources in this workspace. Access is granted per
    /// GroupResource, identity, and other properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<AcceptablePermissionClaim>>")]
    pub permission_claims: Vec<AcceptablePermissionClaim>,
}

/// status contains reconciliation information for a service binding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct APIServiceBindingStatus {
    /// providerPrettyName is the pretty name of the service provider cluster. This
    /// can be shared among different APIServiceBindings.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(with = "Option<String>")]
    pub provider_pretty_name: String,
    /// conditions is a list of conditions that apply to the APIServiceBinding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<Condition>>")]
    pub conditions: Vec<Condition>,
}
