//! A write that creates its object without being a create is authorized for `create` too, as on
//! kube-apiserver 1.36 (checked there with the same requests): a server-side apply of a missing
//! object, and an update (PUT) of a missing object of a kind whose strategy allows create on
//! update (Leases, Events, RBAC kinds; custom resources answer `404`). The caller needs `patch`
//! (or `update`) AND `create`; a write to an existing object needs only `patch` (`update`). The
//! denial comes after the namespace checks and validation, before anything is stored.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use test_apiserver::{ADMIN, Options, TestApiServer, User};

const SA: &str = "system:serviceaccount:default:konnector";

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The HTTP code of `user`'s last request (`201` and `200` both come back as objects).
fn last_code(server: &TestApiServer, user: &str) -> u16 {
    server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.user == user)
        .unwrap()
        .code
}

/// Grants `SA` the `verbs` on `resource` of `group` in `default` (Role and RoleBinding
/// `name`).
async fn grant(admin: &kube::Client, name: &str, group: &str, resource: &str, verbs: &[&str]) {
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name},
                "rules": [{"apiGroups": [group], "resources": [resource], "verbs": verbs}]}))
            .unwrap(),
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "konnector", "namespace": "default"}]}))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// Installs the namespaced `mangodbs.mangodb.com` and returns its resource.
async fn mangodbs(admin: &kube::Client) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "mangodbs.mangodb.com"},
        "spec": {
            "group": "mangodb.com", "scope": "Namespaced",
            "names": {"plural": "mangodbs", "singular": "mangodb", "kind": "MangoDB"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "tier": {"type": "string", "enum": ["Dedicated", "Shared"]}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }}}}],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("mangodb.com", "v1", "MangoDB"),
        "mangodbs",
    )
}

fn db(name: &str, tier: &str) -> Value {
    json!({"apiVersion": "mangodb.com/v1", "kind": "MangoDB", "metadata": {"name": name},
        "spec": {"tier": tier}})
}

#[tokio::test]
async fn apply_that_creates_needs_create() {
    let server = start(Options::default().rbac().user(User::new(SA, &[]))).await;
    let admin = admin(&server).await;
    let ar = mangodbs(&admin).await;
    grant(
        &admin,
        "patcher",
        "mangodb.com",
        "mangodbs",
        &["get", "patch"],
    )
    .await;
    let sa = client_for(&server, SA).await;
    let dbs: Api<DynamicObject> = Api::namespaced_with(sa.clone(), "default", &ar);
    let admin_dbs: Api<DynamicObject> = Api::namespaced_with(admin.clone(), "default", &ar);
    let apply = PatchParams::apply("konnector");

    // Apply of a missing object with `patch` only: the real 403, naming `create`.
    let err = api_err(
        dbs.patch("db", &apply, &Patch::Apply(db("db", "Dedicated")))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "mangodbs.mangodb.com \"db\" is forbidden: User \"system:serviceaccount:default:konnector\" cannot create resource \"mangodbs\" in API group \"mangodb.com\" in the namespace \"default\""
    );
    let details = err.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("db", "mangodb.com", "mangodbs")
    );
    assert!(admin_dbs.get_opt("db").await.unwrap().is_none());
    // The request is recorded as the patch it was.
    let recorded = server.requests().into_iter().rev().find(|r| r.user == SA);
    let recorded = recorded.unwrap();
    assert_eq!((recorded.verb.as_str(), recorded.code), ("patch", 403));
    // Also for a dry run; and validation comes first (422 before 403), as on the real server.
    let dry = PatchParams::apply("konnector").dry_run();
    let err = api_err(
        dbs.patch("db", &dry, &Patch::Apply(db("db", "Dedicated")))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    let err = api_err(
        dbs.patch("db", &apply, &Patch::Apply(db("db", "Huge")))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));

    // Apply to an existing object needs `patch` only.
    admin_dbs
        .create(
            &PostParams::default(),
            &serde_json::from_value(db("db", "Shared")).unwrap(),
        )
        .await
        .unwrap();
    let applied = dbs
        .patch(
            "db",
            &PatchParams::apply("konnector").force(),
            &Patch::Apply(db("db", "Dedicated")),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["tier"], "Dedicated");
    assert_eq!(last_code(&server, SA), 200);

    // With `create` granted, an apply of a missing object creates it.
    grant(&admin, "creator", "mangodb.com", "mangodbs", &["create"]).await;
    let created = dbs
        .patch("db2", &apply, &Patch::Apply(db("db2", "Shared")))
        .await
        .unwrap();
    assert_eq!(last_code(&server, SA), 201);
    assert_eq!(created.data["spec"]["tier"], "Shared");
    assert!(admin_dbs.get_opt("db2").await.unwrap().is_some());
}

#[tokio::test]
async fn update_that_creates_needs_create() {
    let server = start(Options::default().rbac().user(User::new(SA, &[]))).await;
    let admin = admin(&server).await;
    let ar = mangodbs(&admin).await;
    grant(
        &admin,
        "updater",
        "coordination.k8s.io",
        "leases",
        &["get", "update"],
    )
    .await;
    grant(
        &admin,
        "db-writer",
        "mangodb.com",
        "mangodbs",
        &["get", "update", "create"],
    )
    .await;
    grant(&admin, "cm-writer", "", "configmaps", &["update", "create"]).await;
    let sa = client_for(&server, SA).await;
    let leases: Api<Lease> = Api::namespaced(sa.clone(), "default");
    let lease = |name: &str| -> Lease {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": "a"}}))
            .unwrap()
    };

    // A Lease is created by a PUT: with `update` only, the real 403 naming `create`.
    let err = api_err(
        leases
            .replace("l", &PostParams::default(), &lease("l"))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "leases.coordination.k8s.io \"l\" is forbidden: User \"system:serviceaccount:default:konnector\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""
    );
    let details = err.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("l", "coordination.k8s.io", "leases")
    );
    let admin_leases: Api<Lease> = Api::namespaced(admin.clone(), "default");
    assert!(admin_leases.get_opt("l").await.unwrap().is_none());

    // An update of an existing Lease needs `update` only.
    admin_leases
        .create(&PostParams::default(), &lease("l"))
        .await
        .unwrap();
    let mut current = leases.get("l").await.unwrap();
    current.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("l", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(last_code(&server, SA), 200);

    // With `create` granted, the PUT creates the Lease (a resourceVersion in the body is no
    // precondition then).
    grant(
        &admin,
        "lease-creator",
        "coordination.k8s.io",
        "leases",
        &["create"],
    )
    .await;
    let mut new = lease("l2");
    new.metadata.resource_version = Some("12345".into());
    let created = leases
        .replace("l2", &PostParams::default(), &new)
        .await
        .unwrap();
    assert_eq!(last_code(&server, SA), 201);
    assert_eq!(created.spec.unwrap().holder_identity.as_deref(), Some("a"));

    // Custom resources (and ConfigMaps, ...) are never created by a PUT: 404, even with
    // `create`.
    let dbs: Api<DynamicObject> = Api::namespaced_with(sa.clone(), "default", &ar);
    let err = api_err(
        dbs.replace(
            "db",
            &PostParams::default(),
            &serde_json::from_value(db("db", "Shared")).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "mangodbs.mangodb.com \"db\" not found")
    );
    let cms: Api<ConfigMap> = Api::namespaced(sa, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cm"}})).unwrap();
    let err = api_err(
        cms.replace("cm", &PostParams::default(), &cm)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn without_rbac_a_put_of_a_missing_lease_or_role_creates_it() {
    let server = start(Options::default()).await;
    let admin = admin(&server).await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap();
    leases
        .replace("l", &PostParams::default(), &lease)
        .await
        .unwrap();
    assert_eq!(last_code(&server, ADMIN), 201);
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": "r"}, "rules": []})).unwrap();
    roles
        .replace("r", &PostParams::default(), &role)
        .await
        .unwrap();
    assert_eq!(last_code(&server, ADMIN), 201);
    assert!(roles.get_opt("r").await.unwrap().is_some());
}
