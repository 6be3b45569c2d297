//! The standalone binary: writes a kubeconfig and serves kubectl until killed.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use tokio::process::Command;

#[tokio::test]
async fn binary_serves_kubectl() {
    let dir = std::env::temp_dir().join(format!("tas-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let mut server = Command::new(env!("CARGO_BIN_EXE_test-apiserver"))
        .args(["--port", "0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("kubeconfig written", || {
        let ready =
            std::fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("current-context"));
        async move { ready.then_some(()) }
    })
    .await;
    let out = bounded(
        "kubectl",
        Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(["get", "namespaces", "-o", "name"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "namespace/default\nnamespace/kube-public\nnamespace/kube-system\n"
    );
    server.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
