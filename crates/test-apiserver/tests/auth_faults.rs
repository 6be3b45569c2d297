//! Authentication, RBAC, request recording and fault injection.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use test_apiserver::{Fault, Options, User};

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn rbac_decides_every_request() {
    let options = Options::default()
        .rbac()
        .user(User::new("alice", &["devs"]))
        .user(User::new("system:serviceaccount:default:bot", &[]));
    let server = start(options).await;
    let admin = admin(&server).await;
    let alice = client_for(&server, "alice").await;
    let bot = client_for(&server, "system:serviceaccount:default:bot").await;

    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "secret-reader"},
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["update"], "resourceNames": ["only-this"]},
                ],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    rbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "devs-read"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
            "subjects": [{"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"}],
        }))
        .unwrap(),
    )
    .await
    .unwrap();

    let alice_secrets: Api<Secret> = Api::namespaced(alice.clone(), "default");
    alice_secrets.list(&ListParams::default()).await.unwrap();
    let err = api_err(
        alice_secrets
            .create(&PostParams::default(), &Secret::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "secrets is forbidden: User \"alice\" cannot create resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    let other_ns: Api<Secret> = Api::namespaced(alice.clone(), "kube-system");
    let err = api_err(other_ns.get("x").await.unwrap_err());
    assert_eq!(
        err.message,
        "secrets \"x\" is forbidden: User \"alice\" cannot get resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
    );
    // resourceNames restrict by name.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    for n in ["only-this", "not-this"] {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(n.into());
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let alice_cms: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    let mut c = ConfigMap::default();
    c.metadata.name = Some("only-this".into());
    alice_cms
        .replace("only-this", &PostParams::default(), &c)
        .await
        .unwrap();
    c.metadata.name = Some("not-this".into());
    assert_eq!(
        api_err(
            alice_cms
                .replace("not-this", &PostParams::default(), &c)
                .await
                .unwrap_err()
        )
        .code,
        403
    );

    // A ClusterRole with a subresource, bound cluster-wide to a service account.
    let crs: Api<ClusterRole> = Api::all(admin.clone());
    crs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "cm-status"},
            "rules": [{"apiGroups": ["*"], "resources": ["configmaps", "namespaces/status"], "verbs": ["*"]}],
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let crbs: Api<ClusterRoleBinding> = Api::all(admin.clone());
    crbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "bot"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cm-status"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "default"}],
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let bot_cms: Api<ConfigMap> = Api::all(bot.clone());
    assert_eq!(
        bot_cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let bot_ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(bot.clone());
    bot_ns.get_status("default").await.unwrap();
    let err = api_err(bot_ns.get("default").await.unwrap_err());
    assert_eq!(
        err.message,
        "namespaces \"default\" is forbidden: User \"system:serviceaccount:default:bot\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"default\""
    );
    let bot_crs: Api<ClusterRole> = Api::all(bot);
    let err = api_err(bot_crs.list(&ListParams::default()).await.unwrap_err());
    assert!(
        err.message.ends_with("at the cluster scope"),
        "{}",
        err.message
    );

    // Revoking the binding takes effect on the next request.
    rbs.delete("devs-read", &Default::default()).await.unwrap();
    assert_eq!(
        api_err(
            alice_secrets
                .list(&ListParams::default())
                .await
                .unwrap_err()
        )
        .code,
        403
    );
}

#[tokio::test]
async fn requests_are_recorded() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut c = ConfigMap::default();
    c.metadata.name = Some("r".into());
    cms.create(&PostParams::default(), &c).await.unwrap();
    server.clear_requests();
    cms.get("r").await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(server.write_count(), 0, "reads are not writes");
    cms.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(server.write_count(), 1);
    let p = &reqs[2];
    assert_eq!(
        (
            p.user.as_str(),
            p.verb.as_str(),
            p.resource.as_str(),
            p.namespace.as_str(),
            p.name.as_str(),
            p.code
        ),
        ("admin", "patch", "configmaps", "default", "r", 200)
    );
}

#[tokio::test]
async fn injected_faults_fail_or_delay_matching_requests() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // kube-rs retries 429/503 up to three times, honouring Retry-After: two 429s are absorbed...
    server.inject(Fault::fail("list", "configmaps", 2, 429));
    cms.list(&ListParams::default()).await.unwrap();
    let codes: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.verb == "list")
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, [429, 429, 200]);
    // A 500 is not retried; the client sees the real Status and nothing was written.
    server.inject(Fault::fail("create", "*", 1, 500));
    let mut c = ConfigMap::default();
    c.metadata.name = Some("x".into());
    let err = api_err(cms.create(&PostParams::default(), &c).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    assert!(cms.get_opt("x").await.unwrap().is_none());
    // A 503 is retried by the client like on a real server.
    server.inject(Fault::fail("create", "configmaps", 1, 503));
    cms.create(&PostParams::default(), &c).await.unwrap();
    let creates: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.verb == "create")
        .map(|r| r.code)
        .collect();
    assert_eq!(creates, [500, 503, 201]);
    server.inject(Fault::fail("get", "configmaps", 1, 500));
    assert_eq!(
        api_err(cms.get("x").await.unwrap_err()).reason,
        "InternalError"
    );

    server.inject(Fault::delay(
        "get",
        "configmaps",
        1,
        Duration::from_millis(300),
    ));
    let t = Instant::now();
    let _ = cms.get_opt("x").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    let _ = cms.get_opt("x").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "only the next request was delayed"
    );
}
