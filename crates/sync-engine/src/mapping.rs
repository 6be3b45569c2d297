//! Where a consumer object lives on the provider, and back (reference section 6, decision S5).
//!
//! Namespaced consumer objects in namespace `N` live in the service namespace `S` that the
//! `APIServiceNamespace` named `N` (in the provider namespace `P`) reports in `status.namespace`.
//! Cluster-scoped consumer objects follow the export's `clusterScopedIsolation`:
//! `Prefixed` (cluster-scoped upstream `P-X`), `Namespaced` (upstream `X` in namespace `P`) or `None`
//! (cluster-scoped upstream `X`). Cluster-scoped upstream copies carry the annotation
//! `klutch.anynines.com/cluster-namespace: P` and an owner reference to namespace `P`, which is how
//! one consumer's objects are told apart from another's.

use std::collections::BTreeMap;

use konnector_api::strings::annotations::CLUSTER_NAMESPACE;
use konnector_api::v1alpha1::{APIServiceNamespace, Isolation};

/// Errors of the name and namespace mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Two APIServiceNamespaces claim the same service namespace.
    #[error("unexpected multiple APIServiceNamespaces for namespace {0}")]
    AmbiguousServiceNamespace(String),
    /// An upstream object already belongs to another consumer.
    #[error("mismatch between existing cluster namespace and given cluster namespace")]
    ClusterNamespaceMismatch,
}

/// The state of one consumer namespace's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceState<'a> {
    /// No APIServiceNamespace exists yet: the spec syncer creates one.
    Missing,
    /// The APIServiceNamespace exists, but the provider has not chosen a service namespace yet.
    Pending,
    /// Objects of this consumer namespace live in this service namespace.
    Ready(&'a str),
}

/// Consumer namespace <-> service namespace, built from the APIServiceNamespaces in `P`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceMap {
    /// consumer namespace -> service namespace ("" while pending).
    forward: BTreeMap<String, String>,
    /// service namespace -> consumer namespaces (more than one is an error on lookup).
    reverse: BTreeMap<String, Vec<String>>,
}

impl NamespaceMap {
    /// Builds the map from the APIServiceNamespaces of the provider namespace.
    pub fn new<'a>(namespaces: impl IntoIterator<Item = &'a APIServiceNamespace>) -> Self {
        let mut map = NamespaceMap::default();
        for sn in namespaces {
            let Some(name) = sn.metadata.name.clone() else {
                continue;
            };
            let target = sn
                .status
                .as_ref()
                .and_then(|s| s.namespace.clone())
                .unwrap_or_default();
            map.insert(name, target);
        }
        map
    }

    /// Records that consumer namespace `consumer` maps to `service` ("" while pending).
    pub fn insert(&mut self, consumer: String, service: String) {
        if let Some(old) = self.forward.insert(consumer.clone(), service.clone())
            && let Some(list) = self.reverse.get_mut(&old)
        {
            list.retain(|c| *c != consumer);
        }
        if !service.is_empty() {
            self.reverse.entry(service).or_default().push(consumer);
        }
        self.reverse.retain(|_, v| !v.is_empty());
    }

    /// The mapping state of consumer namespace `consumer`.
    pub fn state(&self, consumer: &str) -> NamespaceState<'_> {
        match self.forward.get(consumer) {
            None => NamespaceState::Missing,
            Some(s) if s.is_empty() => NamespaceState::Pending,
            Some(s) => NamespaceState::Ready(s),
        }
    }

    /// The consumer namespace whose objects live in `service`, if any.
    pub fn consumer_of(&self, service: &str) -> Result<Option<&str>, MappingError> {
        match self.reverse.get(service).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one)),
            Some(_) => Err(MappingError::AmbiguousServiceNamespace(service.to_string())),
        }
    }

    /// Every mapped service namespace (for scoping provider watches).
    pub fn service_namespaces(&self) -> impl Iterator<Item = &str> {
        self.reverse.keys().map(String::as_str)
    }
}

/// Where a cluster-scoped consumer object `X` lives upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLocation {
    /// Upstream namespace (`Some(P)` for `Namespaced` isolation).
    pub namespace: Option<String>,
    /// Upstream name.
    pub name: String,
}

/// Name mapping of cluster-scoped consumer objects for one provider namespace `P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterScopedMapping {
    /// The provider namespace `P`.
    pub provider_namespace: String,
    /// The export's isolation (the reference's behaviour is `Prefixed`).
    pub isolation: Isolation,
}

impl ClusterScopedMapping {
    /// Upstream location of consumer object `name`.
    pub fn upstream(&self, name: &str) -> UpstreamLocation {
        match self.isolation {
            Isolation::Prefixed => UpstreamLocation {
                namespace: None,
                name: format!("{}-{name}", self.provider_namespace),
            },
            Isolation::Namespaced => UpstreamLocation {
                namespace: Some(self.provider_namespace.clone()),
                name: name.to_string(),
            },
            Isolation::None => UpstreamLocation {
                namespace: None,
                name: name.to_string(),
            },
        }
    }

    /// The consumer name of an upstream object, or `None` if it is not this consumer's.
    ///
    /// `cluster_namespace` is the upstream object's `klutch.anynines.com/cluster-namespace`
    /// annotation. Upstream objects created by someone else (for adoption) have none; for
    /// `Prefixed` the name prefix alone decides, as in the reference.
    pub fn downstream_name(
        &self,
        upstream_namespace: Option<&str>,
        upstream_name: &str,
        cluster_namespace: Option<&str>,
    ) -> Option<String> {
        let p = self.provider_namespace.as_str();
        match self.isolation {
            Isolation::Prefixed => {
                if upstream_namespace.is_some() || cluster_namespace.is_some_and(|c| c != p) {
                    return None;
                }
                upstream_name
                    .strip_prefix(p)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .filter(|rest| !rest.is_empty())
                    .map(String::from)
            }
            Isolation::Namespaced => {
                (upstream_namespace == Some(p)).then(|| upstream_name.to_string())
            }
            Isolation::None => (upstream_namespace.is_none() && cluster_namespace == Some(p))
                .then(|| upstream_name.to_string()),
        }
    }

    /// Whether upstream copies are cluster-scoped (they then carry the cluster-namespace
    /// annotation and an owner reference to namespace `P`).
    pub fn upstream_is_cluster_scoped(&self) -> bool {
        self.isolation != Isolation::Namespaced
    }

    /// Checks that an existing upstream object may be written as this consumer's.
    pub fn check_owner(&self, cluster_namespace: Option<&str>) -> Result<(), MappingError> {
        match cluster_namespace {
            Some(c) if c != self.provider_namespace => Err(MappingError::ClusterNamespaceMismatch),
            _ => Ok(()),
        }
    }
}

/// The annotation key that ties a cluster-scoped upstream object to its consumer.
pub const CLUSTER_NAMESPACE_ANNOTATION: &str = CLUSTER_NAMESPACE;

#[cfg(test)]
mod tests {
    use super::*;
    use konnector_api::v1alpha1::{APIServiceNamespaceSpec, APIServiceNamespaceStatus};

    fn sn(name: &str, target: Option<&str>) -> APIServiceNamespace {
        let mut sn = APIServiceNamespace::new(name, APIServiceNamespaceSpec {});
        sn.status = Some(APIServiceNamespaceStatus {
            namespace: target.map(String::from),
        });
        sn
    }

    #[test]
    fn namespace_states() {
        let list = [sn("default", Some("p-default")), sn("team", None)];
        let map = NamespaceMap::new(&list);
        assert_eq!(map.state("default"), NamespaceState::Ready("p-default"));
        assert_eq!(map.state("team"), NamespaceState::Pending);
        assert_eq!(map.state("other"), NamespaceState::Missing);
        assert_eq!(map.consumer_of("p-default"), Ok(Some("default")));
        assert_eq!(map.consumer_of("p-team"), Ok(None));
        assert_eq!(map.service_namespaces().collect::<Vec<_>>(), ["p-default"]);
    }

    #[test]
    fn two_consumers_on_one_service_namespace_is_an_error() {
        let list = [sn("a", Some("shared")), sn("b", Some("shared"))];
        let map = NamespaceMap::new(&list);
        assert_eq!(
            map.consumer_of("shared").unwrap_err().to_string(),
            "unexpected multiple APIServiceNamespaces for namespace shared"
        );
    }

    #[test]
    fn remapping_a_namespace_forgets_the_old_target() {
        let mut map = NamespaceMap::default();
        map.insert("a".into(), "s1".into());
        map.insert("a".into(), "s2".into());
        assert_eq!(map.consumer_of("s1"), Ok(None));
        assert_eq!(map.consumer_of("s2"), Ok(Some("a")));
    }

    fn mapping(isolation: Isolation) -> ClusterScopedMapping {
        ClusterScopedMapping {
            provider_namespace: "kube-bind-zlp9m".into(),
            isolation,
        }
    }

    #[test]
    fn prefixed_isolation_matches_the_reference_example() {
        let m = mapping(Isolation::Prefixed);
        let up = m.upstream("example-foo");
        assert_eq!(up.name, "kube-bind-zlp9m-example-foo");
        assert_eq!(up.namespace, None);
        assert_eq!(
            m.downstream_name(None, "kube-bind-zlp9m-example-foo", Some("kube-bind-zlp9m")),
            Some("example-foo".into())
        );
        // Unannotated (provider-created) objects with the prefix are still this consumer's.
        assert_eq!(
            m.downstream_name(None, "kube-bind-zlp9m-x", None),
            Some("x".into())
        );
        assert_eq!(m.downstream_name(None, "other-x", None), None);
        assert_eq!(m.downstream_name(None, "kube-bind-zlp9m-", None), None);
        assert_eq!(
            m.downstream_name(None, "kube-bind-zlp9m-x", Some("someone-else")),
            None
        );
    }

    #[test]
    fn namespaced_isolation_stores_objects_in_the_provider_namespace() {
        let m = mapping(Isolation::Namespaced);
        let up = m.upstream("example-foo");
        assert_eq!(up.namespace.as_deref(), Some("kube-bind-zlp9m"));
        assert_eq!(up.name, "example-foo");
        assert!(!m.upstream_is_cluster_scoped());
        assert_eq!(
            m.downstream_name(Some("kube-bind-zlp9m"), "example-foo", None),
            Some("example-foo".into())
        );
        assert_eq!(m.downstream_name(Some("other"), "example-foo", None), None);
    }

    #[test]
    fn no_isolation_keeps_names_and_tells_consumers_apart_by_annotation() {
        let m = mapping(Isolation::None);
        assert_eq!(m.upstream("example-foo").name, "example-foo");
        assert_eq!(
            m.downstream_name(None, "example-foo", Some("kube-bind-zlp9m")),
            Some("example-foo".into())
        );
        assert_eq!(m.downstream_name(None, "example-foo", Some("other")), None);
        assert_eq!(m.downstream_name(None, "example-foo", None), None);
        assert_eq!(
            m.check_owner(Some("other")).unwrap_err().to_string(),
            "mismatch between existing cluster namespace and given cluster namespace"
        );
        assert_eq!(m.check_owner(None), Ok(()));
    }
}
