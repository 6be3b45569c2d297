//! The client layer against API servers: `test-apiserver` with injected faults for the gate,
//! the concurrency bound, watches and reachability, and a real kube-apiserver under API Priority
//! and Fairness with small inflight limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use cluster_topology::{
    ClientHealth, ClientOptions, NamespaceRequirement, Reachability, build_layered_client,
    parse_kubeconfig,
};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams, WatchParams};
use test_apiserver::{ADMIN, Fault, Options, TestApiServer};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);

async fn server() -> TestApiServer {
    TestApiServer::start(Options::default()).await.unwrap()
}

fn layered(server: &TestApiServer, options: ClientOptions) -> (kube::Client, ClientHealth) {
    let parsed = parse_kubeconfig(
        server.kubeconfig(ADMIN).unwrap().as_bytes(),
        NamespaceRequirement::Optional,
    )
    .unwrap();
    build_layered_client(parsed.config, &options).unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..ConfigMap::default()
    }
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `WAIT`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_nothing_is_sent_before_retry_after_and_the_request_is_sent_again() {
    let server = server().await;
    let (client, health) = layered(&server, ClientOptions::default());
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.list(&Default::default()).await.unwrap();
    server.clear_requests();
    server.inject(Fault::fail("create", "configmaps", 1, 429));

    let create = tokio::spawn({
        let api = api.clone();
        async move { api.create(&PostParams::default(), &config_map("a")).await }
    });
    eventually("the 429", || health.stats().throttled == 1).await;
    let gate = health.gate_until().expect("a 429 closes the gate");
    let get = tokio::spawn({
        let api = api.clone();
        async move {
            let r = api.get_opt("a").await;
            (r, Instant::now())
        }
    });
    // Whatever the server saw before the gate opens is the 429 alone.
    let seen = server.requests();
    if Instant::now() < gate {
        assert_eq!(
            seen.iter().map(|r| r.code).collect::<Vec<_>>(),
            [429],
            "{seen:#?}"
        );
    }
    let created = within("the create", create).await.unwrap().unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("a"));
    let (got, done) = within("the get", get).await.unwrap();
    got.unwrap();
    assert!(done >= gate, "the get finished before the gate opened");
    let codes: Vec<_> = server
        .requests()
        .iter()
        .filter(|r| r.verb == "create")
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, [429, 201]);
    let stats = health.stats();
    assert_eq!((stats.throttled, stats.retries), (1, 1));
    // Retry-After: 1 on test-apiserver; the waits of both requests add up to more than that.
    assert!(stats.gate_wait >= Duration::from_millis(900), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_the_maximum_is_in_flight() {
    const MAX: usize = 3;
    const REQUESTS: usize = 12;
    const DELAY: Duration = Duration::from_millis(300);
    let server = server().await;
    let options =
        ClientOptions::default().with_max_concurrent_requests(NonZeroUsize::new(MAX).unwrap());
    let (client, health) = layered(&server, options);
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &config_map("slow"))
        .await
        .unwrap();
    server.inject(Fault::delay("get", "configmaps", REQUESTS, DELAY));

    let start = Instant::now();
    let gets: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.get("slow").await })
        })
        .collect();
    for get in gets {
        within("a get", get).await.unwrap().unwrap();
    }
    let took = start.elapsed();
    let stats = health.stats();
    println!(
        "{REQUESTS} gets of {DELAY:?} each, at most {MAX} at once: {took:?}, peak in flight {}",
        stats.peak_in_flight
    );
    assert_eq!(stats.peak_in_flight, MAX, "{stats:?}");
    assert_eq!(stats.in_flight, 0);
    // Four waves of three at least (a lower bound: a slow machine only adds to it).
    let waves = u32::try_from(REQUESTS.div_ceil(MAX)).unwrap();
    assert!(took >= DELAY * waves, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_do_not_count_against_the_limit() {
    const MAX: usize = 2;
    let server = server().await;
    let options =
        ClientOptions::default().with_max_concurrent_requests(NonZeroUsize::new(MAX).unwrap());
    let (client, health) = layered(&server, options);
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut watches = Vec::new();
    for _ in 0..MAX * 3 {
        let stream = within("a watch", api.watch(&WatchParams::default(), "0"))
            .await
            .unwrap()
            .boxed();
        watches.push(stream);
    }
    let stats = health.stats();
    assert_eq!(
        (stats.long_running, stats.in_flight),
        (MAX * 3, 0),
        "{stats:?}"
    );
    within(
        "a create while the watches are open",
        api.create(&PostParams::default(), &config_map("through")),
    )
    .await
    .unwrap();
    // The watches are alive and see the create.
    for stream in &mut watches {
        let event = within("a watch event", stream.next()).await;
        assert!(matches!(event, Some(Ok(_))), "{event:?}");
    }
    drop(watches);
    eventually("the watches to be uncounted", || {
        health.stats().long_running == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unreachable_until_it_answers_again() {
    let mut server = server().await;
    let (client, health) = layered(&server, ClientOptions::default().with_label("provider"));
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.list(&Default::default()).await.unwrap();
    let mut transitions = health.subscribe();
    assert!(health.is_reachable());

    server.stop().await;
    let e = within(
        "a request to a stopped server",
        api.list(&Default::default()),
    )
    .await
    .unwrap_err();
    println!("request to a stopped server: {e}");
    within("the unreachable transition", transitions.changed())
        .await
        .unwrap();
    let Reachability::Unreachable { error } = transitions.borrow_and_update().clone() else {
        panic!("still reachable after {e}");
    };
    println!("unreachable: {error}");
    assert!(!health.is_reachable());
    assert_eq!(health.last_error().as_deref(), Some(error.as_str()));
    // A new connection is refused; a pooled one the stop closed ends with a FIN or, depending
    // on timing, a reset.
    assert!(
        error.contains("Connection refused")
            || error.contains("connection closed")
            || error.contains("Connection reset"),
        "{error}"
    );
    assert!(health.stats().transport_errors >= 1);

    server.restart().await.unwrap();
    // The first request may still meet a connection the stop closed; the next one connects anew.
    let deadline = Instant::now() + WAIT;
    while api.list(&Default::default()).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the restarted server never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    within("the reachable transition", async {
        while !transitions.borrow_and_update().is_reachable() {
            transitions.changed().await.unwrap();
        }
    })
    .await;
    assert!(health.is_reachable());
    // The error stays readable after the recovery.
    assert!(health.last_error().is_some());
}

/// One raw request (no layer, no kube retry): status, `Retry-After`, `(content type) body`; or
/// the error.
async fn raw_send(
    raw: &kube::Client,
    request: http::Request<Vec<u8>>,
) -> Result<(u16, Option<String>, String), String> {
    let response = raw
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after");
    let content_type = header("content-type").unwrap_or_default();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_default();
    Ok((
        status,
        retry_after,
        format!("({content_type}) {:?}", String::from_utf8_lossy(&body)),
    ))
}

/// `n` raw GETs at once of a ConfigMap that does not exist; returns the answers.
async fn raw_burst(
    raw: &kube::Client,
    n: usize,
) -> Vec<Result<(u16, Option<String>, String), String>> {
    futures::future::join_all((0..n).map(|_| {
        let request = http::Request::get("/api/v1/namespaces/apf/configmaps/none")
            .body(Vec::new())
            .unwrap();
        raw_send(raw, request)
    }))
    .await
}

/// `n` creates at once through `api`, named `<prefix>-<i>`, within `bound`; returns how long
/// they took and the failures.
async fn create_burst(
    api: &Api<ConfigMap>,
    prefix: &str,
    n: usize,
    bound: Duration,
    health: &ClientHealth,
) -> (Duration, Vec<kube::Error>) {
    let start = Instant::now();
    let results = tokio::time::timeout(
        bound,
        futures::future::join_all((0..n).map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move { api.create(&PostParams::default(), &config_map(&name)).await }
        })),
    )
    .await
    .unwrap_or_else(|_| panic!("{n} creates did not finish within {bound:?}: {health:?}"));
    let failed = results.into_iter().filter_map(Result::err).collect();
    (start.elapsed(), failed)
}

fn report(what: &str, n: usize, took: Duration, failed: &[kube::Error], health: &ClientHealth) {
    let stats = health.stats();
    println!(
        "{what}: {} of {n} created in {took:?}; 429s {}, retries {}, limit decreases {}, limit \
         now {}, peak in flight {}, requests {}, waited at the gate {:?} (summed over requests)",
        n - failed.len(),
        stats.throttled,
        stats.retries,
        stats.limit_decreases,
        stats.concurrency_limit,
        stats.peak_in_flight,
        stats.requests,
        stats.gate_wait,
    );
}

/// A real kube-apiserver with `--max-requests-inflight=5 --max-mutating-requests-inflight=1`
/// (API Priority and Fairness, as in issue 9), every request from one ServiceAccount (the
/// admin is in the exempt priority level and is never throttled):
///
/// - a raw burst (no layer, no kube retry) larger than the priority level's queues records what
///   an APF rejection looks like;
/// - 300 creates at once through the layer with the konnector's default options all succeed
///   within 120 s, never more than 32 in flight;
/// - 600 creates at once through a layer allowed 600 in flight: the server throttles, and the
///   layer honours `Retry-After`, lowers its limit and gets every create through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_apiserver_under_priority_and_fairness_gets_every_create_through() {
    use kube_control_plane::{Binaries, ControlPlane, Options};
    const OBJECTS: usize = 300;
    const BURST: usize = 600;
    const BOUND: Duration = Duration::from_secs(120);
    if let Err(reason) = Binaries::find() {
        println!("real control plane not found: {reason}");
        return;
    }
    let cp = ControlPlane::start(
        Options::default()
            .name("apf")
            .controller_manager(false)
            .audit(false)
            .extra_apiserver_flag("--max-requests-inflight=5")
            .extra_apiserver_flag("--max-mutating-requests-inflight=1"),
    )
    .await
    .unwrap();
    let token = cp
        .service_account_token("apf", "konnector", None)
        .await
        .unwrap();
    cp.grant_cluster_admin("apf", "konnector").await.unwrap();
    let kubeconfig = cp.token_kubeconfig(&token, Some("apf"));
    let config = parse_kubeconfig(kubeconfig.as_bytes(), NamespaceRequirement::Optional)
        .unwrap()
        .config;

    let mut raw_config = config.clone();
    raw_config.default_retry = false;
    let raw = kube::Client::try_from(raw_config).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        // The RBAC grant takes a moment to reach the authorizer's cache.
        let probe: Api<ConfigMap> = Api::namespaced(raw.clone(), "apf");
        if probe.list(&Default::default()).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the grant never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What the server answers a burst beyond its queues.
    let start = Instant::now();
    let answers = raw_burst(&raw, BURST).await;
    let rejected: Vec<_> = answers
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|(status, _, _)| *status == 429)
        .collect();
    println!(
        "raw burst of {BURST} GETs without the layer: {} answered 429, {} errors, in {:?}",
        rejected.len(),
        answers.iter().filter(|r| r.is_err()).count(),
        start.elapsed()
    );
    if let Some((status, retry_after, body)) = rejected.first() {
        println!("an APF rejection: status {status}, Retry-After {retry_after:?}, body {body}");
    }

    // The burst with the konnector's defaults.
    let (client, health) = build_layered_client(
        config.clone(),
        &ClientOptions::default().with_label("provider"),
    )
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "apf");
    let (took, failed) = create_burst(&api, "default", OBJECTS, BOUND, &health).await;
    report("default options", OBJECTS, took, &failed, &health);
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let stats = health.stats();
    assert!(stats.peak_in_flight <= 32, "{stats:?}");
    if stats.throttled > 0 {
        assert!(stats.gate_wait > Duration::ZERO, "{stats:?}");
    }

    // A limit far above what the server takes: it throttles, the layer adapts.
    let options = ClientOptions::default()
        .with_label("provider")
        .with_max_concurrent_requests(NonZeroUsize::new(BURST).unwrap());
    let (client, health) = build_layered_client(config, &options).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "apf");
    let (took, failed) = create_burst(&api, "wide", BURST, BOUND, &health).await;
    report("600 allowed in flight", BURST, took, &failed, &health);
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let stats = health.stats();
    if stats.throttled > 0 {
        // Honoured: the throttled requests waited for Retry-After and were sent again, and the
        // limit came down.
        assert!(stats.gate_wait > Duration::ZERO, "{stats:?}");
        assert!(stats.retries > 0, "{stats:?}");
        assert!(stats.limit_decreases > 0, "{stats:?}");
    }

    let listed = api.list(&Default::default()).await.unwrap();
    let count = |prefix: &str| {
        listed
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .count()
    };
    assert_eq!((count("default-"), count("wide-")), (OBJECTS, BURST));
}
