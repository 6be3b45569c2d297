//! End to end: `/metrics` after a known amount of work (issue 5 item 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use e2e::world::{Mode, STEP, World};
use e2e::{Backend, Konnector, STARTUP_TIMEOUT, free_port, http_get, wait_until};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

/// The value of the sample `line_start` (metric name with labels) in OpenMetrics text.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_count_the_work_done(backend: Backend) {
    let w = World::new(backend, Mode::Default, &[]).await.unwrap();
    let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
    let mut args = w.konnector_args(health).unwrap();
    args.retain(|a| !a.starts_with("--metrics-bind-address"));
    args.push(format!("--metrics-bind-address=127.0.0.1:{metrics}"));
    let mut k = Konnector::spawn(BIN, &args, &w.dir).unwrap();
    let health_addr: SocketAddr = format!("127.0.0.1:{health}").parse().unwrap();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    k.wait_http_ok(health_addr, "/readyz", STARTUP_TIMEOUT)
        .await
        .unwrap();
    w.bind().await.unwrap();
    wait_until("binding Ready", STEP, || async {
        w.wait_bound().await.is_ok()
    })
    .await
    .unwrap();

    let (down, up) = (w.downstream("default"), w.upstream("default"));
    for i in 0..3 {
        let obj: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
            "metadata": {"name": format!("db-{i}")}, "spec": {}}))
            .unwrap();
        down.create(&PostParams::default(), &obj).await.unwrap();
    }
    wait_until("3 instances upstream", STEP, || async {
        up.list(&Default::default())
            .await
            .is_ok_and(|l| l.items.len() == 3)
    })
    .await
    .unwrap();
    for i in 0..3 {
        up.patch_status(
            &format!("db-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }
    wait_until("3 statuses downstream", STEP, || async {
        down.list(&Default::default()).await.is_ok_and(|l| {
            l.items
                .iter()
                .all(|o| o.data["status"]["phase"] == "Running")
        })
    })
    .await
    .unwrap();

    let (code, text) = http_get(metrics_addr, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no sample {s} in\n{text}"));
    assert_eq!(get("konnector_leader"), 1.0);
    // Exactly one apply per instance (the create), one finalizer patch per instance, one
    // APIServiceNamespace, one status update per instance: no write more than the work needs.
    assert_eq!(
        get(r#"konnector_api_writes_total{cluster="provider",verb="apply"}"#),
        3.0
    );
    assert_eq!(
        get(r#"konnector_api_writes_total{cluster="consumer",verb="patch"}"#),
        3.0
    );
    assert_eq!(
        get(r#"konnector_api_writes_total{cluster="provider",verb="create"}"#),
        1.0
    );
    assert_eq!(
        get(r#"konnector_api_writes_total{cluster="consumer",verb="update_status"}"#),
        3.0
    );
    assert_eq!(
        get(r#"konnector_sync_latency_seconds_count{direction="spec"}"#),
        3.0
    );
    assert_eq!(
        get(r#"konnector_sync_latency_seconds_count{direction="status"}"#),
        3.0
    );
    assert!(
        get(r#"konnector_reconciles_total{controller="klutch-bind-konnector-cluster-spec"}"#)
            >= 6.0
    );
    assert_eq!(
        sample(
            &text,
            r#"konnector_reconcile_errors_total{controller="klutch-bind-konnector-cluster-spec"}"#
        )
        .unwrap_or(0.0),
        0.0
    );
    assert!(text.ends_with("# EOF\n"));
}

e2e::on_both_backends!(metrics_count_the_work_done,);
