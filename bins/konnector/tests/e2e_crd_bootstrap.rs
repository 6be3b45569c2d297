//! End to end: the APIServiceBinding CRD at startup (reference §2 step 4, 11.3 item 7).
//! Default mode installs or updates it in the binding cluster and waits for `Established`;
//! control-plane mode leaves it alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::backend::is_established;
use e2e::{Backend, Cluster, Konnector, STARTUP_TIMEOUT, TempDir, free_port};
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

async fn crd_writes(cluster: &Cluster) -> usize {
    cluster
        .konnector_writes()
        .await
        .iter()
        .filter(|r| r.resource == "customresourcedefinitions")
        .count()
}

async fn default_mode_installs_the_apiservicebinding_crd_and_it_is_established(backend: Backend) {
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&dir).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(app.client().await.unwrap());
    assert!(crds.get_opt(CRD_NAME).await.unwrap().is_none());

    let running =
        start_until_ready(vec![format!("--kubeconfig={}", kubeconfig.display())], dir).await;
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert!(is_established(&crd));
    // The real server fills in `conversion: {strategy: None}`.
    let mut expected = konnector_api_crd().spec;
    expected.conversion = crd.spec.conversion.clone();
    assert_eq!(crd.spec, expected);
    assert_eq!(crd_writes(&app).await, 1, "exactly one create");
    stop(running).await;
}

async fn default_mode_updates_an_outdated_crd(backend: Backend) {
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
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
        .await
        .into_iter()
        .filter(|r| r.resource == "customresourcedefinitions")
        .collect();
    // One update that took; a real server may have changed the new CRD's status between our
    // read and our write (names accepted, established): that update is refused with 409 and
    // made again on the fresh object.
    assert!(writes.iter().all(|w| w.verb == "update"), "{writes:#?}");
    let applied: Vec<_> = writes.iter().filter(|w| w.code == 200).collect();
    assert_eq!(applied.len(), 1, "{writes:#?}");
    assert!(
        writes.iter().all(|w| w.code == 200 || w.code == 409),
        "{writes:#?}"
    );
    stop(running).await;
}

async fn default_mode_restart_over_a_current_crd_does_not_write_it(backend: Backend) {
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let files = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&files).unwrap();
    let args = vec![format!("--kubeconfig={}", kubeconfig.display())];

    let first = start_until_ready(args.clone(), TempDir::new("konnector-e2e").unwrap()).await;
    stop(first).await;
    assert_eq!(crd_writes(&app).await, 1);
    app.clear_requests().await.unwrap();

    let second = start_until_ready(args, TempDir::new("konnector-e2e").unwrap()).await;
    assert_eq!(
        crd_writes(&app).await,
        0,
        "{:#?}",
        app.konnector_writes().await
    );
    stop(second).await;
}

async fn control_plane_mode_does_not_touch_the_crd(backend: Backend) {
    let cp = Cluster::start_on(backend, "cp", &[]).await.unwrap();
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
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
    // The real server updates a new CRD's status itself; the spec and our requests tell.
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert_eq!(crd.spec.versions, old.spec.versions);
    for cluster in [&cp, &app] {
        let touched: Vec<_> = cluster
            .konnector_writes()
            .await
            .into_iter()
            .filter(|r| r.resource == "customresourcedefinitions" && r.name == CRD_NAME)
            .collect();
        assert!(touched.is_empty(), "{touched:#?}");
    }
    let app_crds: Api<CustomResourceDefinition> = Api::all(app.client().await.unwrap());
    assert!(app_crds.get_opt(CRD_NAME).await.unwrap().is_none());
    stop(running).await;
}

/// Injected API errors: `test-apiserver` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_retries_transient_crd_errors() {
    let backend = Backend::Memory;
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&dir).unwrap();
    app.memory()
        .expect("faults are injected in memory")
        .inject(Fault::fail("create", "customresourcedefinitions", 2, 503));

    let running =
        start_until_ready(vec![format!("--kubeconfig={}", kubeconfig.display())], dir).await;
    let creates = app
        .konnector_writes()
        .await
        .into_iter()
        .filter(|r| r.resource == "customresourcedefinitions" && r.verb == "create")
        .map(|r| r.code)
        .collect::<Vec<_>>();
    assert_eq!(creates, [503, 503, 201]);
    stop(running).await;
}

/// Injected API errors: `test-apiserver` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_crd_bootstrap_failure_exits_with_the_reference_message() {
    let backend = Backend::Memory;
    let app = Cluster::start_on(backend, "app", &[]).await.unwrap();
    let dir = TempDir::new("konnector-e2e").unwrap();
    let kubeconfig = app.konnector_kubeconfig_file(&dir).unwrap();
    app.memory()
        .expect("faults are injected in memory")
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
    assert_eq!(app.konnector_writes().await.len(), 1);
}

e2e::on_both_backends!(
    default_mode_installs_the_apiservicebinding_crd_and_it_is_established,
    default_mode_updates_an_outdated_crd,
    default_mode_restart_over_a_current_crd_does_not_write_it,
    control_plane_mode_does_not_touch_the_crd,
);
