//! Owner references the real garbage collector cannot resolve never lead to deletion: a
//! cluster-scoped dependent of a namespaced owner (OwnerRefInvalidNamespace), and a dependent
//! whose owner kind is not served (no REST mapping). The konnector relies on this: the CRDs it
//! installs name their (namespaced) APIServiceBinding as owner and must survive its deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use test_apiserver::Options;

#[tokio::test]
async fn cluster_scoped_dependents_of_namespaced_or_unknown_owners_are_never_collected() {
    let server = common::start(Options::default().http()).await;
    let client = common::admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let owner_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "cluster-dependent", "ownerReferences": owner_ref}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    roles
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "unknown-owner",
            "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Nowhere", "name": "x", "uid": "no-such-uid"}]}})).unwrap())
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "namespaced-dependent", "ownerReferences": owner_ref}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    // The namespaced dependent is collected: the collector has run.
    common::wait_for("namespaced dependent collected", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("namespaced-dependent")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        roles.get_opt("cluster-dependent").await.unwrap().is_some(),
        "cluster-scoped dependent of a namespaced owner was collected"
    );
    assert!(
        roles.get_opt("unknown-owner").await.unwrap().is_some(),
        "dependent of an unknown kind was collected"
    );
}
