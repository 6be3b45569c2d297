//! Default mode: install or update the APIServiceBinding CRD in the binding cluster and wait
//! until it is `Established` (reference §2 step 4).
//!
//! Unlike the reference, which updates the CRD on every start, the CRD is written only when the
//! installed one differs from ours (decisions B1: a restart over a synced world writes nothing).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

/// Name of the CRD.
pub const CRD_NAME: &str = "apiservicebindings.klutch.anynines.com";

/// How often the `Established` condition is polled (the reference's interval).
const ESTABLISHED_POLL: Duration = Duration::from_millis(100);

/// Startup fails if the CRD is not established by then (the reference waits forever, which
/// hides a broken CRD behind a pod that never becomes ready).
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the CRD could not be bootstrapped; Display is the exact startup error text.
#[derive(Debug, thiserror::Error)]
#[error(
    "failed to create APIServiceBinding CRD in binding cluster: could not bootstrap CRDs: {reason}"
)]
pub struct BootstrapError {
    /// The underlying error.
    pub reason: String,
}

/// What to do with the CRD in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum CrdPlan {
    /// It does not exist: create ours.
    Create,
    /// It differs: replace it with this object (ours, on top of the installed metadata).
    Update(Box<CustomResourceDefinition>),
    /// It already serves our spec: write nothing.
    UpToDate,
}

/// Decides between create, update and nothing.
///
/// The installed spec is up to date when it contains everything ours says (the API server adds
/// defaults such as `conversion`) and every version's schema is exactly ours (a property we
/// dropped must be dropped there too). Labels and annotations of ours are merged into the
/// installed ones; others' metadata is kept.
pub fn plan(
    installed: Option<&CustomResourceDefinition>,
    desired: &CustomResourceDefinition,
) -> CrdPlan {
    let Some(installed) = installed else {
        return CrdPlan::Create;
    };
    let metadata_in_sync = contains_map(&desired.metadata.labels, &installed.metadata.labels)
        && contains_map(
            &desired.metadata.annotations,
            &installed.metadata.annotations,
        );
    if metadata_in_sync
        && sync_engine::crd::spec_in_sync(installed, desired)
        && schemas_equal(installed, desired)
    {
        return CrdPlan::UpToDate;
    }
    let mut updated = installed.clone();
    updated.spec = desired.spec.clone();
    for (src, dst) in [
        (&desired.metadata.labels, &mut updated.metadata.labels),
        (
            &desired.metadata.annotations,
            &mut updated.metadata.annotations,
        ),
    ] {
        if let Some(src) = src {
            dst.get_or_insert_with(Default::default)
                .extend(src.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    updated.status = None;
    CrdPlan::Update(Box::new(updated))
}

fn contains_map(
    desired: &Option<std::collections::BTreeMap<String, String>>,
    installed: &Option<std::collections::BTreeMap<String, String>>,
) -> bool {
    desired.iter().flatten().all(|(k, v)| {
        installed
            .as_ref()
            .and_then(|m| m.get(k))
            .is_some_and(|iv| iv == v)
    })
}

fn schemas_equal(installed: &CustomResourceDefinition, desired: &CustomResourceDefinition) -> bool {
    let schema_of = |crd: &CustomResourceDefinition, name: &str| {
        crd.spec
            .versions
            .iter()
            .find(|v| v.name == name)
            .map(|v| serde_json::to_value(&v.schema).unwrap_or_default())
    };
    desired
        .spec
        .versions
        .iter()
        .all(|v| schema_of(installed, &v.name) == schema_of(desired, &v.name))
}

/// Whether an error is worth retrying: connection problems, conflicts, throttling and server
/// errors (the reference retries connection refused, 409 and 429).
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Delays between attempts: 50 ms doubling, 7 retries (about 6 s in total), so that a binding
/// cluster that is briefly unavailable does not fail the start while a dead one still does.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    (0..7).map(|n| Duration::from_millis(50 << n))
}

/// The message of an error, without kube's debug dump of the Status object.
pub fn error_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => {
            let mut msg = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let s_msg = s.to_string();
                if !msg.contains(&s_msg) {
                    msg = format!("{msg}: {s_msg}");
                }
                source = s.source();
            }
            msg
        }
    }
}

/// Installs or updates `desired` and waits until it is established.
pub async fn bootstrap(
    client: kube::Client,
    desired: &CustomResourceDefinition,
) -> Result<(), BootstrapError> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let mut delays = retry_delays();
    loop {
        match apply_once(&api, desired).await {
            Ok(()) => break,
            Err(e) if is_transient(&e) => match delays.next() {
                Some(delay) => {
                    tracing::info!(crd = CRD_NAME, error = %error_message(&e), ?delay, "retrying CRD bootstrap");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(fail(&e)),
            },
            Err(e) => return Err(fail(&e)),
        }
    }
    wait_established(&api).await
}

fn fail(e: &kube::Error) -> BootstrapError {
    BootstrapError {
        reason: error_message(e),
    }
}

async fn apply_once(
    api: &Api<CustomResourceDefinition>,
    desired: &CustomResourceDefinition,
) -> Result<(), kube::Error> {
    let params = PostParams {
        field_manager: Some(konnector_api::strings::FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match plan(api.get_opt(CRD_NAME).await?.as_ref(), desired) {
        CrdPlan::UpToDate => {
            tracing::info!(crd = CRD_NAME, "CRD is up to date");
        }
        CrdPlan::Create => {
            // An AlreadyExists race is a 409 and retried: the next attempt updates.
            api.create(&params, desired).await?;
            tracing::info!(crd = CRD_NAME, "created CRD in the binding cluster");
        }
        CrdPlan::Update(updated) => {
            api.replace(CRD_NAME, &params, &updated).await?;
            tracing::info!(crd = CRD_NAME, "updated CRD in the binding cluster");
        }
    }
    Ok(())
}

async fn wait_established(api: &Api<CustomResourceDefinition>) -> Result<(), BootstrapError> {
    let deadline = tokio::time::Instant::now() + ESTABLISHED_TIMEOUT;
    loop {
        match api.get_opt(CRD_NAME).await {
            Ok(Some(crd)) if sync_engine::crd::is_established(&crd) => {
                tracing::info!(crd = CRD_NAME, "CRD is established");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(fail(&e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootstrapError {
                reason: format!(
                    "timed out after {}s waiting for CRD {CRD_NAME} to be established",
                    ESTABLISHED_TIMEOUT.as_secs()
                ),
            });
        }
        tokio::time::sleep(ESTABLISHED_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn desired() -> CustomResourceDefinition {
        konnector_api::crds::api_service_binding()
    }

    /// What an API server returns for `desired` once stored: defaults added, status set.
    fn as_installed(crd: &CustomResourceDefinition) -> CustomResourceDefinition {
        let mut v = serde_json::to_value(crd).unwrap();
        v["metadata"]["resourceVersion"] = "7".into();
        v["metadata"]["uid"] = "u-1".into();
        v["metadata"]["labels"]["someone-else"] = "x".into();
        v["spec"]["conversion"] = serde_json::json!({"strategy": "None"});
        v["status"] = serde_json::json!({"conditions": [
            {"type": "Established", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z",
             "reason": "InitialNamesAccepted", "message": "ok"}],
            "acceptedNames": {"kind": "APIServiceBinding", "plural": "apiservicebindings"},
            "storedVersions": ["v1alpha1"]});
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn our_crd_has_the_expected_name() {
        assert_eq!(desired().metadata.name.as_deref(), Some(CRD_NAME));
    }

    #[test]
    fn missing_crd_is_created() {
        assert_eq!(plan(None, &desired()), CrdPlan::Create);
    }

    #[test]
    fn installed_crd_with_server_defaults_is_up_to_date() {
        let d = desired();
        assert_eq!(plan(Some(&as_installed(&d)), &d), CrdPlan::UpToDate);
    }

    #[test]
    fn outdated_schema_is_updated_keeping_resource_version_and_foreign_labels() {
        let d = desired();
        let mut old = as_installed(&d);
        old.spec.versions[0].schema = None;
        let CrdPlan::Update(updated) = plan(Some(&old), &d) else {
            panic!("expected an update");
        };
        assert_eq!(updated.spec, d.spec);
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            updated
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("someone-else"))
                .map(String::as_str),
            Some("x")
        );
        assert!(updated.status.is_none());
    }

    #[test]
    fn an_extra_property_in_the_installed_schema_is_an_update() {
        let d = desired();
        let mut v = serde_json::to_value(as_installed(&d)).unwrap();
        v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["extra"] =
            serde_json::json!({"type": "string"});
        let old: CustomResourceDefinition = serde_json::from_value(v).unwrap();
        assert!(matches!(plan(Some(&old), &d), CrdPlan::Update(_)));
    }

    #[test]
    fn a_missing_version_is_an_update() {
        let d = desired();
        let mut old = as_installed(&d);
        old.spec.versions[0].name = "v1alpha0".into();
        assert!(matches!(plan(Some(&old), &d), CrdPlan::Update(_)));
    }

    #[test]
    fn transient_errors_are_conflicts_throttling_server_errors() {
        let api = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..Default::default()
            }))
        };
        for code in [409, 429, 500, 503] {
            assert!(is_transient(&api(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!is_transient(&api(code)), "{code}");
        }
        assert_eq!(error_message(&api(403)), "m");
    }

    #[test]
    fn retries_are_bounded_and_growing() {
        let delays: Vec<_> = retry_delays().collect();
        assert_eq!(delays.first(), Some(&Duration::from_millis(50)));
        assert!(delays.windows(2).all(|w| w[0] < w[1]));
        assert!(delays.iter().sum::<Duration>() < Duration::from_secs(10));
    }

    #[test]
    fn failure_message_is_the_references() {
        let e = BootstrapError {
            reason: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "failed to create APIServiceBinding CRD in binding cluster: could not bootstrap CRDs: boom"
        );
    }
}
