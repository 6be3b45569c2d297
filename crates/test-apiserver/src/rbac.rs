//! RBAC authorization from the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects stored in
//! the server, with the real authorizer's matching rules and denial message. Discovery and other
//! non-resource paths are open to every authenticated user (the default `system:discovery`
//! binding); `system:masters` bypasses authorization.

use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::request::{RequestInfo, User};
use crate::store::Store;

const RBAC: &str = "rbac.authorization.k8s.io";

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(subject: &Value, user: &User) -> bool {
    let name = subject
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match subject.get("kind").and_then(Value::as_str) {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn binding_applies(binding: &Value, user: &User) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|subs| subs.iter().any(|s| subject_matches(s, user)))
}

fn rule_allows(rule: &Value, info: &RequestInfo) -> bool {
    let verbs = strs(rule.get("verbs"));
    if !verbs.iter().any(|v| *v == "*" || *v == info.verb) {
        return false;
    }
    let groups = strs(rule.get("apiGroups"));
    if !groups.iter().any(|g| *g == "*" || *g == info.group) {
        return false;
    }
    let combined = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let resources = strs(rule.get("resources"));
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!info.subresource.is_empty() && *r == format!("*/{}", info.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strs(rule.get("resourceNames"));
    names.is_empty() || (!info.name.is_empty() && names.contains(&info.name.as_str()))
}

fn role_rules<'a>(store: &'a Store, role_ref: &Value, namespace: &str) -> Vec<&'a Value> {
    let name = role_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (res, key) = match role_ref.get("kind").and_then(Value::as_str) {
        Some("ClusterRole") => (
            format!("clusterroles.{RBAC}"),
            (String::new(), name.to_owned()),
        ),
        Some("Role") => (
            format!("roles.{RBAC}"),
            (namespace.to_owned(), name.to_owned()),
        ),
        _ => return Vec::new(),
    };
    store
        .get(&res, &key)
        .and_then(|role| role.get("rules"))
        .and_then(Value::as_array)
        .map(|rules| rules.iter().collect())
        .unwrap_or_default()
}

/// Allows the request or answers `403 Forbidden` with the real authorizer's message.
pub fn authorize(store: &Store, user: &User, info: &RequestInfo) -> ApiResult<()> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let mut allowed = false;
    if let Some(crbs) = store.table(&format!("clusterrolebindings.{RBAC}")) {
        allowed = crbs.values().any(|b| {
            binding_applies(b, user)
                && b.get("roleRef").is_some_and(|r| {
                    role_rules(store, r, "")
                        .iter()
                        .any(|rule| rule_allows(rule, info))
                })
        });
    }
    if !allowed
        && !info.namespace.is_empty()
        && let Some(rbs) = store.table(&format!("rolebindings.{RBAC}"))
    {
        allowed = rbs
            .iter()
            .filter(|(k, _)| k.0 == info.namespace)
            .any(|(k, b)| {
                binding_applies(b, user)
                    && b.get("roleRef").is_some_and(|r| {
                        role_rules(store, r, &k.0)
                            .iter()
                            .any(|rule| rule_allows(rule, info))
                    })
            });
    }
    if allowed {
        return Ok(());
    }
    let resource = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let scope = if info.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", info.namespace)
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, info.verb, info.group
    );
    Err(ApiError::forbidden(
        &info.resource,
        &info.group,
        &info.name,
        &why,
    ))
}
