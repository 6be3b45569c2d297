//! Types of `klutch.anynines.com/v1alpha1`, wire-compatible with the reference CRDs.

mod app_cluster_binding;
mod binding;
mod claims;
mod cluster_binding;
mod export;
mod export_request;
mod namespace;
mod refs;

pub(crate) use app_cluster_binding::CONTAINER_OVERRIDES_SCHEMA;
pub use app_cluster_binding::*;
pub use binding::*;
pub use claims::{
    AcceptablePermissionClaim, AcceptablePermissionClaimState, CreateOptions, GroupResource,
    Matcher, OnConflictOptions, Owner, PermissionClaim, ReadOptions, ResourceSelector,
    UpdateOptions,
};
pub use cluster_binding::*;
pub use export::*;
pub use export_request::*;
pub use namespace::*;
pub use refs::*;

/// Drops the `default` that schemars derives from `#[serde(default)]` where the reference CRD has
/// none: the Rust default only makes deserialisation lenient and must not become an API default.
pub(crate) fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}
