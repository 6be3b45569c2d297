//! The audit log: who did what on the real server, e.g. to count a controller's writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::control_plane::ControlPlane;
use crate::pki::HARNESS_USER;
use crate::{Error, Result, io_err};

/// One request as kube-apiserver audited it (stage `ResponseComplete`, level Metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The authenticated user, e.g. `admin` or `system:serviceaccount:NS:NAME`.
    pub user: String,
    /// The API verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...) or, for
    /// non-resource URLs, the lower-case HTTP method.
    pub verb: String,
    /// Path and query as sent.
    pub request_uri: String,
    /// Always `ResponseComplete` here.
    pub stage: String,
    /// The HTTP status code.
    pub code: Option<u16>,
    /// `objectRef.resource`, e.g. `configmaps`.
    pub resource: Option<String>,
    /// `objectRef.subresource`, e.g. `status`.
    pub subresource: Option<String>,
    /// `objectRef.namespace`.
    pub namespace: Option<String>,
    /// `objectRef.name`.
    pub name: Option<String>,
    /// `objectRef.apiGroup`; `None` for the core group.
    pub api_group: Option<String>,
    /// The request's `Audit-Id` (also an HTTP response header).
    pub audit_id: String,
    /// The client's `User-Agent`: tells apart clients that share a user.
    pub user_agent: Option<String>,
}

impl AuditEvent {
    /// Whether the request was meant to change something (create, update, patch, delete,
    /// deletecollection), whether it succeeded or not.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: String,
    user: RawUser,
    user_agent: Option<String>,
    object_ref: Option<RawObjectRef>,
    response_status: Option<RawStatus>,
}

#[derive(Deserialize)]
struct RawUser {
    username: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    api_group: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: Option<u16>,
}

/// Parses JSON-lines audit log text into its `ResponseComplete` events. A last line without its
/// newline may still be being written and is skipped.
pub(crate) fn parse(text: &str) -> Result<Vec<AuditEvent>> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut events = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawEvent = serde_json::from_str(line)
            .map_err(|e| Error::Other(format!("audit log line {}: {e}: {line}", i + 1)))?;
        if raw.stage != "ResponseComplete" {
            continue;
        }
        let object = raw.object_ref.unwrap_or_default();
        events.push(AuditEvent {
            user: raw.user.username.unwrap_or_default(),
            verb: raw.verb,
            request_uri: raw.request_uri,
            stage: raw.stage,
            code: raw.response_status.and_then(|s| s.code),
            resource: object.resource,
            subresource: object.subresource,
            namespace: object.namespace,
            name: object.name,
            api_group: object.api_group.filter(|g| !g.is_empty()),
            audit_id: raw.audit_id,
            user_agent: raw.user_agent,
        });
    }
    Ok(events)
}

/// Name prefix of the namespaces [`ControlPlane::audit_events_settled`] looks up as markers.
const MARKER_PREFIX: &str = "kcp-audit-marker-";

static MARKER_SEQ: AtomicU64 = AtomicU64::new(0);

impl ControlPlane {
    /// The audit log's `ResponseComplete` events so far, oldest first.
    ///
    /// A request's event is written when the server finishes it, which may be just after the
    /// client got the response; use [`ControlPlane::audit_events_settled`] when the last
    /// requests must be in.
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        if !self.audit_enabled() {
            return Err(Error::Other(format!(
                "control plane {} runs without an audit log (Options::audit(false))",
                self.name()
            )));
        }
        let path = self.audit_log_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(format!("read {}", path.display()))(e)),
        }
    }

    /// The audit events once every request that completed before this call is in the log.
    ///
    /// It looks up a marker namespace that does not exist (a cheap 404, as the harness's own
    /// user `kube-control-plane`) and waits until that lookup's event is in the log; marker
    /// events are left out of the result.
    ///
    /// kube-apiserver runs with `--audit-log-mode=blocking`: the request's own goroutine writes
    /// its event. In practice the event is then in the file when the client has the response
    /// (0 misses in 200 creates read back at once, bodies up to 20 KB), but the write happens
    /// after the handler and is not ordered with the response, hence this marker.
    pub async fn audit_events_settled(&self) -> Result<Vec<AuditEvent>> {
        let marker = format!(
            "{MARKER_PREFIX}{}-{}",
            std::process::id(),
            MARKER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let client = self.harness_client().await?;
        let request = http::Request::get(format!("/api/v1/namespaces/{marker}"))
            .body(Vec::new())
            .map_err(|e| Error::Other(format!("build the audit marker request: {e}")))?;
        // A 404 is the expected answer; only the audit event matters.
        let _ = client.request_text(request).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.audit_events()?;
            if events.iter().any(|e| e.name.as_deref() == Some(&*marker)) {
                return Ok(events
                    .into_iter()
                    .filter(|e| {
                        !(e.user == HARNESS_USER
                            && e.name
                                .as_deref()
                                .is_some_and(|n| n.starts_with(MARKER_PREFIX)))
                    })
                    .collect());
            }
            if Instant::now() >= deadline {
                return Err(Error::Other(format!(
                    "the audit marker {marker} did not show in {} within 10 s",
                    self.audit_log_path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_complete_events_and_skips_a_partial_last_line() {
        let text = concat!(
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/configmaps?fieldManager=x","verb":"create","user":{"username":"system:serviceaccount:ns:sa","groups":["system:serviceaccounts"]},"userAgent":"test/1","objectRef":{"resource":"configmaps","namespace":"ns","name":"cm","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201}}"#,
            "\n",
            r#"{"auditID":"a2","stage":"ResponseStarted","requestURI":"/api/v1/pods?watch=1","verb":"watch","user":{"username":"admin"}}"#,
            "\n",
            r#"{"auditID":"a3","stage":"ResponseComplete","requestURI":"/readyz","verb":"get","user":{"username":"admin"},"responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"a4","stage":"Respo"#,
        );
        let events = parse(text).unwrap();
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(e.user, "system:serviceaccount:ns:sa");
        assert_eq!(e.code, Some(201));
        assert_eq!(e.resource.as_deref(), Some("configmaps"));
        assert_eq!(e.api_group, None);
        assert!(e.is_write());
        assert_eq!(events[1].resource, None);
        assert!(!events[1].is_write());
    }
}
