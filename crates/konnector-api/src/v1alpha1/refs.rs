//! Secret references shared by several kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in any namespace (reference `ClusterSecretKeyRef`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct ClusterSecretKeyRef {
    /// Name of the referent.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the referent.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// The key of the secret to select from.  Must be "kubeconfig".
    #[schemars(extend("enum" = ["kubeconfig"]))]
    pub key: String,
}

impl ClusterSecretKeyRef {
    /// `<namespace>/<name>`, the index key the reference uses to find bindings of a Secret.
    pub fn namespaced_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A key of a Secret in the object's own namespace (reference `LocalSecretKeyRef`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct LocalSecretKeyRef {
    /// Name of the referent.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key of the secret to select from.  Must be "kubeconfig".
    #[schemars(extend("enum" = ["kubeconfig"]))]
    pub key: String,
}
