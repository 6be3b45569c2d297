//! Adapter between the request handlers and [`crate::semantics`]: picks the shape information
//! (built-in table or CRD schema) for a resource and converts results into API errors.

use serde_json::Value;

use crate::error::Cause;
use crate::resources::ResourceDef;

/// Validates, prunes and defaults a custom resource against its version's `openAPIV3Schema`;
/// returns the field errors (empty when valid).
pub fn process_custom_resource(schema: &Value, obj: &mut Value) -> Vec<Cause> {
    let _ = (schema, obj);
    Vec::new()
}

/// Records the fields a non-apply write (`Update` operation) changed as owned by `manager`.
pub fn track_update(
    def: &ResourceDef,
    old: Option<&Value>,
    obj: &mut Value,
    manager: &str,
    subresource: &str,
) {
    let _ = (def, old, obj, manager, subresource);
}

/// Server-side apply of `applied` by `manager` onto `live`; `Err` lists `(manager, field)`
/// conflicts.
pub fn apply(
    def: &ResourceDef,
    version: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    status: bool,
) -> Result<Value, Vec<(String, String)>> {
    let _ = (def, version, manager, force, status);
    Ok(match live {
        Some(l) => crate::semantics::patch::merge_patch(l, applied),
        None => applied.clone(),
    })
}
