//! CRUD, errors, lists and discovery through kube-rs.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use test_apiserver::Options;

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.to_owned());
    s.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    s.string_data = Some(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
    s
}

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_crud_and_server_set_metadata() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    let created = secrets
        .create(&PostParams::default(), &secret("a", &[]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    // stringData is folded into data (base64) and type defaults to Opaque.
    assert_eq!(created.data.clone().unwrap()["k"].0, b"v");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert!(created.string_data.is_none());
    // Secrets have no generation on a real server.
    assert_eq!(created.metadata.generation, None);

    let err = api_err(
        secrets
            .create(&PostParams::default(), &secret("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "secrets \"a\" already exists");

    let err = api_err(secrets.get("missing").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "secrets \"missing\" not found");

    // Update with a stale resourceVersion is a conflict with the real message.
    let mut stale = created.clone();
    stale.data = None;
    stale.metadata.labels = Some(BTreeMap::from([("x".into(), "1".into())]));
    let fresh = secrets
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap();
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    let rv2: u64 = fresh.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    let err = api_err(
        secrets
            .replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on secrets \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // A write that changes nothing keeps the resourceVersion.
    let same = secrets
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), fresh.resource_version());

    // generateName.
    let mut g = Secret::default();
    g.metadata.generate_name = Some("gen-".into());
    let g = secrets.create(&PostParams::default(), &g).await.unwrap();
    assert!(
        g.name_any().starts_with("gen-") && g.name_any().len() == 9,
        "{}",
        g.name_any()
    );

    // Missing namespace.
    let other: Api<Secret> = Api::namespaced(client.clone(), "nope");
    let err = api_err(
        other
            .create(&PostParams::default(), &secret("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    // Invalid name.
    let err = api_err(
        secrets
            .create(&PostParams::default(), &secret("Bad_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .starts_with("Secret \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        err.message
    );

    // Delete with a wrong uid precondition.
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = api_err(secrets.delete("a", &dp).await.unwrap_err());
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("Precondition failed: UID in precondition: wrong"),
        "{}",
        err.message
    );
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: None,
            resource_version: Some(rv1.to_string()),
        }),
        ..DeleteParams::default()
    };
    let err = api_err(secrets.delete("a", &dp).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let status = secrets.delete("a", &DeleteParams::default()).await.unwrap();
    // Built-in kinds answer an immediate deletion with a success Status.
    assert_eq!(status.right().unwrap().details.unwrap().name, "a");
    let err = api_err(secrets.get("a").await.unwrap_err());
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn lists_select_and_paginate_consistently() {
    let server = start(Options::default().http()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        secrets
            .create(
                &PostParams::default(),
                &secret(&format!("s{i}"), &[("tier", tier), ("app", "x")]),
            )
            .await
            .unwrap();
    }
    let names = |l: &kube::core::ObjectList<Secret>| {
        l.items.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    };
    let even = secrets
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(names(&even), ["s0", "s2", "s4", "s6"]);
    let odd = secrets
        .list(&ListParams::default().labels("tier notin (even),app"))
        .await
        .unwrap();
    assert_eq!(names(&odd), ["s1", "s3", "s5"]);
    let none = secrets
        .list(&ListParams::default().labels("!app"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
    let by_name = secrets
        .list(&ListParams::default().fields("metadata.name=s3"))
        .await
        .unwrap();
    assert_eq!(names(&by_name), ["s3"]);
    let err = api_err(
        secrets
            .list(&ListParams::default().fields("spec.foo=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);

    // Pages are a consistent snapshot: writes after the first page do not show up.
    let page1 = secrets.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(&page1), ["s0", "s1", "s2"]);
    assert_eq!(page1.metadata.remaining_item_count, Some(4));
    secrets
        .create(&PostParams::default(), &secret("s35", &[]))
        .await
        .unwrap();
    secrets
        .delete("s4", &DeleteParams::default())
        .await
        .unwrap();
    let token = page1.metadata.continue_.clone().unwrap();
    let page2 = secrets
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&page2), ["s3", "s4", "s5"]);
    assert_eq!(
        page2.metadata.resource_version,
        page1.metadata.resource_version
    );
    let page3 = secrets
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(page2.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&page3), ["s6"]);
    assert!(page3.metadata.continue_.is_none());

    // Exact resourceVersion lists show the past; after compaction they are Gone.
    let rv = page1.metadata.resource_version.clone().unwrap();
    let exact = secrets
        .list(
            &ListParams::default()
                .at(&rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert!(names(&exact).contains(&"s4".to_owned()) && !names(&exact).contains(&"s35".to_owned()));
    server.compact();
    let err = api_err(
        secrets
            .list(
                &ListParams::default()
                    .at(&rv)
                    .matching(kube::api::VersionMatch::Exact),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    let err = api_err(
        secrets
            .list(
                &ListParams::default()
                    .limit(3)
                    .continue_token(page2.metadata.continue_.as_deref().unwrap()),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 410);

    // Cluster-wide list spans namespaces.
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert!(
        all.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let nss: Api<Namespace> = Api::all(client);
    let ns_names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(ns_names, ["default", "kube-public", "kube-system"]);
}

#[tokio::test]
async fn patches_merge_json_strategic() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("c".into());
    cm.data = Some(BTreeMap::from([
        ("a".into(), "1".into()),
        ("b".into(), "2".into()),
    ]));
    cms.create(&PostParams::default(), &cm).await.unwrap();

    let merged = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
    );

    let jp: json_patch::Patch = serde_json::from_value(
        serde_json::json!([{"op": "replace", "path": "/data/b", "value": "9"}]),
    )
    .unwrap();
    let patched = cms
        .patch("c", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["b"], "9");

    let sp = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(sp.labels()["l"], "v");

    // A resourceVersion in a patch is a precondition.
    let err = api_err(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"resourceVersion": "1"}, "data": {"z": "1"}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);

    let err = api_err(
        cms.patch(
            "missing",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn discovery_lists_builtins() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "Secret"))
        .unwrap();
    assert_eq!(ar.plural, "secrets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let (ar, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        ))
        .unwrap();
    assert_eq!(ar.plural, "customresourcedefinitions");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "customresourcedefinitions/status" || s.plural == "status")
    );
    for (g, v, k) in [
        ("coordination.k8s.io", "v1", "Lease"),
        ("events.k8s.io", "v1", "Event"),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
        ("", "v1", "ServiceAccount"),
    ] {
        assert!(
            discovery
                .resolve_gvk(&kube::api::GroupVersionKind::gvk(g, v, k))
                .is_some(),
            "{k}"
        );
    }
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
}

#[tokio::test]
async fn unauthenticated_requests_get_401() {
    let server = start(Options::default()).await;
    let yaml = server
        .kubeconfig("admin")
        .unwrap()
        .replace(&server.token("admin").unwrap(), "bogus");
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let err = api_err(secrets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));
    let recorded = server.requests();
    assert_eq!(recorded.last().unwrap().code, 401);
    assert_eq!(recorded.last().unwrap().user, "");
}

#[tokio::test]
async fn delete_collection_by_selector() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for (n, l) in [("d1", "gone"), ("d2", "gone"), ("k1", "kept")] {
        secrets
            .create(&PostParams::default(), &secret(n, &[("fate", l)]))
            .await
            .unwrap();
    }
    let deleted = secrets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("fate=gone"),
        )
        .await
        .unwrap();
    let names: Vec<String> = deleted
        .left()
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(names, ["d1", "d2"]);
    let left: Vec<String> = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(left, ["k1"]);
    // The recorded verb is deletecollection.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.verb == "deletecollection" && r.resource == "secrets")
    );
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_end() {
    use futures::TryStreamExt;
    use kube::runtime::watcher;
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for n in ["x1", "x2"] {
        secrets
            .create(&PostParams::default(), &secret(n, &[]))
            .await
            .unwrap();
    }
    server.clear_requests();
    let config = watcher::Config::default().streaming_lists();
    let mut events = Box::pin(watcher(secrets.clone(), config));
    let mut init = Vec::new();
    bounded("streaming list", async {
        while let Some(ev) = events.try_next().await.unwrap() {
            match ev {
                watcher::Event::InitApply(s) => init.push(s.name_any()),
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(init, ["x1", "x2"]);
    // No list request: the initial state came through the watch.
    assert!(server.requests().iter().all(|r| r.verb != "list"));
}

#[tokio::test]
async fn dry_run_writes_change_nothing() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let rv = server.resource_version();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let out = secrets.create(&dry, &secret("dry", &[])).await.unwrap();
    assert_eq!(out.name_any(), "dry");
    assert_eq!(api_err(secrets.get("dry").await.unwrap_err()).code, 404);
    // Validation still runs.
    let err = api_err(secrets.create(&dry, &secret("Bad", &[])).await.unwrap_err());
    assert_eq!(err.code, 422);
    assert_eq!(server.resource_version(), rv);
}

/// Raw requests: unknown resources, unsupported methods and content types get real `Status`
/// bodies.
#[tokio::test]
async fn raw_errors_are_status_objects() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(Options::default().http()).await;
    let token = server.token("admin").unwrap();
    let raw = |method: &str, path: &str, ctype: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {ctype}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
    };
    for (req, code, reason) in [
        (
            raw(
                "GET",
                "/api/v1/namespaces/default/widgets",
                "application/json",
            ),
            404,
            "NotFound",
        ),
        (
            raw(
                "POST",
                "/api/v1/namespaces/default/secrets/named",
                "application/json",
            ),
            405,
            "MethodNotAllowed",
        ),
        (
            raw(
                "PATCH",
                "/api/v1/namespaces/default/secrets/x",
                "application/xml",
            ),
            415,
            "UnsupportedMediaType",
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        bounded("raw response", s.read_to_string(&mut resp))
            .await
            .unwrap();
        assert!(resp.starts_with(&format!("HTTP/1.1 {code}")), "{resp}");
        let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], code);
        assert_eq!(status["reason"], reason);
    }
}

#[tokio::test]
async fn labels_are_validated_like_object_meta() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let long = "x".repeat(64);
    let err = api_err(
        secrets
            .create(&PostParams::default(), &secret("l", &[("app", &long)]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        format!(
            "Secret \"l\" is invalid: metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters"
        )
    );
    let err = api_err(
        secrets
            .create(&PostParams::default(), &secret("l", &[("bad key", "v")]))
            .await
            .unwrap_err(),
    );
    assert!(
        err.message
            .contains("metadata.labels: Invalid value: \"bad key\": name part must consist of"),
        "{}",
        err.message
    );
    secrets
        .create(
            &PostParams::default(),
            &secret("l", &[("example.com/app", "ok_1.2-x")]),
        )
        .await
        .unwrap();
}

/// Events recorded through `events.k8s.io/v1` (kube-runtime's recorder) are core Events too.
#[tokio::test]
async fn events_are_one_resource_in_two_apis() {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s = secrets
        .create(&PostParams::default(), &secret("ev", &[]))
        .await
        .unwrap();
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: s.metadata.name.clone(),
        namespace: Some("default".into()),
        uid: s.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let recorder = Recorder::new(client.clone(), Reporter::from("konnector"));
    let ev = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("copied to the provider".into()),
        action: "Sync".into(),
        secondary: None,
    };
    // Twice: the second publish patches the series of the same Event.
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let events = core.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.message.as_deref(), Some("copied to the provider"));
    assert_eq!(e.involved_object.name.as_deref(), Some("ev"));
    assert_eq!(e.reporting_component.as_deref(), Some("konnector"));
    assert_eq!(e.series.as_ref().unwrap().count, Some(2));
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let e2 = new.get(&e.name_any()).await.unwrap();
    assert_eq!(e2.note.as_deref(), Some("copied to the provider"));
    assert_eq!(e2.regarding.unwrap().name.as_deref(), Some("ev"));
}
