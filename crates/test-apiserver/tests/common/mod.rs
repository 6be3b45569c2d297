//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use test_apiserver::{ADMIN, Options, TestApiServer};

/// Every test is bounded: this is the longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Starts a server with the given options.
pub async fn start(options: Options) -> TestApiServer {
    TestApiServer::start(options).await.unwrap()
}

/// A kube client for `user` via the server's kubeconfig (real TLS verification).
pub async fn client_for(server: &TestApiServer, user: &str) -> kube::Client {
    let yaml = server.kubeconfig(user).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    // Bound every request so a misbehaving server fails the test instead of hanging it.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(WAIT);
    config.write_timeout = Some(WAIT);
    kube::Client::try_from(config).unwrap()
}

/// Admin client.
pub async fn admin(server: &TestApiServer) -> kube::Client {
    client_for(server, ADMIN).await
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bounds a future by [`WAIT`].
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
