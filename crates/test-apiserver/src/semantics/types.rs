//! Shape information shared by strategic merge patch and server-side apply: whether a list is
//! atomic, a set or a map keyed by some fields, and whether an object is a granular map.
//!
//! Built-in kinds get a small table that mirrors the `+listType`/`patchStrategy` tags of the real
//! Go structs; custom resources use their CRD schema
//! ([`crate::semantics::schema::StructuralSchema`] implements [`TypeInfo`]). `metadata` is always
//! an `ObjectMeta`, whatever the kind, so both go through [`object_meta_list_type`].

/// One step of a path from the object root: an object field (or map key), or "any list item".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seg<'a> {
    /// A field of an object, or a key of a map (`additionalProperties`).
    Field(&'a str),
    /// Any item of a list.
    Item,
}

/// How a list is merged and owned (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListType {
    /// Replaced as a whole and owned as one field (the default for every list).
    #[default]
    Atomic,
    /// A set of scalars; each value is owned separately (`v:` in FieldsV1).
    Set,
    /// A list of objects identified by these key fields (`k:` in FieldsV1).
    Map(Vec<String>),
}

/// How an object is merged and owned (`x-kubernetes-map-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MapType {
    /// Each field is owned separately (the default).
    #[default]
    Granular,
    /// Replaced as a whole and owned as one field.
    Atomic,
}

/// Answers shape questions about the field at a path (see [`Seg`]).
pub trait TypeInfo {
    /// The list type of the list at `path` (the path of the list field itself).
    fn list_type(&self, path: &[Seg<'_>]) -> ListType;
    /// The map type of the object at `path`.
    fn map_type(&self, path: &[Seg<'_>]) -> MapType {
        let _ = path;
        MapType::Granular
    }
    /// Whether the last [`Seg::Field`] of `path` is a declared property of its parent (a struct
    /// field), as opposed to a key of a map (`additionalProperties`, preserved unknown fields).
    /// Server-side apply owns map keys as nodes (`.: {}`) but struct fields only through their
    /// leaves, as structured-merge-diff does. Without a schema every field counts as declared.
    fn is_declared_field(&self, path: &[Seg<'_>]) -> bool {
        let _ = path;
        true
    }
}

/// Renders a path as `spec.items[].name`, the form used by the built-in tables.
pub fn path_string(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(f);
            }
            Seg::Item => out.push_str("[]"),
        }
    }
    out
}

/// List types inside the root `metadata` (an `ObjectMeta`) of every kind; `None` if `path` is not
/// below the root `metadata`.
pub fn object_meta_list_type(path: &[Seg<'_>]) -> Option<ListType> {
    match path {
        [Seg::Field("metadata"), rest @ ..] => Some(match rest {
            [Seg::Field("finalizers")] => ListType::Set,
            [Seg::Field("ownerReferences")] => ListType::Map(vec!["uid".to_owned()]),
            _ => ListType::Atomic,
        }),
        _ => None,
    }
}

/// Map types inside the root `metadata` of every kind: an owner reference is
/// `+structType=atomic`, so each `k:{"uid":…}` item is owned as a whole (no fields below it).
pub fn object_meta_map_type(path: &[Seg<'_>]) -> Option<MapType> {
    match path {
        [
            Seg::Field("metadata"),
            Seg::Field("ownerReferences"),
            Seg::Item,
        ] => Some(MapType::Atomic),
        [Seg::Field("metadata"), ..] => Some(MapType::Granular),
        _ => None,
    }
}

/// Every list is atomic, every object granular, except in `metadata`: used for unknown kinds.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultTypes;

impl TypeInfo for DefaultTypes {
    fn list_type(&self, path: &[Seg<'_>]) -> ListType {
        object_meta_list_type(path).unwrap_or_default()
    }

    fn map_type(&self, path: &[Seg<'_>]) -> MapType {
        object_meta_map_type(path).unwrap_or_default()
    }
}

/// The shape table of one built-in kind, mirroring the list tags of its Go struct.
#[derive(Debug, Clone, Default)]
pub struct BuiltinTypes {
    lists: Vec<(&'static str, ListType)>,
    /// Structs marked `+structType=atomic` (an `ObjectReference` is one).
    atomic_maps: Vec<&'static str>,
    /// Where the kind holds a `PodSpec` (`spec`, `template.spec`, ...), whose lists are in
    /// [`POD_SPEC_LISTS`].
    pod_spec: Option<&'static str>,
}

/// The atomic structs and maps of a `PodSpec` (paths below it): `nodeSelector` and the key
/// selectors of environment variables.
const POD_SPEC_ATOMIC_MAPS: &[&str] = &[
    "nodeSelector",
    "containers[].env[].valueFrom.fieldRef",
    "containers[].env[].valueFrom.resourceFieldRef",
    "containers[].env[].valueFrom.configMapKeyRef",
    "containers[].env[].valueFrom.secretKeyRef",
    "initContainers[].env[].valueFrom.fieldRef",
    "initContainers[].env[].valueFrom.resourceFieldRef",
    "initContainers[].env[].valueFrom.configMapKeyRef",
    "initContainers[].env[].valueFrom.secretKeyRef",
];

/// The associative lists of a `PodSpec` (paths below it), from the Go struct tags.
const POD_SPEC_LISTS: &[(&str, &[&str])] = &[
    ("containers", &["name"]),
    ("initContainers", &["name"]),
    ("ephemeralContainers", &["name"]),
    ("volumes", &["name"]),
    ("imagePullSecrets", &["name"]),
    ("hostAliases", &["ip"]),
    ("resourceClaims", &["name"]),
    ("schedulingGates", &["name"]),
    (
        "topologySpreadConstraints",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    ("containers[].ports", &["containerPort", "protocol"]),
    ("containers[].env", &["name"]),
    ("containers[].volumeMounts", &["mountPath"]),
    ("containers[].volumeDevices", &["devicePath"]),
    ("initContainers[].ports", &["containerPort", "protocol"]),
    ("initContainers[].env", &["name"]),
    ("initContainers[].volumeMounts", &["mountPath"]),
    ("initContainers[].volumeDevices", &["devicePath"]),
    ("ephemeralContainers[].env", &["name"]),
    ("ephemeralContainers[].volumeMounts", &["mountPath"]),
];

impl BuiltinTypes {
    /// The table for `(group, kind)`; kinds without special lists get an empty table (atomic
    /// lists, granular maps), which is also right for RBAC `rules`/`subjects` (`+listType=atomic`).
    pub fn for_kind(group: &str, kind: &str) -> Self {
        let name = || vec!["name".to_owned()];
        let type_key = || vec!["type".to_owned()];
        let lists = match (group, kind) {
            // ServiceAccount.secrets: patchStrategy=merge, patchMergeKey=name, listType=map.
            ("", "ServiceAccount") => vec![("secrets", ListType::Map(name()))],
            // ServiceSpec.ports: listType=map keyed by port and protocol.
            ("", "Service") => vec![(
                "spec.ports",
                ListType::Map(vec!["port".to_owned(), "protocol".to_owned()]),
            )],
            // NamespaceSpec.finalizers is `+listType=atomic` (no patch strategy): not listed.
            ("", "Namespace") => vec![("status.conditions", ListType::Map(type_key()))],
            // CRD spec.versions and status.storedVersions are atomic; conditions keyed by type.
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                vec![("status.conditions", ListType::Map(type_key()))]
            }
            _ => Vec::new(),
        };
        let atomic_maps = match (group, kind) {
            ("", "Event") => vec!["involvedObject", "related"],
            ("events.k8s.io", "Event") => vec!["regarding", "related"],
            // Selectors of Services and ReplicationControllers are `+mapType=atomic`.
            ("", "Service" | "ReplicationController") => vec!["spec.selector"],
            _ => Vec::new(),
        };
        let pod_spec = match (group, kind) {
            ("", "Pod") => Some("spec"),
            ("", "PodTemplate") => Some("template.spec"),
            ("", "ReplicationController") => Some("spec.template.spec"),
            _ => None,
        };
        Self {
            lists,
            atomic_maps,
            pod_spec,
        }
    }
}

impl TypeInfo for BuiltinTypes {
    fn list_type(&self, path: &[Seg<'_>]) -> ListType {
        if let Some(t) = object_meta_list_type(path) {
            return t;
        }
        let p = path_string(path);
        if let Some(rest) = self
            .pod_spec
            .and_then(|prefix| p.strip_prefix(prefix)?.strip_prefix('.'))
            && let Some((_, keys)) = POD_SPEC_LISTS.iter().find(|(k, _)| *k == rest)
        {
            return ListType::Map(keys.iter().map(|k| (*k).to_owned()).collect());
        }
        self.lists
            .iter()
            .find(|(k, _)| *k == p)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    }

    fn map_type(&self, path: &[Seg<'_>]) -> MapType {
        if let Some(t) = object_meta_map_type(path) {
            return t;
        }
        let p = path_string(path);
        let in_pod_spec = self
            .pod_spec
            .and_then(|prefix| p.strip_prefix(prefix)?.strip_prefix('.'))
            .is_some_and(|rest| POD_SPEC_ATOMIC_MAPS.contains(&rest));
        if in_pod_spec || self.atomic_maps.contains(&p.as_str()) {
            MapType::Atomic
        } else {
            MapType::Granular
        }
    }
}

/// How a field of a built-in kind's Go struct encodes when empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Empty {
    /// A map (`map[string]T`, `omitempty`): dropped when empty, its values never touched.
    Map,
    /// Kept whatever it holds: a field without `omitempty` (a zero `Time` is `null`).
    Keep,
    /// Left exactly as sent (`managedFields`, free-form JSON).
    Opaque,
    /// A pointer (`*bool`, `*int64`, `*Struct`): dropped only when `null` (nil).
    Pointer,
}

/// Fields of `ObjectMeta` (below the root `metadata`) that are not plain `omitempty` scalars or
/// slices; `*` matches any field, `[]` any list item.
const OBJECT_META: &[(&str, Empty)] = &[
    ("labels", Empty::Map),
    ("annotations", Empty::Map),
    ("managedFields", Empty::Opaque),
    ("creationTimestamp", Empty::Keep),
    ("deletionGracePeriodSeconds", Empty::Pointer),
    ("ownerReferences[].apiVersion", Empty::Keep),
    ("ownerReferences[].kind", Empty::Keep),
    ("ownerReferences[].name", Empty::Keep),
    ("ownerReferences[].uid", Empty::Keep),
    ("ownerReferences[].controller", Empty::Pointer),
    ("ownerReferences[].blockOwnerDeletion", Empty::Pointer),
];

/// The same for the rest of each built-in kind whose empty fields the server drops; `None` for a
/// kind without a table (only its `metadata` is normalised).
fn kind_fields(group: &str, kind: &str) -> Option<&'static [(&'static str, Empty)]> {
    Some(match (group, kind) {
        ("", "ConfigMap") => &[
            ("data", Empty::Map),
            ("binaryData", Empty::Map),
            ("immutable", Empty::Pointer),
        ],
        ("", "Secret") => &[
            ("data", Empty::Map),
            ("stringData", Empty::Map),
            ("immutable", Empty::Pointer),
        ],
        ("", "ServiceAccount") => &[("automountServiceAccountToken", Empty::Pointer)],
        ("", "Namespace") => &[
            ("status.conditions[].type", Empty::Keep),
            ("status.conditions[].status", Empty::Keep),
            ("status.conditions[].lastTransitionTime", Empty::Keep),
        ],
        ("", "Event") => &[
            ("firstTimestamp", Empty::Keep),
            ("lastTimestamp", Empty::Keep),
            ("eventTime", Empty::Keep),
            ("reportingComponent", Empty::Keep),
            ("reportingInstance", Empty::Keep),
            ("series", Empty::Pointer),
            ("related", Empty::Pointer),
        ],
        // Every LeaseSpec field is a pointer.
        ("coordination.k8s.io", "Lease") => &[("spec.*", Empty::Pointer)],
        ("rbac.authorization.k8s.io", "Role") => {
            &[("rules", Empty::Keep), ("rules[].verbs", Empty::Keep)]
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => &[
            ("rules", Empty::Keep),
            ("rules[].verbs", Empty::Keep),
            (
                "aggregationRule.clusterRoleSelectors[].matchLabels",
                Empty::Map,
            ),
            (
                "aggregationRule.clusterRoleSelectors[].matchExpressions[].key",
                Empty::Keep,
            ),
            (
                "aggregationRule.clusterRoleSelectors[].matchExpressions[].operator",
                Empty::Keep,
            ),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => &[
            ("subjects[].kind", Empty::Keep),
            ("subjects[].name", Empty::Keep),
            ("roleRef.*", Empty::Keep),
        ],
        _ => return None,
    })
}

fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('.'), path.split('.'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) => {
                // `*` stands for one field, never for a list's items.
                let wildcard = a == "*" && !b.ends_with("[]");
                if a != b && !wildcard {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

fn rule(table: &[(&str, Empty)], path: &str) -> Option<Empty> {
    table
        .iter()
        .find(|(p, _)| path_matches(p, path))
        .map(|(_, e)| *e)
}

/// Whether Go's `omitempty` drops `v`: `null`, `""`, `0`, `false` or an empty list. Empty
/// objects are structs unless the table says map, and Go never omits a struct.
fn omitted_scalar_or_list(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

fn omit_walk(table: &[(&str, Empty)], path: &str, v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            m.retain(|k, child| {
                // The root's type identity and `metadata` (an `ObjectMeta`, done on its own).
                if path.is_empty() && matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                    return true;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match rule(table, &p) {
                    Some(Empty::Opaque) => true,
                    Some(Empty::Pointer) => {
                        omit_walk(table, &p, child);
                        !child.is_null()
                    }
                    Some(Empty::Map) => child.as_object().is_some_and(|o| !o.is_empty()),
                    Some(Empty::Keep) => {
                        omit_walk(table, &p, child);
                        true
                    }
                    None => {
                        omit_walk(table, &p, child);
                        !omitted_scalar_or_list(child)
                    }
                }
            });
        }
        Value::Array(items) => {
            let p = format!("{path}[]");
            for it in items {
                omit_walk(table, &p, it);
            }
        }
        _ => {}
    }
}

/// Drops the fields of a built-in object that its Go struct does not encode when empty
/// (`omitempty` maps, slices, strings, numbers and bools), as the real server does by decoding
/// every request into the typed object: `data: {}`, `labels: {}`, `finalizers: []` or
/// `generateName: ""` disappear, and so they never show up in `managedFields` either. Structs
/// (`spec: {}`), pointers (`immutable: false`) and fields without `omitempty` are kept, as are
/// the values inside maps. Kinds without a table only get their `metadata` normalised.
pub fn omit_empty(group: &str, kind: &str, obj: &mut serde_json::Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if let Some(meta) = root.get_mut("metadata") {
        omit_walk(OBJECT_META, "", meta);
    }
    if let Some(table) = kind_fields(group, kind) {
        omit_walk(table, "", obj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_meta_lists_are_typed_for_every_kind() {
        let t = BuiltinTypes::for_kind("", "ConfigMap");
        assert_eq!(
            t.list_type(&[Seg::Field("metadata"), Seg::Field("finalizers")]),
            ListType::Set
        );
        assert_eq!(
            t.list_type(&[Seg::Field("metadata"), Seg::Field("ownerReferences")]),
            ListType::Map(vec!["uid".into()])
        );
        assert_eq!(t.list_type(&[Seg::Field("rules")]), ListType::Atomic);
        let ns = BuiltinTypes::for_kind("", "Namespace");
        assert_eq!(
            ns.list_type(&[Seg::Field("spec"), Seg::Field("finalizers")]),
            ListType::Atomic
        );
        assert_eq!(
            ns.list_type(&[Seg::Field("status"), Seg::Field("conditions")]),
            ListType::Map(vec!["type".into()])
        );
    }

    #[test]
    fn empty_omitempty_fields_of_built_in_kinds_disappear() {
        use serde_json::json;
        let mut cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "generateName": "", "labels": {}, "annotations": {"x": ""},
                "finalizers": [], "ownerReferences": [{"apiVersion": "v1", "kind": "Secret",
                "name": "o", "uid": "u", "controller": false}]},
            "data": {}, "binaryData": null, "immutable": false,
        });
        omit_empty("", "ConfigMap", &mut cm);
        assert_eq!(
            cm,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "annotations": {"x": ""}, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Secret", "name": "o", "uid": "u",
                    "controller": false}]},
                "immutable": false,
            })
        );
        // Map values are kept even when empty.
        let mut cm = json!({"metadata": {"name": "a"}, "data": {"k": ""}});
        omit_empty("", "ConfigMap", &mut cm);
        assert_eq!(cm["data"], json!({"k": ""}));
    }

    #[test]
    fn structs_pointers_and_unknown_kinds_are_kept() {
        use serde_json::json;
        let mut ns = json!({"metadata": {"name": "n"}, "spec": {"finalizers": []}, "status": {}});
        omit_empty("", "Namespace", &mut ns);
        assert_eq!(
            ns,
            json!({"metadata": {"name": "n"}, "spec": {}, "status": {}})
        );
        let mut lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "",
            "leaseDurationSeconds": 0, "renewTime": null}});
        omit_empty("coordination.k8s.io", "Lease", &mut lease);
        assert_eq!(
            lease["spec"],
            json!({"holderIdentity": "", "leaseDurationSeconds": 0})
        );
        let mut other = json!({"metadata": {"labels": {}}, "spec": {"x": "", "y": []}});
        omit_empty("example.com", "Widget", &mut other);
        assert_eq!(other, json!({"metadata": {}, "spec": {"x": "", "y": []}}));
    }

    #[test]
    fn owner_references_are_atomic_items() {
        let path = [
            Seg::Field("metadata"),
            Seg::Field("ownerReferences"),
            Seg::Item,
        ];
        assert_eq!(
            BuiltinTypes::for_kind("", "ConfigMap").map_type(&path),
            MapType::Atomic
        );
        assert_eq!(DefaultTypes.map_type(&path), MapType::Atomic);
        assert!(path_matches("roleRef.*", "roleRef.kind"));
        assert!(!path_matches("spec.*", "spec.items[]"));
    }

    #[test]
    fn service_account_secrets_are_keyed_by_name() {
        let t = BuiltinTypes::for_kind("", "ServiceAccount");
        assert_eq!(
            t.list_type(&[Seg::Field("secrets")]),
            ListType::Map(vec!["name".into()])
        );
        assert_eq!(
            path_string(&[Seg::Field("a"), Seg::Item, Seg::Field("b")]),
            "a[].b"
        );
    }
}
