//! Status of APIServiceBindings, ClusterBindings and APIServiceExports (reference 5.2-5.7 and
//! section 7, with decisions C1, C2, S1, S4).
//!
//! Every condition of an object is computed in one place from what the controllers observed, and
//! `Ready` is recomputed whenever any of them changes; the result is written by one writer per
//! object, and only when it differs from what is stored (conditions keep their
//! `lastTransitionTime` when nothing but the time would change, so no write happens then).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use konnector_api::conditions::{self, Condition, ConditionStatus, Severity};
use konnector_api::strings::condition_types::{
    APP_KUBECONFIG_VALID, CONNECTED, CONSUMER_IN_SYNC, HEARTBEATING, INFORMERS_SYNCED, READY,
    SCHEMA_IN_SYNC, SECRET_VALID, VALID_VERSION,
};
use konnector_api::strings::reasons;
use konnector_api::v1alpha1::{
    APIServiceBinding, APIServiceBindingStatus, APIServiceExportStatus, ClusterBindingStatus,
    ClusterSecretKeyRef, ResourceNames, go_duration,
};

use crate::crd::SchemaState;
use crate::version::{VersionError, parse_error_message};

/// What the binding's kubeconfig Secret looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretCheck {
    /// The Secret does not exist.
    NotFound,
    /// The Secret lacks the referenced key.
    MissingKey,
    /// The kubeconfig does not load; the text says why (never its contents).
    Invalid(String),
    /// The API server refuses to let the konnector read the Secret; the server's message.
    Unreadable(String),
    /// Usable.
    Valid,
}

/// `SecretValid` of an APIServiceBinding (reference 5.2, exact messages).
pub fn secret_valid(secret_ref: &ClusterSecretKeyRef, check: &SecretCheck) -> Condition {
    let id = secret_ref.namespaced_name();
    let invalid = |message: String| {
        Condition::false_(
            SECRET_VALID,
            reasons::KUBECONFIG_SECRET_INVALID,
            Severity::Error,
            message,
        )
    };
    match check {
        SecretCheck::NotFound => Condition::false_(
            SECRET_VALID,
            reasons::KUBECONFIG_SECRET_NOT_FOUND,
            Severity::Error,
            format!("Kubeconfig secret {id} not found. Rerun kubectl bind for repair."),
        ),
        SecretCheck::MissingKey => invalid(format!(
            "Kubeconfig secret {id} is missing {:?} string key.",
            secret_ref.key
        )),
        SecretCheck::Invalid(err) => invalid(format!(
            "Kubeconfig secret {id} has an invalid kubeconfig: {err}"
        )),
        SecretCheck::Unreadable(err) => Condition::false_(
            SECRET_VALID,
            reasons::KUBECONFIG_SECRET_UNREADABLE,
            Severity::Error,
            format!("Kubeconfig secret {id} cannot be read: {err}"),
        ),
        SecretCheck::Valid => Condition::true_(SECRET_VALID),
    }
}

/// What happened to the export's CRD in the app cluster (reference 5.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportCheck {
    /// No APIServiceExport of the binding's name on the provider.
    NotFound,
    /// The export cannot be turned into a CRD.
    Invalid(String),
    /// The app cluster rejected the new CRD.
    CreateFailed(String),
    /// A CRD of that name exists and belongs to someone else; it is left untouched.
    Foreign,
    /// The app cluster rejected the CRD update.
    UpdateFailed(String),
    /// The CRD is installed; its schema state.
    Installed(SchemaState),
}

/// `Connected` and `SchemaInSync` of an APIServiceBinding. `Connected` has one message per
/// cause, so it does not flip between two texts (S1).
pub fn export_conditions(binding_name: &str, check: &ExportCheck) -> Vec<Condition> {
    let not_connected = |reason: &str, message: String| {
        Condition::false_(CONNECTED, reason, Severity::Error, message)
    };
    let connected = match check {
        ExportCheck::NotFound => not_connected(
            reasons::API_SERVICE_EXPORT_NOT_FOUND,
            format!(
                "APIServiceExport {binding_name} not found on the service provider cluster. Rerun kubectl bind for repair."
            ),
        ),
        ExportCheck::Invalid(err) => not_connected(
            reasons::API_SERVICE_EXPORT_INVALID,
            format!(
                "APIServiceExport {binding_name} on the service provider cluster is invalid: {err}"
            ),
        ),
        ExportCheck::CreateFailed(err) => not_connected(
            reasons::CRD_CREATE_FAILED,
            format!("CustomResourceDefinition {binding_name} cannot be created: {err}"),
        ),
        ExportCheck::Foreign => not_connected(
            reasons::FOREIGN_CRD,
            format!("CustomResourceDefinition {binding_name} is not owned by klutch.anynines.com."),
        ),
        ExportCheck::UpdateFailed(err) => not_connected(
            reasons::CRD_UPDATE_FAILED,
            format!("CustomResourceDefinition {binding_name} cannot be updated: {err}"),
        ),
        ExportCheck::Installed(_) => Condition::true_(CONNECTED),
    };
    let schema = match check {
        ExportCheck::Installed(SchemaState::InSync) => Condition::true_(SCHEMA_IN_SYNC),
        ExportCheck::Installed(SchemaState::NotEstablished) => Condition::false_(
            SCHEMA_IN_SYNC,
            reasons::CRD_NOT_ESTABLISHED,
            Severity::Info,
            format!(
                "CustomResourceDefinition {binding_name} is not established with the APIServiceExport's schema yet."
            ),
        ),
        ExportCheck::Installed(SchemaState::OutOfSync) => Condition::false_(
            SCHEMA_IN_SYNC,
            reasons::SCHEMA_OUT_OF_SYNC,
            Severity::Warning,
            format!(
                "CustomResourceDefinition {binding_name} does not match the APIServiceExport's schema."
            ),
        ),
        // The server's own words: which field of the new schema it refuses.
        ExportCheck::UpdateFailed(err) => Condition::false_(
            SCHEMA_IN_SYNC,
            reasons::SCHEMA_OUT_OF_SYNC,
            Severity::Warning,
            format!(
                "CustomResourceDefinition {binding_name} does not match the APIServiceExport's schema: the app cluster rejected the update: {err}"
            ),
        ),
        ExportCheck::CreateFailed(err) => Condition::false_(
            SCHEMA_IN_SYNC,
            reasons::SCHEMA_OUT_OF_SYNC,
            Severity::Warning,
            format!(
                "CustomResourceDefinition {binding_name} is not installed from the APIServiceExport: the app cluster rejected it: {err}"
            ),
        ),
        _ => Condition::false_(
            SCHEMA_IN_SYNC,
            reasons::SCHEMA_OUT_OF_SYNC,
            Severity::Warning,
            format!(
                "CustomResourceDefinition {binding_name} is not installed from the APIServiceExport."
            ),
        ),
    };
    vec![connected, schema]
}

/// `InformersSynced`: the provider session's caches synced, or did not in time.
pub fn informers_synced(synced: bool, timeout: Duration) -> Condition {
    if synced {
        Condition::true_(INFORMERS_SYNCED)
    } else {
        Condition::false_(
            INFORMERS_SYNCED,
            reasons::INFORMER_SYNC_TIMEOUT,
            Severity::Error,
            format!("Informers did not sync within {}", go_duration(timeout)),
        )
    }
}

/// `InformersSynced` of a binding whose caches synced, unless watches of its accepted claims
/// are refused: nothing of that claim syncs in those namespaces until someone grants access.
pub fn claims_watchable(denied: &[String]) -> Condition {
    match denied {
        [] => Condition::true_(INFORMERS_SYNCED),
        [first, rest @ ..] => Condition::false_(
            INFORMERS_SYNCED,
            reasons::CLAIM_WATCH_FORBIDDEN,
            Severity::Error,
            match rest.len() {
                0 => format!("Claimed objects cannot be watched: {first}"),
                n => format!(
                    "Claimed objects cannot be watched ({} places): {first}",
                    n + 1
                ),
            },
        ),
    }
}

/// `AppKubeconfigValid` (control-plane mode): whether the app cluster kubeconfig Secret's
/// current content is in use. A rejected rotation keeps syncing with the last good kubeconfig,
/// hence a warning, not an error.
pub fn app_kubeconfig_valid(secret: &str, rejected: Option<&str>) -> Condition {
    match rejected {
        None => Condition::true_(APP_KUBECONFIG_VALID),
        Some(reason) => Condition::false_(
            APP_KUBECONFIG_VALID,
            reasons::APP_KUBECONFIG_REJECTED,
            Severity::Warning,
            format!(
                "App cluster kubeconfig secret {secret} was rejected ({reason}); the last good kubeconfig is still in use."
            ),
        ),
    }
}

/// `AppKubeconfigValid=False` for an app cluster a fleet cannot serve yet (fleet mode): its
/// kubeconfig Secret is missing or unusable, and there is no last good kubeconfig to keep using.
pub fn app_kubeconfig_unusable(secret: &str, problem: &str) -> Condition {
    Condition::false_(
        APP_KUBECONFIG_VALID,
        reasons::APP_KUBECONFIG_REJECTED,
        Severity::Warning,
        format!(
            "App cluster kubeconfig secret {secret} cannot be used ({problem}); the app cluster is not served until it is fixed."
        ),
    )
}

/// `Heartbeating`: the last ClusterBinding status write succeeded, or why it failed.
pub fn heartbeating(result: Result<(), &str>) -> Condition {
    match result {
        Ok(()) => Condition::true_(HEARTBEATING),
        Err(err) => Condition::false_(
            HEARTBEATING,
            reasons::CLUSTER_BINDING_UPDATE_FAILED,
            Severity::Warning,
            format!("Failed to update service provider ClusterBinding: {err}"),
        ),
    }
}

/// A cluster a session depends on, as seen by its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Remote {
    /// The provider cluster (its ClusterBinding is probed).
    Provider,
    /// The app cluster.
    App,
}

/// What a probe result changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to report.
    Unchanged,
    /// The cluster went away (or its error changed): report it.
    Lost(String),
    /// The cluster is back: recompute conditions, retry failed work at once.
    Regained,
}

/// Whether the remote clusters of a session answer. One failed probe is enough to report an
/// outage: the probe has its own timeout, and a flapping network is worth seeing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    down: std::collections::BTreeMap<Remote, String>,
}

impl Reachability {
    /// Records a probe of `remote`.
    pub fn observe(&mut self, remote: Remote, result: Result<(), String>) -> Transition {
        match result {
            Ok(()) => match self.down.remove(&remote) {
                Some(_) => Transition::Regained,
                None => Transition::Unchanged,
            },
            Err(e) => {
                // Keep the first error of an outage: a message that changes on every probe
                // would rewrite the binding's status (and its lastTransitionTime rules) each time.
                match self.down.entry(remote) {
                    std::collections::btree_map::Entry::Occupied(_) => Transition::Unchanged,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(e.clone());
                        Transition::Lost(e)
                    }
                }
            }
        }
    }

    /// The conditions a binding gets while clusters are unreachable (empty when all answer).
    pub fn conditions(&self) -> Vec<Condition> {
        let mut out = Vec::new();
        if let Some(e) = self.down.get(&Remote::App) {
            out.push(Condition::false_(
                CONNECTED,
                reasons::APP_CLUSTER_UNREACHABLE,
                Severity::Error,
                format!("The app cluster's API server cannot be reached: {e}"),
            ));
        }
        if let Some(e) = self.down.get(&Remote::Provider) {
            // Provider last: its `Connected` wins when both are down (it is the remote side
            // in default mode, the more likely outage).
            out.retain(|c| c.type_ != CONNECTED);
            out.push(Condition::false_(
                CONNECTED,
                reasons::PROVIDER_UNREACHABLE,
                Severity::Error,
                format!("The service provider's API server cannot be reached: {e}"),
            ));
            out.push(heartbeating(Err(&format!(
                "the service provider's API server cannot be reached: {e}"
            ))));
        }
        out
    }

    /// Whether `remote` answered its last probe.
    pub fn is_reachable(&self, remote: Remote) -> bool {
        !self.down.contains_key(&remote)
    }

    /// Overrides `Connected` in `conditions` while a cluster is unreachable, so that a reconcile
    /// working from caches does not report a connection it does not have.
    pub fn apply(&self, conditions: &mut Vec<Condition>) {
        for c in self.conditions() {
            conditions.retain(|o| o.type_ != c.type_);
            conditions.push(c);
        }
    }
}

/// The new status of a binding after setting `updates` (and the pretty name, when known), or
/// `None` if nothing changed.
pub fn binding_status(
    current: Option<&APIServiceBindingStatus>,
    updates: impl IntoIterator<Item = Condition>,
    provider_pretty_name: Option<&str>,
    now: Timestamp,
) -> Option<APIServiceBindingStatus> {
    let old = current.cloned().unwrap_or_default();
    let mut new = old.clone();
    for c in updates {
        conditions::set(&mut new.conditions, c, now);
    }
    conditions::set_summary(&mut new.conditions, now);
    if let Some(name) = provider_pretty_name {
        new.provider_pretty_name = name.to_string();
    }
    (new != old).then_some(new)
}

/// The heartbeat the reference promises: the interval on the ClusterBinding.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(300);

/// The ClusterBinding status after a heartbeat reconcile (reference 5.4): interval, a fresh
/// `lastHeartbeatTime` when half the interval has passed, the konnector version and (default
/// mode) `SecretValid`; `None` if nothing changed, so a healthy konnector writes only when the
/// heartbeat is due.
pub fn cluster_binding_status(
    current: Option<&ClusterBindingStatus>,
    git_version: &str,
    version: Result<String, VersionError>,
    secret_valid: Option<Condition>,
    now: Timestamp,
) -> Option<ClusterBindingStatus> {
    let old = current.cloned().unwrap_or_default();
    let mut new = old.clone();
    new.heartbeat_interval = Some(go_duration(HEARTBEAT_INTERVAL));
    if heartbeat_due(current, now) {
        new.last_heartbeat_time = Some(conditions::truncate_to_seconds(now));
    }
    match version {
        Ok(v) => {
            new.konnector_version = Some(v);
            conditions::mark_true(&mut new.conditions, VALID_VERSION, now);
        }
        Err(err) => {
            new.konnector_version = Some("unknown".to_string());
            conditions::mark_false(
                &mut new.conditions,
                VALID_VERSION,
                reasons::PARSE_ERROR,
                Severity::Warning,
                parse_error_message(git_version, &err),
                now,
            );
        }
    }
    if let Some(c) = secret_valid {
        conditions::set(&mut new.conditions, c, now);
    }
    conditions::set_summary(&mut new.conditions, now);
    (new != old).then_some(new)
}

/// Whether the heartbeat must be refreshed: never sent, or older than half the interval.
pub fn heartbeat_due(current: Option<&ClusterBindingStatus>, now: Timestamp) -> bool {
    time_until_heartbeat(current, now).is_zero()
}

/// How long until the next heartbeat is due (zero if due now).
pub fn time_until_heartbeat(current: Option<&ClusterBindingStatus>, now: Timestamp) -> Duration {
    let Some(Time(last)) = current.and_then(|s| s.last_heartbeat_time.clone()) else {
        return Duration::ZERO;
    };
    let half = SignedDuration::from_secs((HEARTBEAT_INTERVAL.as_secs() / 2) as i64);
    let due = last.checked_add(half).unwrap_or(last);
    let remaining = due.duration_since(now);
    if remaining.is_positive() {
        Duration::try_from(remaining).unwrap_or(Duration::ZERO)
    } else {
        Duration::ZERO
    }
}

/// `SecretValid` of the ClusterBinding in default mode, and whether the consumer-side kubeconfig
/// Secret must be (re)written to mirror the provider-side one (reference 5.4 `ensureConsumerSecret`,
/// without B1's unconditional update).
pub fn consumer_secret(
    provider_namespace: &str,
    provider_secret_name: &str,
    key: &str,
    provider: Option<&Secret>,
    consumer: Option<&Secret>,
) -> (Condition, bool) {
    let Some(provider) = provider else {
        return (
            Condition::false_(
                SECRET_VALID,
                reasons::PROVIDER_SECRET_NOT_FOUND,
                Severity::Warning,
                format!("Provider secret {provider_namespace}/{provider_secret_name} not found"),
            ),
            false,
        );
    };
    if !provider.data.as_ref().is_some_and(|d| d.contains_key(key)) {
        return (
            Condition::false_(
                SECRET_VALID,
                reasons::PROVIDER_SECRET_INVALID,
                Severity::Warning,
                format!(
                    "Provider secret {provider_namespace}/{provider_secret_name} is missing {key:?} string key."
                ),
            ),
            false,
        );
    }
    let differs = consumer.is_none_or(|c| c.data != provider.data || c.type_ != provider.type_);
    (Condition::true_(SECRET_VALID), differs)
}

/// The APIServiceExport status (reference 5.7): `Connected` and `ConsumerInSync` from the binding,
/// the consumer CRD's conditions copied (minus `Ready`), accepted names and stored versions;
/// `None` if nothing changed.
pub fn export_status(
    current: Option<&APIServiceExportStatus>,
    binding: Option<&APIServiceBinding>,
    crd: Option<&CustomResourceDefinition>,
    now: Timestamp,
) -> Option<APIServiceExportStatus> {
    let old = current.cloned().unwrap_or_default();
    let mut new = old.clone();
    match binding {
        None => {
            let msg = "No APIServiceBinding exists.";
            conditions::mark_false(
                &mut new.conditions,
                CONNECTED,
                reasons::API_SERVICE_BINDING_NOT_FOUND,
                Severity::Info,
                msg,
                now,
            );
            conditions::mark_false(
                &mut new.conditions,
                CONSUMER_IN_SYNC,
                reasons::NA,
                Severity::Info,
                msg,
                now,
            );
        }
        Some(b) => {
            conditions::mark_true(&mut new.conditions, CONNECTED, now);
            let schema = b
                .status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, SCHEMA_IN_SYNC));
            let copied = match schema {
                Some(c) => Condition {
                    type_: CONSUMER_IN_SYNC.to_string(),
                    ..c.clone()
                },
                None => Condition::false_(
                    CONSUMER_IN_SYNC,
                    reasons::UNKNOWN,
                    Severity::Info,
                    format!(
                        "APIServiceBinding {} in the consumer cluster does not have a SchemaInSync condition.",
                        b.metadata.name.as_deref().unwrap_or_default()
                    ),
                ),
            };
            conditions::set(&mut new.conditions, copied, now);
        }
    }
    if let Some(status) = crd.and_then(|c| c.status.as_ref()) {
        for c in status
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.type_ != READY)
        {
            let status_ = match c.status.as_str() {
                "True" => ConditionStatus::True,
                "False" => ConditionStatus::False,
                _ => ConditionStatus::Unknown,
            };
            let copied = Condition {
                type_: c.type_.clone(),
                status: status_,
                severity: if status_ == ConditionStatus::True {
                    Severity::None
                } else {
                    Severity::Error
                },
                last_transition_time: c.last_transition_time.clone().unwrap_or(Time(now)),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            };
            match new.conditions.iter_mut().find(|x| x.type_ == copied.type_) {
                Some(existing) if existing.has_same_state(&copied) => {}
                Some(existing) => *existing = copied,
                None => new.conditions.push(copied),
            }
        }
        if let Some(names) = &status.accepted_names {
            new.accepted_names = ResourceNames {
                categories: names.categories.clone(),
                kind: names.kind.clone(),
                list_kind: names.list_kind.clone(),
                plural: names.plural.clone(),
                short_names: names.short_names.clone(),
                singular: names.singular.clone(),
            };
        }
        new.stored_versions = status.stored_versions.clone().unwrap_or_default();
    }
    conditions::set_summary(&mut new.conditions, now);
    (new != old).then_some(new)
}

#[cfg(test)]
mod reachability_tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_and_cleared_when_the_cluster_answers() {
        let mut r = Reachability::default();
        assert_eq!(r.observe(Remote::Provider, Ok(())), Transition::Unchanged);
        assert!(r.conditions().is_empty());
        assert_eq!(
            r.observe(Remote::Provider, Err("connection refused".into())),
            Transition::Lost("connection refused".into())
        );
        assert_eq!(
            r.observe(Remote::Provider, Err("timed out".into())),
            Transition::Unchanged
        );
        let c = r.conditions();
        let connected = c.iter().find(|c| c.type_ == CONNECTED).unwrap();
        assert_eq!(connected.status, ConditionStatus::False);
        assert_eq!(connected.reason, reasons::PROVIDER_UNREACHABLE);
        assert!(connected.message.contains("connection refused"));
        let hb = c.iter().find(|c| c.type_ == HEARTBEATING).unwrap();
        assert_eq!(hb.reason, reasons::CLUSTER_BINDING_UPDATE_FAILED);
        assert!(!r.is_reachable(Remote::Provider));
        assert_eq!(r.observe(Remote::Provider, Ok(())), Transition::Regained);
        assert!(r.conditions().is_empty());
    }

    #[test]
    fn reconcile_conditions_are_overridden_while_down() {
        let mut r = Reachability::default();
        r.observe(Remote::App, Err("no route to host".into()));
        let mut conditions = vec![
            Condition::true_(CONNECTED),
            Condition::true_(INFORMERS_SYNCED),
        ];
        r.apply(&mut conditions);
        let connected = conditions.iter().find(|c| c.type_ == CONNECTED).unwrap();
        assert_eq!(connected.reason, reasons::APP_CLUSTER_UNREACHABLE);
        assert_eq!(conditions.len(), 2);
        r.observe(Remote::Provider, Err("refused".into()));
        let c = r.conditions();
        assert_eq!(c.iter().filter(|c| c.type_ == CONNECTED).count(), 1);
        assert_eq!(
            c.iter().find(|c| c.type_ == CONNECTED).unwrap().reason,
            reasons::PROVIDER_UNREACHABLE
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use konnector_api::v1alpha1::APIServiceBindingSpec;
    use std::collections::BTreeMap;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn secret_ref() -> ClusterSecretKeyRef {
        ClusterSecretKeyRef {
            name: "kubeconfig".into(),
            namespace: "klutch-bind".into(),
            key: "kubeconfig".into(),
        }
    }

    #[test]
    fn secret_valid_messages_match_the_reference() {
        let r = secret_ref();
        let c = secret_valid(&r, &SecretCheck::NotFound);
        assert_eq!(
            (c.reason.as_str(), c.severity),
            ("KubeconfigSecretNotFound", Severity::Error)
        );
        assert_eq!(
            c.message,
            "Kubeconfig secret klutch-bind/kubeconfig not found. Rerun kubectl bind for repair."
        );
        let c = secret_valid(&r, &SecretCheck::MissingKey);
        assert_eq!(
            c.message,
            "Kubeconfig secret klutch-bind/kubeconfig is missing \"kubeconfig\" string key."
        );
        assert_eq!(c.reason, "KubeconfigSecretInvalid");
        let c = secret_valid(
            &r,
            &SecretCheck::Invalid("current context \"x\" has no namespace set".into()),
        );
        assert_eq!(
            c.message,
            "Kubeconfig secret klutch-bind/kubeconfig has an invalid kubeconfig: current context \"x\" has no namespace set"
        );
        let c = secret_valid(
            &r,
            &SecretCheck::Unreadable("secrets \"kubeconfig\" is forbidden".into()),
        );
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            (
                "KubeconfigSecretUnreadable",
                "Kubeconfig secret klutch-bind/kubeconfig cannot be read: secrets \"kubeconfig\" is forbidden"
            )
        );
        assert_eq!(
            secret_valid(&r, &SecretCheck::Valid).status,
            ConditionStatus::True
        );
    }

    #[test]
    fn healthy_binding_is_ready_and_a_second_identical_reconcile_writes_nothing() {
        let now = t("2024-01-01T00:00:00Z");
        let mut updates = vec![
            secret_valid(&secret_ref(), &SecretCheck::Valid),
            informers_synced(true, Duration::from_secs(150)),
            heartbeating(Ok(())),
        ];
        updates.extend(export_conditions(
            "mangodbs.mangodb.com",
            &ExportCheck::Installed(SchemaState::InSync),
        ));
        let status = binding_status(None, updates.clone(), Some("anynines"), now).unwrap();
        assert_eq!(status.provider_pretty_name, "anynines");
        let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "Ready",
                "Connected",
                "Heartbeating",
                "InformersSynced",
                "SchemaInSync",
                "SecretValid"
            ]
        );
        assert!(conditions::is_true(&status.conditions, READY));
        assert_eq!(
            binding_status(
                Some(&status),
                updates,
                Some("anynines"),
                t("2024-01-01T01:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn missing_export_gives_one_stable_message_and_not_ready() {
        let now = t("2024-01-01T00:00:00Z");
        let c = export_conditions("x.y", &ExportCheck::NotFound);
        assert_eq!(
            c[0].message,
            "APIServiceExport x.y not found on the service provider cluster. Rerun kubectl bind for repair."
        );
        let s = binding_status(None, c.clone(), None, now).unwrap();
        let ready = conditions::get(&s.conditions, READY).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "APIServiceExportNotFound")
        );
        assert_eq!(binding_status(Some(&s), c, None, now), None);
        let foreign = export_conditions("x.y", &ExportCheck::Foreign);
        assert_eq!(
            foreign[0].message,
            "CustomResourceDefinition x.y is not owned by klutch.anynines.com."
        );
    }

    #[test]
    fn rejected_app_kubeconfig_is_a_warning_and_recovers() {
        let c = app_kubeconfig_valid("ns/app", Some("secret not found"));
        assert_eq!(
            (c.status, c.severity, c.reason.as_str()),
            (
                ConditionStatus::False,
                Severity::Warning,
                "AppKubeconfigRejected"
            )
        );
        assert_eq!(
            c.message,
            "App cluster kubeconfig secret ns/app was rejected (secret not found); the last good kubeconfig is still in use."
        );
        assert_eq!(
            app_kubeconfig_valid("ns/app", None).status,
            ConditionStatus::True
        );
    }

    #[test]
    fn informer_timeout_and_heartbeat_failure_texts() {
        let c = informers_synced(false, Duration::from_secs(150));
        assert_eq!(c.message, "Informers did not sync within 2m30s");
        let c = heartbeating(Err("connection refused"));
        assert_eq!(
            (c.reason.as_str(), c.severity),
            ("ClusterBindingUpdateFailed", Severity::Warning)
        );
        assert_eq!(
            c.message,
            "Failed to update service provider ClusterBinding: connection refused"
        );
    }

    #[test]
    fn heartbeat_is_written_only_when_due() {
        let now = t("2024-01-01T00:00:00.700Z");
        let s = cluster_binding_status(
            None,
            "v1.33.0+kube-bind-v0.1.0",
            Ok("v0.1.0".into()),
            None,
            now,
        )
        .unwrap();
        assert_eq!(s.heartbeat_interval.as_deref(), Some("5m0s"));
        assert_eq!(s.konnector_version.as_deref(), Some("v0.1.0"));
        assert_eq!(
            s.last_heartbeat_time.as_ref().unwrap().0,
            t("2024-01-01T00:00:00Z")
        );
        assert!(conditions::is_true(&s.conditions, READY));
        // Two minutes later: not due, nothing to write.
        let later = t("2024-01-01T00:02:00Z");
        assert_eq!(
            time_until_heartbeat(Some(&s), later),
            Duration::from_secs(30)
        );
        assert_eq!(
            cluster_binding_status(Some(&s), "g", Ok("v0.1.0".into()), None, later),
            None
        );
        // After half the interval: a new heartbeat.
        let due = t("2024-01-01T00:02:31Z");
        let s2 = cluster_binding_status(Some(&s), "g", Ok("v0.1.0".into()), None, due).unwrap();
        assert_eq!(s2.last_heartbeat_time.unwrap().0, due);
    }

    #[test]
    fn unparsable_version_is_reported() {
        let now = t("2024-01-01T00:00:00Z");
        let err = crate::version::binary_version("v1.25.2+foo").unwrap_err();
        let s = cluster_binding_status(None, "v1.25.2+foo", Err(err), None, now).unwrap();
        assert_eq!(s.konnector_version.as_deref(), Some("unknown"));
        let c = conditions::get(&s.conditions, VALID_VERSION).unwrap();
        assert_eq!(c.reason, "ParseError");
        assert_eq!(
            c.message,
            "Konnector binary version string \"v1.25.2+foo\" cannot be parsed: failed to parse version \"v1.25.2+foo\""
        );
    }

    fn secret(data: &[(&str, &str)], type_: &str) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
            ),
            type_: Some(type_.into()),
            ..Default::default()
        }
    }

    #[test]
    fn consumer_secret_is_rewritten_only_when_it_differs() {
        let p = secret(&[("kubeconfig", "a")], "Opaque");
        let (c, write) = consumer_secret("p", "kubeconfig", "kubeconfig", Some(&p), None);
        assert!(c.status == ConditionStatus::True && write);
        assert!(!consumer_secret("p", "kubeconfig", "kubeconfig", Some(&p), Some(&p.clone())).1);
        let changed = secret(&[("kubeconfig", "b")], "Opaque");
        assert!(consumer_secret("p", "kubeconfig", "kubeconfig", Some(&changed), Some(&p)).1);
        let (c, write) = consumer_secret("p", "kubeconfig", "kubeconfig", None, Some(&p));
        assert_eq!(
            (c.message.as_str(), write),
            ("Provider secret p/kubeconfig not found", false)
        );
        let (c, _) = consumer_secret(
            "p",
            "kubeconfig",
            "kubeconfig",
            Some(&secret(&[], "Opaque")),
            None,
        );
        assert_eq!(
            c.message,
            "Provider secret p/kubeconfig is missing \"kubeconfig\" string key."
        );
    }

    #[test]
    fn export_status_without_and_with_binding_and_crd() {
        let now = t("2024-01-01T00:00:00Z");
        let s = export_status(None, None, None, now).unwrap();
        let c = conditions::get(&s.conditions, CONNECTED).unwrap();
        assert_eq!(
            (c.reason.as_str(), c.severity, c.message.as_str()),
            (
                "APIServiceBindingNotFound",
                Severity::Info,
                "No APIServiceBinding exists."
            )
        );
        assert_eq!(
            conditions::get(&s.conditions, CONSUMER_IN_SYNC)
                .unwrap()
                .reason,
            "NA"
        );

        let mut b =
            APIServiceBinding::new("mangodbs.mangodb.com", APIServiceBindingSpec::default());
        b.status = Some(APIServiceBindingStatus {
            conditions: vec![Condition {
                last_transition_time: Time(now),
                ..Condition::true_(SCHEMA_IN_SYNC)
            }],
            ..Default::default()
        });
        let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mangodbs.mangodb.com"},
            "spec": {"group": "mangodb.com", "names": {"kind": "MangoDB", "plural": "mangodbs"}, "scope": "Namespaced", "versions": []},
            "status": {"conditions": [
                {"type": "Established", "status": "True", "lastTransitionTime": "2023-05-05T00:00:00Z", "reason": "InitialNamesAccepted", "message": "ok"},
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": "2023-05-05T00:00:00Z"}],
              "acceptedNames": {"kind": "MangoDB", "plural": "mangodbs"}, "storedVersions": ["v1"]}
        })).unwrap();
        let s = export_status(Some(&s), Some(&b), Some(&crd), now).unwrap();
        assert!(conditions::is_true(&s.conditions, CONNECTED));
        assert!(conditions::is_true(&s.conditions, CONSUMER_IN_SYNC));
        let est = conditions::get(&s.conditions, "Established").unwrap();
        assert_eq!(est.last_transition_time.0, t("2023-05-05T00:00:00Z"));
        assert!(
            conditions::is_true(&s.conditions, READY),
            "{:?}",
            s.conditions
        );
        assert_eq!(s.accepted_names.plural, "mangodbs");
        assert_eq!(s.stored_versions, ["v1"]);
        assert_eq!(
            export_status(Some(&s), Some(&b), Some(&crd), t("2024-02-01T00:00:00Z")),
            None
        );
    }
}
