//! Permission claims: which other resources (for example Secrets) a provider may sync.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `group` pattern of the reference (a DNS subdomain or empty for the core group).
const GROUP_PATTERN: &str = r"^(|[a-z0-9]([-a-z0-9]*[a-z0-9](\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?)$";
/// `resource` pattern of the reference.
const RESOURCE_PATTERN: &str = r"^[a-z][-a-z0-9]*[a-z0-9]$";

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// GroupResource identifies a resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupResource {
    /// group is the name of an API group.
    /// For core groups this is the empty string '""'.
    #[serde(default)]
    #[schemars(regex(pattern = GROUP_PATTERN), extend("default" = ""))]
    pub group: String,
    /// resource is the name of the resource.
    /// Note: it is worth noting that you can not ask for permissions for resource provided by a CRD
    /// not provided by an service binding export.
    #[schemars(regex(pattern = RESOURCE_PATTERN))]
    pub resource: String,
}

/// Who created (and so owns) a claimed object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Owner {
    /// Created on the provider side; mirrored downstream.
    Provider,
    /// Created on the consumer side; mirrored upstream.
    Consumer,
}

/// Which objects of the claimed resource are claimed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSelector {
    /// names is a list of specific resource names to select.
    /// Names matches the metadata.name field of the underlying object.
    /// An entry of "*" anywhere in the list means all object names are being selected.
    /// Defaults to "*".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = ["*"]))]
    pub names: Option<Vec<String>>,
    /// namespaces represents namespaces where an object of the given group/resource may be managed.
    /// Namespaces matches against the metadata.namespace field. If not provided, the object is assumed
    /// to be cluster-scoped. An entry of "*" anywhere in the list means all namespaces are being
    /// selected. Defaults to "*".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = ["*"]))]
    pub namespaces: Option<Vec<String>>,
    /// labelSelectors is a list of label selectors; an object matches if any of them matches
    /// (each selector is a set of labels that must all be present with these values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selectors: Option<Vec<BTreeMap<String, String>>>,
    /// fieldSelectors is a list of field selectors (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selectors: Option<Vec<String>>,
    /// owner restricts the selection to objects created on this side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A pattern matching label or annotation keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Matcher {
    /// pattern is a glob pattern of keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// Read access the provider claims (informational).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadOptions {
    /// labels is a list of claimed label key wildcard patterns that are synchronized from the
    /// consumer cluster to the provider on objects that are owned by the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<Matcher>>,
    /// labelsOnProviderOwnedObjects is a list of claimed label key wildcard patterns that are
    /// synchronized from the consumer cluster to the provider on objects owned by the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_on_provider_owned_objects: Option<Vec<Matcher>>,
    /// annotations is a list of claimed annotation key wildcard patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Matcher>>,
    /// overrideAnnotations is a list of claimed annotation key wildcard patterns that the provider
    /// may override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_annotations: Option<Vec<Matcher>>,
}

/// Whether provider objects are created downstream (informational).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOptions {
    /// replaceExisting means that an existing object owned by the consumer will be replaced.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replace_existing: bool,
}

/// How conflicts on the consumer side are resolved (informational).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnConflictOptions {
    /// recreateWhenConsumerSideDeleted set to true (the default) means the provider will recreate
    /// the object in case the object is missing on the consumer cluster, but has been synchronized before.
    #[serde(default = "default_true")]
    #[schemars(extend("default" = true))]
    pub recreate_when_consumer_side_deleted: bool,
}

impl Default for OnConflictOptions {
    fn default() -> Self {
        OnConflictOptions {
            recreate_when_consumer_side_deleted: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Which updates on the consumer side are claimed (informational).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateOptions {
    /// fields are a list of JSON Paths describing which parts of an object the provider wants to control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// preserving is a list of JSON Paths describing which parts of an object the provider does not
    /// want to control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserving: Option<Vec<String>>,
    /// alwaysRecreate, when true, will delete the old object and create new ones instead of updating.
    #[serde(default, skip_serializing_if = "is_false")]
    pub always_recreate: bool,
    /// labels is a list of claimed label key wildcard patterns that are synchronized from the
    /// provider to the consumer cluster on objects owned by the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<Matcher>>,
    /// labelsOnConsumerOwnedObjects are claimed label key wildcard patterns on consumer-owned objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_on_consumer_owned_objects: Option<Vec<Matcher>>,
    /// annotations is a list of claimed annotation key wildcard patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Matcher>>,
    /// annotationsOnConsumerOwnedObjects are claimed annotation key wildcard patterns on
    /// consumer-owned objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations_on_consumer_owned_objects: Option<Vec<Matcher>>,
}

/// permissionClaim selects objects of a GVR that a service provider may
/// request and that a consumer may accept and allow the service provider access to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": "donate and adopt are mutually exclusive",
    "rule": "!(has(self.autoDonate) && self.autoDonate && has(self.autoAdopt) && self.autoAdopt)"
}]))]
pub struct PermissionClaim {
    /// group is the name of an API group.
    /// For core groups this is the empty string '""'.
    #[serde(default)]
    #[schemars(regex(pattern = GROUP_PATTERN), extend("default" = ""))]
    pub group: String,
    /// resource is the name of the resource.
    /// Note: it is worth noting that you can not ask for permissions for resource provided by a CRD
    /// not provided by an service binding export.
    #[schemars(regex(pattern = RESOURCE_PATTERN))]
    pub resource: String,
    /// version is the version of the claimed resource.
    #[schemars(length(min = 1))]
    pub version: String,
    /// selector selects which resources are being claimed.
    /// If unset, all resources across all namespaces are being claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub selector: Option<ResourceSelector>,
    /// required indicates whether the APIServiceBinding will work if this claim is not accepted.
    /// If a required claim is denied, the binding is aborted.
    #[serde(default)]
    #[schemars(with = "Option<bool>", transform = super::no_default)]
    pub required: bool,
    /// read claims read access to matching objects for the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub read: Option<ReadOptions>,
    /// create determines whether the konnector will sync matching objects from the
    /// provider cluster down to the consumer cluster (only for owner Provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<CreateOptions>,
    /// autoAdopt set to true means that objects created by the consumer are adopted by the provider.
    /// Mutually exclusive with autoDonate.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_adopt: bool,
    /// autoDonate set to true means that a newly created object by the provider is immediately
    /// owned by the consumer. Mutually exclusive with autoAdopt.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_donate: bool,
    /// onConflict determines how the conflicts between objects on the consumer cluster will be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub on_conflict: Option<OnConflictOptions>,
    /// update lists which updates to objects on the consumer cluster are claimed.
    /// By default, the whole object is synced, but metadata is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateOptions>,
}

impl PermissionClaim {
    /// The claim's owner; the reference treats an unset owner as `Provider`.
    pub fn owner(&self) -> Owner {
        self.selector
            .as_ref()
            .and_then(|s| s.owner)
            .unwrap_or(Owner::Provider)
    }
}

/// Whether the consumer accepted a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AcceptablePermissionClaimState {
    /// The claim is reconciled.
    Accepted,
    /// The claim is ignored.
    Rejected,
}

/// acceptablePermissionClaim is a permission claim that stores the users acceptance in the field
/// state. Only accepted permission claims are reconciled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptablePermissionClaim {
    /// The claim itself (inlined, as in the reference).
    #[serde(flatten)]
    pub claim: PermissionClaim,
    /// state indicates if the claim is accepted or rejected.
    pub state: AcceptablePermissionClaimState,
}
