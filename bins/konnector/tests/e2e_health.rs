//! End to end: the health server (reference §9.1, decisions H1, 11.3 item 9) and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{Backend, Cluster, Konnector, STARTUP_TIMEOUT, TempDir, error_line, free_port, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

async fn start(cluster: &Cluster, dir: &TempDir, health: &str) -> Konnector {
    let kubeconfig = cluster.konnector_kubeconfig_file(dir).unwrap();
    Konnector::spawn(
        BIN,
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--health-probe-bind-address={health}"),
        ],
        dir,
    )
    .unwrap()
}

/// Waits until the replica is ready (`/healthz`, the liveness probe, answers from the start).
async fn wait_healthy(k: &mut Konnector, addr: SocketAddr) {
    k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT)
        .await
        .unwrap();
}

async fn healthz_answers_leader_election_ok_on_the_configured_port_after_startup(backend: Backend) {
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let port = free_port().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut k = start(&app, &dir, &format!("127.0.0.1:{port}")).await;
    wait_healthy(&mut k, addr).await;

    assert_eq!(
        http_get(addr, "/healthz").await.unwrap(),
        (200, r#"{"leaderElection":"ok"}"#.to_owned())
    );
    assert_eq!(http_get(addr, "/readyz").await.unwrap().0, 200);
    assert_eq!(http_get(addr, "/nope").await.unwrap().0, 404);
    k.terminate().await.unwrap();
    assert!(
        k.wait_exit(Duration::from_secs(10))
            .await
            .unwrap()
            .success()
    );
}

async fn health_port_given_as_colon_port_listens_on_every_interface(backend: Backend) {
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let port = free_port().unwrap();
    let mut k = start(&app, &dir, &format!(":{port}")).await;
    wait_healthy(&mut k, format!("127.0.0.1:{port}").parse().unwrap()).await;
}

async fn health_port_in_use_is_a_startup_error_that_writes_nothing(backend: Backend) {
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut k = start(&app, &dir, &addr.to_string()).await;
    let status = k.wait_exit(STARTUP_TIMEOUT).await.unwrap();
    assert_eq!(status.code(), Some(1));
    let stderr = k.stderr();
    let message = error_line(&stderr).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        message.starts_with(&format!(
            "failed to listen on --health-probe-bind-address {addr}: "
        )),
        "{message}"
    );
    assert!(app.konnector_writes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_health_address_is_a_startup_error() {
    let dir = TempDir::new("konnector-e2e").unwrap();
    let mut k =
        Konnector::spawn(BIN, &["--health-probe-bind-address=8080".to_owned()], &dir).unwrap();
    let status = k.wait_exit(STARTUP_TIMEOUT).await.unwrap();
    assert_eq!(status.code(), Some(1));
    let stderr = k.stderr();
    assert_eq!(
        error_line(&stderr),
        Some(r#"invalid --health-probe-bind-address "8080": expected [host]:port"#),
        "{stderr}"
    );
}

async fn sigterm_stops_the_konnector_with_exit_code_zero(backend: Backend) {
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let port = free_port().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut k = start(&app, &dir, &addr.to_string()).await;
    wait_healthy(&mut k, addr).await;
    k.terminate().await.unwrap();
    let status = k.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status:?}\n{}", k.stderr());
    assert!(k.stderr().contains("shutting down"));
}

e2e::on_both_backends!(
    healthz_answers_leader_election_ok_on_the_configured_port_after_startup,
    health_port_given_as_colon_port_listens_on_every_interface,
    health_port_in_use_is_a_startup_error_that_writes_nothing,
    sigterm_stops_the_konnector_with_exit_code_zero,
);
