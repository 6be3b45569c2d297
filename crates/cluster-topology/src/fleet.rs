//! Fleet mode (issue 12, in progress): one control-plane konnector deployment serves every app
//! cluster, each as a per-cluster control-plane konnector would, sharded over its replicas.
//!
//! Two pure decisions live here:
//! - [`member_of`]: what an `AppClusterBinding` `ns/name` means for the fleet - the settings a
//!   per-cluster konnector for it is started with by the backend (reference §10.2): binding root
//!   namespace `R = klutch-bind-<ns>-<name>`, the app kubeconfig Secret mirrored into `R`, the
//!   Lease in `R`.
//! - [`plan_shards`]: which app clusters this replica should hold. Ownership is the very Lease a
//!   per-cluster konnector takes (`klutch-bind` in `R`), so a fleet and a per-cluster konnector
//!   never write for one app cluster at once. Every replica computes the same balanced
//!   assignment from the replicas it sees alive ([`ideal_owners`], rendezvous hashing capped at
//!   the fair share), takes the free Leases assigned to it and releases the ones assigned to
//!   another replica, so Leases spread evenly and only about `1/N` of them move when a replica
//!   joins or leaves.

use std::collections::{BTreeMap, BTreeSet};

use konnector_api::v1alpha1::AppClusterBinding;

use crate::flags::SecretKeyRef;

/// The Lease that decides who serves an app cluster, in its binding root namespace.
pub const LEASE_NAME: &str = "klutch-bind";

/// A binding that cannot be served by the fleet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The object has no namespace or name (never from a real server).
    #[error("AppClusterBinding without a namespace or name")]
    Unnamed,
    /// `klutch-bind-<ns>-<name>` is not a valid namespace name.
    #[error(
        "AppClusterBinding {namespace}/{name}: its binding root namespace {root:?} is longer than 63 characters"
    )]
    RootTooLong {
        /// Namespace of the binding.
        namespace: String,
        /// Name of the binding.
        name: String,
        /// The namespace name it would need.
        root: String,
    },
}

/// One app cluster of the fleet: what a per-cluster control-plane konnector for its
/// `AppClusterBinding` is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMember {
    /// `namespace/name` of the `AppClusterBinding`.
    pub binding: (String, String),
    /// `R`: binding root namespace, lease namespace and home of the mirrored kubeconfig.
    pub root_namespace: String,
    /// The app cluster's kubeconfig: `R/<spec.kubeconfigSecretRef.name>`, key as referenced.
    pub app_kubeconfig: SecretKeyRef,
}

/// `klutch-bind-<ns>-<name>`, the namespace the backend creates for an `AppClusterBinding`.
pub fn root_namespace(namespace: &str, name: &str) -> String {
    format!("klutch-bind-{namespace}-{name}")
}

/// The fleet member an `AppClusterBinding` defines.
pub fn member_of(binding: &AppClusterBinding) -> Result<FleetMember, FleetError> {
    let (Some(namespace), Some(name)) = (
        binding.metadata.namespace.as_deref(),
        binding.metadata.name.as_deref(),
    ) else {
        return Err(FleetError::Unnamed);
    };
    let root = root_namespace(namespace, name);
    if root.len() > 63 {
        return Err(FleetError::RootTooLong {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            root,
        });
    }
    let secret = &binding.spec.kubeconfig_secret_ref;
    Ok(FleetMember {
        binding: (namespace.to_owned(), name.to_owned()),
        app_kubeconfig: SecretKeyRef::new(root.clone(), secret.name.clone(), secret.key.clone()),
        root_namespace: root,
    })
}

/// An app cluster's Lease as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLease {
    /// The app cluster (its root namespace `R`).
    pub cluster: String,
    /// `spec.holderIdentity`, if any.
    pub holder: Option<String>,
    /// Whether the holder's lease is still valid (renewed within its duration, judged on this
    /// replica's clock as in `leader::decide`). A missing Lease is `holder: None`.
    pub live: bool,
}

/// What this replica should do with the app clusters' Leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardPlan {
    /// Free (or expired) Leases assigned to this replica: take them.
    pub acquire: Vec<String>,
    /// Leases this replica holds that are assigned to another live replica: hand them over
    /// (stop the app cluster's writers, then clear the holder).
    pub release: Vec<String>,
    /// Every app cluster assigned to this replica, whoever holds its Lease now: what it should
    /// serve, and keep serving, once it holds the Lease.
    pub assigned: BTreeSet<String>,
}

/// FNV-1a 64 of `cluster`, a separator and `replica`: the rendezvous weight of the pair.
/// Stable across processes and versions (no std hasher), so every replica agrees.
fn weight(cluster: &str, replica: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cluster.bytes().chain([0u8]).chain(replica.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The balanced assignment of `clusters` to `replicas` every replica computes alike: every
/// replica holds `floor(C/N)` or one more (never over its fair share plus one); clusters go to
/// their highest-weight replica with room, strongest preferences first, so a replica joining
/// or leaving moves about `C/N` of them.
pub fn ideal_owners<'a>(
    replicas: &BTreeSet<String>,
    clusters: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    if replicas.is_empty() {
        return owners;
    }
    // Every (weight, cluster, replica) pair, strongest first; ties broken by name.
    let clusters: BTreeSet<&str> = clusters.into_iter().collect();
    // `floor` each, and `extra` of the replicas one more: loads differ by one at most.
    let floor = clusters.len() / replicas.len();
    let extra = clusters.len() % replicas.len();
    let mut at_ceiling = 0;
    let mut pairs: Vec<(u64, &str, &str)> = clusters
        .iter()
        .flat_map(|c| replicas.iter().map(move |r| (weight(c, r), *c, r.as_str())))
        .collect();
    pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(b.2)));
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, cluster, replica) in pairs {
        if owners.contains_key(cluster) {
            continue;
        }
        let held = load.entry(replica).or_default();
        let room = *held < floor || (*held == floor && at_ceiling < extra);
        if room {
            if *held == floor {
                at_ceiling += 1;
            }
            *held += 1;
            owners.insert(cluster.to_owned(), replica.to_owned());
        }
    }
    owners
}

/// What replica `me` should do, given the fleet replicas it sees alive (itself included or
/// not) and every app cluster's Lease. A Lease held and live by someone outside the assignment
/// (another fleet replica, or a per-cluster konnector) is never taken: it moves only when its
/// holder releases it or lets it expire.
pub fn plan_shards(me: &str, alive: &BTreeSet<String>, leases: &[ShardLease]) -> ShardPlan {
    let mut replicas = alive.clone();
    replicas.insert(me.to_owned());
    let owners = ideal_owners(&replicas, leases.iter().map(|l| l.cluster.as_str()));
    let mut plan = ShardPlan::default();
    for lease in leases {
        let assigned_to_me = owners.get(&lease.cluster).is_some_and(|o| o == me);
        if assigned_to_me {
            plan.assigned.insert(lease.cluster.clone());
        }
        let mine = lease.holder.as_deref() == Some(me);
        let free = lease.holder.as_deref().is_none_or(str::is_empty) || !lease.live;
        if assigned_to_me && !mine && free {
            plan.acquire.push(lease.cluster.clone());
        } else if mine && lease.live && !assigned_to_me {
            plan.release.push(lease.cluster.clone());
        }
    }
    plan
}

/// A label selector as `kubectl -l` takes it (`a=b,c!=d,e in (f,g),h notin (i),j,!k`), to pick
/// the `AppClusterBinding`s a fleet serves (`--fleet-selector`). Matched in memory, so that a
/// bad selector fails at startup with a clear message rather than as a refused watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<(String, Op)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    NotExists,
}

/// Why a label selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong.
    pub reason: String,
}

/// Splits at the commas outside parentheses.
fn split_requirements(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A label key or value: what Kubernetes accepts, loosely (letters, digits, `-_./`).
fn valid_word(w: &str, key: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    !(key && w.is_empty()) && w.chars().all(ok) && w.len() <= 316
}

impl LabelSelector {
    /// Parses `selector`; the empty selector selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let fail = |reason: String| SelectorError {
            selector: selector.to_owned(),
            reason,
        };
        let mut requirements = Vec::new();
        if selector.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for part in split_requirements(selector) {
            let part = part.trim();
            let word = |w: &str, key: bool| -> Result<String, SelectorError> {
                let w = w.trim();
                if valid_word(w, key) {
                    Ok(w.to_owned())
                } else {
                    Err(fail(format!(
                        "{w:?} is not a valid label {}",
                        if key { "key" } else { "value" }
                    )))
                }
            };
            let set = |rest: &str| -> Result<BTreeSet<String>, SelectorError> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| fail(format!("{part:?}: expected a list in parentheses")))?;
                inner.split(',').map(|v| word(v, false)).collect()
            };
            let (key, op) = if let Some(key) = part.strip_prefix('!') {
                (word(key, true)?, Op::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (word(k, true)?, Op::NotIn([word(v, false)?].into()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (word(k, true)?, Op::In([word(v, false)?].into()))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                (word(k, true)?, Op::NotIn(set(rest)?))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                (word(k, true)?, Op::In(set(rest)?))
            } else {
                (word(part, true)?, Op::Exists)
            };
            requirements.push((key, op));
        }
        Ok(Self { requirements })
    }

    /// The selector in one canonical spelling (requirements sorted, sets sorted), so that two
    /// spellings of one selector name the same fleet.
    pub fn canonical(&self) -> String {
        let set = |v: &BTreeSet<String>| v.iter().cloned().collect::<Vec<_>>().join(",");
        let mut parts: Vec<String> = self
            .requirements
            .iter()
            .map(|(key, op)| match op {
                Op::In(v) => format!("{key} in ({})", set(v)),
                Op::NotIn(v) => format!("{key} notin ({})", set(v)),
                Op::Exists => key.clone(),
                Op::NotExists => format!("!{key}"),
            })
            .collect();
        parts.sort();
        parts.dedup();
        parts.join(",")
    }

    /// A short id of the fleet this selector defines: replicas count as members of one fleet
    /// only if they serve the same `AppClusterBinding`s, or one would assign app clusters to a
    /// replica that never takes them.
    pub fn fleet_id(&self) -> String {
        format!("{:08x}", weight(&self.canonical(), "fleet") as u32)
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = labels.get(key);
            match op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn clusters(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("klutch-bind-ns-app{i}")).collect()
    }

    fn loads(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
        let mut load = BTreeMap::new();
        for r in owners.values() {
            *load.entry(r.clone()).or_default() += 1;
        }
        load
    }

    #[test]
    fn the_assignment_is_balanced_and_complete() {
        for (n_clusters, names) in [
            (20, &["a", "b", "c"][..]),
            (100, &["a", "b", "c", "d", "e", "f", "g"][..]),
            (2, &["a", "b", "c"][..]),
        ] {
            let cs = clusters(n_clusters);
            let owners = ideal_owners(&replicas(names), cs.iter().map(String::as_str));
            assert_eq!(owners.len(), n_clusters, "every cluster has an owner");
            // Never over the fair share plus one.
            let most = n_clusters / names.len() + 1;
            let load = loads(&owners);
            assert!(load.values().all(|l| *l <= most), "{load:?} over {most}");
            // With as many clusters as replicas or more, nobody is idle and the spread is 1.
            if n_clusters >= names.len() {
                let (min, max) = (load.values().min(), load.values().max());
                assert!(max.unwrap() - min.unwrap() <= 1, "{load:?}");
            }
        }
    }

    #[test]
    fn every_replica_computes_the_same_assignment() {
        let cs = clusters(30);
        let one = ideal_owners(&replicas(&["a", "b", "c"]), cs.iter().map(String::as_str));
        let reversed: Vec<&str> = cs.iter().rev().map(String::as_str).collect();
        let two = ideal_owners(&replicas(&["c", "a", "b"]), reversed);
        assert_eq!(one, two);
    }

    #[test]
    fn a_joining_replica_moves_only_its_share() {
        let cs = clusters(60);
        let before = ideal_owners(&replicas(&["a", "b", "c"]), cs.iter().map(String::as_str));
        let after = ideal_owners(
            &replicas(&["a", "b", "c", "d"]),
            cs.iter().map(String::as_str),
        );
        let moved = cs.iter().filter(|c| before[*c] != after[*c]).count();
        // d takes 15; the quota cap may shift a few more between a, b and c, never a reshuffle.
        assert!((15..=25).contains(&moved), "{moved} of 60 moved");
        assert_eq!(loads(&after)["d"], 15);
    }

    #[test]
    fn a_replica_takes_its_free_leases_and_releases_what_is_assigned_elsewhere() {
        let cs = clusters(6);
        let alive = replicas(&["a", "b"]);
        let owners = ideal_owners(&alive, cs.iter().map(String::as_str));
        // a holds everything (it was alone); b just joined.
        let leases: Vec<ShardLease> = cs
            .iter()
            .map(|c| ShardLease {
                cluster: c.clone(),
                holder: Some("a".into()),
                live: true,
            })
            .collect();
        let for_a = plan_shards("a", &alive, &leases);
        let for_b = plan_shards("b", &alive, &leases);
        let assigned_to_b: Vec<String> = cs.iter().filter(|c| owners[*c] == "b").cloned().collect();
        assert_eq!(for_a.release, assigned_to_b);
        assert!(for_a.acquire.is_empty());
        // b waits for the hand-over: a live Lease is never taken.
        let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
        assert_eq!(
            for_b,
            ShardPlan {
                assigned: set(&assigned_to_b),
                ..ShardPlan::default()
            }
        );
        let assigned_to_a: Vec<String> = cs.iter().filter(|c| owners[*c] == "a").cloned().collect();
        assert_eq!(for_a.assigned, set(&assigned_to_a));
        // Once released, b takes them.
        let released: Vec<ShardLease> = leases
            .iter()
            .map(|l| ShardLease {
                holder: (!assigned_to_b.contains(&l.cluster)).then(|| "a".into()),
                ..l.clone()
            })
            .collect();
        assert_eq!(plan_shards("b", &alive, &released).acquire, assigned_to_b);
        assert_eq!(
            plan_shards("a", &alive, &released),
            ShardPlan {
                assigned: set(&assigned_to_a),
                ..ShardPlan::default()
            }
        );
    }

    #[test]
    fn a_dead_replicas_leases_are_taken_only_once_expired() {
        let cs = clusters(4);
        // c died: the survivors no longer see it, its Leases are live until they expire.
        let alive = replicas(&["a", "b"]);
        let mut leases: Vec<ShardLease> = cs
            .iter()
            .map(|c| ShardLease {
                cluster: c.clone(),
                holder: Some("c".into()),
                live: true,
            })
            .collect();
        let live = plan_shards("a", &alive, &leases);
        assert!(
            live.acquire.is_empty() && live.release.is_empty(),
            "{live:?}"
        );
        assert_eq!(
            live.assigned.len(),
            2,
            "a's share is known before it can take it"
        );
        for l in &mut leases {
            l.live = false;
        }
        let a = plan_shards("a", &alive, &leases);
        let b = plan_shards("b", &alive, &leases);
        let mut all: Vec<String> = a.acquire.iter().chain(&b.acquire).cloned().collect();
        all.sort();
        assert_eq!(
            all, cs,
            "between them, the survivors take every expired Lease once"
        );
        assert_eq!(a.acquire.len(), 2);
    }

    #[test]
    fn a_per_cluster_konnector_keeps_its_app_cluster_until_it_is_gone() {
        let lease = |live| ShardLease {
            cluster: "klutch-bind-default-app".into(),
            holder: Some("konnector-app-7d9f".into()),
            live,
        };
        let alive = replicas(&["a"]);
        assert_eq!(
            plan_shards("a", &alive, &[lease(true)]),
            ShardPlan {
                assigned: ["klutch-bind-default-app".to_string()].into(),
                ..ShardPlan::default()
            }
        );
        assert_eq!(
            plan_shards("a", &alive, &[lease(false)]).acquire,
            vec!["klutch-bind-default-app".to_string()]
        );
    }

    #[test]
    fn an_appclusterbinding_becomes_the_per_cluster_settings() {
        let acb: AppClusterBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "klutch.anynines.com/v1alpha1", "kind": "AppClusterBinding",
            "metadata": {"name": "control-plane-test", "namespace": "default"},
            "spec": {"kubeconfigSecretRef": {"name": "app-cluster-kubeconfig",
                "namespace": "default", "key": "kubeconfig"}}
        }))
        .unwrap();
        let m = member_of(&acb).unwrap();
        assert_eq!(m.root_namespace, "klutch-bind-default-control-plane-test");
        assert_eq!(
            m.app_kubeconfig,
            SecretKeyRef::new(
                "klutch-bind-default-control-plane-test",
                "app-cluster-kubeconfig",
                "kubeconfig"
            )
        );
        let mut long = acb.clone();
        long.metadata.name = Some("x".repeat(60));
        assert!(matches!(
            member_of(&long),
            Err(FleetError::RootTooLong { .. })
        ));
    }

    #[test]
    fn label_selectors_parse_and_match_as_kubectl_does() {
        let labels: BTreeMap<String, String> = [("tier", "gold"), ("team", "a")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (selector, expected) in [
            ("", true),
            ("tier=gold", true),
            ("tier==gold", true),
            ("tier!=gold", false),
            ("tier in (gold, silver)", true),
            ("tier notin (gold)", false),
            ("team,tier=gold", true),
            ("!team", false),
            ("missing", false),
            ("!missing,team=a", true),
            ("missing!=x", true),
        ] {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&labels), expected, "{selector:?}");
        }
        let a = LabelSelector::parse("tier in (silver,gold), team").unwrap();
        let b = LabelSelector::parse("team,tier in (gold, silver)").unwrap();
        assert_eq!(a.canonical(), "team,tier in (gold,silver)");
        assert_eq!(a.fleet_id(), b.fleet_id());
        assert_ne!(a.fleet_id(), LabelSelector::parse("").unwrap().fleet_id());
        assert_eq!(LabelSelector::parse("").unwrap().fleet_id().len(), 8);
        for bad in ["tier=gold,", "ti er=x", "tier in gold", "=x"] {
            let e = LabelSelector::parse(bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid label selector {bad:?}: ")),
                "{e}"
            );
        }
    }
}
