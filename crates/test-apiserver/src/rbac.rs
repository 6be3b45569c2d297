//! RBAC authorization from the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects stored in
//! the server, with the real authorizer's matching rules, denial messages and `allowed by`
//! reasons; the bootstrap policy every real cluster has (discovery and health checks,
//! self-reviews); and the real registry's escalation checks on writes of roles and bindings.
//! `system:masters` bypasses authorization, as the real privileged-group authorizer does.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::request::{RequestInfo, User};
use crate::store::Store;

const RBAC: &str = "rbac.authorization.k8s.io";

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Whether `subject` of a binding in `namespace` (`""` for a ClusterRoleBinding) names the user.
/// A ServiceAccount subject without namespace means the binding's namespace.
fn subject_matches(subject: &Value, user: &User, namespace: &str) -> bool {
    let name = str_of(subject, "name");
    match str_of(subject, "kind") {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = match str_of(subject, "namespace") {
                "" => namespace,
                ns => ns,
            };
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// How the real authorizer names a subject in its reasons.
fn describe_subject(subject: &Value, namespace: &str) -> String {
    let kind = str_of(subject, "kind");
    let name = str_of(subject, "name");
    if kind == "ServiceAccount" {
        let ns = match str_of(subject, "namespace") {
            "" => namespace,
            ns => ns,
        };
        format!("{kind} \"{name}/{ns}\"")
    } else {
        format!("{kind} \"{name}\"")
    }
}

/// Whether a request path matches a rule's `nonResourceURLs` entry (exact, or a prefix ending
/// in `*`).
fn url_matches(spec: &str, path: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

fn rule_allows(rule: &Value, info: &RequestInfo) -> bool {
    let verbs = strs(rule.get("verbs"));
    if !verbs.iter().any(|v| *v == "*" || *v == info.verb) {
        return false;
    }
    if !info.is_resource {
        return strs(rule.get("nonResourceURLs"))
            .iter()
            .any(|u| url_matches(u, &info.path));
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

/// The rules of the role a binding refers to; `None` when the role does not exist.
fn role_rules<'a>(store: &'a Store, role_ref: &Value, namespace: &str) -> Option<Vec<&'a Value>> {
    let name = str_of(role_ref, "name");
    let (res, key) = match str_of(role_ref, "kind") {
        "ClusterRole" => (
            format!("clusterroles.{RBAC}"),
            (String::new(), name.to_owned()),
        ),
        "Role" => (
            format!("roles.{RBAC}"),
            (namespace.to_owned(), name.to_owned()),
        ),
        _ => return None,
    };
    let role = store.get(&res, &key)?;
    Some(
        role.get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().collect())
            .unwrap_or_default(),
    )
}

/// Visits every rule granted to `user` in `namespace` (cluster-wide bindings first, then the
/// namespace's RoleBindings), with the binding that grants it, until `visit` returns `true`.
fn visit_rules(
    store: &Store,
    user: &User,
    namespace: &str,
    mut visit: impl FnMut(&Value, &Value, &Value, &str) -> bool,
) -> bool {
    let bound = |binding: &Value, ns: &str| {
        binding
            .get("subjects")
            .and_then(Value::as_array)
            .and_then(|subs| subs.iter().find(|s| subject_matches(s, user, ns)))
            .cloned()
    };
    if let Some(crbs) = store.table(&format!("clusterrolebindings.{RBAC}")) {
        for b in crbs.values() {
            let Some(subject) = bound(b, "") else {
                continue;
            };
            let Some(role_ref) = b.get("roleRef") else {
                continue;
            };
            for rule in role_rules(store, role_ref, "").unwrap_or_default() {
                if visit(b, &subject, rule, "") {
                    return true;
                }
            }
        }
    }
    if namespace.is_empty() {
        return false;
    }
    if let Some(rbs) = store.table(&format!("rolebindings.{RBAC}")) {
        for ((ns, _), b) in rbs.range((namespace.to_owned(), String::new())..) {
            if ns != namespace {
                break;
            }
            let Some(subject) = bound(b, ns) else {
                continue;
            };
            let Some(role_ref) = b.get("roleRef") else {
                continue;
            };
            for rule in role_rules(store, role_ref, ns).unwrap_or_default() {
                if visit(b, &subject, rule, ns) {
                    return true;
                }
            }
        }
    }
    false
}

/// Whether `user` bypasses RBAC (`system:masters`), which needs no look at the store.
pub fn is_privileged(user: &User) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
}

/// The authorizer's decision: whether the request is allowed and, if a binding allowed it, the
/// real `RBAC: allowed by ...` reason (`SelfSubjectAccessReview` reports it).
pub fn decide(store: &Store, user: &User, info: &RequestInfo) -> (bool, String) {
    if is_privileged(user) {
        return (true, String::new());
    }
    let mut reason = String::new();
    let namespace = if info.is_resource {
        info.namespace.as_str()
    } else {
        ""
    };
    let allowed = visit_rules(store, user, namespace, |binding, subject, rule, ns| {
        if !rule_allows(rule, info) {
            return false;
        }
        let name = str_of(&binding["metadata"], "name");
        let role_ref = &binding["roleRef"];
        let (kind, binding_name) = if ns.is_empty() {
            ("ClusterRoleBinding", name.to_owned())
        } else {
            ("RoleBinding", format!("{name}/{ns}"))
        };
        reason = format!(
            "RBAC: allowed by {kind} \"{binding_name}\" of {} \"{}\" to {}",
            str_of(role_ref, "kind"),
            str_of(role_ref, "name"),
            describe_subject(subject, ns)
        );
        true
    });
    (allowed, reason)
}

/// Allows the request or answers `403 Forbidden` with the real authorizer's message.
pub fn authorize(store: &Store, user: &User, info: &RequestInfo) -> ApiResult<()> {
    if decide(store, user, info).0 {
        return Ok(());
    }
    if !info.is_resource {
        // The real server builds this one for an empty resource: `details: {}`.
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                user.name, info.verb, info.path
            ),
        )
        .with_empty_details());
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

/// One permission of a broken-down rule: a verb on a group/resource (optionally one name), or
/// a verb on a non-resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Atom {
    verb: String,
    group: Option<String>,
    resource: Option<String>,
    name: Option<String>,
    url: Option<String>,
}

impl Atom {
    /// The real `CompactString` of a missing permission.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = &self.group {
            parts.push(format!("APIGroups:[\"{g}\"]"));
        }
        if let Some(r) = &self.resource {
            parts.push(format!("Resources:[\"{r}\"]"));
        }
        if let Some(n) = &self.name {
            parts.push(format!("ResourceNames:[\"{n}\"]"));
        }
        if let Some(u) = &self.url {
            parts.push(format!("NonResourceURLs:[\"{u}\"]"));
        }
        parts.push(format!("Verbs:[\"{}\"]", self.verb));
        format!("{{{}}}", parts.join(", "))
    }
}

/// The real `BreakdownRule`: every (group, resource, verb[, name]) and (url, verb) of a rule.
fn breakdown(rule: &Value) -> Vec<Atom> {
    let verbs = strs(rule.get("verbs"));
    let names = strs(rule.get("resourceNames"));
    let mut out = Vec::new();
    for g in strs(rule.get("apiGroups")) {
        for r in strs(rule.get("resources")) {
            for v in &verbs {
                let atom = |name: Option<&str>| Atom {
                    verb: (*v).to_owned(),
                    group: Some(g.to_owned()),
                    resource: Some(r.to_owned()),
                    name: name.map(str::to_owned),
                    url: None,
                };
                if names.is_empty() {
                    out.push(atom(None));
                } else {
                    out.extend(names.iter().map(|n| atom(Some(n))));
                }
            }
        }
    }
    for u in strs(rule.get("nonResourceURLs")) {
        for v in &verbs {
            out.push(Atom {
                verb: (*v).to_owned(),
                group: None,
                resource: None,
                name: None,
                url: Some(u.to_owned()),
            });
        }
    }
    out
}

/// The real `ruleCovers` for one broken-down permission.
fn rule_covers(owner: &Value, atom: &Atom) -> bool {
    let verbs = strs(owner.get("verbs"));
    if !verbs.iter().any(|v| *v == "*" || *v == atom.verb) {
        return false;
    }
    if let Some(url) = &atom.url {
        return strs(owner.get("nonResourceURLs")).iter().any(|o| {
            *o == url
                || o.strip_suffix('*')
                    .is_some_and(|prefix| url.starts_with(prefix))
        });
    }
    let groups = strs(owner.get("apiGroups"));
    let group = atom.group.as_deref().unwrap_or_default();
    if !groups.iter().any(|g| *g == "*" || *g == group) {
        return false;
    }
    let resources = strs(owner.get("resources"));
    let resource = atom.resource.as_deref().unwrap_or_default();
    let resource_ok = resources.iter().any(|r| *r == "*" || *r == resource)
        || resource
            .split_once('/')
            .is_some_and(|(_, sub)| resources.contains(&format!("*/{sub}").as_str()));
    if !resource_ok {
        return false;
    }
    let names = strs(owner.get("resourceNames"));
    match &atom.name {
        None => names.is_empty(),
        Some(n) => names.is_empty() || names.contains(&n.as_str()),
    }
}

/// The permissions of `rules` that `owner` does not cover (the real `Covers`), described as the
/// real escalation message lists them, sorted and without duplicates.
pub fn uncovered(owner: &[Value], rules: &[Value]) -> Vec<String> {
    let mut missing: Vec<String> = rules
        .iter()
        .flat_map(breakdown)
        .filter(|atom| !owner.iter().any(|o| rule_covers(o, atom)))
        .map(|atom| atom.describe())
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Every rule granted to `user` in `namespace` (the real `RulesFor`).
fn rules_for(store: &Store, user: &User, namespace: &str) -> Vec<Value> {
    let mut out = Vec::new();
    visit_rules(store, user, namespace, |_, _, rule, _| {
        out.push(rule.clone());
        false
    });
    if user.groups.iter().any(|g| g == "system:masters") {
        out.extend(full_authority());
    }
    out
}

/// `*` on everything: what setting an `aggregationRule` requires.
fn full_authority() -> Vec<Value> {
    vec![
        json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
    ]
}

fn escalation_error(user: &User, resource: &str, name: &str, missing: &[String]) -> ApiError {
    let groups: Vec<String> = user.groups.iter().map(|g| format!("\"{g}\"")).collect();
    ApiError::forbidden(
        resource,
        RBAC,
        name,
        &format!(
            "user \"{}\" (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            groups.join(" "),
            missing.join("\n")
        ),
    )
}

/// The real RBAC registry's checks on a write of a Role, ClusterRole, RoleBinding or
/// ClusterRoleBinding `obj` (`old` for updates) by `user`, which hold whatever the authorizer
/// is: a role may only grant what its author holds (or is allowed to `escalate`), an
/// `aggregationRule` needs full authority, and a binding may only grant a role whose
/// permissions its author holds (or is allowed to `bind`). `403 Forbidden` otherwise.
pub fn check_escalation(
    store: &Store,
    user: &User,
    kind: &str,
    namespace: &str,
    old: Option<&Value>,
    obj: &Value,
) -> ApiResult<()> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    if let Some(old) = old
        && only_gc_fields_change(old, obj)
    {
        return Ok(());
    }
    let name = str_of(&obj["metadata"], "name");
    let rules_of = |v: &Value| -> Vec<Value> {
        v.get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let may = |verb: &str, resource: &str, name: &str, ns: &str| {
        let info = RequestInfo {
            is_resource: true,
            verb: verb.to_owned(),
            group: RBAC.to_owned(),
            version: "*".to_owned(),
            resource: resource.to_owned(),
            namespace: ns.to_owned(),
            name: name.to_owned(),
            ..RequestInfo::default()
        };
        decide(store, user, &info).0
    };
    match kind {
        "Role" | "ClusterRole" => {
            let resource = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if may("escalate", resource, name, namespace) {
                return Ok(());
            }
            let owner = rules_for(store, user, namespace);
            let missing = uncovered(&owner, &rules_of(obj));
            if !missing.is_empty() {
                return Err(escalation_error(user, resource, name, &missing));
            }
            if kind == "ClusterRole"
                && obj.get("aggregationRule").is_some_and(|a| !a.is_null())
                && !uncovered(&owner, &full_authority()).is_empty()
            {
                return Err(ApiError::forbidden(
                    resource,
                    RBAC,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
            Ok(())
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let resource = if kind == "RoleBinding" {
                "rolebindings"
            } else {
                "clusterrolebindings"
            };
            let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
            let ref_resource = match str_of(&role_ref, "kind") {
                "Role" => "roles",
                _ => "clusterroles",
            };
            if may("bind", ref_resource, str_of(&role_ref, "name"), namespace) {
                return Ok(());
            }
            let Some(rules) = role_rules(store, &role_ref, namespace) else {
                let (res, group) = (ref_resource, RBAC);
                return Err(ApiError::forbidden(
                    resource,
                    RBAC,
                    name,
                    &format!(
                        "{} \"{}\" not found",
                        crate::error::qualified(res, group),
                        str_of(&role_ref, "name")
                    ),
                ));
            };
            let rules: Vec<Value> = rules.into_iter().cloned().collect();
            let owner = rules_for(store, user, namespace);
            let missing = uncovered(&owner, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(escalation_error(user, resource, name, &missing))
            }
        }
        _ => Ok(()),
    }
}

/// The real `IsOnlyMutatingGCFields`: an update that changes only owner references and
/// finalizers needs no escalation check (the garbage collector makes such updates).
fn only_gc_fields_change(old: &Value, obj: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "ownerReferences",
                "finalizers",
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
            ] {
                m.remove(k);
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("apiVersion");
            o.remove("kind");
        }
        v
    };
    strip(old) == strip(obj)
}

/// `roleRef` of a binding cannot change: the real `422` (`cannot change roleRef`).
pub fn check_role_ref_unchanged(kind: &str, old: &Value, obj: &Value) -> ApiResult<()> {
    if old.get("roleRef") == obj.get("roleRef") {
        return Ok(());
    }
    Err(ApiError::invalid_field(
        kind,
        RBAC,
        str_of(&obj["metadata"], "name"),
        "FieldValueInvalid",
        "roleRef",
        format!(
            "Invalid value: {}: cannot change roleRef",
            obj.get("roleRef").cloned().unwrap_or(Value::Null)
        ),
    ))
}

/// The real bootstrap policy that decides what anonymous and ordinary users may do without any
/// binding of their own: `cluster-admin` for `system:masters`; discovery (`system:discovery`)
/// and self-reviews (`system:basic-user`) for every authenticated user; health and version
/// (`system:public-info-viewer`) for everyone, authenticated or not. As `(plural, object)`.
pub fn bootstrap_policy() -> Vec<(&'static str, Value)> {
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name,
                "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name,
                "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
            "subjects": subjects})
    };
    let info_urls = json!(["/healthz", "/livez", "/readyz", "/version", "/version/"]);
    vec![
        (
            "clusterroles",
            role("cluster-admin", json!(full_authority())),
        ),
        (
            "clusterroles",
            role(
                "system:discovery",
                json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                    "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:basic-user",
                json!([
                    {"apiGroups": ["authorization.k8s.io"],
                        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                        "verbs": ["create"]},
                    {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
                        "verbs": ["create"]},
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:public-info-viewer",
                json!([{"nonResourceURLs": info_urls, "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            binding("cluster-admin", &["system:masters"]),
        ),
        (
            "clusterrolebindings",
            binding("system:discovery", &["system:authenticated"]),
        ),
        (
            "clusterrolebindings",
            binding("system:basic-user", &["system:authenticated"]),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                &["system:authenticated", "system:unauthenticated"],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        assert!(url_matches("/api", "/api"));
        assert!(!url_matches("/api", "/api/v1"));
        assert!(url_matches("/api/*", "/api/v1"));
        assert!(url_matches("*", "/anything"));
        assert!(!url_matches("/version/", "/version"));
    }

    #[test]
    fn covers_breaks_rules_down() {
        let owner = vec![
            json!({"apiGroups": [""], "resources": ["configmaps", "*/status"], "verbs": ["get"]}),
            json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"],
                "verbs": ["*"], "resourceNames": ["a"]}),
        ];
        assert!(
            uncovered(
                &owner,
                &[
                    json!({"apiGroups": [""], "resources": ["configmaps", "pods/status"], "verbs": ["get"]})
                ]
            )
            .is_empty()
        );
        assert_eq!(
            uncovered(
                &owner,
                &[json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]})]
            ),
            vec![
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"list\"]}",
            ]
        );
        // A name-restricted owner covers that name only, never the whole resource.
        let named = json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"],
            "verbs": ["get"], "resourceNames": ["a"]});
        assert!(uncovered(&owner, &[named]).is_empty());
        let all = json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"],
            "verbs": ["get"]});
        assert_eq!(uncovered(&owner, &[all]).len(), 1);
        assert!(uncovered(&full_authority(), &full_authority()).is_empty());
    }

    #[test]
    fn service_account_subjects_default_to_the_binding_namespace() {
        let user = User::new("system:serviceaccount:ns:sa", &[]);
        let subject = json!({"kind": "ServiceAccount", "name": "sa"});
        assert!(subject_matches(&subject, &user, "ns"));
        assert!(!subject_matches(&subject, &user, "other"));
        assert_eq!(describe_subject(&subject, "ns"), "ServiceAccount \"sa/ns\"");
    }
}
