//! End to end: flag handling and control-plane flag validation (reference §1, 11.3 items 1-2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{Backend, Cluster, Konnector, STARTUP_TIMEOUT, TempDir, error_line, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs the konnector with `list` and returns (exit code, `Error:` message, stderr).
async fn run_to_exit(list: &[&str]) -> (Option<i32>, String, String) {
    let home = TempDir::new("konnector-e2e").unwrap();
    let mut k = Konnector::spawn(BIN, &args(list), &home).unwrap();
    let status = k.wait_exit(STARTUP_TIMEOUT).await.unwrap();
    let stderr = k.stderr();
    let message = error_line(&stderr).unwrap_or_default().to_owned();
    (status.code(), message, stderr)
}

const NAME: &str = "--app-cluster-kubeconfig-secret-name=app-kubeconfig";
const NAMESPACE: &str = "--app-cluster-kubeconfig-secret-namespace=klutch-system";
const KEY: &str = "--app-cluster-kubeconfig-secret-key=kubeconfig";
const ROOT: &str = "--binding-root-namespace=klutch-bind-root";

#[tokio::test]
async fn control_plane_mode_without_secret_name_fails_with_exact_message() {
    let (code, message, _) = run_to_exit(&["--control-plane-mode", NAMESPACE, KEY, ROOT]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        "--app-cluster-kubeconfig-secret-name is required when --control-plane-mode is enabled"
    );
}

#[tokio::test]
async fn control_plane_mode_without_secret_namespace_fails_with_exact_message() {
    let (code, message, _) = run_to_exit(&["--control-plane-mode", NAME, KEY, ROOT]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        "--app-cluster-kubeconfig-secret-namespace is required when --control-plane-mode is enabled"
    );
}

#[tokio::test]
async fn control_plane_mode_with_empty_secret_key_fails_with_exact_message() {
    let (code, message, _) = run_to_exit(&[
        "--control-plane-mode",
        NAME,
        NAMESPACE,
        "--app-cluster-kubeconfig-secret-key=",
        ROOT,
    ])
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        "--app-cluster-kubeconfig-secret-key cannot be empty"
    );
}

#[tokio::test]
async fn control_plane_mode_without_binding_root_namespace_fails_with_exact_message() {
    let (code, message, _) = run_to_exit(&["--control-plane-mode", NAME, NAMESPACE, KEY]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        "--binding-root-namespace is required when --control-plane-mode is enabled"
    );
}

#[tokio::test]
async fn control_plane_validation_reports_the_first_missing_value_in_reference_order() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--control-plane-mode",
                "--app-cluster-kubeconfig-secret-key=",
            ],
            "--app-cluster-kubeconfig-secret-name is required when --control-plane-mode is enabled",
        ),
        (
            &[
                "--control-plane-mode",
                NAME,
                "--app-cluster-kubeconfig-secret-key=",
            ],
            "--app-cluster-kubeconfig-secret-namespace is required when --control-plane-mode is enabled",
        ),
        (
            &[
                "--control-plane-mode",
                NAME,
                NAMESPACE,
                "--app-cluster-kubeconfig-secret-key=",
            ],
            "--app-cluster-kubeconfig-secret-key cannot be empty",
        ),
        (
            &["--control-plane-mode", NAME, NAMESPACE],
            "--binding-root-namespace is required when --control-plane-mode is enabled",
        ),
    ];
    for (list, expected) in cases {
        let (code, message, _) = run_to_exit(list).await;
        assert_eq!(code, Some(1), "{list:?}");
        assert_eq!(message, expected, "{list:?}");
    }
}

#[tokio::test]
async fn flag_names_with_underscores_are_accepted() {
    let (code, message, _) = run_to_exit(&[
        "--control_plane_mode",
        "--app_cluster_kubeconfig_secret_name=app-kubeconfig",
    ])
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        "--app-cluster-kubeconfig-secret-namespace is required when --control-plane-mode is enabled"
    );
}

#[tokio::test]
async fn unknown_flag_exits_non_zero() {
    let (code, _, stderr) = run_to_exit(&["--no-such-flag"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[tokio::test]
async fn version_flag_prints_konnector_version() {
    let home = TempDir::new("konnector-e2e").unwrap();
    let mut k = Konnector::spawn(BIN, &args(&["--version"]), &home).unwrap();
    let status = k.wait_exit(STARTUP_TIMEOUT).await.unwrap();
    assert!(status.success());
    let out = k.stdout();
    assert!(out.starts_with("konnector version v"), "{out:?}");
}

async fn default_mode_ignores_control_plane_only_flags(backend: Backend) {
    let cluster = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = cluster.konnector_kubeconfig_file(&dir).unwrap();
    let port = free_port().unwrap();
    // Values that would fail validation in control-plane mode: an empty key, no name or
    // namespace, and a root namespace that does not exist.
    let mut k = Konnector::spawn(
        BIN,
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--health-probe-bind-address=127.0.0.1:{port}"),
            "--app-cluster-kubeconfig-secret-key=".to_owned(),
            "--binding-root-namespace=does-not-exist".to_owned(),
        ],
        &dir,
    )
    .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT)
        .await
        .unwrap();
    assert!(k.is_running());
    assert!(error_line(&k.stderr()).is_none(), "{}", k.stderr());
    k.terminate().await.unwrap();
    let status = k.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status:?}\n{}", k.stderr());
}

e2e::on_both_backends!(default_mode_ignores_control_plane_only_flags,);
