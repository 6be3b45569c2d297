//! Who a request is without a configured user: anonymous requests, ServiceAccount tokens from a
//! `TokenRequest` (bound to a Secret, revoked with it), what the bootstrap policy and RBAC let
//! them do, and the escalation check on roles they write.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use test_apiserver::{ADMIN, Options, TestApiServer};

/// A client of `server` sending `token` (none: anonymous).
async fn client_with(server: &TestApiServer, token: Option<&str>) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig(ADMIN).unwrap()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: token.map(|t| t.to_owned().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).unwrap()
}

/// Sends a request; returns the status code and the body (JSON, or the text as a string).
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .unwrap();
    let response = bounded(path, client.send(request.map(Into::into)))
        .await
        .unwrap();
    let code = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, value)
}

#[tokio::test]
async fn anonymous_and_service_account_requests_are_authorized_by_rbac() {
    let server = start(Options::default()).await;
    let admin = client_with(&server, server.token(ADMIN).as_deref()).await;
    let anonymous = client_with(&server, None).await;
    assert_eq!(send(&anonymous, "GET", "/healthz", None).await.0, 200);
    assert_eq!(send(&anonymous, "GET", "/version", None).await.0, 200);
    let (code, status) = send(&anonymous, "GET", "/api", None).await;
    assert_eq!((code, &status["reason"]), (403, &json!("Forbidden")));
    let cms = "/api/v1/namespaces/default/configmaps";
    assert_eq!(send(&anonymous, "GET", cms, None).await.0, 403);

    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}});
    let sas = "/api/v1/namespaces/default/serviceaccounts";
    assert_eq!(send(&admin, "POST", sas, Some(sa)).await.0, 201);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let secrets = "/api/v1/namespaces/default/secrets";
    let (code, secret) = send(&admin, "POST", secrets, Some(secret)).await;
    assert_eq!(code, 201);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s",
            "uid": secret["metadata"]["uid"]}}});
    let (code, issued) = send(&admin, "POST", &format!("{sas}/bot/token"), Some(request)).await;
    assert_eq!(code, 201, "{issued}");
    let bot = client_with(&server, issued["status"]["token"].as_str()).await;

    let ssr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let ssrs = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let (code, review) = send(&bot, "POST", ssrs, Some(ssr.clone())).await;
    assert_eq!(code, 201);
    let info = &review["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:default:bot");
    assert_eq!(
        info["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert_eq!(send(&bot, "GET", "/api", None).await.0, 200);
    assert_eq!(send(&bot, "GET", cms, None).await.0, 403);

    // A Role and its binding grant it; it may write Roles but grant only what it holds.
    let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles";
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name}, "rules": rules})
    };
    let granted = json!([
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]},
    ]);
    assert_eq!(
        send(&admin, "POST", roles, Some(role("r", granted)))
            .await
            .0,
        201
    );
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "r"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "default"}]});
    let rbs = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";
    assert_eq!(send(&admin, "POST", rbs, Some(binding)).await.0, 201);
    assert_eq!(send(&bot, "GET", cms, None).await.0, 200);
    let held = json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]);
    assert_eq!(
        send(&bot, "POST", roles, Some(role("held", held))).await.0,
        201
    );
    let more = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]);
    let (code, status) = send(&bot, "POST", roles, Some(role("more", more))).await;
    assert_eq!((code, &status["details"]["kind"]), (403, &json!("roles")));

    // Deleting the Secret the token is bound to revokes it.
    assert_eq!(
        send(&admin, "DELETE", &format!("{secrets}/s"), None)
            .await
            .0,
        200
    );
    assert_eq!(send(&bot, "POST", ssrs, Some(ssr)).await.0, 401);
}
