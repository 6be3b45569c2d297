//! The metrics server: `/metrics` on `--metrics-bind-address`, OpenMetrics text from the
//! engine's `prometheus-client` registry.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The OpenMetrics content type Prometheus negotiates.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to listen on --metrics-bind-address {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds the listener (a conflict is a startup error).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Status, content type and body for a request.
pub fn answer(
    method: &Method,
    path: &str,
    registry: &Registry,
) -> (StatusCode, &'static str, String) {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n".into(),
        );
    }
    if path != "/metrics" {
        return (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n".into(),
        );
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (StatusCode::OK, OPENMETRICS, text),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

/// Serves `/metrics` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let respond: crate::http_server::Respond = Arc::new(move |method: &Method, path: &str| {
        let (status, content_type, body) = answer(method, path, &registry);
        (status, content_type, Bytes::from(body))
    });
    crate::http_server::serve("metrics", listener, respond, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_openmetrics_at_metrics_only() {
        let metrics = sync_engine::metrics::Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.leader.set(1);
        let (status, content_type, body) = answer(&Method::GET, "/metrics", &registry);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, OPENMETRICS);
        assert!(body.contains("konnector_leader 1"), "{body}");
        assert_eq!(
            answer(&Method::GET, "/other", &registry).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&Method::POST, "/metrics", &registry).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
