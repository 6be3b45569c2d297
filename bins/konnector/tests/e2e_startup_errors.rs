//! End to end: startup failures in control-plane mode exit non-zero with the exact reference
//! text and write nothing (reference §3.2, 11.3 items 3-6).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use e2e::{Backend, Cluster, Konnector, STARTUP_TIMEOUT, TempDir, error_line};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::PostParams;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");
const SECRET_NS: &str = "klutch-system";
const SECRET_NAME: &str = "app-kubeconfig";

fn cp_args(kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--control-plane-mode".to_owned(),
        format!("--app-cluster-kubeconfig-secret-name={SECRET_NAME}"),
        format!("--app-cluster-kubeconfig-secret-namespace={SECRET_NS}"),
        "--binding-root-namespace=klutch-bind-root".to_owned(),
        // Port 0: the health listener never conflicts with a parallel test.
        "--health-probe-bind-address=127.0.0.1:0".to_owned(),
    ]
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn create_secret(client: &kube::Client, data: BTreeMap<String, ByteString>) {
    let mut secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": SECRET_NAME, "namespace": SECRET_NS}
    }))
    .unwrap();
    secret.data = Some(data);
    Api::<Secret>::namespaced(client.clone(), SECRET_NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Runs a konnector until it exits (it must fail with code 1) and returns its error message.
async fn run_until_exit(args: Vec<String>, dir: &TempDir) -> String {
    let mut k = Konnector::spawn(BIN, &args, dir).unwrap();
    let status = k.wait_exit(STARTUP_TIMEOUT).await.unwrap();
    let stderr = k.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    error_line(&stderr)
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_owned()
}

async fn assert_no_writes(cluster: &Cluster) {
    let writes = cluster.konnector_writes().await;
    assert!(writes.is_empty(), "konnector wrote: {writes:#?}");
}

async fn control_plane_mode_with_missing_app_secret_fails_and_writes_nothing(backend: Backend) {
    let cp = Cluster::start_on(backend, "cp", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = cp.konnector_kubeconfig_file(&dir).unwrap();
    create_namespace(&cp.client().await.unwrap(), SECRET_NS).await;

    let message = run_until_exit(cp_args(&kubeconfig), &dir).await;
    assert_eq!(
        message,
        format!(
            "failed to fetch app cluster kubeconfig secret {SECRET_NS}/{SECRET_NAME}: secrets \"{SECRET_NAME}\" not found"
        )
    );
    // The one read the reference makes, and nothing else.
    assert!(
        cp.konnector_requests()
            .await
            .iter()
            .any(|r| r.verb == "get" && r.resource == "secrets" && r.name == SECRET_NAME)
    );
    assert_no_writes(&cp).await;
}

async fn control_plane_mode_with_secret_missing_the_key_fails_and_writes_nothing(backend: Backend) {
    let cp = Cluster::start_on(backend, "cp", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = cp.konnector_kubeconfig_file(&dir).unwrap();
    let client = cp.client().await.unwrap();
    create_namespace(&client, SECRET_NS).await;
    create_secret(
        &client,
        BTreeMap::from([("other".to_owned(), ByteString(b"x".to_vec()))]),
    )
    .await;

    let message = run_until_exit(cp_args(&kubeconfig), &dir).await;
    assert_eq!(
        message,
        format!("secret {SECRET_NS}/{SECRET_NAME} does not contain key kubeconfig")
    );
    assert_no_writes(&cp).await;
}

async fn control_plane_mode_with_custom_key_missing_names_that_key(backend: Backend) {
    let cp = Cluster::start_on(backend, "cp", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = cp.konnector_kubeconfig_file(&dir).unwrap();
    let client = cp.client().await.unwrap();
    create_namespace(&client, SECRET_NS).await;
    create_secret(
        &client,
        BTreeMap::from([("kubeconfig".to_owned(), ByteString(b"x".to_vec()))]),
    )
    .await;

    let mut args = cp_args(&kubeconfig);
    args.push("--app-cluster-kubeconfig-secret-key=value".to_owned());
    let message = run_until_exit(args, &dir).await;
    assert_eq!(
        message,
        format!("secret {SECRET_NS}/{SECRET_NAME} does not contain key value")
    );
    assert_no_writes(&cp).await;
}

async fn control_plane_mode_with_garbage_app_kubeconfig_fails_and_writes_nothing(backend: Backend) {
    let cp = Cluster::start_on(backend, "cp", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = cp.konnector_kubeconfig_file(&dir).unwrap();
    let client = cp.client().await.unwrap();
    create_namespace(&client, SECRET_NS).await;
    create_secret(
        &client,
        BTreeMap::from([(
            "kubeconfig".to_owned(),
            ByteString(b"invalid-yaml-content".to_vec()),
        )]),
    )
    .await;

    let message = run_until_exit(cp_args(&kubeconfig), &dir).await;
    assert!(
        message.starts_with("failed to parse app cluster kubeconfig: "),
        "{message}"
    );
    assert!(message.len() > "failed to parse app cluster kubeconfig: ".len());
    assert!(!message.contains("invalid-yaml-content\n"));
    assert_no_writes(&cp).await;
}

async fn control_plane_mode_with_unreadable_kubeconfig_flag_fails_and_contacts_nothing(
    backend: Backend,
) {
    let cp = Cluster::start_on(backend, "cp", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let missing = dir.path().join("no-such-kubeconfig");

    let message = run_until_exit(cp_args(&missing), &dir).await;
    assert!(
        message.starts_with("failed to load control plane kubeconfig: "),
        "{message}"
    );
    assert!(cp.konnector_requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_mode_with_garbage_kubeconfig_file_fails_with_load_error() {
    let dir = TempDir::new("konnector-e2e").unwrap();
    let garbage = dir.write("garbage.kubeconfig", "{{{ not yaml").unwrap();

    let message = run_until_exit(cp_args(&garbage), &dir).await;
    assert!(
        message.starts_with("failed to load control plane kubeconfig: "),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_with_unreadable_kubeconfig_reports_the_error_unwrapped() {
    let dir = TempDir::new("konnector-e2e").unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let message = run_until_exit(
        vec![
            format!("--kubeconfig={}", missing.display()),
            "--health-probe-bind-address=127.0.0.1:0".to_owned(),
        ],
        &dir,
    )
    .await;
    assert!(!message.contains("control plane"), "{message}");
    assert!(message.contains("no-such-kubeconfig"), "{message}");
}

e2e::on_both_backends!(
    control_plane_mode_with_missing_app_secret_fails_and_writes_nothing,
    control_plane_mode_with_secret_missing_the_key_fails_and_writes_nothing,
    control_plane_mode_with_custom_key_missing_names_that_key,
    control_plane_mode_with_garbage_app_kubeconfig_fails_and_writes_nothing,
    control_plane_mode_with_unreadable_kubeconfig_flag_fails_and_contacts_nothing,
);
