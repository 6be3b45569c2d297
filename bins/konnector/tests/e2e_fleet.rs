//! End to end: fleet mode (issue 12). A fleet of konnector replicas serves many app clusters
//! from one control plane, sharded by each app cluster's Lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::fleet::{FleetWorld, TEAM};
use e2e::steps::events_about;
use e2e::{Backend, Konnector, STARTUP_TIMEOUT, free_port, wait_until};
use kube::api::{DynamicObject, ListParams, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");
/// App clusters of the main scenario.
const APPS: usize = 20;
/// Replicas of the main scenario.
const REPLICAS: usize = 3;
/// How long a whole-fleet condition may take.
const FLEET_STEP: Duration = Duration::from_secs(90);
/// What the issue promises for moving a killed replica's app clusters.
const TAKEOVER: Duration = Duration::from_secs(20);

async fn replica(w: &FleetWorld, pod: &str) -> Konnector {
    replica_with(w, pod, &[]).await
}

async fn replica_with(w: &FleetWorld, pod: &str, extra: &[&str]) -> Konnector {
    let port = free_port().unwrap();
    let mut args = w.replica_args(port).unwrap();
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut k = Konnector::spawn_with_env(BIN, &args, &w.dir, &[("POD_NAME", pod)]).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    k.wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT)
        .await
        .unwrap();
    k
}

fn mango(name: &str) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB",
        "metadata": {"name": name}, "spec": {"tier": "Dedicated"}}))
    .unwrap()
}

/// Whether `name` in app cluster `i` reached the control plane and its status came back.
async fn synced(w: &FleetWorld, i: usize, name: &str) -> bool {
    w.synced(i, TEAM, name).await
}

/// Waits until condition `type_` of the binding in root namespace `r` has `status`.
async fn wait_condition(w: &FleetWorld, r: &str, type_: &str, status: &str) {
    wait_until(
        &format!("{type_}={status} on the binding in {r}"),
        FLEET_STEP,
        || async {
            w.binding_condition(r, type_)
                .await
                .is_some_and(|c| c["status"] == status)
        },
    )
    .await
    .unwrap();
}

/// Creates `name` in app cluster `i`, once the konnector has installed the CRD there.
async fn create(w: &FleetWorld, i: usize, name: &str) {
    let api = w.apps[i].downstream(TEAM);
    wait_until(
        &format!("{name} created in app cluster {i}"),
        FLEET_STEP,
        || async {
            match api.create(&PostParams::default(), &mango(name)).await {
                Ok(_) => true,
                Err(kube::Error::Api(s)) if s.code == 404 => false,
                Err(e) => panic!("create {name} in app cluster {i}: {e}"),
            }
        },
    )
    .await
    .unwrap();
}

/// Creates `name` in each of `apps` and waits until all are synced both ways.
async fn sync_everywhere(w: &FleetWorld, apps: &[usize], name: &str, k: &[&Konnector]) {
    for &i in apps {
        create(w, i, name).await;
    }
    let waited = wait_until(
        &format!("{name} synced both ways in {} app clusters", apps.len()),
        FLEET_STEP,
        || async {
            for &i in apps {
                if !synced(w, i, name).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    if let Err(e) = waited {
        for (i, k) in k.iter().enumerate() {
            eprintln!("--- replica {i} ---\n{}", e2e::steps::tail(&k.stderr()));
        }
        panic!("{e}");
    }
}

/// The names of the objects `api` lists.
async fn object_names(api: &kube::Api<DynamicObject>) -> Vec<String> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect()
}

/// Holders by replica: how many app clusters each holds.
fn loads(holders: &BTreeMap<&'static str, Option<String>>) -> BTreeMap<String, usize> {
    let mut loads = BTreeMap::new();
    for h in holders.values().flatten() {
        *loads.entry(h.clone()).or_default() += 1;
    }
    loads
}

async fn all_held_by_fleet(w: &FleetWorld, replicas: &BTreeSet<String>) -> bool {
    let holders = w.holders().await;
    holders
        .values()
        .all(|h| h.as_ref().is_some_and(|h| replicas.contains(h)))
}

async fn a_fleet_serves_many_app_clusters_and_survives_losing_a_replica(backend: Backend) {
    let mut w = FleetWorld::new(backend).await.unwrap();
    // On the real backend the control plane and three of the app clusters are real servers.
    let real = if backend == Backend::Real { 3 } else { 0 };
    let apps: Vec<(Backend, String)> = (0..APPS)
        .map(|i| {
            let b = if i < real {
                Backend::Real
            } else {
                Backend::Memory
            };
            (b, format!("app{i:02}"))
        })
        .collect();
    w.add_apps(&apps, &["rotated"]).await.unwrap();

    let names: BTreeSet<String> = (0..REPLICAS).map(|i| format!("fleet-{i}")).collect();
    let mut replicas = Vec::new();
    for name in &names {
        replicas.push(replica(&w, name).await);
    }

    // Every app cluster is held by a replica, spread evenly.
    wait_until(
        "every app cluster held by a fleet replica, evenly",
        FLEET_STEP,
        || async {
            let holders = w.holders().await;
            let loads = loads(&holders);
            all_held_by_fleet(&w, &names).await
                && loads.len() == REPLICAS
                && loads.values().all(|l| *l <= APPS / REPLICAS + 1)
        },
    )
    .await
    .unwrap();
    eprintln!("loads: {:?}", loads(&w.holders().await));

    // Objects sync both ways in every app cluster.
    let all: Vec<usize> = (0..APPS).collect();
    let ks: Vec<&Konnector> = replicas.iter().collect();
    sync_everywhere(&w, &all, "before", &ks).await;

    // An AppClusterBinding added later is served without a restart.
    let added = w.add_app(Backend::Memory, "late", &[]).await.unwrap();
    sync_everywhere(&w, &[added], "late-one", &ks).await;
    let events = events_about(&w.cp_admin, e2e::fleet::FLEET_NS, "late").await;
    assert!(
        events.iter().any(|e| e["reason"] == "AppClusterAcquired"),
        "an Event says who took the app cluster over: {events:?}"
    );

    // Deleting it stops the fleet serving it: the Lease is released at once.
    w.unbind(added).await.unwrap();
    let r = w.apps[added].r;
    wait_until(
        "the deleted app cluster's Lease released",
        Duration::from_secs(15),
        || async { w.holders().await.get(r).is_some_and(Option::is_none) },
    )
    .await
    .unwrap();
    wait_until(
        "an Event says the app cluster was given up",
        FLEET_STEP,
        || async {
            events_about(&w.cp_admin, e2e::fleet::FLEET_NS, "late")
                .await
                .iter()
                .any(|e| e["reason"] == "AppClusterReleased")
        },
    )
    .await
    .unwrap();
    create(&w, added, "after-unbind").await;

    // Rotating one app cluster's kubeconfig: the fleet uses the new credentials, no restart.
    let rotated = w.apps[1].cluster.kubeconfig("rotated").unwrap();
    w.apps[1].cluster.clear_requests().await.unwrap();
    w.rotate(1, &rotated).await.unwrap();
    sync_everywhere(&w, &[1], "after-rotation", &ks).await;
    wait_until(
        "app cluster 1 sees requests of the rotated user",
        FLEET_STEP,
        || async {
            w.apps[1]
                .cluster
                .requests()
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| r.user == "rotated")
        },
    )
    .await
    .unwrap();

    // A broken app cluster (its kubeconfig Secret holds no kubeconfig) is reported on its
    // binding; the others keep syncing. Once its Secret is fixed, it is served.
    let broken = w
        .add_app_with_secret(Backend::Memory, "broken", "this is not a kubeconfig")
        .await
        .unwrap();
    let broken_r = w.apps[broken].r;
    wait_condition(&w, broken_r, "AppKubeconfigValid", "False").await;
    // An AppClusterBinding whose root namespace name would be too long cannot be served: one
    // replica (not each) says so in an Event.
    let long = "a-binding-name-so-long-that-its-root-namespace-cannot-exist";
    e2e::backend::apply(
        &kube::Api::<konnector_api::v1alpha1::AppClusterBinding>::namespaced(
            w.cp_admin.clone(),
            e2e::fleet::FLEET_NS,
        ),
        e2e::fleet::app_cluster_binding(long, "klutch-bind-x"),
    )
    .await
    .unwrap();
    let cp_admin = w.cp_admin.clone();
    let unavailable = || async {
        events_about(&cp_admin, e2e::fleet::FLEET_NS, long)
            .await
            .into_iter()
            .filter(|e| e["reason"] == "AppClusterUnavailable")
            .count()
    };
    wait_until(
        "the unservable AppClusterBinding reported",
        FLEET_STEP,
        || async { unavailable().await > 0 },
    )
    .await
    .unwrap();
    // An app cluster that stops answering (behind a proxy that now refuses every connection)
    // says so on its binding, and does not hold up the others either.
    let cut = w
        .add_app_with_secret(Backend::Memory, "cut", "placeholder")
        .await
        .unwrap();
    let proxy = e2e::proxy::TcpProxy::start(
        e2e::proxy::server_addr(&w.apps[cut].cluster.kubeconfig(e2e::KONNECTOR_USER).unwrap())
            .unwrap(),
    )
    .await
    .unwrap();
    let through_proxy = proxy
        .kubeconfig(&w.apps[cut].cluster.kubeconfig(e2e::KONNECTOR_USER).unwrap())
        .unwrap();
    w.rotate(cut, &through_proxy).await.unwrap();
    sync_everywhere(&w, &[cut], "before-cut", &ks).await;
    proxy.set(e2e::proxy::ProxyMode::Refuse);
    let cut_r = w.apps[cut].r;
    wait_condition(&w, cut_r, "Connected", "False").await;
    sync_everywhere(&w, &[0, 2, APPS - 1], "despite-broken", &ks).await;
    assert_eq!(unavailable().await, 1, "reported by one replica only");
    proxy.set(e2e::proxy::ProxyMode::Pass);
    sync_everywhere(&w, &[cut], "after-cut", &ks).await;
    let fixed = w.apps[broken]
        .cluster
        .kubeconfig(e2e::KONNECTOR_USER)
        .unwrap();
    w.rotate(broken, &fixed).await.unwrap();
    sync_everywhere(&w, &[broken], "fixed", &ks).await;
    wait_condition(&w, broken_r, "AppKubeconfigValid", "True").await;
    assert!(
        !synced(&w, added, "after-unbind").await,
        "an unbound app cluster is not served"
    );

    // SIGKILL the replica holding the most: its app clusters move to the others within 20 s,
    // and nothing is lost or duplicated.
    let holders = w.holders().await;
    let (victim, _) = loads(&holders).into_iter().max_by_key(|(_, l)| *l).unwrap();
    let moved: Vec<usize> = (0..APPS)
        .filter(|i| holders.get(w.apps[*i].r).and_then(|h| h.as_deref()) == Some(victim.as_str()))
        .collect();
    let victim_index = names.iter().position(|n| *n == victim).unwrap();
    let killed_at = Instant::now();
    replicas[victim_index].kill().await.unwrap();
    let survivors: BTreeSet<String> = names.iter().filter(|n| **n != victim).cloned().collect();
    wait_until(
        "the killed replica's app clusters taken over",
        TAKEOVER + Duration::from_secs(10),
        || async {
            let holders = w.holders().await;
            moved.iter().all(|i| {
                holders
                    .get(w.apps[*i].r)
                    .and_then(|h| h.as_ref())
                    .is_some_and(|h| survivors.contains(h))
            })
        },
    )
    .await
    .unwrap();
    let took = killed_at.elapsed();
    eprintln!("{} app clusters taken over in {took:?}", moved.len());
    assert!(took <= TAKEOVER, "takeover took {took:?}");
    let alive: Vec<&Konnector> = replicas
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim_index)
        .map(|(_, k)| k)
        .collect();
    sync_everywhere(&w, &moved, "after-kill", &alive).await;
    // Nothing lost, nothing twice: upstream holds exactly what each app cluster holds.
    for i in (0..APPS).filter(|i| *i != 1) {
        let down: BTreeSet<String> = object_names(&w.apps[i].downstream(TEAM))
            .await
            .into_iter()
            .collect();
        let up = object_names(&w.upstream(i, TEAM)).await;
        assert_eq!(up.len(), down.len(), "app cluster {i}: {up:?} vs {down:?}");
        assert_eq!(
            up.into_iter().collect::<BTreeSet<_>>(),
            down,
            "app cluster {i}"
        );
    }
    let survivors_load = loads(&w.holders().await);
    assert!(
        survivors_load
            .values()
            .all(|l| *l <= APPS / (REPLICAS - 1) + 1),
        "{survivors_load:?}"
    );

    // A replica that shuts down hands its app clusters over at once: no Lease expiry to wait
    // out (that alone would take 15 s).
    let leaving = survivors.iter().next().unwrap().clone();
    let last = survivors.iter().nth(1).unwrap().clone();
    let leaving_index = names.iter().position(|n| *n == leaving).unwrap();
    let stopped_at = Instant::now();
    replicas[leaving_index].terminate().await.unwrap();
    wait_until(
        "the last replica holds every app cluster",
        Duration::from_secs(15),
        || async {
            let holders = w.holders().await;
            (0..APPS)
                .all(|i| holders.get(w.apps[i].r).and_then(|h| h.as_deref()) == Some(last.as_str()))
        },
    )
    .await
    .unwrap();
    let handed = stopped_at.elapsed();
    eprintln!("app clusters handed over on shutdown in {handed:?}");
    assert!(
        handed < Duration::from_secs(10),
        "hand-over took {handed:?}"
    );
    replicas[leaving_index]
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap();
    let last_index = names.iter().position(|n| *n == last).unwrap();
    sync_everywhere(&w, &[0, APPS - 1], "one-left", &[&replicas[last_index]]).await;
}

async fn a_per_cluster_konnector_keeps_its_app_cluster_until_it_is_gone(backend: Backend) {
    let mut w = FleetWorld::new(backend).await.unwrap();
    w.add_apps(
        &[
            (Backend::Memory, "solo".into()),
            (Backend::Memory, "other".into()),
        ],
        &[],
    )
    .await
    .unwrap();
    let r = w.apps[0].r;
    // The per-cluster konnector the backend deploys today.
    let port = free_port().unwrap();
    let kubeconfig = w.cp.konnector_kubeconfig_file(&w.dir).unwrap();
    let args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--health-probe-bind-address=127.0.0.1:{port}"),
        "--control-plane-mode".to_string(),
        format!(
            "--app-cluster-kubeconfig-secret-name={}",
            e2e::fleet::APP_KUBECONFIG
        ),
        format!("--app-cluster-kubeconfig-secret-namespace={r}"),
        format!("--binding-root-namespace={r}"),
        format!("--lease-namespace={r}"),
    ];
    let solo =
        Konnector::spawn_with_env(BIN, &args, &w.dir, &[("POD_NAME", "konnector-solo")]).unwrap();
    wait_until(
        "the per-cluster konnector holds its Lease",
        FLEET_STEP,
        || async {
            w.holders().await.get(r).cloned().flatten().as_deref() == Some("konnector-solo")
        },
    )
    .await
    .unwrap();
    let fleet = replica(&w, "fleet-0").await;
    let ks = [&solo, &fleet];
    // The fleet serves the other app cluster; the per-cluster konnector keeps its own.
    sync_everywhere(&w, &[0, 1], "together", &ks).await;
    let holders = w.holders().await;
    assert_eq!(
        holders.get(r).cloned().flatten().as_deref(),
        Some("konnector-solo")
    );
    assert_eq!(
        holders.get(w.apps[1].r).cloned().flatten().as_deref(),
        Some("fleet-0")
    );
    // The migration: the old Deployment goes (it releases its Lease), the fleet takes over.
    solo.terminate().await.unwrap();
    wait_until(
        "the fleet takes the app cluster over",
        Duration::from_secs(20),
        || async { w.holders().await.get(r).cloned().flatten().as_deref() == Some("fleet-0") },
    )
    .await
    .unwrap();
    sync_everywhere(&w, &[0], "migrated", &[&fleet]).await;
}

/// Two fleets split the app clusters by `--fleet-selector`, in one lease namespace; relabelling
/// an `AppClusterBinding` moves its app cluster from one to the other without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_with_different_selectors_split_the_app_clusters() {
    let mut w = FleetWorld::new(Backend::Memory).await.unwrap();
    let apps: Vec<(Backend, String)> = (0..4)
        .map(|i| (Backend::Memory, format!("sel{i}")))
        .collect();
    w.add_apps(&apps, &[]).await.unwrap();
    for i in 0..4 {
        let tier = if i < 2 { "gold" } else { "silver" };
        w.label(i, "tier", tier).await.unwrap();
    }
    let gold = replica_with(&w, "gold-0", &["--fleet-selector=tier=gold"]).await;
    let other = replica_with(&w, "other-0", &["--fleet-selector=tier!=gold"]).await;
    let holder = |h: &BTreeMap<&'static str, Option<String>>, i: usize| {
        h.get(w.apps[i].r).cloned().flatten().unwrap_or_default()
    };
    wait_until("each fleet holds its app clusters", FLEET_STEP, || async {
        let h = w.holders().await;
        (0..4).all(|i| holder(&h, i) == if i < 2 { "gold-0" } else { "other-0" })
    })
    .await
    .unwrap();
    sync_everywhere(&w, &[0, 1, 2, 3], "split", &[&gold, &other]).await;
    w.label(3, "tier", "gold").await.unwrap();
    wait_until(
        "the relabelled app cluster moves to the gold fleet",
        FLEET_STEP,
        || async { holder(&w.holders().await, 3) == "gold-0" },
    )
    .await
    .unwrap();
    sync_everywhere(&w, &[3], "moved", &[&gold, &other]).await;
    assert_eq!(holder(&w.holders().await, 2), "other-0");
}

e2e::on_both_backends!(
    a_fleet_serves_many_app_clusters_and_survives_losing_a_replica,
    a_per_cluster_konnector_keeps_its_app_cluster_until_it_is_gone,
);
