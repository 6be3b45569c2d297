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

/// Every list is atomic, every object granular, except in `metadata`: used for unknown kinds.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultTypes;

impl TypeInfo for DefaultTypes {
    fn list_type(&self, path: &[Seg<'_>]) -> ListType {
        object_meta_list_type(path).unwrap_or_default()
    }
}

/// The shape table of one built-in kind, mirroring the list tags of its Go struct.
#[derive(Debug, Clone, Default)]
pub struct BuiltinTypes {
    lists: Vec<(&'static str, ListType)>,
}

impl BuiltinTypes {
    /// The table for `(group, kind)`; kinds without special lists get an empty table (atomic
    /// lists, granular maps), which is also right for RBAC `rules`/`subjects` (`+listType=atomic`).
    pub fn for_kind(group: &str, kind: &str) -> Self {
        let name = || vec!["name".to_owned()];
        let type_key = || vec!["type".to_owned()];
        let lists = match (group, kind) {
            // ServiceAccount.secrets: patchStrategy=merge, patchMergeKey=name, listType=map.
            ("", "ServiceAccount") => vec![("secrets", ListType::Map(name()))],
            // NamespaceSpec.finalizers is `+listType=atomic` (no patch strategy): not listed.
            ("", "Namespace") => vec![("status.conditions", ListType::Map(type_key()))],
            // CRD spec.versions and status.storedVersions are atomic; conditions keyed by type.
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                vec![("status.conditions", ListType::Map(type_key()))]
            }
            _ => Vec::new(),
        };
        Self { lists }
    }
}

impl TypeInfo for BuiltinTypes {
    fn list_type(&self, path: &[Seg<'_>]) -> ListType {
        if let Some(t) = object_meta_list_type(path) {
            return t;
        }
        let p = path_string(path);
        self.lists
            .iter()
            .find(|(k, _)| *k == p)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
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
