//! Watch semantics through kube-rs: raw watches, `watcher` relists on 410, reflectors, a
//! `Controller`, bookmarks, selector transitions, dropped watches and restarts.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher};
use kube::{Api, ResourceExt};
use test_apiserver::Options;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    );
    c
}

#[tokio::test]
async fn raw_watch_from_resource_version_and_selector_transitions() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("before", &[("sel", "yes")]))
        .await
        .unwrap();
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();

    let mut stream = cms
        .watch(&WatchParams::default().labels("sel=yes").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("a", &[("sel", "yes")]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("ignored", &[("sel", "no")]))
        .await
        .unwrap();
    // Leaving the selector is a DELETED event, entering it an ADDED event.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "ignored",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"sel": "yes"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = bounded("watch event", stream.try_next())
            .await
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.name_any())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED a", "DELETED a", "ADDED ignored"]);
}

#[tokio::test]
async fn watch_from_compacted_version_is_expired_and_watcher_relists() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("one", &[]))
        .await
        .unwrap();
    let old_rv = server.resource_version().to_string();
    cms.create(&PostParams::default(), &cm("two", &[]))
        .await
        .unwrap();
    server.compact();

    // A raw watch from before the compaction gets an ERROR event with 410 Expired.
    let mut raw = cms
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .unwrap()
        .boxed();
    match bounded("410", raw.try_next()).await.unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected an error event, got {other:?}"),
    }

    // The watcher: after its watch drops and history is compacted, it relists.
    server.clear_requests();
    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut inits = 0;
    let mut restarted = false;
    let mut errors = 0;
    bounded("relist", async {
        // The 410 surfaces as one error item, after which the watcher relists by itself.
        while let Some(ev) = events.next().await {
            let Ok(ev) = ev else {
                errors += 1;
                continue;
            };
            if let watcher::Event::InitDone = ev {
                inits += 1;
                if inits == 1 {
                    cms.create(&PostParams::default(), &cm("three", &[]))
                        .await
                        .unwrap();
                    server.compact();
                    server.drop_watches();
                    restarted = true;
                } else {
                    break;
                }
            }
        }
    })
    .await;
    assert!(restarted);
    assert_eq!(inits, 2);
    assert_eq!(errors, 1);
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "configmaps")
        .count();
    assert_eq!(lists, 2, "the watcher relisted exactly once");
}

#[tokio::test]
async fn bookmarks_are_sent_when_asked() {
    let options = Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    };
    let server = start(options).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            }
            .timeout(10),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    // Writes in another namespace move the global RV; the bookmark carries it.
    let other: Api<Secret> = Api::namespaced(cms.clone().into_client(), "kube-system");
    let mut s = Secret::default();
    s.metadata.name = Some("x".into());
    other.create(&PostParams::default(), &s).await.unwrap();
    let want = server.resource_version();
    let bm = bounded("bookmark", async {
        loop {
            if let WatchEvent::Bookmark(b) = stream.try_next().await.unwrap().unwrap() {
                return b;
            }
        }
    })
    .await;
    assert!(bm.metadata.resource_version.parse::<u64>().unwrap() >= want);
}

#[tokio::test]
async fn reflector_follows_changes() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream =
        reflector(writer, watcher(cms.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    bounded("ready", reader.wait_until_ready()).await.unwrap();
    for i in 0..20 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    cms.delete("c3", &DeleteParams::default()).await.unwrap();
    wait_for("reflector to catch up", || {
        let n = reader.state().len();
        let has_c3 = reader.state().iter().any(|c| c.name_any() == "c3");
        async move { (n == 19 && !has_c3).then_some(()) }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn controller_reconciles_and_owned_objects_are_collected() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct E(#[from] kube::Error);

    async fn reconcile(obj: Arc<ConfigMap>, secrets: Arc<Api<Secret>>) -> Result<Action, E> {
        let mut s = Secret::default();
        s.metadata.name = Some(format!("{}-copy", obj.name_any()));
        s.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: obj.name_any(),
                uid: obj.uid().unwrap(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        ]);
        secrets
            .patch(
                &s.name_any(),
                &PatchParams::apply("copier").force(),
                &Patch::Apply(&s),
            )
            .await?;
        Ok(Action::await_change())
    }
    let ctl = Controller::new(cms.clone(), watcher::Config::default())
        .owns(secrets.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(secrets.clone()),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(ctl);

    cms.create(&PostParams::default(), &cm("src", &[]))
        .await
        .unwrap();
    wait_for("copy", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("src-copy").await.unwrap() }
    })
    .await;
    // Deleting the owner (background propagation) collects the dependent.
    cms.delete("src", &DeleteParams::default()).await.unwrap();
    wait_for("dependent collected", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("src-copy")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn restart_keeps_data_and_port() {
    let mut server = start(Options::default()).await;
    let url = server.url();
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("kept", &[]))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let task = tokio::spawn(
        reflector(
            writer,
            watcher(cms.clone(), watcher::Config::default()).default_backoff(),
        )
        .for_each(|_| async {}),
    );
    bounded("ready", reader.wait_until_ready()).await.unwrap();
    server.stop().await;
    assert!(
        cms.get("kept").await.is_err(),
        "stopped server must not answer"
    );
    server.restart().await.unwrap();
    assert_eq!(server.url(), url);
    assert_eq!(cms.get("kept").await.unwrap().name_any(), "kept");
    cms.create(&PostParams::default(), &cm("after", &[]))
        .await
        .unwrap();
    wait_for("watcher to resume", || {
        let found = reader.state().iter().any(|c| c.name_any() == "after");
        async move { found.then_some(()) }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let server = start(Options::default()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = server.resource_version().to_string();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let started = std::time::Instant::now();
    // Only bookmarks may arrive; then the server closes the stream.
    bounded("watch end", async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            assert!(matches!(ev, WatchEvent::Bookmark(_)), "{ev:?}");
        }
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn history_overflow_expires_old_resource_versions() {
    let server = start(Options {
        history_limit: 5,
        ..Options::default()
    })
    .await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = server.resource_version().to_string();
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("h{i}"), &[]))
            .await
            .unwrap();
    }
    let recent = (server.resource_version() - 3).to_string();
    // Within the retained history: the last three creations are replayed.
    let mut ok = cms
        .watch(&WatchParams::default().timeout(5), &recent)
        .await
        .unwrap()
        .boxed();
    for want in ["h7", "h8", "h9"] {
        match bounded("replay", ok.try_next()).await.unwrap().unwrap() {
            WatchEvent::Added(o) => assert_eq!(o.name_any(), want),
            other => panic!("{other:?}"),
        }
    }
    // Older than the history: 410 Expired.
    let mut old = cms
        .watch(&WatchParams::default().timeout(5), &first)
        .await
        .unwrap()
        .boxed();
    match bounded("expired", old.try_next()).await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("{other:?}"),
    }
    // A future resourceVersion is refused, not silently waited on forever.
    let future = (server.resource_version() + 100).to_string();
    let mut fut = cms
        .watch(&WatchParams::default().timeout(5), &future)
        .await
        .unwrap()
        .boxed();
    match bounded("too large", fut.try_next()).await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (504, "Timeout")),
        other => panic!("{other:?}"),
    }
}

/// `GET .../configmaps/<name>?watch=true` watches only that object.
#[tokio::test]
async fn watching_one_object_by_name() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let server = start(Options::default().http()).await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = server.resource_version();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let req = format!(
        "GET /api/v1/namespaces/default/configmaps/two?watch=true&resourceVersion={rv}&timeoutSeconds=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token("admin").unwrap()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    for n in ["one", "two", "three"] {
        cms.create(&PostParams::default(), &cm(n, &[]))
            .await
            .unwrap();
    }
    let mut lines = BufReader::new(s).lines();
    let event = bounded("event for two", async {
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.starts_with('{') {
                return line;
            }
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(v["type"], "ADDED");
    assert_eq!(v["object"]["metadata"]["name"], "two");
}
