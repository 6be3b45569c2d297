//! `events.k8s.io/v1` Events are the core `v1` Events seen through another schema: a real server
//! stores them once and converts field names, so an Event recorded through either API shows up in
//! both (e.g. kube-runtime's recorder writes `events.k8s.io`, `kubectl get events` reads core).

use std::collections::HashMap;

use serde_json::{Value, json};

/// `(core v1 field, events.k8s.io/v1 field)`; every other field has the same name in both.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn convert(obj: &Value, to_new: bool) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.as_object_mut() {
        for (core, new) in RENAMED {
            let (from, to) = if to_new { (core, new) } else { (new, core) };
            if let Some(v) = m.remove(*from) {
                m.insert((*to).to_owned(), v);
            }
        }
        let av = if to_new { "events.k8s.io/v1" } else { "v1" };
        m.insert("apiVersion".into(), json!(av));
        m.insert("kind".into(), json!("Event"));
    }
    out
}

/// A stored core Event as `events.k8s.io/v1`.
pub fn to_new(core: &Value) -> Value {
    let mut new = convert(core, true);
    crate::builtin::shape_new_event(&mut new);
    new
}

/// An `events.k8s.io/v1` Event as the core Event it is stored as.
pub fn to_core(new: &Value) -> Value {
    convert(new, false)
}

/// The query of an `events.k8s.io/v1` list or watch with its field selector in core field
/// names (`regarding.name` -> `involvedObject.name`, `reportingController` ->
/// `reportingComponent`), as the real server's field label conversion does.
pub fn query_to_core(query: &HashMap<String, String>) -> HashMap<String, String> {
    let mut query = query.clone();
    if let Some(selector) = query.get_mut("fieldSelector") {
        *selector = selector
            .split(',')
            .map(|term| {
                if let Some(rest) = term.strip_prefix("regarding.") {
                    format!("involvedObject.{rest}")
                } else if let Some(rest) = term.strip_prefix("reportingController") {
                    format!("reportingComponent{rest}")
                } else {
                    term.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    query
}

/// Converts a response (an Event, an EventList or a Status) to `events.k8s.io/v1`.
pub fn response_to_new(value: Value) -> Value {
    match value.get("kind").and_then(Value::as_str) {
        Some("Event") => to_new(&value),
        Some("EventList") => {
            let mut v = value;
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    *item = to_new(item);
                }
            }
            v["apiVersion"] = json!("events.k8s.io/v1");
            v
        }
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors_are_converted_to_core_names() {
        let query = HashMap::from([(
            "fieldSelector".to_owned(),
            "regarding.name=x,reportingController=c,type=Warning".to_owned(),
        )]);
        assert_eq!(
            query_to_core(&query)["fieldSelector"],
            "involvedObject.name=x,reportingComponent=c,type=Warning"
        );
    }
}
