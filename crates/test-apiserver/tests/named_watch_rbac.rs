//! A list or watch that selects one object by name (`fieldSelector=metadata.name=x`) is
//! authorized and recorded with that name, as on a real API server: RBAC `resourceNames` can
//! grant a watch of exactly one Secret, which is how the konnector reads only the Secrets its
//! bindings reference.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use test_apiserver::{Options, User};

#[tokio::test]
async fn resource_names_allow_a_name_selected_list_and_nothing_else() {
    let server = common::start(
        Options::default()
            .http()
            .rbac()
            .user(User::new("reader", &[])),
    )
    .await;
    let admin = common::admin(&server).await;
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "one-secret"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["kubeconfig"], "verbs": ["get", "list", "watch"]}]})).unwrap()).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one-secret"},
        "subjects": [{"kind": "User", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"}]}))
            .unwrap(),
        )
        .await
        .unwrap();
    let reader = common::client_for(&server, "reader").await;
    let secrets: Api<Secret> = Api::namespaced(reader, "default");
    secrets
        .list(&ListParams::default().fields("metadata.name=kubeconfig"))
        .await
        .unwrap();
    let denied = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(denied, kube::Error::Api(s) if s.code == 403));
    let other = secrets
        .list(&ListParams::default().fields("metadata.name=other"))
        .await
        .unwrap_err();
    assert!(matches!(other, kube::Error::Api(s) if s.code == 403));
    let recorded = server
        .requests()
        .into_iter()
        .find(|r| r.user == "reader" && r.code == 200)
        .unwrap();
    assert_eq!(
        (recorded.verb.as_str(), recorded.name.as_str()),
        ("list", "kubeconfig")
    );
    assert!(
        recorded.query.contains("fieldSelector=metadata.name"),
        "{}",
        recorded.query
    );
}
