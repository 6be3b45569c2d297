//! The client-side tower layer every `kube::Client` of the konnector goes through.
//!
//! An API server that throttles (API Priority and Fairness answers `429` with `Retry-After`),
//! fails or is unreachable must not be hammered: measured on kube-apiserver 1.36 with
//! `--max-requests-inflight=5 --max-mutating-requests-inflight=1`, an unthrottled konnector
//! got nothing but 429s for two minutes. The layer therefore
//!
//! - bounds the requests in flight per cluster (not counting long-running requests such as
//!   watches, which would otherwise starve writes) by a limit that adapts AIMD-style: halved on a
//!   429 (once per round trip, see [`Aimd`]), grown back by one per window of successes up to
//!   [`ClientOptions::max_concurrent_requests`];
//! - honours `Retry-After` for the whole client: a 429 (or a 503 that carries `Retry-After`)
//!   closes a shared gate until then, and every later request, watches included, waits there
//!   before being sent; the throttled request itself is sent again after the gate opens (a 429
//!   is answered before the request is executed, so this is safe for writes too);
//! - gives every request that is not long-running a deadline ([`ClientOptions::request_timeout`])
//!   so a blackholed server cannot hang a write forever;
//! - tracks reachability: an error below HTTP (connection refused or reset, TLS, timeout) marks
//!   the cluster unreachable with that error, any HTTP response marks it reachable again, and
//!   [`ClientHealth::subscribe`] announces each transition so callers can retry failed work the
//!   moment a cluster is back.
//!
//! The decisions ([`is_long_running`], [`retry_after`], [`throttle_delay`], [`Aimd`],
//! [`gate_wait`]) are pure and tested without I/O; the service only wires them together.
//!
//! kube's own retry layer (`Config::default_retry`) is switched off for clients built here
//! ([`crate::build_client_with_health`]): it sits below this layer and would hide the 429s from
//! it while sleeping with a slot taken.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use kube::client::Body;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt as _};

/// The kube-apiserver's own default request timeout (`--request-timeout`): a request that got no
/// answer in this time will not get one.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound of requests in flight per cluster (`--max-concurrent-requests`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 32;
/// How often a throttled request is sent again before the 429 is handed to the caller (whose
/// own per-object backoff takes over).
pub const DEFAULT_MAX_THROTTLE_RETRIES: u32 = 10;
/// `Retry-After` when a 429 carries none (the kube-apiserver's own default).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Upper bound for a server's `Retry-After`: a misconfigured proxy saying "an hour" must not
/// stop a cluster's whole traffic for an hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How the clients of one cluster behave towards its API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Most requests in flight at once, not counting long-running ones (watches). The effective
    /// limit adapts below it when the server throttles.
    pub max_concurrent_requests: NonZeroUsize,
    /// Deadline for the response headers of a request that is not long-running.
    pub request_timeout: Duration,
    /// How often a throttled request is sent again before the 429 reaches the caller.
    pub max_throttle_retries: u32,
    /// Name of the cluster in logs and metrics (`app`, `binding`, `provider:<id>`).
    pub label: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            max_concurrent_requests: NonZeroUsize::new(DEFAULT_MAX_CONCURRENT_REQUESTS)
                .unwrap_or(NonZeroUsize::MIN),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_throttle_retries: DEFAULT_MAX_THROTTLE_RETRIES,
            label: String::new(),
        }
    }
}

impl ClientOptions {
    /// The same options for the cluster called `label`.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The same options with another maximum of concurrent requests.
    pub fn with_max_concurrent_requests(mut self, max: NonZeroUsize) -> Self {
        self.max_concurrent_requests = max;
        self
    }

    /// The same options with another request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Pure decisions
// ---------------------------------------------------------------------------------------------

/// Whether a request is long-running, i.e. held open by the server for minutes: a watch
/// (`watch=true`, `watch=1`), a followed log, exec, attach, port-forward or proxy (the
/// kube-apiserver's own long-running classification). Such requests are never counted against
/// the concurrency limit (dozens of watches would take every slot and starve writes) and get
/// no deadline.
pub fn is_long_running(method: &Method, uri: &Uri) -> bool {
    let query = uri.query().unwrap_or("");
    let flag = |name: &str| {
        query.split('&').any(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            key == name && matches!(value, "true" | "1")
        })
    };
    if flag("watch") {
        return true;
    }
    // The segments after the group-version: `/api/v1/...` or `/apis/<group>/<version>/...`.
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    // Old-style watch paths (`/api/v1/watch/...`), still served by the kube-apiserver.
    if method == Method::GET && rest.first() == Some(&"watch") {
        return true;
    }
    // `namespaces/<ns>/<resource>/<name>/<subresource>` or `<resource>/<name>/<subresource>`.
    let subresource = if rest.first() == Some(&"namespaces") && rest.len() >= 5 {
        rest.get(4)
    } else {
        rest.get(2)
    };
    match subresource.copied() {
        Some("exec" | "attach" | "portforward" | "proxy") => true,
        Some("log") => flag("follow"),
        _ => false,
    }
}

/// The wait a `Retry-After` header asks for: delta-seconds (what the kube-apiserver sends),
/// [`DEFAULT_RETRY_AFTER`] when missing or unparsable (HTTP dates included: the kube-apiserver
/// never sends one), at least one second (its resolution; `0` would turn retries into a hot
/// loop) and at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs)
        .clamp(Duration::from_secs(1), MAX_RETRY_AFTER)
}

/// Whether a response says "throttled, come back later", and after how long.
///
/// A 429 always does (missing `Retry-After`: one second). A 503 does only when it carries
/// `Retry-After` (the kube-apiserver's "try again later" while it starts or shuts down): a bare
/// 503 is also what an unavailable aggregated API answers, which must not hold up the requests
/// of every other API of the cluster.
pub fn throttle_delay(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    match status {
        StatusCode::TOO_MANY_REQUESTS => Some(retry_after(headers)),
        StatusCode::SERVICE_UNAVAILABLE if headers.contains_key(http::header::RETRY_AFTER) => {
            Some(retry_after(headers))
        }
        _ => None,
    }
}

/// How long a request that wants to be sent at `now` must wait at a gate that stays closed
/// until `until` (`None`: the gate is open).
pub fn gate_wait(until: Option<Instant>, now: Instant) -> Option<Duration> {
    until.filter(|until| *until > now).map(|until| until - now)
}

/// The adaptive concurrency limit: additive increase, multiplicative decrease (TCP's congestion
/// avoidance), between 1 and a maximum.
///
/// A burst of 429s must not collapse the limit to 1 at once: every request in flight when the
/// server started throttling comes back with a 429, but together they say "too many" only
/// once. So a 429 halves the limit only when its request was sent after the last decrease
/// (each request remembers the [`Aimd::epoch`] it was sent in): at most one halving per round
/// trip, without a clock. Successes grow the limit by one per `limit` successes, i.e. by about
/// one per round trip of a full window, as TCP does.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    max: usize,
    limit: f64,
    epoch: u64,
}

impl Aimd {
    /// Starts at `max` (a server that does not throttle never notices the layer).
    pub fn new(max: NonZeroUsize) -> Self {
        Self {
            max: max.get(),
            limit: max.get() as f64,
            epoch: 0,
        }
    }

    /// The current limit: at least 1, at most the maximum.
    pub fn limit(&self) -> usize {
        // Truncation is the point: 2.9 allows two requests.
        (self.limit.floor() as usize).clamp(1, self.max)
    }

    /// The maximum the limit grows back to.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Incremented by every decrease; a request records it when it is sent.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A request sent in `sent_epoch` was throttled. Halves the limit (not below 1) unless a
    /// decrease already happened since the request was sent; returns whether it did.
    pub fn on_throttled(&mut self, sent_epoch: u64) -> bool {
        if sent_epoch != self.epoch {
            return false;
        }
        self.limit = (self.limit / 2.0).floor().max(1.0);
        self.epoch += 1;
        true
    }

    /// A request succeeded: grows the limit by `1/limit`, up to the maximum.
    pub fn on_success(&mut self) {
        let max = self.max as f64;
        self.limit = (self.limit + 1.0 / self.limit.max(1.0)).min(max);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state: ClientHealth
// ---------------------------------------------------------------------------------------------

/// Whether the API server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// It answered the last request with an HTTP response (any status), or nothing was sent yet.
    Reachable,
    /// The last request failed below HTTP; the error says how (`... Connection refused`).
    Unreachable {
        /// The transport error, with its causes.
        error: String,
    },
}

impl Reachability {
    /// Whether this is [`Reachability::Reachable`].
    pub fn is_reachable(&self) -> bool {
        matches!(self, Self::Reachable)
    }
}

/// A snapshot of a cluster's client counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests handed to the transport (each retry of a throttled request counts again).
    pub requests: u64,
    /// Responses that throttled (429, or 503 with `Retry-After`).
    pub throttled: u64,
    /// Throttled requests that were sent again.
    pub retries: u64,
    /// Requests that failed below HTTP (timeouts included).
    pub transport_errors: u64,
    /// Requests currently holding a concurrency slot (sent, or reading their response).
    pub in_flight: usize,
    /// The most `in_flight` ever was.
    pub peak_in_flight: usize,
    /// Long-running requests (watches) currently open.
    pub long_running: usize,
    /// The current concurrency limit.
    pub concurrency_limit: usize,
    /// Halvings of the limit so far.
    pub limit_decreases: u64,
    /// Total time requests spent waiting at the `Retry-After` gate.
    pub gate_wait: Duration,
}

struct LimiterState {
    aimd: Aimd,
    in_flight: usize,
    peak: usize,
}

struct Shared {
    options: ClientOptions,
    limiter: Mutex<LimiterState>,
    /// Woken when a slot frees up or the limit grows.
    slots: Notify,
    gate: Mutex<Option<Instant>>,
    reachability: watch::Sender<Reachability>,
    last_error: Mutex<Option<String>>,
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    transport_errors: AtomicU64,
    limit_decreases: AtomicU64,
    long_running: AtomicUsize,
    gate_wait_nanos: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent at every point a panic could occur.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The throttling state and health of one cluster's clients; cheap to clone.
///
/// Every client built with the same `ClientHealth` (a cluster's client before and after a
/// credential rotation) shares its concurrency limit, its `Retry-After` gate, its reachability
/// and its counters: the server's limits do not change with the credentials.
#[derive(Clone)]
pub struct ClientHealth {
    shared: Arc<Shared>,
}

/// A [`ClientHealth`] that does not keep its clients' state alive (for a metrics registry that
/// should forget clients nobody uses any more).
#[derive(Clone)]
pub struct WeakClientHealth {
    shared: Weak<Shared>,
}

impl WeakClientHealth {
    /// The health, if any client or holder still has it.
    pub fn upgrade(&self) -> Option<ClientHealth> {
        self.shared.upgrade().map(|shared| ClientHealth { shared })
    }
}

impl fmt::Debug for WeakClientHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakClientHealth")
            .field("alive", &(self.shared.strong_count() > 0))
            .finish()
    }
}

impl ClientHealth {
    /// A fresh state: reachable, limit at the maximum, gate open, counters at zero.
    pub fn new(options: ClientOptions) -> Self {
        let (reachability, _) = watch::channel(Reachability::Reachable);
        Self {
            shared: Arc::new(Shared {
                limiter: Mutex::new(LimiterState {
                    aimd: Aimd::new(options.max_concurrent_requests),
                    in_flight: 0,
                    peak: 0,
                }),
                options,
                slots: Notify::new(),
                gate: Mutex::new(None),
                reachability,
                last_error: Mutex::new(None),
                requests: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                transport_errors: AtomicU64::new(0),
                limit_decreases: AtomicU64::new(0),
                long_running: AtomicUsize::new(0),
                gate_wait_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// The options the clients follow.
    pub fn options(&self) -> &ClientOptions {
        &self.shared.options
    }

    /// The cluster's name in logs and metrics.
    pub fn label(&self) -> &str {
        &self.shared.options.label
    }

    /// Whether the API server answered the last request (true before the first one).
    pub fn is_reachable(&self) -> bool {
        self.shared.reachability.borrow().is_reachable()
    }

    /// Reachable, or unreachable with the error.
    pub fn reachability(&self) -> Reachability {
        self.shared.reachability.borrow().clone()
    }

    /// The most recent transport error, kept after the cluster is reachable again (`None` if
    /// there never was one).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// A receiver that sees every transition between reachable and unreachable (not every
    /// failed request). It starts out having seen the current state.
    pub fn subscribe(&self) -> watch::Receiver<Reachability> {
        self.shared.reachability.subscribe()
    }

    /// Until when the `Retry-After` gate is closed (`None` or a past instant: open).
    pub fn gate_until(&self) -> Option<Instant> {
        *lock(&self.shared.gate)
    }

    /// The current counters.
    pub fn stats(&self) -> ClientStats {
        let s = &self.shared;
        let (in_flight, peak, limit) = {
            let l = lock(&s.limiter);
            (l.in_flight, l.peak, l.aimd.limit())
        };
        ClientStats {
            requests: s.requests.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            transport_errors: s.transport_errors.load(Ordering::Relaxed),
            in_flight,
            peak_in_flight: peak,
            long_running: s.long_running.load(Ordering::Relaxed),
            concurrency_limit: limit,
            limit_decreases: s.limit_decreases.load(Ordering::Relaxed),
            gate_wait: Duration::from_nanos(s.gate_wait_nanos.load(Ordering::Relaxed)),
        }
    }

    /// A reference that does not keep the state alive.
    pub fn downgrade(&self) -> WeakClientHealth {
        WeakClientHealth {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Whether two handles share one state.
    pub fn same(&self, other: &ClientHealth) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Waits until the `Retry-After` gate is open (re-checking: another 429 may extend it).
    async fn pass_gate(&self) {
        let started = Instant::now();
        let mut waited = false;
        loop {
            let until = *lock(&self.shared.gate);
            let Some(wait) = gate_wait(until, Instant::now()) else {
                break;
            };
            waited = true;
            tokio::time::sleep(wait).await;
        }
        if waited {
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared
                .gate_wait_nanos
                .fetch_add(nanos, Ordering::Relaxed);
        }
    }

    fn gate_closed(&self) -> bool {
        gate_wait(*lock(&self.shared.gate), Instant::now()).is_some()
    }

    /// Takes a concurrency slot, waiting while the limit is reached. Returns the slot and the
    /// AIMD epoch it was taken in.
    async fn acquire(&self) -> Slot {
        loop {
            let notified = self.shared.slots.notified();
            tokio::pin!(notified);
            // Registered before checking, so a release in between is not missed.
            notified.as_mut().enable();
            {
                let mut l = lock(&self.shared.limiter);
                if l.in_flight < l.aimd.limit() {
                    l.in_flight += 1;
                    l.peak = l.peak.max(l.in_flight);
                    return Slot {
                        health: self.clone(),
                        epoch: l.aimd.epoch(),
                    };
                }
            }
            notified.await;
        }
    }

    fn release(&self) {
        let mut l = lock(&self.shared.limiter);
        l.in_flight = l.in_flight.saturating_sub(1);
        if l.in_flight < l.aimd.limit() {
            self.shared.slots.notify_one();
        }
    }

    fn on_success(&self) {
        let mut l = lock(&self.shared.limiter);
        let before = l.aimd.limit();
        l.aimd.on_success();
        if l.aimd.limit() > before {
            self.shared.slots.notify_one();
        }
    }

    /// A throttling response: closes the gate for `delay`, halves the limit once per round
    /// trip (for requests that hold a slot, i.e. `epoch` is set).
    fn on_throttled(&self, status: StatusCode, delay: Duration, epoch: Option<u64>) {
        self.shared.throttled.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + delay;
        {
            let mut gate = lock(&self.shared.gate);
            if gate.is_none_or(|g| g < until) {
                *gate = Some(until);
            }
        }
        if let Some(epoch) = epoch {
            let mut l = lock(&self.shared.limiter);
            if l.aimd.on_throttled(epoch) {
                self.shared.limit_decreases.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    cluster = %self.label(),
                    status = status.as_u16(),
                    retry_after = ?delay,
                    limit = l.aimd.limit(),
                    "API server throttles; halved the concurrency limit"
                );
            }
        }
    }

    fn mark_reachable(&self) {
        let changed = self.shared.reachability.send_if_modified(|r| {
            if r.is_reachable() {
                false
            } else {
                *r = Reachability::Reachable;
                true
            }
        });
        if changed {
            tracing::info!(cluster = %self.label(), "API server reachable again");
        }
    }

    fn mark_unreachable(&self, error: String) {
        self.shared.transport_errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.shared.last_error) = Some(error.clone());
        let changed = self.shared.reachability.send_if_modified(|r| {
            let was = r.is_reachable();
            // A new error text while unreachable is stored but is no transition.
            *r = Reachability::Unreachable {
                error: error.clone(),
            };
            was
        });
        if changed {
            // Logged on the transition only: a down server must not flood the log.
            tracing::warn!(cluster = %self.label(), %error, "API server unreachable");
        }
    }
}

impl fmt::Debug for ClientHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHealth")
            .field("label", &self.label())
            .field("reachability", &self.reachability())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A taken concurrency slot; released on drop.
struct Slot {
    health: ClientHealth,
    epoch: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.health.release();
    }
}

/// Counts an open long-running request; uncounted on drop.
struct LongRunning(ClientHealth);

impl LongRunning {
    fn new(health: &ClientHealth) -> Self {
        health.shared.long_running.fetch_add(1, Ordering::Relaxed);
        Self(health.clone())
    }
}

impl Drop for LongRunning {
    fn drop(&mut self) {
        self.0.shared.long_running.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Guard {
    Slot(#[allow(dead_code)] Slot),
    LongRunning(#[allow(dead_code)] LongRunning),
}

/// The error text of a transport failure with its causes (`client error (Connect): tcp connect
/// error: Connection refused (os error 111)`); the top-level Display alone omits the cause.
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A request that got no response headers within [`ClientOptions::request_timeout`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no response from the {cluster} API server within {}s to {method} {path}", timeout.as_secs())]
pub struct RequestTimeout {
    /// The cluster label.
    pub cluster: String,
    /// The HTTP method.
    pub method: String,
    /// The request path (no query: it may be long).
    pub path: String,
    /// The deadline that passed.
    pub timeout: Duration,
}

// ---------------------------------------------------------------------------------------------
// The tower layer
// ---------------------------------------------------------------------------------------------

/// Installs [`ClientService`] (see the module docs) reporting to one [`ClientHealth`].
#[derive(Debug, Clone)]
pub struct ClientLayer {
    health: ClientHealth,
}

impl ClientLayer {
    /// A layer whose services share `health`.
    pub fn new(health: ClientHealth) -> Self {
        Self { health }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientService {
            // kube's stack below is a `BoxService`, which cannot be cloned into each request's
            // future; the lock is held only while handing a request over, never while it runs.
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            health: self.health.clone(),
        }
    }
}

/// The service [`ClientLayer`] wraps around kube's HTTP stack.
pub struct ClientService<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
    health: ClientHealth,
}

impl<S> Clone for ClientService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            health: self.health.clone(),
        }
    }
}

impl<S> fmt::Debug for ClientService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientService")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// The future of [`ClientService::call`].
pub type ResponseFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<GuardedBody<B>>, BoxError>> + Send>>;

impl<S, B> Service<Request<Body>> for ClientService<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<GuardedBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: the waiting (gate, slot) happens inside each request's future, so that
        // kube's buffer in front keeps dispatching, and a watch never queues behind a write.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(send(self.inner.clone(), self.health.clone(), request))
    }
}

async fn send<S, B>(
    inner: Arc<tokio::sync::Mutex<S>>,
    health: ClientHealth,
    mut request: Request<Body>,
) -> Result<Response<GuardedBody<B>>, BoxError>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let long_running = is_long_running(request.method(), request.uri());
    let options = health.options().clone();
    let mut attempt = 0u32;
    loop {
        health.pass_gate().await;
        let guard = if long_running {
            Guard::LongRunning(LongRunning::new(&health))
        } else {
            let slot = health.acquire().await;
            if health.gate_closed() {
                // A 429 arrived while this request waited for its slot: give the slot back
                // and wait at the gate like everybody else.
                continue;
            }
            Guard::Slot(slot)
        };
        let epoch = match &guard {
            Guard::Slot(slot) => Some(slot.epoch),
            Guard::LongRunning(_) => None,
        };
        // Kept to send again if the server throttles; kube's request bodies are all in memory.
        let again = (attempt < options.max_throttle_retries)
            .then(|| clone_request(&request))
            .flatten();
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        // Every request at -v=5 and more (the clients' stack has no tracing layer of its own).
        let traced = tracing::enabled!(tracing::Level::TRACE)
            .then(|| (method.clone(), request.uri().to_string(), Instant::now()));
        health.shared.requests.fetch_add(1, Ordering::Relaxed);
        let future = {
            let mut service = inner.lock().await;
            match service.ready().await {
                Ok(ready) => ready.call(request),
                Err(e) => {
                    let e: BoxError = e.into();
                    health.mark_unreachable(describe_error(&*e));
                    return Err(e);
                }
            }
        };
        let result = if long_running {
            future.await.map_err(Into::into)
        } else {
            match tokio::time::timeout(options.request_timeout, future).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(BoxError::from(RequestTimeout {
                    cluster: options.label.clone(),
                    method,
                    path,
                    timeout: options.request_timeout,
                })),
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                health.mark_unreachable(describe_error(&*e));
                return Err(e);
            }
        };
        health.mark_reachable();
        let status = response.status();
        if let Some((method, uri, sent)) = &traced {
            tracing::trace!(cluster = %options.label, %method, %uri, status = status.as_u16(), took = ?sent.elapsed(), "HTTP response");
        }
        if let Some(delay) = throttle_delay(status, response.headers()) {
            health.on_throttled(status, delay, epoch);
            if let Some(next) = again {
                drop(response);
                drop(guard);
                health.shared.retries.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                request = next;
                continue;
            }
        } else if epoch.is_some() && !status.is_server_error() {
            health.on_success();
        }
        return Ok(response.map(|body| GuardedBody {
            inner: body,
            guard: Some(guard),
        }));
    }
}

fn clone_request(request: &Request<Body>) -> Option<Request<Body>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// A response body that keeps its request's concurrency slot (or long-running count) until it
/// has been read to the end or dropped: the server is busy with a request until it has sent
/// all of it.
pub struct GuardedBody<B> {
    inner: B,
    guard: Option<Guard>,
}

impl<B> fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("holds_slot", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> http_body::Body for GuardedBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn watches_and_streams_are_long_running_everything_else_is_not() {
        let get = Method::GET;
        for long in [
            "/api/v1/namespaces/a/configmaps?watch=true",
            "/api/v1/configmaps?allowWatchBookmarks=true&watch=true&resourceVersion=5",
            "/apis/klutch.anynines.com/v1alpha1/apiservicebindings?watch=1",
            "/api/v1/watch/namespaces/a/configmaps",
            "/apis/apps/v1/watch/deployments",
            "/api/v1/namespaces/a/pods/p/log?follow=true",
            "/api/v1/namespaces/a/pods/p/exec?command=sh",
            "/api/v1/namespaces/a/pods/p/attach",
            "/api/v1/namespaces/a/pods/p/portforward",
            "/api/v1/namespaces/a/services/s/proxy/metrics",
            "/api/v1/nodes/n/proxy/stats",
        ] {
            assert!(is_long_running(&get, &uri(long)), "{long}");
        }
        for short in [
            "/api/v1/namespaces/a/configmaps",
            "/api/v1/namespaces/a/configmaps?watch=false",
            "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dwatch",
            "/api/v1/namespaces/watch/configmaps",
            "/api/v1/namespaces/a/configmaps/watch",
            "/api/v1/namespaces/a/configmaps/proxy",
            "/api/v1/namespaces/proxy",
            "/apis/watch/v1/things",
            "/api/v1/namespaces/a/pods/p/log",
            "/version",
            "/apis",
        ] {
            assert!(!is_long_running(&get, &uri(short)), "{short}");
        }
        assert!(!is_long_running(
            &Method::POST,
            &uri("/api/v1/namespaces/a/configmaps")
        ));
    }

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn retry_after_is_seconds_defaulted_and_clamped() {
        assert_eq!(retry_after(&headers(Some("3"))), Duration::from_secs(3));
        assert_eq!(retry_after(&headers(Some(" 7 "))), Duration::from_secs(7));
        assert_eq!(retry_after(&headers(None)), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(&headers(Some("soon"))), DEFAULT_RETRY_AFTER);
        assert_eq!(
            retry_after(&headers(Some("Wed, 21 Oct 2015 07:28:00 GMT"))),
            DEFAULT_RETRY_AFTER
        );
        assert_eq!(retry_after(&headers(Some("0"))), Duration::from_secs(1));
        assert_eq!(retry_after(&headers(Some("-4"))), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(&headers(Some("3600"))), MAX_RETRY_AFTER);
        assert_eq!(
            retry_after(&headers(Some(&u64::MAX.to_string()))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn only_429_and_503_with_retry_after_throttle() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        assert_eq!(
            throttle_delay(s(429), &headers(Some("2"))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            throttle_delay(s(429), &headers(None)),
            Some(DEFAULT_RETRY_AFTER)
        );
        assert_eq!(
            throttle_delay(s(503), &headers(Some("5"))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(throttle_delay(s(503), &headers(None)), None);
        for code in [200, 201, 404, 409, 500, 504] {
            assert_eq!(throttle_delay(s(code), &headers(Some("1"))), None, "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gate_wait_is_the_time_left_until_it_opens() {
        let now = Instant::now();
        assert_eq!(gate_wait(None, now), None);
        assert_eq!(gate_wait(Some(now), now), None);
        assert_eq!(gate_wait(Some(now - Duration::from_secs(1)), now), None);
        assert_eq!(
            gate_wait(Some(now + Duration::from_millis(1500)), now),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn aimd_halves_once_per_round_trip_and_grows_back_additively() {
        let mut a = Aimd::new(nz(32));
        assert_eq!((a.limit(), a.max()), (32, 32));
        // Ten requests sent in epoch 0 all come back throttled: one halving.
        let sent = a.epoch();
        let decreases = (0..10).filter(|_| a.on_throttled(sent)).count();
        assert_eq!(decreases, 1);
        assert_eq!(a.limit(), 16);
        // A request sent after that decrease halves again.
        assert!(a.on_throttled(a.epoch()));
        assert_eq!(a.limit(), 8);
        for _ in 0..10 {
            let e = a.epoch();
            a.on_throttled(e);
        }
        assert_eq!(a.limit(), 1, "never below 1");
        // Growth: by 1/limit per success, i.e. about one per `limit` successes.
        a.on_success();
        assert_eq!(a.limit(), 2);
        a.on_success();
        a.on_success();
        assert_eq!(a.limit(), 2, "2.5, then 2.9");
        a.on_success();
        assert_eq!(a.limit(), 3);
        for _ in 0..10_000 {
            a.on_success();
        }
        assert_eq!(a.limit(), 32, "capped at the maximum");
    }

    #[test]
    fn aimd_with_maximum_one_stays_at_one() {
        let mut a = Aimd::new(nz(1));
        a.on_success();
        assert_eq!(a.limit(), 1);
        a.on_throttled(0);
        assert_eq!(a.limit(), 1);
    }

    // --- the service, over a scripted inner service, in paused time ---

    use std::sync::atomic::AtomicBool;

    type Reply = Result<Response<Body>, BoxError>;
    type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;
    type Handler = Arc<dyn Fn(&Request<Body>) -> ReplyFuture + Send + Sync>;

    /// An inner service whose replies a test scripts per request.
    #[derive(Clone)]
    struct Script {
        handler: Handler,
    }

    impl Service<Request<Body>> for Script {
        type Response = Response<Body>;
        type Error = BoxError;
        type Future = ReplyFuture;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            (self.handler)(&request)
        }
    }

    fn status(code: u16, retry_after: Option<&str>) -> Response<Body> {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        if let Some(v) = retry_after {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, v.parse().unwrap());
        }
        r
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    fn service(
        options: ClientOptions,
        handler: impl Fn(&Request<Body>) -> ReplyFuture + Send + Sync + 'static,
    ) -> (ClientService<Script>, ClientHealth) {
        let health = ClientHealth::new(options);
        let svc = ClientLayer::new(health.clone()).layer(Script {
            handler: Arc::new(handler),
        });
        (svc, health)
    }

    async fn call(svc: &ClientService<Script>, request: Request<Body>) -> Result<u16, BoxError> {
        let mut svc = svc.clone();
        let response = svc.ready().await?.call(request).await?;
        Ok(response.status().as_u16())
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_every_request_until_retry_after_and_is_sent_again() {
        let throttled = Arc::new(AtomicBool::new(false));
        let sent_at = Arc::new(Mutex::new(Vec::new()));
        let (svc, health) = service(ClientOptions::default(), {
            let throttled = throttled.clone();
            let sent_at = sent_at.clone();
            move |req| {
                lock(&sent_at).push((req.uri().path().to_owned(), Instant::now()));
                let first = req.uri().path() == "/a" && !throttled.swap(true, Ordering::SeqCst);
                Box::pin(async move {
                    Ok(if first {
                        status(429, Some("2"))
                    } else {
                        status(200, None)
                    })
                })
            }
        });
        let start = Instant::now();
        assert_eq!(call(&svc, get("/a")).await.unwrap(), 200);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A later request during a new throttle waits too, watches included.
        health.on_throttled(StatusCode::TOO_MANY_REQUESTS, Duration::from_secs(3), None);
        let t = Instant::now();
        assert_eq!(call(&svc, get("/w?watch=true")).await.unwrap(), 200);
        assert_eq!(t.elapsed(), Duration::from_secs(3));
        let sent = lock(&sent_at).clone();
        assert_eq!(
            sent.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["/a", "/a", "/w"]
        );
        assert_eq!(sent[1].1 - sent[0].1, Duration::from_secs(2));
        let stats = health.stats();
        assert_eq!((stats.requests, stats.throttled, stats.retries), (3, 2, 1));
        assert_eq!(stats.gate_wait, Duration::from_secs(5));
        assert_eq!(stats.concurrency_limit, 16, "halved by the 429");
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_requests_reach_the_caller_after_the_retries() {
        let options = ClientOptions {
            max_throttle_retries: 2,
            ..ClientOptions::default()
        };
        let (svc, health) = service(options, |_| Box::pin(async { Ok(status(429, None)) }));
        let start = Instant::now();
        assert_eq!(call(&svc, get("/a")).await.unwrap(), 429);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!((health.stats().requests, health.stats().retries), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_limit_is_in_flight_and_watches_do_not_count() {
        let options = ClientOptions::default().with_max_concurrent_requests(nz(2));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (svc, health) = service(options, {
            let in_flight = in_flight.clone();
            let peak = peak.clone();
            move |req| {
                let watch = req.uri().query() == Some("watch=true");
                let in_flight = in_flight.clone();
                let peak = peak.clone();
                Box::pin(async move {
                    if watch {
                        // Held open "forever" (longer than the test).
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return Ok(status(200, None));
                    }
                    let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    Ok(status(200, None))
                })
            }
        });
        let mut watches = Vec::new();
        for _ in 0..5 {
            let svc = svc.clone();
            watches.push(tokio::spawn(async move {
                call(&svc, get("/w?watch=true")).await
            }));
        }
        tokio::task::yield_now().await;
        let start = Instant::now();
        let writes: Vec<_> = (0..6)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move { call(&svc, get("/a")).await })
            })
            .collect();
        for w in writes {
            assert_eq!(w.await.unwrap().unwrap(), 200);
        }
        // Six requests, two at a time, 100 ms each.
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        let stats = health.stats();
        assert_eq!((stats.peak_in_flight, stats.in_flight), (2, 0));
        assert_eq!(stats.long_running, 5);
        for w in &watches {
            assert!(!w.is_finished());
        }
        for w in watches {
            w.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lowered_limit_admits_fewer_and_successes_raise_it_again() {
        let options = ClientOptions::default().with_max_concurrent_requests(nz(4));
        let (svc, health) = service(options, |_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(status(200, None))
            })
        });
        // Two halvings (each from a request sent after the previous one): 4 -> 2 -> 1.
        for _ in 0..2 {
            let slot = health.acquire().await;
            health.on_throttled(
                StatusCode::TOO_MANY_REQUESTS,
                Duration::ZERO,
                Some(slot.epoch),
            );
        }
        assert_eq!(health.stats().concurrency_limit, 1);
        let t = Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move { call(&svc, get("/a")).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        // The first alone; its success grows the limit to 2, so the other two run together.
        assert_eq!(t.elapsed(), Duration::from_millis(20));
        for _ in 0..20 {
            call(&svc, get("/a")).await.unwrap();
        }
        assert_eq!(health.stats().concurrency_limit, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn transport_errors_and_timeouts_make_the_cluster_unreachable_until_it_answers() {
        let down = Arc::new(AtomicBool::new(true));
        let options = ClientOptions::default()
            .with_label("provider")
            .with_request_timeout(Duration::from_secs(5));
        let (svc, health) = service(options, {
            let down = down.clone();
            move |req| {
                let down = down.load(Ordering::SeqCst);
                let hang = req.uri().path() == "/hang";
                Box::pin(async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    if down {
                        Err(BoxError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionRefused,
                            "Connection refused",
                        )))
                    } else {
                        Ok(status(404, None))
                    }
                })
            }
        });
        let mut rx = health.subscribe();
        assert!(health.is_reachable());
        assert!(!rx.has_changed().unwrap());

        let e = call(&svc, get("/a")).await.unwrap_err();
        assert_eq!(e.to_string(), "Connection refused");
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update(),
            Reachability::Unreachable {
                error: "Connection refused".into()
            }
        );
        assert_eq!(health.last_error().as_deref(), Some("Connection refused"));
        // A second failure is no transition.
        call(&svc, get("/a")).await.unwrap_err();
        assert!(!rx.has_changed().unwrap());

        down.store(false, Ordering::SeqCst);
        assert_eq!(call(&svc, get("/a")).await.unwrap(), 404);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Reachability::Reachable);
        assert!(health.is_reachable());
        assert_eq!(health.last_error().as_deref(), Some("Connection refused"));

        let start = Instant::now();
        let e = call(&svc, get("/hang")).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(
            e.to_string(),
            "no response from the provider API server within 5s to GET /hang"
        );
        assert!(!health.is_reachable());
        assert_eq!(health.stats().transport_errors, 3);
        assert_eq!(
            health.stats().in_flight,
            0,
            "slots are given back on errors"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watches_get_no_deadline() {
        let options = ClientOptions::default().with_request_timeout(Duration::from_secs(1));
        let (svc, _health) = service(options, |_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(status(200, None))
            })
        });
        assert_eq!(call(&svc, get("/w?watch=true")).await.unwrap(), 200);
        assert!(call(&svc, get("/a")).await.is_err());
    }

    #[test]
    fn errors_are_described_with_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "tcp connect error",
        ));
        assert_eq!(
            describe_error(&e),
            "client error (Connect): tcp connect error"
        );
    }
}
