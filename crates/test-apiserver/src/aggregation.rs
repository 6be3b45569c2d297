//! The ClusterRole aggregation controller of kube-controller-manager: a ClusterRole with an
//! `aggregationRule` gets as `rules` the union of the rules of the ClusterRoles its
//! `clusterRoleSelectors` select (in name order, without duplicates), written by a forced
//! server-side apply of manager `clusterrole-aggregation-controller` as the real controller does
//! (so its `managedFields` entry is the real one, and it disappears, with the rules, when nothing
//! matches any more). It runs in the background on every ClusterRole change ([`run`]);
//! [`reconcile`] is the controller's work over the store.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{self, Req};
use crate::resources::CLUSTERROLES;
use crate::semantics::selector::LabelSelector;
use crate::shared::Shared;
use crate::store::Store;

/// The field manager of the real controller.
pub const MANAGER: &str = "clusterrole-aggregation-controller";

/// The label selector a `metav1.LabelSelector` object means: `{}` selects everything, a
/// selector that cannot be parsed selects nothing (`None`).
fn selector(v: &Value) -> Option<LabelSelector> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(labels) = v.get("matchLabels").and_then(Value::as_object) {
        for (k, val) in labels {
            parts.push(format!("{k}={}", val.as_str()?));
        }
    }
    for e in v
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str)?;
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e.get("operator").and_then(Value::as_str)? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    LabelSelector::parse(&parts.join(",")).ok()
}

/// The rules each aggregated ClusterRole should have, where they differ from what it has:
/// `(name, rules)`.
pub fn plan(store: &Store) -> Vec<(String, Vec<Value>)> {
    let Some(roles) = store.table(CLUSTERROLES) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ((_, name), role) in roles {
        let Some(selectors) = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let mut rules: Vec<Value> = Vec::new();
        for sel in selectors.iter().filter_map(selector) {
            // The table is ordered by name, as the real controller sorts what it lists.
            for ((_, other), part) in roles {
                if other == name || !sel.matches_value(part.pointer("/metadata/labels")) {
                    continue;
                }
                for rule in part
                    .get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
        }
        let have: &[Value] = role
            .get("rules")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        if have != rules.as_slice() {
            out.push((name.clone(), rules));
        }
    }
    out
}

/// Brings every aggregated ClusterRole's rules up to date, as the real controller's apply.
pub fn reconcile(store: &mut Store) {
    let Some(def) = store.resources.get(CLUSTERROLES).cloned() else {
        return;
    };
    let query: HashMap<String, String> = HashMap::from([
        ("fieldManager".to_owned(), MANAGER.to_owned()),
        ("force".to_owned(), "true".to_owned()),
    ]);
    for (name, rules) in plan(store) {
        let mut applied = json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole", "metadata": {"name": name}});
        // No rules: the apply leaves the field out, giving up (and so removing) the rules.
        if !rules.is_empty() {
            applied["rules"] = json!(rules);
        }
        let r = Req {
            def: def.clone(),
            version: "v1",
            namespace: "",
            name: &name,
            subresource: "",
            query: &query,
            user_agent: MANAGER,
            create_authz: None,
            view: None,
            warnings: std::cell::RefCell::default(),
        };
        let body = applied.to_string();
        if let Err(e) = api::patch(store, &r, "application/apply-patch+yaml", body.as_bytes()) {
            tracing::warn!("aggregating ClusterRole {name}: {e}");
        }
    }
}

/// Runs the controller: reconciles on start and whenever a write changed a ClusterRole (the
/// writer wakes it, as writes wake the garbage collector: other writes cost it nothing).
pub async fn run(shared: Arc<Shared>) {
    loop {
        {
            let Ok(mut store) = shared.store.write() else {
                return;
            };
            reconcile(&mut store);
            // Its own writes need no second pass: the rules are the union already.
            store.aggregation_pending = false;
        }
        shared.aggregation.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: Value, rules: Value) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels}, "rules": rules})
    }

    fn put(store: &mut Store, obj: Value) {
        let def = store.resources.get(CLUSTERROLES).cloned().unwrap();
        let rv = store.next_rv();
        store.put(&def, rv, obj, crate::store::EventType::Added);
    }

    #[test]
    fn aggregated_rules_follow_labels_and_rules() {
        let mut store = Store::new(100);
        let mut agg = role("agg", json!({}), Value::Null);
        agg["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"a": "b"}},
                {"matchExpressions": [{"key": "c", "operator": "Exists"}]}]});
        put(&mut store, agg);
        let read = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]});
        let write = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]});
        put(
            &mut store,
            role("p1", json!({"a": "b"}), json!([read.clone()])),
        );
        put(
            &mut store,
            role(
                "p2",
                json!({"c": "x"}),
                json!([read.clone(), write.clone()]),
            ),
        );
        put(
            &mut store,
            role("p3", json!({"a": "z"}), json!([{"verbs": ["*"]}])),
        );
        reconcile(&mut store);
        let key = (String::new(), "agg".to_owned());
        let got = store.get(CLUSTERROLES, &key).unwrap().clone();
        assert_eq!(got["rules"], json!([read, write]));
        let controller = |obj: &Value| {
            obj.pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|e| e["manager"] == MANAGER).cloned())
        };
        let entry = controller(&got).unwrap();
        assert_eq!(entry["operation"], "Apply");
        assert_eq!(entry["fieldsV1"], json!({"f:rules": {}}));
        assert!(plan(&store).is_empty());
        // Nothing selected any more: the rules and the controller's ownership go.
        put(&mut store, role("p1", json!({}), json!([])));
        put(&mut store, role("p2", json!({}), json!([])));
        reconcile(&mut store);
        let got = store.get(CLUSTERROLES, &key).unwrap().clone();
        assert!(got.get("rules").is_none_or(Value::is_null), "{got}");
        assert!(controller(&got).is_none(), "{got}");
    }
}
