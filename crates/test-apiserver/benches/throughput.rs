//! Throughput of one in-memory server: creates/s and updates/s through kube-rs clients, and
//! watch events/s delivered to 10 concurrent watchers (counted on raw HTTP streams so that the
//! clients' JSON decoding does not dominate the measurement).
//!
//! Run with `cargo bench -p test-apiserver --bench throughput`.

// A benchmark that cannot set up or loses a request should abort loudly.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use test_apiserver::{ADMIN, Options, TestApiServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OBJECTS: usize = 5_000;
const CONCURRENCY: usize = 32;
const WATCHERS: usize = 10;

fn cm(i: usize) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(format!("cm-{i}"));
    c.data = Some([("k".to_owned(), format!("v{i}"))].into());
    c
}

/// Opens a raw watch and counts delivered events until `want` arrived.
async fn raw_watch(port: u16, token: String, rv: u64, want: usize, counter: Arc<AtomicUsize>) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!(
        "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=120 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let needle = b"{\"type\":\"";
    let mut buf = vec![0u8; 1 << 16];
    let mut carry: Vec<u8> = Vec::new();
    let mut seen = 0;
    while seen < want {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        let mut i = 0;
        while i + needle.len() <= carry.len() {
            if &carry[i..i + needle.len()] == needle {
                seen += 1;
                counter.fetch_add(1, Ordering::Relaxed);
                i += needle.len();
            } else {
                i += 1;
            }
        }
        let keep = carry.len().saturating_sub(needle.len() - 1);
        carry.drain(..keep);
    }
}

async fn client(server: &TestApiServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig(ADMIN).expect("admin"))
        .expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

#[tokio::main]
async fn main() {
    let server = TestApiServer::start(Options {
        history_limit: 100_000,
        ..Options::default().http()
    })
    .await
    .expect("start");
    let cms: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let token = server.token(ADMIN).expect("token");

    // Watchers opened before the writes receive every create and update live.
    let start_rv = server.resource_version();
    let live = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        watchers.push(tokio::spawn(raw_watch(
            server.port(),
            token.clone(),
            start_rv,
            2 * OBJECTS,
            live.clone(),
        )));
    }
    // Let the watch requests reach the server before the clock starts.
    while server
        .requests()
        .iter()
        .filter(|r| r.verb == "watch")
        .count()
        < WATCHERS
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let writes_started = Instant::now();
    let t = Instant::now();
    stream::iter(0..OBJECTS)
        .for_each_concurrent(CONCURRENCY, |i| {
            let cms = cms.clone();
            async move {
                cms.create(&PostParams::default(), &cm(i))
                    .await
                    .expect("create");
            }
        })
        .await;
    let creates = OBJECTS as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    stream::iter(0..OBJECTS)
        .for_each_concurrent(CONCURRENCY, |i| {
            let cms = cms.clone();
            async move {
                let p = serde_json::json!({"data": {"k": format!("updated-{i}")}});
                cms.patch(
                    &format!("cm-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(p),
                )
                .await
                .expect("patch");
            }
        })
        .await;
    let updates = OBJECTS as f64 / t.elapsed().as_secs_f64();
    let writes_done = Instant::now();
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("watchers finish")
            .expect("watcher");
    }
    let lag = writes_done.elapsed();
    let live_rate = live.load(Ordering::Relaxed) as f64 / writes_started.elapsed().as_secs_f64();

    // Replay: 10 watchers from the first RV read 10k retained events each, as fast as the
    // server can fan them out.
    let replay = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        watchers.push(tokio::spawn(raw_watch(
            server.port(),
            token.clone(),
            start_rv,
            2 * OBJECTS,
            replay.clone(),
        )));
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("replay finishes")
            .expect("watcher");
    }
    let replay_rate = replay.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    let live_total = live.load(Ordering::Relaxed);

    println!(
        "creates/s:                         {creates:>10.0}  ({OBJECTS} ConfigMaps, {CONCURRENCY} concurrent kube-rs requests)"
    );
    println!("updates/s:                         {updates:>10.0}  ({OBJECTS} merge patches)");
    println!(
        "live watch events delivered:       {live_total:>10}  (to {WATCHERS} watchers during the writes; last one {:.0} ms after the last write)",
        lag.as_secs_f64() * 1000.0
    );
    println!("watch events/s (10 watchers, live during the writes): {live_rate:>10.0}");
    println!("watch events/s (10 watchers, replay from history): {replay_rate:>10.0}");
}
