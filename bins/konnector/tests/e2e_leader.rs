//! End to end: leader election with two replicas (issue 5 item 1, decision L1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use e2e::world::{Mode, STEP, World};
use e2e::{Backend, Konnector, STARTUP_TIMEOUT, free_port, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");

async fn replica(w: &World, pod: &str, user: &str) -> Konnector {
    let port = free_port().unwrap();
    let kubeconfig = w
        .dir
        .write(
            &format!("{pod}.kubeconfig"),
            &w.app.kubeconfig(user).unwrap(),
        )
        .unwrap();
    let mut args = w.konnector_args(port).unwrap();
    args.retain(|a| !a.starts_with("--kubeconfig="));
    args.push(format!("--kubeconfig={}", kubeconfig.display()));
    args.push("--lease-namespace=default".to_string());
    let mut k = Konnector::spawn_with_env(BIN, &args, &w.dir, &[("POD_NAME", pod)]).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT)
        .await
        .unwrap();
    k
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("klutch-bind")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

fn mango(name: &str) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB", "metadata": {"name": name}, "spec": {}})).unwrap()
}

async fn only_the_leader_writes_and_a_follower_takes_over_after_the_leader_is_killed(
    backend: Backend,
) {
    let w = World::new(backend, Mode::Default, &["konnector-b"])
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(w.app_admin.clone(), "default");
    let mut a = replica(&w, "replica-a", e2e::KONNECTOR_USER).await;
    wait_until("replica-a leads", STEP, || async {
        holder(&leases).await.as_deref() == Some("replica-a")
    })
    .await
    .unwrap();
    let b = replica(&w, "replica-b", "konnector-b").await;
    w.bind().await.unwrap();
    wait_until("binding Ready", STEP, || async {
        w.wait_bound().await.is_ok()
    })
    .await
    .unwrap();
    let (down, up) = (w.downstream("default"), w.upstream("default"));
    down.create(&PostParams::default(), &mango("one"))
        .await
        .unwrap();
    wait_until("synced by the leader", STEP, || async {
        up.get_opt("one").await.ok().flatten().is_some()
    })
    .await
    .unwrap();
    // The follower keeps warm caches: it watches the bound resource too.
    wait_until("follower watches the bound resource", STEP, || async {
        w.app.requests().await.unwrap().iter().any(|r| {
            r.user == "konnector-b"
                && r.resource == "mangodbs"
                && (r.verb == "list" || r.verb == "watch")
        })
    })
    .await
    .unwrap();
    let follower_writes: Vec<_> = w
        .app
        .requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.user == "konnector-b" && r.is_write())
        .collect();
    assert!(
        follower_writes.is_empty(),
        "the follower wrote: {follower_writes:?}"
    );

    // The leader dies without releasing the lease: the follower takes over within 20 s.
    a.kill().await.unwrap();
    let killed_at = tokio::time::Instant::now();
    wait_until("replica-b leads", Duration::from_secs(20), || async {
        holder(&leases).await.as_deref() == Some("replica-b")
    })
    .await
    .unwrap();
    down.create(&PostParams::default(), &mango("two"))
        .await
        .unwrap();
    wait_until("synced by the new leader", STEP, || async {
        up.get_opt("two").await.ok().flatten().is_some()
    })
    .await
    .unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(20) + STEP,
        "took over too late"
    );
    let lease = leases.get("klutch-bind").await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(1));

    // SIGTERM stops the writers, releases the lease for the next replica at once, and the
    // process exits 0 within 5 s.
    let mut b = b;
    b.terminate().await.unwrap();
    let status = b.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        holder(&leases).await,
        None,
        "lease not released on shutdown"
    );
}

e2e::on_both_backends!(only_the_leader_writes_and_a_follower_takes_over_after_the_leader_is_killed,);
