//! `ClusterBinding`: the singleton `cluster` on the provider that carries the heartbeat.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::refs::LocalSecretKeyRef;
use crate::conditions::Condition;

/// spec represents the data in the newly created ClusterBinding.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "klutch.anynines.com",
    version = "v1alpha1",
    kind = "ClusterBinding",
    plural = "clusterbindings",
    singular = "clusterbinding",
    namespaced,
    status = "ClusterBindingStatus",
    category = "kube-bindings",
    doc = "ClusterBinding represents a bound consumer class. It lives in a service provider cluster\nand is a singleton named \"cluster\".",
    printcolumn = r#"{"name":"Konnector Version","type":"string","jsonPath":".status.konnectorVersion"}"#,
    printcolumn = r#"{"name":"Last Heartbeat","type":"date","jsonPath":".status.lastHeartbeatTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBindingSpec {
    /// kubeconfigSecretName is the secret ref that contains the kubeconfig of the service cluster.
    #[schemars(extend("x-kubernetes-validations" = [{"message": "kubeconfigSecretRef is immutable", "rule": "self == oldSelf"}]))]
    pub kubeconfig_secret_ref: LocalSecretKeyRef,
    /// providerPrettyName is the pretty name of the service provider cluster. This
    /// can be shared among different ServiceBindings.
    #[schemars(length(min = 1))]
    pub provider_pretty_name: String,
    /// serviceProviderSpec contains all the data and information about the service which has been
    /// bound to the service binding request. The service providers decide what they need and what
    /// to configure based on what then include in this field, such as service region, type, tiers, etc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub service_provider_spec: Option<serde_json::Value>,
}

pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// status contains reconciliation information for the service binding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBindingStatus {
    /// lastHeartbeatTime is the last time the konnector updated the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// heartbeatInterval is the maximal interval between heartbeats that the
    /// konnector promises to send. The service provider can assume that the
    /// konnector is not unhealthy if it does not receive a heartbeat within
    /// this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<String>,
    /// konnectorVersion is the version of the konnector that is running on the
    /// consumer cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub konnector_version: Option<String>,
    /// conditions is a list of conditions that apply to the ClusterBinding. It is
    /// updated by the konnector and the service provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<Condition>>")]
    pub conditions: Vec<Condition>,
}

/// Formats a duration as Go's `time.Duration.String()` does (`5m0s`, `2m30s`, `1h0m0s`, `1.5s`),
/// because `heartbeatInterval` is a `metav1.Duration` that the backend parses with Go.
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let total_nanos = d.as_nanos();
    if total_nanos < 1_000_000_000 {
        // Sub-second values use the largest unit that keeps an integer part.
        let (unit, div) = if total_nanos < 1_000 {
            ("ns", 1u128)
        } else if total_nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{}", fraction(total_nanos, div), unit);
    }
    let hours = total_nanos / 3_600_000_000_000;
    let minutes = (total_nanos / 60_000_000_000) % 60;
    let second_nanos = total_nanos % 60_000_000_000;
    let seconds = fraction(second_nanos, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / div` with the fractional part printed without trailing zeros.
fn fraction(value: u128, div: u128) -> String {
    let int = value / div;
    let rem = value % div;
    if rem == 0 {
        return int.to_string();
    }
    let width = div.ilog10() as usize;
    let frac = format!("{rem:0width$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_matches_go_formatting() {
        let cases = [
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }
}
