//! End to end: the APIServiceBinding CRD at startup (reference §2 step 4, 11.3 item 7).
//! Default mode installs or updates it in the binding cluster and waits for `Established`;
//! control-plane mode leaves it alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{Cluster, Konnector, STARTUP_TIMEOUT, TempDir, free_port};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use test_apiserver::Fault;

const BIN: &str = env!("CARGO_BIN_EXE_konnector");
const CRD_NAME: &str = "apiservicebindings.klutch.anynines.com";

/// A konnector that answers `/readyz` with 200 (startup done, root caches synced).
struct Running {
    konnector: Konnector,
    _dir: TempDir,
}

async fn start_until_ready(args: Vec<String>, dir: TempDir) -> Running {
    let port = free_port().unwrap();
    let mut all = args;
    all.push(format!("--health-probe-bind-address=127.0.0.1:{port}"));
    let mut konnector = Konnector::spawn(BIN, &all, &dir).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    konnector
        .wait_http_ok(addr, "/readyz", STARTUP_TIMEOUT)
        .await
        .unwrap();
    Running {
        konnector,
        _dir: dir,
    }
}

async fn stop(mut running: Running) {
    running.konnector.terminate().await.unwrap();
    let status = running
        .konnector
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        status.success(),
        "{status:?}\n{}",
        running.konnector.stderr()
    );
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Our CRD with the `spec` property removed from the schema: what an older konnector installed.
fn outdated_crd() -> CustomResourceDefinition {
    let mut v = serde_json::to_value(konnector_api_crd()).unwrap();
    let props = v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        .as_object_mut()
        .unwrap();
    props.remove("spec");
    props.insert("legacy".into(), serde_json::json!({"type": "string"}));
    serde_json::from_value(v).unwrap()
}

fn konnector_api_crd() -> CustomResourceDefinition {
    konnector_api::crds::api_service_binding()
}

fn crd_writes(cluster: &Cluster) -> usize {
    cluster
        .konnector_writes()
        .iter()
        .filter(|r| r.resource == "customresourcedefinitions")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_installs_the_apiservicebinding_crd_and_it_is_established() {
    let app = Cluster::start("app").await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&dir).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(app.client().await.unwrap());
    assert!(crds.get_opt(CRD_NAME).await.unwrap().is_none());

    let running =
        start_until_ready(vec![format!("--kubeconfig={}", kubeconfig.display())], dir).await;
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert!(is_established(&crd));
    assert_eq!(crd.spec, konnector_api_crd().spec);
    assert_eq!(crd_writes(&app), 1, "exactly one create");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_updates_an_outdated_crd() {
    let app = Cluster::start("app").await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&dir).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(app.client().await.unwrap());
    let old = crds
        .create(&PostParams::default(), &outdated_crd())
        .await
        .unwrap();

    let running =
        start_until_ready(vec![format!("--kubeconfig={}", kubeconfig.display())], dir).await;
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert_ne!(crd.metadata.resource_version, old.metadata.resource_version);
    assert_eq!(crd.spec.versions, konnector_api_crd().spec.versions);
    assert!(is_established(&crd));
    let writes: Vec<_> = app
        .konnector_writes()
        .into_iter()
        .filter(|r| r.resource == "customresourcedefinitions")
        .collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].verb, "update");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_restart_over_a_current_crd_does_not_write_it() {
    let app = Cluster::start("app").await.unwrap();
    let files = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&files).unwrap();
    let args = vec![format!("--kubeconfig={}", kubeconfig.display())];

    let first = start_until_ready(args.clone(), TempDir::new("konnector-e2e").unwrap()).await;
    stop(first).await;
    assert_eq!(crd_writes(&app), 1);
    app.server.clear_requests();

    let second = start_until_ready(args, TempDir::new("konnector-e2e").unwrap()).await;
    assert_eq!(crd_writes(&app), 0, "{:#?}", app.konnector_writes());
    stop(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_mode_does_not_touch_the_crd() {
    let cp = Cluster::start("cp").await.unwrap();
    let app = Cluster::start("app").await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = cp.konnector_kubeconfig_file(&dir).unwrap();
    let client = cp.client().await.unwrap();
    for ns in ["klutch-system", "klutch-bind-root"] {
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let mut secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app-kubeconfig", "namespace": "klutch-system"}
    }))
    .unwrap();
    secret.data = Some(BTreeMap::from([(
        "kubeconfig".to_owned(),
        ByteString(app.kubeconfig(e2e::KONNECTOR_USER).unwrap().into_bytes()),
    )]));
    Api::<Secret>::namespaced(client.clone(), "klutch-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // The backend installs the CRD on the control plane; an outdated one stays as it is.
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let old = crds
        .create(&PostParams::default(), &outdated_crd())
        .await
        .unwrap();

    let running = start_until_ready(
        vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--control-plane-mode".to_owned(),
            "--app-cluster-kubeconfig-secret-name=app-kubeconfig".to_owned(),
            "--app-cluster-kubeconfig-secret-namespace=klutch-system".to_owned(),
            "--binding-root-namespace=klutch-bind-root".to_owned(),
        ],
        dir,
    )
    .await;
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert_eq!(crd.metadata.resource_version, old.metadata.resource_version);
    for cluster in [&cp, &app] {
        let touched: Vec<_> = cluster
            .konnector_writes()
            .into_iter()
            .filter(|r| r.resource == "customresourcedefinitions" && r.name == CRD_NAME)
            .collect();
        assert!(touched.is_empty(), "{touched:#?}");
    }
    let app_crds: Api<CustomResourceDefinition> = Api::all(app.client().await.unwrap());
    assert!(app_crds.get_opt(CRD_NAME).await.unwrap().is_none());
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_retries_transient_crd_errors() {
    let app = Cluster::start("app").await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&dir).unwrap();
    app.server
        .inject(Fault::fail("create", "customresourcedefinitions", 2, 503));

    let running =
        start_until_ready(vec![format!("--kubeconfig={}", kubeconfig.display())], dir).await;
    let creates = app
        .konnector_writes()
        .into_iter()
        .filter(|r| r.resource == "customresourcedefinitions" && r.verb == "create")
        .map(|r| r.code)
        .collect::<Vec<_>>();
    assert_eq!(creates, [503, 503, 201]);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_crd_bootstrap_failure_exits_with_the_reference_message() {
    let app = Cluster::start("app").await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&dir).unwrap();
    app.server
        .inject(Fault::fail("create", "customresourcedefinitions", 100, 403));

    let mut k = Konnector::spawn(
        BIN,
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            "--health-probe-bind-address=127.0.0.1:0".to_owned(),
        ],
        &dir,
    )
    .unwrap();
    let status = k.wait_exit(STARTUP_TIMEOUT).await.unwrap();
    assert_eq!(status.code(), Some(1));
    let stderr = k.stderr();
    let message = e2e::error_line(&stderr).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        message.starts_with(
            "failed to create APIServiceBinding CRD in binding cluster: could not bootstrap CRDs: "
        ),
        "{message}"
    );
    // Forbidden is not retried.
    assert_eq!(app.konnector_writes().len(), 1);
}
