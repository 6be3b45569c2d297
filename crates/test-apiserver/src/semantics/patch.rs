//! The three patch formats of `PATCH` requests (server-side apply lives in
//! [`crate::semantics::ssa`]).
//!
//! Public API:
//! - [`merge_patch`]`(&Value, &Value) -> Value`: JSON merge patch (RFC 7386,
//!   `application/merge-patch+json`).
//! - [`json_patch`]`(&Value, &Value) -> Result<Value, PatchError>`: JSON patch (RFC 6902,
//!   `application/json-patch+json`).
//! - [`strategic_merge_patch`]`(&Value, &Value, &dyn TypeInfo) -> Result<Value, PatchError>`:
//!   `application/strategic-merge-patch+json`, with list strategies taken from
//!   [`TypeInfo::list_type`] (`map` = `patchMergeKey` = first key, `set` = merged primitive list,
//!   `atomic` = replace) and the `$patch`, `$retainKeys`, `$deleteFromPrimitiveList/…` and
//!   `$setElementOrder/…` directives.
//! - [`strategic_merge_supported`]`(is_custom_resource: bool) -> bool` and
//!   [`UNSUPPORTED_PATCH_MESSAGE`]: custom resources answer a strategic merge patch with
//!   `415 UnsupportedMediaType`, as the real server does.
//!
//! [`PatchError::status_code`] says which HTTP code the real server uses for each failure
//! (400 for an undecodable patch, 422 for one that does not apply).

use crate::semantics::types::{ListType, Seg, TypeInfo};
use serde_json::{Map, Value};

/// A patch that could not be decoded or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed (the real server answers `400 BadRequest`).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well-formed but does not apply to the object (`422 Unprocessable Entity`).
    #[error("{0}")]
    NotApplicable(String),
}

impl PatchError {
    /// HTTP status code the real API server returns for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::NotApplicable(_) => 422,
        }
    }
}

/// Message of the `415 UnsupportedMediaType` answer to a strategic merge patch on a custom
/// resource.
pub const UNSUPPORTED_PATCH_MESSAGE: &str = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// Whether `application/strategic-merge-patch+json` is accepted: only for built-in kinds (custom
/// resources have no Go struct with patch tags, so the real server refuses with 415).
pub fn strategic_merge_supported(is_custom_resource: bool) -> bool {
    !is_custom_resource
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else (arrays
/// included) replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// JSON patch

fn parse_pointer(ptr: &str) -> Result<Vec<String>, PatchError> {
    if ptr.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = ptr.strip_prefix('/') else {
        return Err(PatchError::NotApplicable(format!(
            "invalid JSON pointer: {ptr:?} does not start with '/'"
        )));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(tok: &str, len: usize, allow_end: bool) -> Result<usize, PatchError> {
    if allow_end && tok == "-" {
        return Ok(len);
    }
    let valid = !tok.is_empty()
        && tok.bytes().all(|b| b.is_ascii_digit())
        && (tok == "0" || !tok.starts_with('0'));
    let idx = if valid {
        tok.parse::<usize>().ok()
    } else {
        None
    };
    match idx {
        Some(i) if i < len || (allow_end && i == len) => Ok(i),
        _ => Err(PatchError::NotApplicable(format!(
            "Unable to access invalid index: {tok}: invalid index referenced"
        ))),
    }
}

fn get_path<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(array_index(t, a.len(), false).ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_parent_mut<'a>(
    doc: &'a mut Value,
    toks: &[String],
    op: &str,
    ptr: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in toks {
        let next = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => {
                let len = a.len();
                let i = array_index(t, len, false)?;
                a.get_mut(i)
            }
            _ => None,
        };
        cur = next.ok_or_else(|| {
            PatchError::NotApplicable(format!(
                "{op} operation does not apply: doc is missing path: \"{ptr}\": missing value"
            ))
        })?;
    }
    Ok(cur)
}

fn op_add(doc: &mut Value, ptr: &str, value: Value) -> Result<(), PatchError> {
    let toks = parse_pointer(ptr)?;
    let Some((last, parent)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_parent_mut(doc, parent, "add", ptr)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError::NotApplicable(format!(
            "add operation does not apply: doc is missing path: \"{ptr}\": missing value"
        ))),
    }
}

fn op_remove(doc: &mut Value, ptr: &str, op: &str) -> Result<Value, PatchError> {
    let toks = parse_pointer(ptr)?;
    let Some((last, parent)) = toks.split_last() else {
        return Ok(std::mem::take(doc));
    };
    let missing = || {
        PatchError::NotApplicable(format!(
            "{op} operation does not apply: doc is missing key: {ptr}: missing value"
        ))
    };
    match get_parent_mut(doc, parent, op, ptr)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

fn str_field<'a>(
    op: &'a Map<String, Value>,
    name: &str,
    opname: &str,
) -> Result<&'a str, PatchError> {
    op.get(name).and_then(Value::as_str).ok_or_else(|| {
        PatchError::NotApplicable(format!("{opname} operation missing {name} field"))
    })
}

/// RFC 6902 JSON patch: `add`, `remove`, `replace`, `move`, `copy`, `test`, with JSON pointer
/// escapes (`~0`, `~1`) and `-` for appending to an array. Operations apply in order and the
/// whole patch fails if one does.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = ops else {
        return Err(PatchError::Malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".to_owned(),
        ));
    };
    let mut doc = target.clone();
    for op in ops {
        let Value::Object(op) = op else {
            return Err(PatchError::Malformed(
                "json: cannot unmarshal into Go value of type jsonpatch.Operation".to_owned(),
            ));
        };
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                PatchError::NotApplicable(format!("{kind} operation missing value field"))
            })
        };
        match kind {
            "add" => {
                let path = str_field(op, "path", kind)?;
                op_add(&mut doc, path, value()?)?;
            }
            "remove" => {
                let path = str_field(op, "path", kind)?;
                op_remove(&mut doc, path, "remove")?;
            }
            "replace" => {
                let path = str_field(op, "path", kind)?;
                let v = value()?;
                op_remove(&mut doc, path, "replace")?;
                op_add(&mut doc, path, v)?;
            }
            "move" => {
                let from = str_field(op, "from", kind)?;
                let path = str_field(op, "path", kind)?;
                if path != from && path.starts_with(&format!("{from}/")) {
                    return Err(PatchError::NotApplicable(format!(
                        "move operation does not apply: cannot move {from} into its child {path}"
                    )));
                }
                let v = op_remove(&mut doc, from, "move")?;
                op_add(&mut doc, path, v)?;
            }
            "copy" => {
                let from = str_field(op, "from", kind)?;
                let path = str_field(op, "path", kind)?;
                let v = get_path(&doc, &parse_pointer(from)?).cloned().ok_or_else(|| {
                    PatchError::NotApplicable(format!(
                        "copy operation does not apply: doc is missing from path: {from}: missing value"
                    ))
                })?;
                op_add(&mut doc, path, v)?;
            }
            "test" => {
                let path = str_field(op, "path", kind)?;
                let expected = value()?;
                let got = get_path(&doc, &parse_pointer(path)?);
                let equal = match got {
                    Some(g) => json_equal(g, &expected),
                    None => expected.is_null(),
                };
                if !equal {
                    return Err(PatchError::NotApplicable(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(PatchError::NotApplicable(format!(
                    "Unexpected kind: {other}"
                )));
            }
        }
    }
    Ok(doc)
}

/// JSON equality where `1` equals `1.0`.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch

const DIRECTIVE_PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

/// Strategic merge patch as `k8s.io/apimachinery/pkg/util/strategicpatch` applies it: maps merge
/// (`null` deletes a key), lists follow their strategy from `types`, and the directives are
/// honoured. The result never contains directives.
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    types: &dyn TypeInfo,
) -> Result<Value, PatchError> {
    let Value::Object(_) = patch else {
        return Err(PatchError::Malformed(
            "json: cannot unmarshal into Go value of type map[string]interface {}".to_owned(),
        ));
    };
    let mut path = Vec::new();
    Ok(smp_value(Some(target), patch, types, &mut path)?.unwrap_or(Value::Null))
}

/// Merges `patch` onto `orig`; `None` means "delete this value".
fn smp_value(
    orig: Option<&Value>,
    patch: &Value,
    types: &dyn TypeInfo,
    path: &mut Vec<String>,
) -> Result<Option<Value>, PatchError> {
    let Value::Object(p) = patch else {
        return Ok(Some(patch.clone()));
    };
    match p.get(DIRECTIVE_PATCH).and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut rest = p.clone();
            rest.remove(DIRECTIVE_PATCH);
            return smp_value(None, &Value::Object(rest), types, path);
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::NotApplicable(format!(
                "Unknown patch type: {other} in map: {patch}"
            )));
        }
    }
    let mut out = match orig {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    // $deleteFromPrimitiveList first, so that a value both deleted and added ends up present.
    for (k, v) in p {
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let Value::Array(del) = v else {
                return Err(PatchError::NotApplicable(format!(
                    "invalid value for {k}: must be a list"
                )));
            };
            if let Some(Value::Array(items)) = out.get_mut(field) {
                items.retain(|it| !del.contains(it));
            }
        }
    }
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.clone());
        let merged = match (out.get(k), v) {
            (Some(Value::Array(o)), Value::Array(pl)) => Some(smp_list(Some(o), pl, types, path)?),
            (None, Value::Array(pl)) => Some(smp_list(None, pl, types, path)?),
            (o, v) => smp_value(o, v, types, path)?,
        };
        path.pop();
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix(SET_ORDER)
            && let (Some(Value::Array(items)), Value::Array(order)) = (out.get_mut(field), v)
        {
            path.push(field.to_owned());
            let key = merge_key(types, path);
            path.pop();
            reorder(items, order, key.as_deref());
        }
    }
    if let Some(retain) = p.get(RETAIN_KEYS) {
        let Value::Array(keep) = retain else {
            return Err(PatchError::NotApplicable(
                "invalid $retainKeys: must be a list".to_owned(),
            ));
        };
        out.retain(|k, _| keep.iter().any(|r| r.as_str() == Some(k.as_str())));
    }
    Ok(Some(Value::Object(out)))
}

fn segs(path: &[String]) -> Vec<Seg<'_>> {
    path.iter()
        .map(|s| {
            if s == "[]" {
                Seg::Item
            } else {
                Seg::Field(s.as_str())
            }
        })
        .collect()
}

fn merge_key(types: &dyn TypeInfo, path: &[String]) -> Option<String> {
    match types.list_type(&segs(path)) {
        ListType::Map(keys) => keys.into_iter().next(),
        _ => None,
    }
}

/// Puts the items named in `order` first, in that order, keeping the others after them.
fn reorder(items: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut rest = std::mem::take(items);
    for o in order {
        let want = ident(o);
        if let Some(pos) = rest.iter().position(|it| ident(it) == want) {
            items.push(rest.remove(pos));
        }
    }
    items.append(&mut rest);
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn smp_list(
    orig: Option<&Vec<Value>>,
    patch: &[Value],
    types: &dyn TypeInfo,
    path: &mut Vec<String>,
) -> Result<Value, PatchError> {
    // A `{"$patch": "replace"}` element replaces the whole list with the other elements.
    let replace = patch
        .iter()
        .any(|it| it.get(DIRECTIVE_PATCH).and_then(Value::as_str) == Some("replace"));
    let list_type = types.list_type(&segs(path));
    if replace || orig.is_none() || list_type == ListType::Atomic {
        let items = patch
            .iter()
            .filter(|it| it.get(DIRECTIVE_PATCH).is_none())
            .map(strip_directives)
            .collect();
        return Ok(Value::Array(items));
    }
    let mut out: Vec<Value> = orig.cloned().unwrap_or_default();
    match list_type {
        ListType::Set => {
            for it in patch {
                if !out.contains(it) {
                    out.push(it.clone());
                }
            }
        }
        ListType::Map(keys) => {
            let key = keys.first().map(String::as_str).unwrap_or("name");
            path.push("[]".to_owned());
            for it in patch {
                let Some(kv) = it.get(key) else {
                    path.pop();
                    return Err(PatchError::NotApplicable(format!(
                        "map: {it} does not contain declared merge key: {key}"
                    )));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(kv));
                if it.get(DIRECTIVE_PATCH).and_then(Value::as_str) == Some("delete") {
                    if let Some(pos) = pos {
                        out.remove(pos);
                    }
                    continue;
                }
                match pos {
                    Some(pos) => match smp_value(out.get(pos), it, types, path)? {
                        Some(m) => out[pos] = m,
                        None => {
                            out.remove(pos);
                        }
                    },
                    None => {
                        if let Some(m) = smp_value(None, it, types, path)? {
                            out.push(m);
                        }
                    }
                }
            }
            path.pop();
        }
        ListType::Atomic => {}
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semantics::types::{BuiltinTypes, DefaultTypes};
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        let patch = json!({"a": "z", "c": {"f": null}});
        assert_eq!(
            merge_patch(&target, &patch),
            json!({"a": "z", "c": {"d": "e"}})
        );
        // Arrays are replaced, never merged.
        assert_eq!(
            merge_patch(&json!({"l": [1, 2]}), &json!({"l": [3]})),
            json!({"l": [3]})
        );
        // A non-object target is replaced by the patch object, nulls inside dropped.
        assert_eq!(
            merge_patch(&json!({"a": 1}), &json!({"a": {"b": null, "c": 1}})),
            json!({"a": {"c": 1}})
        );
        assert_eq!(merge_patch(&json!({"a": 1}), &json!([1])), json!([1]));
    }

    #[test]
    fn json_patch_all_ops() {
        let doc = json!({"a": {"b": [1, 2]}, "x/y": 1, "t~": 2});
        let ops = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/x~1y", "value": 5},
            {"op": "remove", "path": "/t~0"},
            {"op": "copy", "from": "/a/b", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/d"},
            {"op": "test", "path": "/d/3", "value": 3},
        ]);
        assert_eq!(
            json_patch(&doc, &ops).unwrap(),
            json!({"a": {"b": [0, 1, 2, 3]}, "x/y": 5, "d": [0, 1, 2, 3]})
        );
    }

    #[test]
    fn json_patch_failures() {
        let doc = json!({"a": 1, "l": [1]});
        let e = json_patch(&doc, &json!([{"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(e.to_string(), "testing value /a failed: test failed");
        assert_eq!(e.status_code(), 422);
        assert!(json_patch(&doc, &json!([{"op": "remove", "path": "/b"}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "replace", "path": "/b", "value": 1}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "add", "path": "/x/y", "value": 1}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "add", "path": "/l/5", "value": 1}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "add", "path": "/l/01", "value": 1}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "move", "from": "/l", "path": "/l/0"}])).is_err());
        assert_eq!(
            json_patch(&doc, &json!({"op": "add"}))
                .unwrap_err()
                .status_code(),
            400
        );
        // A failing op leaves nothing applied (the caller keeps the original).
        let ops = json!([{"op": "add", "path": "/z", "value": 1}, {"op": "remove", "path": "/q"}]);
        assert!(json_patch(&doc, &ops).is_err());
    }

    #[test]
    fn json_patch_test_treats_int_and_float_alike() {
        let doc = json!({"a": 1});
        assert!(json_patch(&doc, &json!([{"op": "test", "path": "/a", "value": 1.0}])).is_ok());
    }

    #[test]
    fn smp_merges_maps_and_deletes_nulls() {
        let t = json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}});
        let p = json!({"data": {"b": null, "c": "3"}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"data": {"a": "1", "c": "3"}, "metadata": {"labels": {"x": "y"}}})
        );
    }

    #[test]
    fn smp_finalizers_merge_as_primitive_set() {
        let t = json!({"metadata": {"finalizers": ["a", "b"]}});
        let p = json!({"metadata": {"finalizers": ["c", "a"]}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"metadata": {"finalizers": ["a", "b", "c"]}})
        );
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"metadata": {"finalizers": ["b"]}})
        );
    }

    #[test]
    fn smp_owner_references_merge_by_uid() {
        let t = json!({"metadata": {"ownerReferences": [
            {"uid": "1", "name": "a", "kind": "K"},
            {"uid": "2", "name": "b", "kind": "K"}
        ]}});
        let p = json!({"metadata": {"ownerReferences": [
            {"uid": "2", "name": "b2"},
            {"uid": "1", "$patch": "delete"},
            {"uid": "3", "name": "c", "kind": "K"}
        ]}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"metadata": {"ownerReferences": [
                {"uid": "2", "name": "b2", "kind": "K"},
                {"uid": "3", "name": "c", "kind": "K"}
            ]}})
        );
        let bad = json!({"metadata": {"ownerReferences": [{"name": "x"}]}});
        assert!(strategic_merge_patch(&t, &bad, &DefaultTypes).is_err());
    }

    #[test]
    fn smp_atomic_lists_replace() {
        let types = BuiltinTypes::for_kind("rbac.authorization.k8s.io", "Role");
        let t = json!({"rules": [{"verbs": ["get"]}, {"verbs": ["list"]}]});
        let p = json!({"rules": [{"verbs": ["watch"]}]});
        assert_eq!(strategic_merge_patch(&t, &p, &types).unwrap(), p);
    }

    #[test]
    fn smp_service_account_secrets_merge_by_name() {
        let types = BuiltinTypes::for_kind("", "ServiceAccount");
        let t = json!({"secrets": [{"name": "a"}]});
        let p = json!({"secrets": [{"name": "b"}]});
        assert_eq!(
            strategic_merge_patch(&t, &p, &types).unwrap(),
            json!({"secrets": [{"name": "a"}, {"name": "b"}]})
        );
    }

    #[test]
    fn smp_patch_directives() {
        let t = json!({"data": {"a": "1", "b": "2"}, "keep": 1});
        let p = json!({"data": {"$patch": "replace", "c": "3"}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"data": {"c": "3"}, "keep": 1})
        );
        let p = json!({"data": {"$patch": "delete"}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"keep": 1})
        );
        let p = json!({"data": {"$retainKeys": ["a", "c"], "c": "3"}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"data": {"a": "1", "c": "3"}, "keep": 1})
        );
        let bad = json!({"data": {"$patch": "bogus"}});
        assert!(strategic_merge_patch(&t, &bad, &DefaultTypes).is_err());
    }

    #[test]
    fn smp_list_replace_directive_and_element_order() {
        let t = json!({"metadata": {"finalizers": ["a", "b"]}});
        let p = json!({"metadata": {"finalizers": [{"$patch": "replace"}, "z"]}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"metadata": {"finalizers": ["z"]}})
        );
        let p = json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"]}});
        assert_eq!(
            strategic_merge_patch(&t, &p, &DefaultTypes).unwrap(),
            json!({"metadata": {"finalizers": ["c", "b", "a"]}})
        );
    }

    #[test]
    fn strategic_merge_refused_for_custom_resources() {
        assert!(!strategic_merge_supported(true));
        assert!(strategic_merge_supported(false));
    }
}
