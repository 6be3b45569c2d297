//! Deciding whether a server-side apply would change anything.
//!
//! The konnector applies the provider object's spec with field manager `klutch.anynines.com` and
//! `force`. Sending the apply on every reconcile would be harmless for the object but costly (a
//! write per object per event, and writes after every restart), so we only apply when it would
//! change something: when a value we apply differs from the live one (drift, or a new desired
//! value), or when the live object still holds a field we applied before and no longer apply (the
//! server removes those on the next apply). Fields other managers own and we do not apply (for
//! example Crossplane's `spec.resourceRef`) never trigger a write: that is how we avoid fighting
//! another controller.

use serde_json::Value;

/// Whether applying `desired` as `manager` could change `live` (both full objects as JSON).
pub fn apply_would_change(desired: &Value, live: &Value, manager: &str) -> bool {
    !is_subset(desired, live) || !previously_applied_still_desired(desired, live, manager)
}

/// Every value in `desired` is present and equal in `live`. Lists are compared whole (atomic),
/// which is what CRD lists are unless their schema says otherwise.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| is_subset(dv, lv))),
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (d, l) => d == l,
    }
}

/// Every field that `manager`'s last apply owns (per `metadata.managedFields`) is still part of
/// `desired`. Without such an entry there is nothing we could have left behind.
fn previously_applied_still_desired(desired: &Value, live: &Value, manager: &str) -> bool {
    let entries = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    entries
        .iter()
        .filter(|e| {
            e["manager"] == manager
                && e["operation"] == "Apply"
                && e.get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
        })
        .filter_map(|e| e.get("fieldsV1"))
        .all(|fields| covered(fields, desired))
}

/// Whether every field in the FieldsV1 set `fields` exists in `desired`.
fn covered(fields: &Value, desired: &Value) -> bool {
    let Some(fields) = fields.as_object() else {
        return true;
    };
    fields.iter().all(|(key, child)| {
        if key == "." {
            return true;
        }
        if let Some(field) = key.strip_prefix("f:") {
            return desired.get(field).is_some_and(|d| covered(child, d));
        }
        let Some(items) = desired.as_array() else {
            return false;
        };
        if let Some(keys) = key.strip_prefix("k:") {
            // A map-list item, identified by its key fields.
            let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(keys) else {
                return false;
            };
            return items.iter().any(|item| {
                keys.iter().all(|(k, v)| item.get(k) == Some(v)) && covered(child, item)
            });
        }
        if let Some(value) = key.strip_prefix("v:") {
            // A set item, identified by its value.
            return serde_json::from_str::<Value>(value).is_ok_and(|v| items.contains(&v));
        }
        // `i:` (positional) entries only appear for non-apply updates; treat them as covered
        // when the list is still applied at all.
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const M: &str = "klutch.anynines.com";

    fn live(spec: Value, fields: Value) -> Value {
        json!({
            "metadata": {"name": "x", "managedFields": [
                {"manager": M, "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": fields},
                {"manager": "crossplane", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:resourceRef": {}}}}
            ]},
            "spec": spec
        })
    }

    #[test]
    fn fields_of_other_managers_do_not_trigger_an_apply() {
        let desired = json!({"metadata": {"name": "x"}, "spec": {"tier": "small"}});
        let live = live(
            json!({"tier": "small", "resourceRef": {"name": "r"}}),
            json!({"f:spec": {"f:tier": {}}}),
        );
        assert!(!apply_would_change(&desired, &live, M));
    }

    #[test]
    fn drift_in_an_applied_field_triggers_an_apply() {
        let desired = json!({"spec": {"tier": "small"}});
        let live = live(json!({"tier": "large"}), json!({"f:spec": {"f:tier": {}}}));
        assert!(apply_would_change(&desired, &live, M));
    }

    #[test]
    fn a_field_we_no_longer_apply_triggers_an_apply_that_removes_it() {
        let desired = json!({"spec": {"tier": "small"}});
        let live = live(
            json!({"tier": "small", "size": 3}),
            json!({"f:spec": {"f:tier": {}, "f:size": {}}}),
        );
        assert!(apply_would_change(&desired, &live, M));
    }

    #[test]
    fn lists_compare_whole_and_map_list_items_by_key() {
        let desired = json!({"spec": {"ports": [{"name": "a", "port": 1}]}});
        let same = live(
            json!({"ports": [{"name": "a", "port": 1}]}),
            json!({"f:spec": {"f:ports": {"k:{\"name\":\"a\"}": {".": {}, "f:port": {}}}}}),
        );
        assert!(!apply_would_change(&desired, &same, M));
        let dropped = live(
            json!({"ports": [{"name": "a", "port": 1}]}),
            json!({"f:spec": {"f:ports": {"k:{\"name\":\"b\"}": {".": {}}}}}),
        );
        assert!(apply_would_change(&desired, &dropped, M));
        let changed = live(json!({"ports": [{"name": "a", "port": 2}]}), json!({}));
        assert!(apply_would_change(&desired, &changed, M));
    }

    #[test]
    fn set_items_and_numbers() {
        let desired = json!({"spec": {"tags": ["a"], "ratio": 1.0}});
        let live = live(
            json!({"tags": ["a"], "ratio": 1}),
            json!({"f:spec": {"f:tags": {"v:\"a\"": {}}, "f:ratio": {}}}),
        );
        assert!(!apply_would_change(&desired, &live, M));
        let live2 = live_with_tag_b();
        assert!(apply_would_change(&desired, &live2, M));
    }

    fn live_with_tag_b() -> Value {
        live(
            json!({"tags": ["a"], "ratio": 1}),
            json!({"f:spec": {"f:tags": {"v:\"b\"": {}}}}),
        )
    }

    #[test]
    fn no_managed_fields_means_only_values_matter() {
        let desired = json!({"spec": {"tier": "small"}});
        let live = json!({"metadata": {"name": "x"}, "spec": {"tier": "small", "extra": 1}});
        assert!(!apply_would_change(&desired, &live, M));
    }
}
