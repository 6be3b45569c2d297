//! `APIServiceExport`: a provider's exported API, mostly a CRD spec.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::claims::PermissionClaim;
use crate::conditions::Condition;

/// Scope of a resource or of the konnector's provider-side informers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Scope {
    /// Cluster-wide.
    Cluster,
    /// Per namespace.
    #[default]
    Namespaced,
}

/// How cluster-scoped consumer objects are kept apart on the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Isolation {
    /// Upstream name `<P>-<name>`, cluster-scoped.
    Prefixed,
    /// Stored as a namespaced object in the provider namespace `P`.
    Namespaced,
    /// Same name upstream (the provider guarantees uniqueness).
    None,
}

/// Names of the exported resource (the CRD's `spec.names`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceNames {
    /// categories is a list of grouped resources this custom resource belongs to (e.g. 'all').
    /// This is published in API discovery documents, and used by clients to support invocations like
    /// `kubectl get all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub categories: Option<Vec<String>>,
    /// kind is the serialized kind of the resource. It is normally CamelCase and singular.
    /// Custom resource instances will use this value as the `kind` attribute in API calls.
    pub kind: String,
    /// listKind is the serialized kind of the list for this resource. Defaults to "`kind`List".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_kind: Option<String>,
    /// plural is the plural name of the resource to serve.
    /// The custom resources are served under `/apis/<group>/<version>/.../<plural>`.
    /// Must match the name of the CustomResourceDefinition (in the form `<names.plural>.<group>`).
    /// Must be all lowercase.
    pub plural: String,
    /// shortNames are short names for the resource, exposed in API discovery documents,
    /// and used by clients to support invocations like `kubectl get <shortname>`.
    /// It must be all lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub short_names: Option<Vec<String>>,
    /// singular is the singular name of the resource. It must be all lowercase. Defaults to lowercased `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singular: Option<String>,
}

/// CustomResourceColumnDefinition specifies a column for server side printing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrinterColumn {
    /// description is a human readable description of this column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// format is an optional OpenAPI type definition for this column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// jsonPath is a simple JSON path (i.e. with array notation) which is evaluated against
    /// each custom resource to produce the value for this column.
    pub json_path: String,
    /// name is a human readable name for the column.
    pub name: String,
    /// priority is an integer defining the relative importance of this column compared to others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// type is an OpenAPI type definition for this column.
    #[serde(rename = "type")]
    pub type_: String,
}

/// scale indicates the custom resource should serve a `/scale` subresource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSubresource {
    /// labelSelectorPath defines the JSON path inside of a custom resource that corresponds to Scale `status.selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector_path: Option<String>,
    /// specReplicasPath defines the JSON path inside of a custom resource that corresponds to Scale `spec.replicas`.
    pub spec_replicas_path: String,
    /// statusReplicasPath defines the JSON path inside of a custom resource that corresponds to Scale `status.replicas`.
    pub status_replicas_path: String,
}

/// The (empty) `status` subresource marker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusSubresource {}

/// subresources specify what subresources this version of the defined custom resource have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Subresources {
    /// scale indicates the custom resource should serve a `/scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleSubresource>,
    /// status indicates the custom resource should serve a `/status` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSubresource>,
}

/// schema describes the structural schema used for validation, pruning, and defaulting
/// of this version of the custom resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportSchema {
    /// openAPIV3Schema is the OpenAPI v3 schema to use for validation and pruning.
    #[serde(rename = "openAPIV3Schema")]
    #[schemars(schema_with = "raw_object_schema")]
    pub open_api_v3_schema: serde_json::Value,
}

fn raw_object_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-map-type": "atomic",
    })
}

/// APIServiceExportVersion describes one API version of a resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct APIServiceExportVersion {
    /// name is the version name, e.g. “v1”, “v2beta1”, etc.
    /// The custom resources are served under this version at `/apis/<group>/<version>/...` if `served` is true.
    #[schemars(
        length(min = 1),
        regex(pattern = r"^v[1-9][0-9]*([a-z]+[1-9][0-9]*)?$")
    )]
    pub name: String,
    /// served is a flag enabling/disabling this version from being served via REST APIs
    #[schemars(extend("default" = true))]
    pub served: bool,
    /// storage indicates this version should be used when persisting custom resources to storage.
    /// There must be exactly one version with storage=true.
    pub storage: bool,
    /// deprecated indicates this version of the custom resource API is deprecated.
    #[serde(default, skip_serializing_if = "super::claims::is_false")]
    pub deprecated: bool,
    /// deprecationWarning overrides the default warning returned to API clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_warning: Option<String>,
    /// schema describes the structural schema used for validation, pruning, and defaulting
    /// of this version of the custom resource.
    pub schema: ExportSchema,
    /// subresources specify what subresources this version of the defined custom resource have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresources: Option<Subresources>,
    /// additionalPrinterColumns specifies additional columns returned in Table output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<PrinterColumn>>")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub additional_printer_columns: Vec<PrinterColumn>,
}

/// spec specifies the resource.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "klutch.anynines.com",
    version = "v1alpha1",
    kind = "APIServiceExport",
    plural = "apiserviceexports",
    singular = "apiserviceexport",
    namespaced,
    status = "APIServiceExportStatus",
    category = "kube-bindings",
    doc = "APIServiceExport specifies the resource to be exported. It is mostly a CRD:\n- the spec is a CRD spec, but without webhooks\n- the status reflects that on the consumer cluster",
    printcolumn = r#"{"name":"Established","type":"string","priority":5,"jsonPath":".status.conditions[?(@.type==\"Established\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "informerScope must be Cluster for cluster-scoped resources", "rule": "self.scope == \"Namespaced\" || self.informerScope == \"Cluster\""},
    {"message": "clusterScopedIsolation must be defined for cluster-scoped resources", "rule": "self.scope == \"Namespaced\" || has(self.clusterScopedIsolation)"},
    {"message": "clusterScopedIsolation is not relevant for namespaced resources", "rule": "self.scope == \"Cluster\" || !has(self.clusterScopedIsolation)"},
]))]
pub struct APIServiceExportSpec {
    /// group is the API group of the defined custom resource. Empty string means the
    /// core API group. The resources are served under `/apis/<group>/...` or `/api` for the core group.
    pub group: String,
    /// names specify the resource and kind names for the custom resource.
    pub names: ResourceNames,
    /// scope indicates whether the defined custom resource is cluster- or namespace-scoped.
    /// Allowed values are `Cluster` and `Namespaced`.
    pub scope: Scope,
    /// versions is the API version of the defined custom resource.
    ///
    /// Note: the OpenAPI v3 schemas must be equal for all versions until CEL
    /// version migration is supported.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub versions: Vec<APIServiceExportVersion>,
    /// permissionClaims are permission claims of other resources the provider wants to sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<PermissionClaim>>")]
    pub permission_claims: Vec<PermissionClaim>,
    /// informerScope is the scope of the APIServiceExport. It can be either Cluster or Namespace.
    ///
    /// Cluster:    The konnector has permission to watch all namespaces at once and cluster-scoped resources.
    ///             This is more efficient than watching each namespace individually.
    /// Namespaced: The konnector has permission to watch only single namespaces.
    ///             This is more resource intensive. And it means cluster-scoped resources cannot be exported.
    #[schemars(extend("x-kubernetes-validations" = [{"message": "informerScope is immutable", "rule": "self == oldSelf"}]))]
    pub informer_scope: Scope,
    /// ClusterScopedIsolation specifies how cluster scoped service objects are isolated between multiple consumers on the provider side.
    /// It can be "Prefixed", "Namespaced", or "None".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scoped_isolation: Option<Isolation>,
}

impl APIServiceExportSpec {
    /// The first served version: the one the konnector syncs (reference `ensureControllers`).
    pub fn first_served_version(&self) -> Option<&APIServiceExportVersion> {
        self.versions.iter().find(|v| v.served)
    }
}

/// status contains reconciliation information for the resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct APIServiceExportStatus {
    /// acceptedNames are the names that are actually being used to serve discovery.
    /// They may be different than the names in spec.
    #[serde(default)]
    #[schemars(with = "Option<ResourceNames>", transform = super::no_default)]
    pub accepted_names: ResourceNames,
    /// conditions is a list of conditions that apply to the APIServiceExport. It is
    /// updated by the konnector on the consumer cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<Condition>>")]
    pub conditions: Vec<Condition>,
    /// storedVersions lists all versions of CustomResources that were ever persisted.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", transform = super::no_default)]
    pub stored_versions: Vec<String>,
}
