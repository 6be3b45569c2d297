//! Conditions as the reference konnector writes them (vendored cluster-api `conditions`).
//!
//! Clients such as the Klutch backend and `kubectl get` compare these fields, and every change
//! here turns into a status write, so the algorithm follows the reference exactly: the sort order
//! (`Ready` first, then by type), `lastTransitionTime` kept when nothing but the time would change,
//! timestamps truncated to whole seconds, and the summary priority groups of `SetSummary`.
//!
//! All functions take the current time as an argument so that they stay pure and testable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::strings::condition_types::READY;

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The state could not be determined (also used for values this version does not know).
    #[serde(other)]
    Unknown,
}

/// How bad a `False` condition is; empty for `True` and `Unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Something is broken and needs attention.
    Error,
    /// Something is degraded but still works.
    Warning,
    /// Informational only (for example, a pending step).
    Info,
    /// No severity (the empty string on the wire).
    #[default]
    #[serde(rename = "", other)]
    None,
}

impl Severity {
    fn is_none(&self) -> bool {
        *self == Severity::None
    }
}

/// Condition defines an observation of a object operational state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase or in foo.example.com/CamelCase.
    /// Many .condition.type values are consistent across resources like Available, but because arbitrary conditions
    /// can be useful (see .node.status.conditions), the ability to deconflict is important.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition, one of True, False, Unknown.
    #[schemars(with = "String")]
    pub status: ConditionStatus,
    /// Severity provides an explicit classification of Reason code, so the users or machines can immediately
    /// understand the current situation and act accordingly.
    /// The Severity field MUST be set only when Status=False.
    #[serde(default, skip_serializing_if = "Severity::is_none")]
    #[schemars(with = "Option<String>")]
    pub severity: Severity,
    /// Last time the condition transitioned from one status to another.
    /// This should be when the underlying condition changed. If that is not known, then using the time when
    /// the API field changed is acceptable.
    pub last_transition_time: Time,
    /// The reason for the condition's last transition in CamelCase.
    /// The specific API may choose whether or not this field is considered a guaranteed API.
    /// This field may not be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(with = "Option<String>")]
    pub reason: String,
    /// A human readable message indicating details about the transition.
    /// This field may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(with = "Option<String>")]
    pub message: String,
}

/// The zero time, which `set` treats as "not set" (as Go's `metav1.Time.IsZero`).
fn zero_time() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

fn is_zero(t: &Time) -> bool {
    t.0 == Timestamp::UNIX_EPOCH
}

/// `now` truncated to whole seconds, as the reference stores transition times.
pub fn truncate_to_seconds(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

impl Condition {
    /// A `True` condition without reason, severity or message (reference `TrueCondition`).
    pub fn true_(type_: impl Into<String>) -> Self {
        Self::new(type_, ConditionStatus::True, "", Severity::None, "")
    }

    /// A `False` condition (reference `FalseCondition`).
    pub fn false_(
        type_: impl Into<String>,
        reason: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
    ) -> Self {
        Self::new(type_, ConditionStatus::False, reason, severity, message)
    }

    /// An `Unknown` condition (reference `UnknownCondition`).
    pub fn unknown(
        type_: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(
            type_,
            ConditionStatus::Unknown,
            reason,
            Severity::None,
            message,
        )
    }

    fn new(
        type_: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_: type_.into(),
            status,
            severity,
            last_transition_time: zero_time(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Same type, status, reason, severity and message: a change of only the time is no change.
    pub fn has_same_state(&self, other: &Condition) -> bool {
        self.type_ == other.type_
            && self.status == other.status
            && self.reason == other.reason
            && self.severity == other.severity
            && self.message == other.message
    }
}

/// The reference order: `Ready` first, the rest ascending by type.
fn lexicographic_less(i: &Condition, j: &Condition) -> bool {
    (i.type_ == READY || i.type_ < j.type_) && j.type_ != READY
}

fn sort(conditions: &mut [Condition]) {
    conditions.sort_by(|a, b| {
        if lexicographic_less(a, b) {
            std::cmp::Ordering::Less
        } else if lexicographic_less(b, a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
}

/// Sets `condition` (reference `Set`).
///
/// An existing condition of the same type is replaced only if its state differs, and then gets
/// `lastTransitionTime = now` (truncated to seconds); an identical one is left as it is, time
/// included. A new condition keeps a preset `lastTransitionTime`, otherwise gets `now`. The list is
/// sorted afterwards.
pub fn set(conditions: &mut Vec<Condition>, mut condition: Condition, now: Timestamp) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if !existing.has_same_state(&condition) {
                condition.last_transition_time = truncate_to_seconds(now);
                *existing = condition;
            }
        }
        None => {
            if is_zero(&condition.last_transition_time) {
                condition.last_transition_time = truncate_to_seconds(now);
            }
            conditions.push(condition);
        }
    }
    sort(conditions);
}

/// Sets a `True` condition of `type_` (reference `MarkTrue`).
pub fn mark_true(conditions: &mut Vec<Condition>, type_: &str, now: Timestamp) {
    set(conditions, Condition::true_(type_), now);
}

/// Sets a `False` condition of `type_` (reference `MarkFalse`).
pub fn mark_false(
    conditions: &mut Vec<Condition>,
    type_: &str,
    reason: &str,
    severity: Severity,
    message: impl Into<String>,
    now: Timestamp,
) {
    set(
        conditions,
        Condition::false_(type_, reason, severity, message),
        now,
    );
}

/// Sets an `Unknown` condition of `type_` (reference `MarkUnknown`).
pub fn mark_unknown(
    conditions: &mut Vec<Condition>,
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) {
    set(conditions, Condition::unknown(type_, reason, message), now);
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Merge priority of a (status, severity) group; lower wins. `False` without a severity is not a
/// group the reference expects and ranks last, as there.
fn merge_priority(status: ConditionStatus, severity: Severity) -> u8 {
    match (status, severity) {
        (ConditionStatus::False, Severity::Error) => 0,
        (ConditionStatus::False, Severity::Warning) => 1,
        (ConditionStatus::False, Severity::Info) => 2,
        (ConditionStatus::True, _) => 3,
        (ConditionStatus::Unknown, _) => 4,
        (ConditionStatus::False, Severity::None) => 99,
    }
}

/// The `Ready` summary of all other conditions (reference `summary` with default options), or
/// `None` when there is nothing to summarise.
pub fn summary(conditions: &[Condition]) -> Option<Condition> {
    let in_scope: Vec<&Condition> = conditions.iter().filter(|c| c.type_ != READY).collect();
    // Groups in order of first appearance, then stably sorted by priority.
    let mut groups: Vec<((ConditionStatus, Severity), Vec<&Condition>)> = Vec::new();
    for c in in_scope {
        let key = (c.status, c.severity);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(c),
            None => groups.push((key, vec![c])),
        }
    }
    groups.sort_by_key(|((status, severity), _)| merge_priority(*status, *severity));
    let ((status, severity), mut top) = groups.into_iter().next()?;
    if status == ConditionStatus::True {
        return Some(Condition::true_(READY));
    }
    top.sort_by(|a, b| {
        if lexicographic_less(a, b) {
            std::cmp::Ordering::Less
        } else if lexicographic_less(b, a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    let first = top.first()?;
    Some(match status {
        ConditionStatus::False => {
            Condition::false_(READY, first.reason.clone(), severity, first.message.clone())
        }
        _ => Condition::unknown(READY, first.reason.clone(), first.message.clone()),
    })
}

/// Recomputes `Ready` from the other conditions (reference `SetSummary`).
pub fn set_summary(conditions: &mut Vec<Condition>, now: Timestamp) {
    if let Some(ready) = summary(conditions) {
        set(conditions, ready, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn types(conditions: &[Condition]) -> Vec<&str> {
        conditions.iter().map(|c| c.type_.as_str()).collect()
    }

    #[test]
    fn set_sorts_ready_first_then_by_type() {
        let mut cs = Vec::new();
        let now = ts("2024-01-01T00:00:00Z");
        mark_true(&mut cs, "SecretValid", now);
        mark_true(&mut cs, "Connected", now);
        mark_true(&mut cs, READY, now);
        mark_true(&mut cs, "Heartbeating", now);
        assert_eq!(
            types(&cs),
            ["Ready", "Connected", "Heartbeating", "SecretValid"]
        );
    }

    #[test]
    fn set_truncates_new_transition_time_to_seconds() {
        let mut cs = Vec::new();
        mark_true(&mut cs, "Connected", ts("2024-01-01T10:20:30.987654Z"));
        assert_eq!(cs[0].last_transition_time.0, ts("2024-01-01T10:20:30Z"));
        let json = serde_json::to_value(&cs[0]).unwrap();
        assert_eq!(json["lastTransitionTime"], "2024-01-01T10:20:30Z");
    }

    #[test]
    fn set_keeps_transition_time_when_state_is_unchanged() {
        let mut cs = Vec::new();
        mark_false(
            &mut cs,
            "Connected",
            "APIServiceExportNotFound",
            Severity::Error,
            "gone",
            ts("2024-01-01T00:00:00Z"),
        );
        mark_false(
            &mut cs,
            "Connected",
            "APIServiceExportNotFound",
            Severity::Error,
            "gone",
            ts("2024-01-02T00:00:00Z"),
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time.0, ts("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn set_refreshes_transition_time_when_any_state_field_changes() {
        let base = Condition::false_("Connected", "A", Severity::Error, "m");
        let variants = [
            Condition::false_("Connected", "B", Severity::Error, "m"),
            Condition::false_("Connected", "A", Severity::Warning, "m"),
            Condition::false_("Connected", "A", Severity::Error, "other"),
            Condition::true_("Connected"),
        ];
        for changed in variants {
            let mut cs = Vec::new();
            set(&mut cs, base.clone(), ts("2024-01-01T00:00:00Z"));
            set(&mut cs, changed.clone(), ts("2024-01-02T00:00:00.5Z"));
            assert_eq!(cs[0].last_transition_time.0, ts("2024-01-02T00:00:00Z"));
            assert!(cs[0].has_same_state(&changed));
        }
    }

    #[test]
    fn set_keeps_a_preset_time_for_a_new_condition_only() {
        let mut preset = Condition::true_("Established");
        preset.last_transition_time = Time(ts("2020-05-05T05:05:05Z"));
        let mut cs = Vec::new();
        set(&mut cs, preset.clone(), ts("2024-01-01T00:00:00Z"));
        assert_eq!(cs[0].last_transition_time.0, ts("2020-05-05T05:05:05Z"));
        // For an existing condition whose state changes, the preset time is replaced by now.
        let mut changed = Condition::false_("Established", "X", Severity::Error, "");
        changed.last_transition_time = Time(ts("2020-05-05T05:05:05Z"));
        set(&mut cs, changed, ts("2024-01-01T00:00:00Z"));
        assert_eq!(cs[0].last_transition_time.0, ts("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn summary_of_nothing_leaves_ready_alone() {
        let mut cs = Vec::new();
        set_summary(&mut cs, ts("2024-01-01T00:00:00Z"));
        assert!(cs.is_empty());
        mark_false(
            &mut cs,
            READY,
            "Pending",
            Severity::Info,
            "",
            ts("2024-01-01T00:00:00Z"),
        );
        set_summary(&mut cs, ts("2024-01-01T00:00:00Z"));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].reason, "Pending");
    }

    #[test]
    fn summary_all_true_is_ready_true_without_reason() {
        let mut cs = Vec::new();
        let now = ts("2024-01-01T00:00:00Z");
        mark_true(&mut cs, "SecretValid", now);
        mark_true(&mut cs, "Connected", now);
        set_summary(&mut cs, now);
        let ready = get(&cs, READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        assert!(ready.reason.is_empty() && ready.message.is_empty());
        assert_eq!(ready.severity, Severity::None);
    }

    #[test]
    fn summary_priority_error_over_warning_over_info_over_true_over_unknown() {
        let now = ts("2024-01-01T00:00:00Z");
        let all = [
            Condition::unknown("A", "U", "unknown"),
            Condition::true_("B"),
            Condition::false_("C", "I", Severity::Info, "info"),
            Condition::false_("D", "W", Severity::Warning, "warning"),
            Condition::false_("E", "E", Severity::Error, "error"),
        ];
        // Removing the winner each time walks down the priority list.
        let expected = [
            (ConditionStatus::False, Severity::Error, "E"),
            (ConditionStatus::False, Severity::Warning, "W"),
            (ConditionStatus::False, Severity::Info, "I"),
            (ConditionStatus::True, Severity::None, ""),
            (ConditionStatus::Unknown, Severity::None, "U"),
        ];
        for (n, (status, severity, reason)) in expected.iter().enumerate() {
            let mut cs = Vec::new();
            for c in &all[..all.len() - n] {
                set(&mut cs, c.clone(), now);
            }
            let ready = summary(&cs).unwrap();
            assert_eq!(
                (ready.status, ready.severity, ready.reason.as_str()),
                (*status, *severity, *reason)
            );
        }
    }

    #[test]
    fn summary_takes_reason_and_message_from_first_type_of_top_group() {
        let now = ts("2024-01-01T00:00:00Z");
        let mut cs = Vec::new();
        mark_false(
            &mut cs,
            "SecretValid",
            "KubeconfigSecretNotFound",
            Severity::Error,
            "secret missing",
            now,
        );
        mark_false(
            &mut cs,
            "Connected",
            "APIServiceExportNotFound",
            Severity::Error,
            "export missing",
            now,
        );
        mark_false(
            &mut cs,
            "Heartbeating",
            "ClusterBindingUpdateFailed",
            Severity::Warning,
            "hb",
            now,
        );
        set_summary(&mut cs, now);
        let ready = get(&cs, READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(ready.severity, Severity::Error);
        assert_eq!(ready.reason, "APIServiceExportNotFound");
        assert_eq!(ready.message, "export missing");
        assert_eq!(cs[0].type_, READY);
    }

    #[test]
    fn summary_ignores_the_existing_ready_condition() {
        let now = ts("2024-01-01T00:00:00Z");
        let mut cs = Vec::new();
        mark_false(&mut cs, READY, "Pending", Severity::Info, "pending", now);
        mark_true(&mut cs, "Connected", now);
        set_summary(&mut cs, ts("2024-01-01T00:01:00Z"));
        let ready = get(&cs, READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(ready.last_transition_time.0, ts("2024-01-01T00:01:00Z"));
    }

    #[test]
    fn unknown_summary_has_no_severity() {
        let now = ts("2024-01-01T00:00:00Z");
        let mut cs = Vec::new();
        mark_unknown(&mut cs, "Connected", "Probing", "still probing", now);
        set_summary(&mut cs, now);
        let ready = get(&cs, READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::Unknown);
        assert_eq!(ready.severity, Severity::None);
        assert_eq!(ready.reason, "Probing");
        assert_eq!(ready.message, "still probing");
    }

    #[test]
    fn false_without_severity_ranks_below_unknown() {
        let now = ts("2024-01-01T00:00:00Z");
        let mut cs = Vec::new();
        mark_false(&mut cs, "A", "NoSeverity", Severity::None, "", now);
        mark_unknown(&mut cs, "B", "Probing", "", now);
        assert_eq!(summary(&cs).unwrap().reason, "Probing");
    }

    #[test]
    fn wire_format_omits_empty_fields_and_round_trips() {
        let c = Condition::true_("Connected");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "Connected", "status": "True", "lastTransitionTime": "1970-01-01T00:00:00Z"})
        );
        let parsed: Condition = serde_json::from_value(serde_json::json!({
            "type": "Healthy", "status": "False", "severity": "Warning",
            "lastTransitionTime": "2024-01-01T00:00:00Z", "reason": "HeartbeatTimeDrift", "message": "m"
        }))
        .unwrap();
        assert_eq!(parsed.severity, Severity::Warning);
        assert_eq!(parsed.status, ConditionStatus::False);
        let odd: Condition = serde_json::from_value(serde_json::json!({
            "type": "X", "status": "Maybe", "severity": "Fatal", "lastTransitionTime": "2024-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            (odd.status, odd.severity),
            (ConditionStatus::Unknown, Severity::None)
        );
    }
}
