//! The resource types the server serves: the built-in kinds controllers use, plus whatever
//! CustomResourceDefinitions are created at runtime.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::semantics::schema::StructuralSchema;

/// Verbs of a normal resource, as advertised in discovery.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served version of a resource with its (optional) CRD schema.
#[derive(Debug, Clone)]
pub struct VersionDef {
    /// Version name, e.g. `v1`.
    pub name: String,
    /// The parsed structural schema (custom resources only).
    pub structural: Option<Arc<StructuralSchema>>,
    /// The version's `additionalPrinterColumns` (custom resources only).
    pub printer_columns: Option<Value>,
    /// Whether this version is the storage version.
    pub storage: bool,
}

/// A resource type: everything the server needs to route, validate and describe it.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// API group (`""` for core).
    pub group: String,
    /// Served versions; the first is the preferred one.
    pub versions: Vec<VersionDef>,
    /// Plural resource name, e.g. `secrets`.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// List kind, e.g. `SecretList`.
    pub list_kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Whether the `status` subresource exists (status is then ignored on the main endpoint).
    pub has_status: bool,
    /// Whether `metadata.generation` is maintained (CRDs and custom resources).
    pub tracks_generation: bool,
    /// Whether the resource comes from a CRD.
    pub custom: bool,
    /// A review resource: only `create`, answered from the request and never stored.
    pub review: bool,
    /// The key of the resource whose objects this one serves converted (`events.k8s.io` Events
    /// are core Events).
    pub alias_of: Option<&'static str>,
    /// For custom resources served from a CRD: the storage this definition is (its identity and
    /// lifetime; see [`crate::crd_storage`]).
    pub storage: Option<Arc<CrdStorage>>,
}

/// A shared handle to a resource definition.
pub type ResourceRef = Arc<ResourceDef>;

impl ResourceDef {
    /// `plural.group`, the key under which objects and events are stored.
    pub fn key(&self) -> String {
        resource_key(&self.plural, &self.group)
    }

    /// `group/version` or `version` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The served version named `version`.
    pub fn version(&self, version: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.name == version)
    }

    /// The storage version (the preferred one if none is marked).
    pub fn storage_version(&self) -> &str {
        self.versions
            .iter()
            .find(|v| v.storage)
            .or_else(|| self.versions.first())
            .map(|v| v.name.as_str())
            .unwrap_or("v1")
    }

    /// A stored object as this storage reads it back, like the real server's decoding of an
    /// object from etcd: pruned and defaulted by the schema of the version it is stored at (the
    /// storage version's if that is not served). `None` when that changes nothing (always for
    /// built-in kinds and objects written through a storage with the same schema).
    pub fn read(&self, obj: &Value) -> Option<Value> {
        if !self.custom {
            return None;
        }
        let version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|av| av.rsplit('/').next())
            .unwrap_or_default();
        let schema = self
            .version(version)
            .or_else(|| self.version(self.storage_version()))
            .and_then(|v| v.structural.as_deref())?;
        if !schema.changes_on_read(obj) {
            return None;
        }
        let mut out = obj.clone();
        schema.prune(&mut out);
        schema.apply_defaults(&mut out);
        Some(out)
    }
}

/// The identity and lifetime of one custom resource storage (see [`crate::crd_storage`]). It is
/// defined here, next to the definition that holds it, so that resources need nothing from the
/// storage decisions built on them.
#[derive(Debug)]
pub struct CrdStorage {
    /// The uid of the CRD it serves.
    pub crd_uid: String,
    /// The resourceVersion of the CRD it was built from.
    pub crd_rv: u64,
    /// `spec` and `status.acceptedNames` of that CRD: a change of either replaces the storage.
    pub source: Value,
    /// Set to `true` when the storage is torn down.
    destroyed: watch::Sender<bool>,
}

impl CrdStorage {
    /// A live storage built from the stored CRD `crd`.
    pub fn new(crd: &Value) -> Self {
        let (destroyed, _) = watch::channel(false);
        Self {
            crd_uid: crd
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            crd_rv: crd
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|rv| rv.parse().ok())
                .unwrap_or_default(),
            source: Self::source(crd),
            destroyed,
        }
    }

    /// What a change of replaces a CRD's storage: its `spec` and `status.acceptedNames`.
    pub fn source(crd: &Value) -> Value {
        json!({
            "spec": crd.get("spec").cloned().unwrap_or(Value::Null),
            "acceptedNames": crd.pointer("/status/acceptedNames").cloned().unwrap_or(Value::Null),
        })
    }

    /// Tears the storage down: every watch opened on it ends.
    pub fn destroy(&self) {
        self.destroyed.send_replace(true);
    }

    /// Resolves when the storage is torn down (at once if it already is).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.destroyed.subscribe()
    }
}

/// `plural.group` (or `plural` for the core group).
pub fn resource_key(plural: &str, group: &str) -> String {
    crate::error::qualified(plural, group)
}

fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    has_status: bool,
) -> ResourceDef {
    ResourceDef {
        group: group.to_owned(),
        versions: vec![VersionDef {
            name: version.to_owned(),
            structural: None,
            printer_columns: None,
            storage: true,
        }],
        plural: plural.to_owned(),
        singular: kind.to_lowercase(),
        kind: kind.to_owned(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        has_status,
        tracks_generation: false,
        custom: false,
        review: false,
        alias_of: None,
        storage: None,
    }
}

/// The built-in resources served from the start.
pub fn builtins() -> Vec<ResourceDef> {
    let rbac = "rbac.authorization.k8s.io";
    let mut crd = builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
    );
    crd.categories = vec!["api-extensions".to_owned()];
    crd.tracks_generation = true;
    let mut events_v1 = builtin(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
    );
    events_v1.alias_of = Some("events");
    let mut ssar = builtin(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
        &[],
        false,
    );
    ssar.review = true;
    vec![
        ssar,
        builtin("", "v1", "namespaces", "Namespace", false, &["ns"], true),
        builtin("", "v1", "secrets", "Secret", true, &[], false),
        builtin("", "v1", "configmaps", "ConfigMap", true, &["cm"], false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], false),
        events_v1,
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
        ),
        crd,
        builtin(rbac, "v1", "roles", "Role", true, &[], false),
        builtin(rbac, "v1", "clusterroles", "ClusterRole", false, &[], false),
        builtin(rbac, "v1", "rolebindings", "RoleBinding", true, &[], false),
        builtin(
            rbac,
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
        ),
    ]
}

/// Builds the resource definition a CRD object describes, or explains why it cannot be served.
pub fn from_crd(crd: &Value) -> Result<ResourceDef, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let plural = s(names.get("plural")).ok_or("spec.names.plural: Required value")?;
    let kind = s(names.get("kind")).ok_or("spec.names.kind: Required value")?;
    let singular = s(names.get("singular")).unwrap_or_else(|| kind.to_lowercase());
    let list_kind = s(names.get("listKind")).unwrap_or_else(|| format!("{kind}List"));
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strs(names.get("shortNames"));
    let categories = strs(names.get("categories"));
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value".to_owned()),
    };
    let mut versions = Vec::new();
    let mut has_status = false;
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?
    {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let name = s(v.get("name")).ok_or("spec.versions[].name: Required value")?;
        if v.pointer("/subresources/status").is_some() {
            has_status = true;
        }
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let structural = match &schema {
            Some(s) => Some(Arc::new(StructuralSchema::from_value(s).map_err(|e| {
                format!("spec.versions[{name}].schema.openAPIV3Schema: Invalid value: {e}")
            })?)),
            None => None,
        };
        versions.push(VersionDef {
            printer_columns: v.get("additionalPrinterColumns").cloned(),
            name,
            structural,
            storage: v.get("storage").and_then(Value::as_bool) == Some(true),
        });
    }
    if versions.is_empty() {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .to_owned(),
        );
    }
    // Discovery prefers the highest version by Kubernetes version ordering; the CRD's own order is
    // close enough and is what kubectl shows for single-version CRDs.
    Ok(ResourceDef {
        group: group.to_owned(),
        versions,
        plural,
        singular,
        kind,
        list_kind,
        namespaced,
        short_names,
        categories,
        has_status,
        tracks_generation: true,
        custom: true,
        review: false,
        alias_of: None,
        storage: None,
    })
}
