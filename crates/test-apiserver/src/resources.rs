//! The resource types the server serves: the built-in kinds controllers use, plus whatever
//! CustomResourceDefinitions are created at runtime.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::semantics::schema::StructuralSchema;

/// The key ClusterRoles are stored under (their changes wake the aggregation controller).
pub const CLUSTERROLES: &str = "clusterroles.rbac.authorization.k8s.io";

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
    /// Fields a field selector may use besides `metadata.name`/`metadata.namespace` (a CRD
    /// version's `selectableFields`, as dotted paths such as `spec.color`).
    pub selectable_fields: Vec<String>,
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

/// Verbs of a custom resource in discovery, in the order the apiextensions-apiserver lists them.
pub const CUSTOM_RESOURCE_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];

/// The `storageVersionHash` of discovery: base64 of the first 8 bytes of the SHA-256 of
/// `<group>/<version>/<kind>` of the storage version (clients compare it to notice a change of
/// storage version, e.g. for storage migration).
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{group}/{version}/{kind}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(&digest.as_ref()[..8])
}

/// Orders version names as Kubernetes does (`version.CompareKubeAwareVersionStrings`): those
/// of the form `v<major>[alpha|beta<minor>]` first, GA before beta before alpha, higher numbers
/// first; any other name after them, alphabetically.
pub fn kube_version_order(a: &str, b: &str) -> std::cmp::Ordering {
    /// (major, stability: 2 GA / 1 beta / 0 alpha, minor) of a Kubernetes-like version.
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        if major == 0 {
            return None;
        }
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (stability, minor) = if let Some(m) = tail.strip_prefix("beta") {
            (1, m)
        } else {
            (0, tail.strip_prefix("alpha")?)
        };
        if minor.is_empty() || !minor.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some((major, stability, minor.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, sa, na)), Some((mb, sb, nb))) => sb.cmp(&sa).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
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
            selectable_fields: Vec::new(),
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
    // What `kubectl auth whoami` asks.
    let mut ssr = builtin(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
        &[],
        false,
    );
    ssr.review = true;
    let mut all = vec![
        ssar,
        ssr,
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
    ];
    all.extend(core_generic());
    all
}

/// Core kinds served as plain stored objects: nothing runs for them (no scheduler, kubelet,
/// IP allocation or endpoints controller), as on an API server alone, but they exist, so that
/// discovery lists what a real server lists and clients find what they look for. Pod specs are
/// defaulted (see [`crate::builtin::default_pod_spec`]); other kinds are not validated.
fn core_generic() -> Vec<ResourceDef> {
    // (plural, kind, namespaced, short names, status subresource, in category `all`,
    // maintains `metadata.generation`)
    type Generic = (
        &'static str,
        &'static str,
        bool,
        &'static [&'static str],
        bool,
        bool,
        bool,
    );
    const KINDS: &[Generic] = &[
        ("endpoints", "Endpoints", true, &["ep"], false, false, false),
        (
            "limitranges",
            "LimitRange",
            true,
            &["limits"],
            false,
            false,
            false,
        ),
        ("nodes", "Node", false, &["no"], true, false, false),
        (
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            true,
            false,
            false,
        ),
        (
            "persistentvolumes",
            "PersistentVolume",
            false,
            &["pv"],
            true,
            false,
            false,
        ),
        ("pods", "Pod", true, &["po"], true, true, true),
        ("podtemplates", "PodTemplate", true, &[], false, false, true),
        (
            "replicationcontrollers",
            "ReplicationController",
            true,
            &["rc"],
            true,
            true,
            true,
        ),
        (
            "resourcequotas",
            "ResourceQuota",
            true,
            &["quota"],
            true,
            false,
            false,
        ),
        ("services", "Service", true, &["svc"], true, true, false),
    ];
    KINDS
        .iter()
        .map(
            |&(plural, kind, namespaced, short, status, all, generation)| {
                let mut d = builtin("", "v1", plural, kind, namespaced, short, status);
                if all {
                    d.categories = vec!["all".to_owned()];
                }
                d.tracks_generation = generation;
                d
            },
        )
        .collect()
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
        let selectable_fields = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_owned())
                    .collect()
            })
            .unwrap_or_default();
        versions.push(VersionDef {
            selectable_fields,
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
    // Discovery lists (and prefers) versions in Kubernetes version order, whatever the CRD's.
    versions.sort_by(|a, b| kube_version_order(&a.name, &b.name));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_version_hash_matches_the_real_server() {
        assert_eq!(
            storage_version_hash("coordination.k8s.io", "v1", "Lease"),
            "gqkMMb/YqFM="
        );
        assert_eq!(
            storage_version_hash("conformance-97.example.com", "v1", "Widget"),
            "cwEznLWlc7E="
        );
    }

    #[test]
    fn versions_sort_ga_then_beta_then_alpha() {
        let mut v = vec![
            "v1beta1",
            "foo",
            "v2alpha1",
            "v1",
            "v11alpha2",
            "v2",
            "v10beta3",
            "v1alpha1",
            "bar",
        ];
        v.sort_by(|a, b| kube_version_order(a, b));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v10beta3",
                "v1beta1",
                "v11alpha2",
                "v2alpha1",
                "v1alpha1",
                "bar",
                "foo"
            ]
        );
    }
}
