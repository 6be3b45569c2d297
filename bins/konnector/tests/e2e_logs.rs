//! End to end: at the highest verbosity, in both log formats, no credential or claimed Secret
//! value reaches the logs (issue 5 item 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use base64::Engine as _;
use e2e::world::{Mode, STEP, World};
use e2e::{Backend, KONNECTOR_USER, Konnector, STARTUP_TIMEOUT, free_port, wait_until};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");
const CLAIMED_VALUE: &str = "claimed-s3cret-value";

async fn scenario(backend: Backend, mode: Mode, format: &str) {
    let w = World::new(backend, mode, &[]).await.unwrap();
    let port = free_port().unwrap();
    let mut args = w.konnector_args(port).unwrap();
    args.retain(|a| !a.starts_with("-v="));
    args.push("-v=10".to_string());
    args.push(format!("--logging-format={format}"));
    let mut k = Konnector::spawn(BIN, &args, &w.dir).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT)
        .await
        .unwrap();
    w.bind().await.unwrap();
    wait_until("binding Ready", STEP, || async {
        w.wait_bound().await.is_ok()
    })
    .await
    .unwrap();
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB", "metadata": {"name": "db"}, "spec": {}})).unwrap();
    down.create(&PostParams::default(), &obj).await.unwrap();
    wait_until("instance upstream", STEP, || async {
        up.get_opt("db").await.ok().flatten().is_some()
    })
    .await
    .unwrap();
    let up_secrets: Api<Secret> =
        Api::namespaced(w.provider_admin.clone(), &format!("{}-default", w.p));
    up_secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"password": CLAIMED_VALUE}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let down_secrets: Api<Secret> = Api::namespaced(w.app_admin.clone(), "default");
    wait_until("claimed secret mirrored", STEP, || async {
        down_secrets.get_opt("creds").await.ok().flatten().is_some()
    })
    .await
    .unwrap();
    k.terminate().await.unwrap();
    k.wait_exit(std::time::Duration::from_secs(10))
        .await
        .unwrap();

    let logs = format!("{}{}", k.stdout(), k.stderr());
    assert!(
        logs.lines().count() > 20,
        "expected verbose logs, got:\n{logs}"
    );
    // The base64 form, as it would appear in a logged Secret body.
    let encoded = base64::engine::general_purpose::STANDARD.encode(CLAIMED_VALUE);
    let mut secrets = vec![
        w.app.token(KONNECTOR_USER).unwrap(),
        w.provider.token(KONNECTOR_USER).unwrap(),
        CLAIMED_VALUE.to_string(),
        encoded,
    ];
    // A real control plane's admin is a client certificate, not a token.
    secrets.extend(w.app.token("admin").ok());
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret value appears in the {format} logs"
        );
    }
    assert!(
        !logs.contains("client-key-data") && !logs.contains("apiVersion: v1\nclusters"),
        "kubeconfig contents in the logs"
    );
}

async fn default_mode_text_logs_at_the_highest_verbosity_carry_no_secrets(backend: Backend) {
    scenario(backend, Mode::Default, "text").await;
}

async fn control_plane_mode_json_logs_at_the_highest_verbosity_carry_no_secrets(backend: Backend) {
    scenario(backend, Mode::ControlPlane, "json").await;
}

e2e::on_both_backends!(
    default_mode_text_logs_at_the_highest_verbosity_carry_no_secrets,
    control_plane_mode_json_logs_at_the_highest_verbosity_carry_no_secrets,
);
