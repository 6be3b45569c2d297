//! The health server: `/healthz` and `/readyz` on `--health-probe-bind-address`.
//!
//! `/healthz` is liveness (decisions: the process and its runtime are alive) and keeps the
//! reference's body (`{"leaderElection":"ok"}`), so probes written against the Go konnector keep
//! working. `/readyz` is 200 when this replica is ready (a leader whose caches synced, or a
//! follower) and 503 otherwise. Every other path is 404.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::net::TcpListener;

/// Whether the engine is ready (root caches synced).
pub type ReadyFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// The health listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to listen on --health-probe-bind-address {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds the listener (a conflict is a startup error, not a panic as in the reference, H1).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// A response decided from the path and the readiness: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: &'static str,
}

/// Answers a probe request.
pub fn answer(method: &Method, path: &str, ready: bool) -> Answer {
    let text = |status, body| Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
    };
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match (path, ready) {
        // Liveness: the process answers, so it is alive. A leader that cannot renew its lease
        // stops leading by itself (it does not need a restart), so this never degrades.
        ("/healthz", _) => Answer {
            status: StatusCode::OK,
            content_type: "application/json",
            body: r#"{"leaderElection":"ok"}"#,
        },
        ("/readyz", true) => text(StatusCode::OK, "ok\n"),
        ("/readyz", false) => text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n"),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// Serves probes on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, ready: ReadyFn, shutdown: impl Future<Output = ()>) {
    let respond: crate::http_server::Respond = Arc::new(move |method: &Method, path: &str| {
        let a = answer(method, path, ready());
        (
            a.status,
            a.content_type,
            Bytes::from_static(a.body.as_bytes()),
        )
    });
    crate::http_server::serve("healthz", listener, respond, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_has_the_reference_body_once_ready() {
        let a = answer(&Method::GET, "/healthz", true);
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(a.body, r#"{"leaderElection":"ok"}"#);
    }

    #[test]
    fn healthz_is_liveness_and_does_not_wait_for_caches() {
        let a = answer(&Method::GET, "/healthz", false);
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, r#"{"leaderElection":"ok"}"#);
    }

    #[test]
    fn readyz_follows_readiness() {
        assert_eq!(answer(&Method::GET, "/readyz", true).status, StatusCode::OK);
        assert_eq!(
            answer(&Method::GET, "/readyz", false).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn other_paths_and_methods() {
        assert_eq!(
            answer(&Method::GET, "/", true).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&Method::GET, "/metrics", true).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&Method::GET, "/healthz/x", true).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&Method::HEAD, "/healthz", true).status,
            StatusCode::OK
        );
        assert_eq!(
            answer(&Method::POST, "/healthz", true).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
