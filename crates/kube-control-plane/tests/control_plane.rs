//! Against the real control plane. Each test skips (with a line saying why) when the binaries
//! are not found. The tests run one at a time: they are CPU-bound on a small machine, and the
//! start time printed by the first is then that of two control planes alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a test failure with its location

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube_control_plane::{Binaries, ControlPlane, Options};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn found() -> bool {
    match Binaries::find() {
        Ok(_) => true,
        Err(reason) => {
            eprintln!("real control plane not found: {reason}");
            false
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, panicking after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn is_gone(pid: u32) -> bool {
    // A zombie no longer runs; PID 1 of a container may never reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn two_control_planes_side_by_side() {
    if !found() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    let (a, b) = tokio::join!(
        ControlPlane::start(Options::default().name("side-a")),
        ControlPlane::start(
            Options::default()
                .name("side-b")
                .etcd_compaction_interval(Duration::from_secs(2))
                .watch_cache(false)
        ),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    eprintln!(
        "two control planes (with kube-controller-manager) ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    for cp in [&a, &b] {
        assert!(cp.has_controller_manager());
        assert!(cp.server().starts_with("https://127.0.0.1:"));
        assert!(cp.admin_kubeconfig().contains(cp.server()));
        assert_eq!(
            std::fs::read_to_string(cp.admin_kubeconfig_path()).unwrap(),
            cp.admin_kubeconfig()
        );
        let client = cp.admin_client().await.unwrap();
        let names: Vec<String> = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|ns| ns.metadata.name)
            .collect();
        assert!(names.iter().any(|n| n == "kube-system"), "{names:?}");
        // start() waited for it: kube-controller-manager runs.
        Api::<ServiceAccount>::namespaced(client, "default")
            .get("default")
            .await
            .unwrap();
    }
    assert_ne!(a.server(), b.server());

    tokio::join!(
        controller_manager_works(&a),
        tokens_are_bound_to_a_secret(&a),
        audit_log_names_the_writer(&a),
        async {
            compaction_expires_old_resource_versions(&b).await;
            // Not before: a restart would give 410 on its own (the watch cache starts afresh).
            apiserver_restart_keeps_data(&b).await;
        },
    );

    let pids: Vec<u32> = [&a, &b]
        .iter()
        .flat_map(|cp| cp.pids())
        .filter_map(|(_, pid)| pid)
        .collect();
    assert_eq!(pids.len(), 6);
    let dirs = [a.dir().to_owned(), b.dir().to_owned()];
    let t1 = Instant::now();
    drop((a, b));
    eprintln!("both stopped in {:.1} s", t1.elapsed().as_secs_f64());
    for pid in pids {
        assert!(is_gone(pid), "pid {pid} still runs after drop");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
}

/// Namespace deletion and garbage collection: both only happen with kube-controller-manager.
async fn controller_manager_works(cp: &ControlPlane) {
    let client = cp.admin_client().await.unwrap();
    let pp = PostParams::default();
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces.create(&pp, &namespace("doomed")).await.unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "doomed")
        .create(&pp, &config_map("content"))
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();

    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let owner = config_maps.create(&pp, &config_map("owner")).await.unwrap();
    let mut owned = config_map("owned");
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_owned(),
        kind: "ConfigMap".to_owned(),
        name: "owner".to_owned(),
        uid: owner.metadata.uid.unwrap(),
        ..OwnerReference::default()
    }]);
    config_maps.create(&pp, &owned).await.unwrap();
    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();

    let t0 = Instant::now();
    eventually(
        "namespace doomed is deleted",
        Duration::from_secs(30),
        || async {
            namespaces
                .get_opt("doomed")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    eventually(
        "ConfigMap owned is garbage-collected",
        Duration::from_secs(30),
        || async {
            config_maps
                .get_opt("owned")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "namespace deletion and garbage collection done {:.1} s after the deletes",
        t0.elapsed().as_secs_f64()
    );
}

async fn tokens_are_bound_to_a_secret(cp: &ControlPlane) {
    let token = cp
        .service_account_token("tokens", "robot", Some("robot-key"))
        .await
        .unwrap();
    cp.grant_cluster_admin("tokens", "robot").await.unwrap();
    let kubeconfig = cp.token_kubeconfig(&token, Some("tokens"));
    assert!(kubeconfig.contains("namespace: tokens"), "{kubeconfig}");
    assert!(!kubeconfig.contains("client-key-data"), "{kubeconfig}");
    let robot = cp.token_client(&token).await.unwrap();
    assert_eq!(robot.default_namespace(), "default");
    let namespaces = Api::<Namespace>::all(robot);
    // The binding reaches the authorizer's cache a moment after it is created.
    eventually(
        "the bound token lists namespaces",
        Duration::from_secs(10),
        || async { namespaces.list(&ListParams::default()).await.ok() },
    )
    .await;

    let admin = cp.admin_client().await.unwrap();
    Api::<Secret>::namespaced(admin, "tokens")
        .delete("robot-key", &DeleteParams::default())
        .await
        .unwrap();
    let t0 = Instant::now();
    let code = eventually(
        "the token is rejected after its Secret is deleted",
        Duration::from_secs(30),
        || async {
            match namespaces.list(&ListParams::default()).await {
                Err(kube::Error::Api(status)) => Some(status.code),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(code, 401);
    // kube-apiserver caches a successful token authentication for 10 s (no flag changes that),
    // so a token in use keeps working for up to 10 s after its Secret is gone.
    eprintln!(
        "a token in use rejected {:.2} s after deleting the Secret it is bound to",
        t0.elapsed().as_secs_f64()
    );

    // A token not used in the last 10 s is rejected at once.
    let unused = cp
        .service_account_token("tokens", "robot", Some("robot-key-2"))
        .await
        .unwrap();
    Api::<Secret>::namespaced(cp.admin_client().await.unwrap(), "tokens")
        .delete("robot-key-2", &DeleteParams::default())
        .await
        .unwrap();
    let unused = Api::<Namespace>::all(cp.token_client(&unused).await.unwrap());
    let t0 = Instant::now();
    let code = eventually(
        "an unused token is rejected after its Secret is deleted",
        Duration::from_secs(10),
        || async {
            match unused.list(&ListParams::default()).await {
                Err(kube::Error::Api(status)) => Some(status.code),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(code, 401);
    eprintln!(
        "an unused token rejected {:.2} s after deleting its Secret",
        t0.elapsed().as_secs_f64()
    );

    // Asking again for a deleted Secret's token creates the Secret anew.
    let again = cp
        .service_account_token("tokens", "robot", Some("robot-key"))
        .await
        .unwrap();
    assert_ne!(again, token);
}

async fn audit_log_names_the_writer(cp: &ControlPlane) {
    let token = cp
        .service_account_token("audited", "writer", None)
        .await
        .unwrap();
    cp.grant_cluster_admin("audited", "writer").await.unwrap();
    let writer = Api::<ConfigMap>::namespaced(cp.token_client(&token).await.unwrap(), "audited");
    eventually("the writer may create", Duration::from_secs(10), || async {
        writer
            .create(&PostParams::default(), &config_map("written"))
            .await
            .ok()
    })
    .await;
    let admin = Api::<ConfigMap>::namespaced(cp.admin_client().await.unwrap(), "audited");
    admin.get("written").await.unwrap();

    let events = cp.audit_events_settled().await.unwrap();
    let user = "system:serviceaccount:audited:writer";
    let created: Vec<_> = events
        .iter()
        .filter(|e| e.user == user && e.is_write())
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    let e = created[0];
    assert_eq!(e.verb, "create");
    assert_eq!(e.code, Some(201));
    assert_eq!(e.resource.as_deref(), Some("configmaps"));
    assert_eq!(e.namespace.as_deref(), Some("audited"));
    assert_eq!(e.name.as_deref(), Some("written"));
    assert_eq!(e.api_group, None);
    assert_eq!(e.stage, "ResponseComplete");
    assert!(!e.audit_id.is_empty());
    assert!(
        events.iter().any(|e| e.user == "admin"
            && e.verb == "get"
            && e.name.as_deref() == Some("written")
            && !e.is_write()),
        "the admin's read is not in the audit log"
    );
    // The harness's own requests (readiness polls, setup, markers) are not the admin's.
    assert!(
        !events
            .iter()
            .any(|e| e.user == "admin" && e.request_uri == "/readyz"),
        "readiness polls show as admin"
    );
    assert!(events.iter().all(|e| e.stage == "ResponseComplete"));
}

async fn compaction_expires_old_resource_versions(cp: &ControlPlane) {
    let client = cp.admin_client().await.unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(client, "default");
    let created = config_maps
        .create(&PostParams::default(), &config_map("compacted"))
        .await
        .unwrap();
    let old = created.metadata.resource_version.unwrap();
    let t0 = Instant::now();
    let status = eventually(
        "a watch from an old resourceVersion gets 410 Gone",
        Duration::from_secs(30),
        || async {
            let mut events = config_maps
                .watch(&WatchParams::default().timeout(1), &old)
                .await
                .ok()?
                .boxed();
            match events.next().await {
                Some(Ok(WatchEvent::Error(status))) => Some(status),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(status.code, 410, "{status:?}");
    eprintln!(
        "watch from resourceVersion {old} expired after {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        status.message
    );
}

async fn apiserver_restart_keeps_data(cp: &ControlPlane) {
    let client = cp.admin_client().await.unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    config_maps
        .create(&PostParams::default(), &config_map("survivor"))
        .await
        .unwrap();
    let [etcd, apiserver, kcm] = cp.pids();

    let t0 = Instant::now();
    cp.stop_apiserver().await.unwrap();
    let stopped = t0.elapsed();
    assert!(cp.pids()[1].1.is_none());
    assert!(is_gone(apiserver.1.unwrap()));
    assert!(config_maps.get("survivor").await.is_err());
    let t1 = Instant::now();
    cp.start_apiserver().await.unwrap();
    eprintln!(
        "kube-apiserver stopped in {:.1} s, ready again {:.1} s after its start",
        stopped.as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
    let [etcd_after, apiserver_after, kcm_after] = cp.pids();
    assert_eq!(etcd, etcd_after);
    assert_eq!(kcm, kcm_after);
    assert_ne!(apiserver, apiserver_after);

    // The same client (same port, same CA) works again, and the data is still there.
    config_maps.get("survivor").await.unwrap();
    // kube-controller-manager lived through it: namespace deletion still completes.
    let namespaces = Api::<Namespace>::all(client);
    namespaces
        .create(&PostParams::default(), &namespace("after-restart"))
        .await
        .unwrap();
    namespaces
        .delete("after-restart", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "namespace after-restart is deleted",
        Duration::from_secs(30),
        || async {
            namespaces
                .get_opt("after-restart")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_server_that_exits_fails_the_start_early() {
    if !found() {
        return;
    }
    let _serial = SERIAL.lock().await;
    // kube-apiserver cannot bind a port that is taken; the later --secure-port wins.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kcp-exits-{}", std::process::id()));
    let t0 = Instant::now();
    let err = ControlPlane::start(
        Options::default()
            .name("exits")
            .controller_manager(false)
            .dir(&dir)
            .extra_apiserver_flag(format!("--secure-port={port}")),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    eprintln!(
        "start failed after {:.1} s (three attempts): {message}",
        t0.elapsed().as_secs_f64()
    );
    assert!(message.contains("kube-apiserver (pid"), "{message}");
    assert!(message.contains("address already in use"), "{message}");
    assert!(message.contains("kube-apiserver.log"), "{message}");
    assert!(t0.elapsed() < Duration::from_secs(40));
    // The logs are kept to look at, etcd's data is not.
    assert!(dir.join("kube-apiserver.log").is_file());
    assert!(!dir.join("etcd").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

const HELPER_ENV: &str = "KUBE_CONTROL_PLANE_STRAY_HELPER";

/// Started by `no_stray_processes` in a child process: starts a control plane that is never
/// dropped (a `static`), prints its pids and dir, then ends the process without unwinding
/// (`exit`) or waits to be SIGKILLed (`wait`).
#[test]
#[ignore = "run by no_stray_processes in a child process"]
fn stray_helper() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    static KEPT: OnceLock<ControlPlane> = OnceLock::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cp = runtime
        .block_on(ControlPlane::start(Options::default().name("stray")))
        .unwrap();
    let cp = KEPT.get_or_init(|| cp);
    let pids: Vec<String> = cp
        .pids()
        .iter()
        .filter_map(|(_, pid)| pid.map(|p| p.to_string()))
        .collect();
    println!("DIR {}", cp.dir().display());
    println!("PIDS {}", pids.join(" "));
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    match mode.as_str() {
        "exit" => std::process::exit(0),
        _ => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
    }
}

#[test]
fn no_stray_processes() {
    if !found() {
        return;
    }
    let _serial = SERIAL.blocking_lock();
    let spawn = |mode: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args(["stray_helper", "--exact", "--ignored", "--nocapture"])
            .env(HELPER_ENV, mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut exiting = spawn("exit");
    let mut killed = spawn("wait");
    let read = |child: &mut std::process::Child| {
        let mut dir = None;
        let mut pids = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(d) = line.strip_prefix("DIR ") {
                dir = Some(d.to_owned());
            }
            if let Some(p) = line.strip_prefix("PIDS ") {
                pids = p.split(' ').map(|p| p.parse::<u32>().unwrap()).collect();
                break;
            }
        }
        (dir.expect("the helper printed no DIR"), pids)
    };
    let (dir_exiting, pids_exiting) = read(&mut exiting);
    let (dir_killed, pids_killed) = read(&mut killed);
    assert_eq!(
        pids_exiting.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    assert_eq!(pids_killed.len(), 3);
    assert!(exiting.wait().unwrap().success());
    assert!(pids_killed.iter().all(|&p| !is_gone(p)));
    killed.kill().unwrap();
    killed.wait().unwrap();

    let t0 = Instant::now();
    let all: Vec<u32> = pids_exiting.into_iter().chain(pids_killed).collect();
    while !all.iter().all(|&p| is_gone(p)) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still running 10 s after their test process ended: {:?}",
            all.iter().filter(|&&p| !is_gone(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "all 6 servers gone {:.2} s after their test processes ended",
        t0.elapsed().as_secs_f64()
    );
    for dir in [dir_exiting, dir_killed] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
