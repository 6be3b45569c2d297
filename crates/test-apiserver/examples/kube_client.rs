//! The README's example: a kube-rs client against an in-memory server, no binaries needed.
//! `cargo run -p test-apiserver --example kube_client`

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use test_apiserver::{ADMIN, Options, TestApiServer};

/// Starts a server, creates a ConfigMap and applies a change to it server-side.
pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // HTTPS on a free port of 127.0.0.1, with a generated CA and an `admin` token.
    let server = TestApiServer::start(Options::default()).await?;
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig(ADMIN).ok_or("no admin")?)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;

    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("settings".into());
    configmaps.create(&PostParams::default(), &cm).await?;

    let patch = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"}, "data": {"mode": "fast"}
    });
    let applied = configmaps
        .patch(
            "settings",
            &PatchParams::apply("example"),
            &Patch::Apply(&patch),
        )
        .await?;
    assert_eq!(applied.data.unwrap_or_default()["mode"], "fast");
    // Every request is recorded: two writes so far.
    assert_eq!(server.write_count(), 2);
    Ok(())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}
