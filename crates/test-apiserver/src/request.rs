//! Who makes a request and what it asks for: the authenticated [`User`] and the request's
//! attributes ([`RequestInfo`]). Plain data without HTTP types, so that authorization and the
//! verbs can use them below the HTTP front end that produces them.

use std::collections::BTreeMap;

/// A user the server authenticates by bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name, e.g. `alice` or `system:serviceaccount:ns:sa`.
    pub name: String,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
    /// The bearer token that identifies the user.
    pub token: String,
    /// The user's uid (a ServiceAccount's uid for its tokens; empty for configured users).
    pub uid: String,
    /// Extra attributes, e.g. `authentication.kubernetes.io/credential-id` of a bound token.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user with a token derived from its name (`<name>-token`).
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            token: format!("{}-token", name.replace(':', "-")),
            uid: String::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Who a request without credentials is: `system:anonymous` in `system:unauthenticated`,
    /// as the real server's anonymous authenticator answers.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".to_owned(),
            groups: vec!["system:unauthenticated".to_owned()],
            token: String::new(),
            uid: String::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// The attributes of a request, as the real server's `RequestInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path addresses a resource (as opposed to discovery and other paths).
    pub is_resource: bool,
    /// Kubernetes verb (or the lowercase HTTP method for non-resource paths).
    pub verb: String,
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The path.
    pub path: String,
}
