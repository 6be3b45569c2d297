//! Hubs sharing one cluster's watches (fleet mode): namespace-scoped and named watches become
//! views of one watch per resource, showing only their namespace (or object) and telling only
//! about its changes, while the API server sees one watch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{client, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ApiResource, DeleteParams, PostParams};
use sync_engine::runtime::watch::Change;
use sync_engine::runtime::{Cluster, Scope, WatchHub};
use test_apiserver::{Options, TestApiServer};

fn named<K: Default + kube::Resource>(name: &str) -> K {
    let mut k = K::default();
    k.meta_mut().name = Some(name.into());
    k
}

fn names(objects: &[Arc<kube::api::DynamicObject>]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_show_their_namespace_of_one_shared_watch() {
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let admin = client(&server, "admin").await;
    for ns in ["r1", "r2"] {
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &named(ns))
            .await
            .unwrap();
    }
    let cms = |ns: &str| Api::<ConfigMap>::namespaced(admin.clone(), ns);
    for (ns, name) in [("r1", "a"), ("r1", "b"), ("r2", "a")] {
        cms(ns)
            .create(&PostParams::default(), &named(name))
            .await
            .unwrap();
    }
    let cluster = Cluster::Fixed(admin.clone());
    let resource = ApiResource::erase::<ConfigMap>(&());
    let shared = Arc::new(WatchHub::new());
    let one = WatchHub::new().sharing("cp", shared.clone(), "cp");
    let two = WatchHub::new().sharing("cp", shared.clone(), "cp");
    server.clear_requests();

    let r1 = one.watch(
        "cp",
        &cluster,
        &resource,
        Scope::Namespace("r1".into()),
        None,
    );
    let r2 = two.watch(
        "cp",
        &cluster,
        &resource,
        Scope::Namespace("r2".into()),
        None,
    );
    let b = two.watch(
        "cp",
        &cluster,
        &resource,
        Scope::Namespace("r1".into()),
        Some("metadata.name=b".into()),
    );
    // An unrelated hub cluster id is not shared.
    let own = one.watch(
        "other",
        &cluster,
        &resource,
        Scope::Namespace("r2".into()),
        None,
    );
    for w in [&r1, &r2, &b, &own] {
        w.ready().await;
    }

    // Each shows its own part.
    assert_eq!(names(&r1.list()), BTreeSet::from(["a".into(), "b".into()]));
    assert_eq!(names(&r2.list()), BTreeSet::from(["a".into()]));
    assert_eq!(names(&b.list()), BTreeSet::from(["b".into()]));
    assert!(
        r2.get(Some("r1"), "a").is_none(),
        "another namespace is not visible"
    );
    assert!(
        b.get(Some("r1"), "a").is_none(),
        "another name is not visible"
    );
    assert!(r1.get(Some("r1"), "a").is_some());
    assert_eq!(r1.keys().len(), 2);
    assert_eq!(b.list_as::<ConfigMap>().len(), 1);

    // The server saw one shared watch (all namespaces) plus the unshared one: lists and
    // watches of 2, not 4.
    let requests = |verb: &'static str| {
        let server = &server;
        move || {
            server
                .requests()
                .into_iter()
                .filter(|r| r.verb == verb && r.resource == "configmaps")
                .map(|r| (r.namespace.clone(), r.query.clone()))
                .collect::<Vec<_>>()
        }
    };
    let watches = wait_for("both watch requests", || async {
        let w = requests("watch")();
        (w.len() >= 2).then_some(w)
    })
    .await;
    assert_eq!(watches.len(), 2, "{watches:?}");
    assert_eq!(requests("list")().len(), 2);
    assert!(watches.iter().any(|(ns, _)| ns.is_empty()), "{watches:?}");
    assert_eq!(shared.open_on("cp"), 1);
    assert_eq!(one.open_on("cp"), 0, "views are not watches of their own");
    assert_eq!(one.open_on("other"), 1);

    // Changes reach only the views that show them.
    let (mut c1, mut c2, mut cb) = (r1.subscribe(), r2.subscribe(), b.subscribe());
    cms("r2")
        .create(&PostParams::default(), &named("c"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), c2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Change::Object {
            namespace: Some("r2".into()),
            name: "c".into()
        }
    );
    cms("r1")
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), cb.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Change::Object {
            namespace: Some("r1".into()),
            name: "b".into()
        }
    );
    let got = tokio::time::timeout(Duration::from_secs(10), c1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Change::Object {
            namespace: Some("r1".into()),
            name: "b".into()
        },
        "r1's view never heard of r2's object"
    );
    wait_for("b gone from the named view", || async {
        b.list().is_empty().then_some(())
    })
    .await;
    assert!(c1.try_recv().is_err() && cb.try_recv().is_err());

    // The shared watch lives as long as a view does.
    drop((r1, r2, b, c1, c2, cb));
    assert_eq!(shared.open_on("cp"), 0);
}
