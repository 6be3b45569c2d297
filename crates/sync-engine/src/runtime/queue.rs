//! A work queue with the semantics controllers rely on (client-go's rate-limited queue): keys
//! coalesce while waiting, a key is never processed by two workers at once (a key added while
//! it is processed is queued again when processing ends), failed keys come back with per-key
//! exponential backoff with jitter, and delayed re-adds are supported.
//!
//! Unlike client-go, the backoff depends on why a key failed ([`RetryClass`]): a conflict is
//! retried within milliseconds, a server that is down or throttling within seconds (and at once
//! when it is back, [`WorkQueue::retry_transient_now`]), and an object the server rejects (too
//! large, invalid) slowly, so a broken object neither spins nor waits 16 minutes after a fix.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a key failed, which decides how soon it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryClass {
    /// Someone else wrote first (409): the next attempt works from a fresher cache.
    Conflict,
    /// The server is unreachable, overloaded or failing (transport errors, 429, 5xx): retried
    /// within seconds, and at once when the cluster is reachable again.
    Transient,
    /// The server rejected the request (400, 403, 413, 422, ...): retrying only helps after
    /// someone fixes the object or the permissions, so it backs off to minutes.
    Rejected,
    /// Anything else (a planning error, a contained panic).
    Other,
}

impl RetryClass {
    /// `(first delay, cap)` of the exponential backoff.
    pub fn bounds(self) -> (Duration, Duration) {
        match self {
            RetryClass::Conflict => (Duration::from_millis(5), Duration::from_secs(1)),
            // The cap keeps recovery after an outage within seconds even without a
            // reachability signal (the reference's per-object backoff made objects wait up to
            // 30 s after the server was back).
            RetryClass::Transient => (Duration::from_millis(200), Duration::from_secs(10)),
            RetryClass::Rejected => (Duration::from_secs(1), Duration::from_secs(300)),
            RetryClass::Other => (Duration::from_millis(100), Duration::from_secs(300)),
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryClass::Conflict => "conflict",
            RetryClass::Transient => "transient",
            RetryClass::Rejected => "rejected",
            RetryClass::Other => "other",
        }
    }

    /// Classifies an API error.
    pub fn of(err: &kube::Error) -> Self {
        match err {
            kube::Error::Api(s) => match s.code {
                409 => RetryClass::Conflict,
                429 | 500..=599 => RetryClass::Transient,
                400..=499 => RetryClass::Rejected,
                _ => RetryClass::Other,
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => RetryClass::Transient,
            _ => RetryClass::Other,
        }
    }
}

/// The delay before retry number `failures` (0-based) of `class`, scaled by `jitter` in
/// `[0, 1)` to between 80 % and 120 % so that objects that failed together do not retry in
/// lockstep.
pub fn backoff_delay(class: RetryClass, failures: u32, jitter: f64) -> Duration {
    let (base, cap) = class.bounds();
    let exp = base
        .checked_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    exp.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// A cheap pseudo-random number in `[0, 1)`; jitter needs no cryptographic quality.
fn jitter_unit(seed: u64) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seed);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    failures: HashMap<K, (u32, RetryClass)>,
    delayed: BTreeMap<(Instant, u64), K>,
    seq: u64,
    shutdown: bool,
}

/// A cloneable handle to one queue.
pub struct WorkQueue<K> {
    state: Arc<Mutex<State<K>>>,
    notify: Arc<Notify>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            notify: self.notify.clone(),
        }
    }
}

impl<K> std::fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue").finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash + Ord> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
                delayed: BTreeMap::new(),
                seq: 0,
                shutdown: false,
            })),
            notify: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A panic while holding this lock cannot leave the state inconsistent (every method
        // updates it in one step), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` now (coalesced with a queued copy).
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.shutdown {
            return;
        }
        if s.processing.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut s = self.lock();
        if s.shutdown {
            return;
        }
        s.seq += 1;
        let seq = s.seq;
        s.delayed.insert((Instant::now() + delay, seq), key);
        drop(s);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Queues `key` again after its next backoff delay for an unclassified failure.
    pub fn add_rate_limited(&self, key: K) -> Duration {
        self.retry(key, RetryClass::Other, None)
    }

    /// Queues `key` again after its next backoff delay for a failure of `class`, and not before
    /// `not_before` (a server's `Retry-After`). Returns the delay.
    pub fn retry(&self, key: K, class: RetryClass, not_before: Option<Duration>) -> Duration {
        let delay = {
            let mut s = self.lock();
            s.seq += 1;
            let seed = s.seq;
            let entry = s.failures.entry(key.clone()).or_insert((0, class));
            if entry.1 != class {
                *entry = (0, class);
            }
            let delay = backoff_delay(class, entry.0, jitter_unit(seed));
            entry.0 = entry.0.saturating_add(1);
            delay.max(not_before.unwrap_or_default())
        };
        self.add_after(key, delay);
        delay
    }

    /// Retries at once every key waiting out a [`RetryClass::Transient`] backoff, and resets
    /// their backoff: the cluster they failed on is reachable again. Returns how many.
    pub fn retry_transient_now(&self) -> usize {
        let mut s = self.lock();
        let due: Vec<(Instant, u64)> = s
            .delayed
            .iter()
            .filter(|(_, k)| {
                s.failures
                    .get(*k)
                    .is_some_and(|(_, c)| *c == RetryClass::Transient)
            })
            .map(|(at, _)| *at)
            .collect();
        let mut moved = HashSet::new();
        for at in due {
            if let Some(key) = s.delayed.remove(&at) {
                s.failures.remove(&key);
                moved.insert(key.clone());
                if s.processing.contains(&key) {
                    s.dirty.insert(key);
                } else if s.queued.insert(key.clone()) {
                    s.ready.push_back(key);
                }
            }
        }
        drop(s);
        if !moved.is_empty() {
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
        moved.len()
    }

    /// How many times `key` has failed in a row.
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures.get(key).map_or(0, |(n, _)| *n)
    }

    /// Resets the backoff of `key` after a success.
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// Marks `key` as processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.clone()) {
            s.ready.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Number of keys waiting (ready or delayed).
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.delayed.len()
    }

    /// Whether no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the queue: `next` returns `None` from now on.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// The next key to process, waiting for one; `None` after [`shutdown`](Self::shutdown).
    /// The caller must call [`done`](Self::done) with it afterwards.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            let wake_at = {
                let mut s = self.lock();
                if s.shutdown {
                    return None;
                }
                let now = Instant::now();
                while let Some(entry) = s.delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    if s.processing.contains(&key) {
                        s.dirty.insert(key);
                    } else if s.queued.insert(key.clone()) {
                        s.ready.push_back(key);
                    }
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    return Some(key);
                }
                s.delayed.keys().next().map(|(at, _)| *at)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_coalesce_and_are_never_handed_out_twice() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.next().await.unwrap();
        assert_eq!(a, "a");
        q.add("a"); // while processing: remembered, not handed out
        assert_eq!(q.next().await, Some("b"));
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.next().await, Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_and_backoff() {
        let q = WorkQueue::new();
        q.add_after("late", Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(q.next().await, Some("late"));
        assert!(start.elapsed() >= Duration::from_secs(5));
        q.done(&"late");
        let within = |d: Duration, nominal_ms: u64| {
            let n = Duration::from_millis(nominal_ms);
            d >= n.mul_f64(0.8) && d <= n.mul_f64(1.2)
        };
        assert!(within(q.retry("late", RetryClass::Conflict, None), 5));
        assert_eq!(q.next().await, Some("late"));
        q.done(&"late");
        assert!(within(q.retry("late", RetryClass::Conflict, None), 10));
        q.forget(&"late");
        assert_eq!(q.next().await, Some("late"));
        q.done(&"late");
        assert!(within(q.retry("late", RetryClass::Conflict, None), 5));
        // Another class starts its own backoff.
        assert_eq!(q.next().await, Some("late"));
        q.done(&"late");
        assert!(within(q.retry("late", RetryClass::Transient, None), 200));
        for _ in 0..40 {
            q.retry("x", RetryClass::Rejected, None);
        }
        assert!(within(q.retry("x", RetryClass::Rejected, None), 300_000));
        // Retry-After wins over a shorter backoff.
        assert_eq!(
            q.retry("y", RetryClass::Transient, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for class in [
            RetryClass::Conflict,
            RetryClass::Transient,
            RetryClass::Rejected,
            RetryClass::Other,
        ] {
            let (base, cap) = class.bounds();
            assert_eq!(backoff_delay(class, 0, 0.5), base);
            assert_eq!(backoff_delay(class, 1, 0.5), base * 2);
            assert_eq!(backoff_delay(class, 60, 0.5), cap);
            assert_eq!(backoff_delay(class, 60, 0.0), cap.mul_f64(0.8));
            assert_eq!(backoff_delay(class, 60, 1.0), cap.mul_f64(1.2));
        }
        let spread: std::collections::BTreeSet<u64> =
            (0..50).map(|i| (jitter_unit(i) * 1000.0) as u64).collect();
        assert!(spread.len() > 40, "jitter is not spread: {spread:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_retry_at_once_when_the_cluster_is_back() {
        let q = WorkQueue::new();
        for _ in 0..6 {
            q.retry("down", RetryClass::Transient, None);
        }
        q.retry("rejected", RetryClass::Rejected, None);
        assert_eq!(q.retry_transient_now(), 1);
        let start = Instant::now();
        assert_eq!(q.next().await, Some("down"));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(q.failures(&"down"), 0);
        assert_eq!(q.failures(&"rejected"), 1);
        q.done(&"down");
        assert_eq!(q.len(), 1, "the rejected key keeps waiting");
    }

    #[tokio::test]
    async fn shutdown_ends_waiting_workers() {
        let q: WorkQueue<&str> = WorkQueue::new();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.shutdown();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
