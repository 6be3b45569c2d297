//! Helpers shared by the sync-engine integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::core::ApiResource;
use test_apiserver::TestApiServer;

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A client for `user` of `server`, through its kubeconfig.
pub async fn client(server: &TestApiServer, user: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig(user).unwrap()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `crd` and waits until it is Established.
pub async fn install_crd(client: &kube::Client, crd: CustomResourceDefinition) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &crd).await.unwrap();
    wait_for("CRD established", || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let crd = api.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
}

/// The MangoDB resource of the tests.
pub fn mangodb() -> ApiResource {
    ApiResource {
        group: "mangodb.com".into(),
        version: "v1".into(),
        api_version: "mangodb.com/v1".into(),
        kind: "MangoDB".into(),
        plural: "mangodbs".into(),
    }
}
