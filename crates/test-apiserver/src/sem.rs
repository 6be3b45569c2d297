//! Adapter between the request handlers and [`crate::semantics`]: picks the shape information
//! (built-in table or CRD schema) for a resource and converts results into API errors.

use serde_json::Value;

use crate::error::{ApiError, Cause};
use crate::resources::ResourceDef;
use crate::semantics::schema::StructuralSchema;
use crate::semantics::ssa::{self, ApplyError, Manager};
use crate::semantics::types::{BuiltinTypes, DefaultTypes, TypeInfo};

/// Prunes, defaults and validates a custom resource against its version's structural schema
/// and validation rules (`old`: the object an update replaces); returns the field errors (empty
/// when valid).
pub fn process_custom_resource(
    schema: &StructuralSchema,
    obj: &mut Value,
    old: Option<&Value>,
) -> Vec<Cause> {
    schema
        .admit_update(obj, old)
        .into_iter()
        .map(|e| Cause {
            reason: e.reason().to_owned(),
            message: e.body(),
            field: e.path.clone(),
        })
        .collect()
}

/// The list/map types of a resource at `version`: its CRD schema or the built-in table.
fn with_types<T>(def: &ResourceDef, version: &str, f: impl FnOnce(&dyn TypeInfo) -> T) -> T {
    if def.custom {
        match def.version(version).and_then(|v| v.structural.as_deref()) {
            Some(schema) => f(schema),
            None => f(&DefaultTypes),
        }
    } else {
        f(&BuiltinTypes::for_kind(&def.group, &def.kind))
    }
}

fn version_of(obj: &Value, def: &ResourceDef) -> String {
    let av = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    av.rsplit('/')
        .next()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| def.storage_version())
        .to_owned()
}

/// Records the fields a non-apply write (`Update` operation) changed as owned by `manager`.
pub fn track_update(
    def: &ResourceDef,
    old: Option<&Value>,
    obj: &mut Value,
    manager: &str,
    subresource: &str,
) {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let time = crate::clock::now();
    let mgr = Manager {
        name: manager,
        api_version: &api_version,
        subresource: (!subresource.is_empty()).then_some(subresource),
        status_subresource: def.has_status,
        time: &time,
    };
    // The real field manager (`skipNonAppliedManager`) does not start tracking on an update
    // of an existing object that has no managed fields, unless the client sends some.
    if let Some(existing) = old
        && ssa::managed_fields(existing).is_empty()
        && ssa::managed_fields(obj).is_empty()
    {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        return;
    }
    let version = version_of(obj, def);
    // A create owns what it changed from the zero value of the kind's type.
    let zero = old
        .is_none()
        .then(|| crate::builtin::zero_object(&def.group, &def.kind))
        .flatten();
    let old = old.or(zero.as_ref());
    let updated = with_types(def, &version, |types| {
        ssa::record_update(old, obj, &mgr, types)
    });
    *obj = updated;
}

/// Server-side apply of `applied` by `manager` onto `live` (`None`: the object is created).
pub fn apply(
    def: &ResourceDef,
    version: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: &str,
) -> Result<Value, ApiError> {
    let api_version = def.api_version(version);
    let time = crate::clock::now();
    let mgr = Manager {
        name: manager,
        api_version: &api_version,
        subresource: (!subresource.is_empty()).then_some(subresource),
        status_subresource: def.has_status,
        time: &time,
    };
    with_types(def, version, |types| {
        ssa::apply(live, applied, &mgr, force, types)
    })
    .map_err(|e| match e {
        ApplyError::Conflicts(c) => {
            // The real conflict error names no object: its details carry only the causes.
            let mut err = ApiError::new(409, "Conflict", c.to_string());
            err.details.causes = c
                .causes()
                .into_iter()
                .map(|(reason, message, field)| Cause {
                    reason,
                    message,
                    field,
                })
                .collect();
            err
        }
        ApplyError::Invalid(m) => ApiError::bad_request(m),
    })
}

/// Collects the dotted paths present in `original` but missing from `pruned` (what pruning
/// dropped), as strict field validation reports them.
pub fn removed_fields(original: &Value, pruned: &Value, prefix: &str, out: &mut Vec<String>) {
    match (original, pruned) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, v) in o {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match p.get(k) {
                    None => out.push(path),
                    Some(pv) => removed_fields(v, pv, &path, out),
                }
            }
        }
        (Value::Array(o), Value::Array(p)) => {
            for (i, (v, pv)) in o.iter().zip(p).enumerate() {
                removed_fields(v, pv, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}
