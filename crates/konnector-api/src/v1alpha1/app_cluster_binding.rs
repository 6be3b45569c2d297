//! `AppClusterBinding`: the backend's description of a control-plane-mode konnector.

use k8s_openapi::api::core::v1 as core;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::claims::GroupResource;
use super::refs::ClusterSecretKeyRef;
use crate::conditions::Condition;

/// spec represents the desired state of the AppClusterBinding.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "klutch.anynines.com",
    version = "v1alpha1",
    kind = "AppClusterBinding",
    plural = "appclusterbindings",
    singular = "appclusterbinding",
    namespaced,
    status = "AppClusterBindingStatus",
    category = "kube-bindings",
    doc = "AppClusterBinding represents a binding for an app cluster on the control plane.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AppClusterBindingSpec {
    /// kubeconfigSecretRef points to the app cluster kubeconfig.
    #[schemars(extend("x-kubernetes-validations" = [{"message": "kubeconfigSecretRef is immutable", "rule": "self == oldSelf"}]))]
    pub kubeconfig_secret_ref: ClusterSecretKeyRef,
    /// apiExports is a list of GroupResource entries, where each entry specifies an API group and resource to bind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<GroupResource>>")]
    pub api_exports: Vec<GroupResource>,
    /// konnector contains deployment settings for the konnector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub konnector: Option<KonnectorSpec>,
}

/// konnector contains deployment settings for the konnector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KonnectorSpec {
    /// deploy enables konnector deployment for this binding.
    #[serde(default, skip_serializing_if = "super::claims::is_false")]
    pub deploy: bool,
    /// overrides allow modifying the container spec for the konnector.
    /// Fields set here are strategically merged into the base konnector container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "container_overrides_schema")]
    pub overrides: Option<ContainerOverrides>,
}

/// The subset of `corev1.Container` fields the backend merges into the konnector container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ContainerOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<core::ContainerPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<core::EnvFromSource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<core::EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<core::ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<core::VolumeMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_devices: Option<Vec<core::VolumeDevice>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<core::Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<core::Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<core::Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<core::Lifecycle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<core::SecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_once: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

/// The schema of `overrides`: the upstream `corev1.Container` schema of those fields, taken verbatim
/// from the reference CRD, because k8s-openapi's schemas lack the list-map keys, map types and
/// defaults (`protocol: TCP`) that the API server uses for merging and defaulting.
pub(crate) const CONTAINER_OVERRIDES_SCHEMA: &str =
    include_str!("../schemas/container-overrides.json");

fn container_overrides_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // The derive's structural rewrite would drop the `anyOf` types of int-or-string fields;
    // `crds` puts the verbatim schema back after generation, so a placeholder suffices here.
    schemars::json_schema!({"type": "object"})
}

/// status contains reconciliation information.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppClusterBindingStatus {
    /// conditions is a list of conditions that apply to the AppClusterBinding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<Condition>>")]
    pub conditions: Vec<Condition>,
}
