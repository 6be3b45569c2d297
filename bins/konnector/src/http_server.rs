//! The small HTTP/1.1 server behind the admin endpoints (`/healthz`, `/readyz`, `/metrics`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Maps a request's method and path to status, content type and body.
pub type Respond = Arc<dyn Fn(&Method, &str) -> (StatusCode, &'static str, Bytes) + Send + Sync>;

/// Serves `respond` on `listener` until `shutdown` resolves. `HEAD` gets the headers only.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    respond: Respond,
    shutdown: impl Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "{name} endpoint listening");
    }
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(server = name, error = %e, "accept failed");
                    continue;
                }
            },
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (status, content_type, body) = respond(req.method(), req.uri().path());
                let body = if req.method() == Method::HEAD {
                    Bytes::new()
                } else {
                    body
                };
                async move {
                    let mut resp = Response::new(Full::new(body));
                    *resp.status_mut() = status;
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(server = name, error = %e, "connection ended with an error");
            }
        });
    }
}
