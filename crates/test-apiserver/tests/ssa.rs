//! Server-side apply and managedFields through kube-rs (and one raw request for the
//! User-Agent-derived manager).

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use test_apiserver::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn claims(client: &kube::Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "claims.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "claims", "singular": "claim", "kind": "Claim"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "a": {"type": "string"},
                        "tier": {"type": "string"},
                        "resourceRef": {"type": "object", "properties": {"name": {"type": "string"}}},
                        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "required": ["name"], "properties": {
                                "name": {"type": "string"}, "port": {"type": "integer"}}}},
                    }},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }}}}],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Claim"),
        "claims",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn claim(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Claim", "metadata": {"name": "c"}, "spec": spec})
}

fn managers(obj: &DynamicObject) -> Vec<(String, String)> {
    obj.metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn konnector_and_provider_share_one_object() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let claims = claims(&client).await;
    let konnector = PatchParams::apply("konnector");
    let provider = PatchParams::apply("provider-controller");

    claims
        .patch(
            "c",
            &konnector,
            &Patch::Apply(claim(json!({"a": "x", "tier": "small"}))),
        )
        .await
        .unwrap();
    // The provider writes spec.resourceRef, once by apply...
    claims
        .patch(
            "c",
            &provider,
            &Patch::Apply(claim(json!({"resourceRef": {"name": "r1"}}))),
        )
        .await
        .unwrap();
    // ...and the konnector keeps applying its own fields: the provider's survive.
    let o = claims
        .patch(
            "c",
            &konnector,
            &Patch::Apply(claim(json!({"a": "y", "tier": "small"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        o.data["spec"],
        json!({"a": "y", "tier": "small", "resourceRef": {"name": "r1"}})
    );
    assert_eq!(
        managers(&o),
        [
            ("konnector".to_owned(), "Apply".to_owned()),
            ("provider-controller".to_owned(), "Apply".to_owned())
        ]
    );

    // A merge patch with a fieldManager is an Update entry; later applies keep that field too.
    claims
        .patch(
            "c",
            &PatchParams {
                field_manager: Some("crossplane".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"resourceRef": {"name": "r2"}}})),
        )
        .await
        .unwrap();
    let o = claims
        .patch(
            "c",
            &konnector,
            &Patch::Apply(claim(json!({"a": "y", "tier": "small"}))),
        )
        .await
        .unwrap();
    assert_eq!(o.data["spec"]["resourceRef"]["name"], "r2");
    assert!(managers(&o).contains(&("crossplane".to_owned(), "Update".to_owned())));

    // Fields a manager stops applying are removed (if nobody else owns them).
    let o = claims
        .patch(
            "c",
            &konnector,
            &Patch::Apply(claim(json!({"tier": "small"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        o.data["spec"],
        json!({"tier": "small", "resourceRef": {"name": "r2"}})
    );

    // Changing another manager's field is a conflict naming it, unless forced.
    let err = api_err(
        claims
            .patch(
                "c",
                &provider,
                &Patch::Apply(claim(
                    json!({"tier": "large", "resourceRef": {"name": "r2"}}),
                )),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"konnector\": .spec.tier"
    );
    let forced = PatchParams::apply("provider-controller").force();
    let o = claims
        .patch(
            "c",
            &forced,
            &Patch::Apply(claim(
                json!({"tier": "large", "resourceRef": {"name": "r2"}}),
            )),
        )
        .await
        .unwrap();
    assert_eq!(o.data["spec"]["tier"], "large");
    // The konnector lost spec.tier: it can no longer remove it by not applying it.
    let o = claims
        .patch("c", &konnector, &Patch::Apply(claim(json!({"a": "z"}))))
        .await
        .unwrap();
    assert_eq!(o.data["spec"]["tier"], "large");
    assert_eq!(o.data["spec"]["a"], "z");

    // Status through /status is owned separately and untouched by spec applies.
    let status = json!({"apiVersion": "example.com/v1", "kind": "Claim", "metadata": {"name": "c"}, "status": {"ready": true}});
    claims
        .patch_status(
            "c",
            &PatchParams::apply("status-writer"),
            &Patch::Apply(status),
        )
        .await
        .unwrap();
    let o = claims
        .patch("c", &konnector, &Patch::Apply(claim(json!({"a": "z"}))))
        .await
        .unwrap();
    assert_eq!(o.data["status"]["ready"], true);
    let entry = o
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("status-writer"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
}

#[tokio::test]
async fn map_lists_merge_items_of_two_appliers() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let claims = claims(&client).await;
    claims
        .patch(
            "c",
            &PatchParams::apply("one"),
            &Patch::Apply(claim(json!({"ports": [{"name": "http", "port": 80}]}))),
        )
        .await
        .unwrap();
    let o = claims
        .patch(
            "c",
            &PatchParams::apply("two"),
            &Patch::Apply(claim(json!({"ports": [{"name": "grpc", "port": 90}]}))),
        )
        .await
        .unwrap();
    assert_eq!(
        o.data["spec"]["ports"],
        json!([{"name": "http", "port": 80}, {"name": "grpc", "port": 90}])
    );
    let o = claims
        .patch(
            "c",
            &PatchParams::apply("one"),
            &Patch::Apply(claim(json!({"ports": []}))),
        )
        .await
        .unwrap();
    assert_eq!(
        o.data["spec"]["ports"],
        json!([{"name": "grpc", "port": 90}])
    );
}

#[tokio::test]
async fn apply_creates_and_requires_a_field_manager() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"k": "v"}});
    let created = cms
        .patch("new", &PatchParams::apply("me"), &Patch::Apply(&cm))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("me"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    assert_eq!(
        mf[0].fields_v1.as_ref().unwrap().0["f:data"],
        json!({"f:k": {}})
    );
    let err = api_err(
        cms.patch("new", &PatchParams::default(), &Patch::Apply(&cm))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("fieldManager: Required value"),
        "{}",
        err.message
    );
}

/// Without `fieldManager`, the manager of an Update is the User-Agent up to the first `/`.
#[tokio::test]
async fn update_manager_defaults_to_user_agent_prefix() {
    let server = start(Options::default().http()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let body =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ua"},"data":{"a":"b"}}"#;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let req = format!(
        "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nUser-Agent: my-controller/1.2.3 (linux/amd64)\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.token("admin").unwrap(),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    bounded("raw response", s.read_to_string(&mut resp))
        .await
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let cm = cms.get("ua").await.unwrap();
    let mf = cm.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("my-controller"));
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));
}
