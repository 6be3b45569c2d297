//! `APIServiceNamespace`: maps a consumer namespace to a provider service namespace.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// spec specifies a service namespace.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "klutch.anynines.com",
    version = "v1alpha1",
    kind = "APIServiceNamespace",
    plural = "apiservicenamespaces",
    singular = "apiservicenamespace",
    namespaced,
    status = "APIServiceNamespaceStatus",
    category = "kube-bindings",
    doc = "APIServiceNamespace defines how consumer namespaces map to service namespaces.\nThese objects are created by the konnector, and a service namespace is then\ncreated by the service provider.\n\nThe name of the APIServiceNamespace equals the namespace name in the consumer\ncluster.",
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct APIServiceNamespaceSpec {}

/// status contains reconciliation information for a service namespace
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct APIServiceNamespaceStatus {
    /// namespace is the service provider namespace name that will be bound to the
    /// consumer namespace named like this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
