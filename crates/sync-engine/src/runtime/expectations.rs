//! Expectations: what the cache should show after our own writes.
//!
//! After a write, the cache shows the old version of the object for a moment. Planning on that
//! stale copy would repeat the write (an extra request, or a create that races its own watch
//! event), so reconciles wait until the cache shows anything but the version the write was
//! planned on. Versions are only compared for equality, never ordered, and an expectation
//! expires so that a lost event cannot stall an object.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::exec::Outcome;
use crate::plan::{Side, Write};

/// `(side, namespace, name)` of a written object.
pub type ObjectId = (Side, Option<String>, String);

/// How long an unmet expectation holds an object back.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Expectation {
    /// resourceVersion the plan saw (`None`: the object did not exist).
    stale: Option<String>,
    until: Instant,
}

/// The expectations of one syncer.
#[derive(Debug, Default)]
pub struct Expectations(Mutex<HashMap<ObjectId, Expectation>>);

impl Expectations {
    /// If the cache (showing `cached_rv`) still has the version a recent write of `id` was
    /// planned on, how long to wait for it to catch up.
    pub fn still_stale(&self, id: &ObjectId, cached_rv: Option<&str>) -> Option<Duration> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get(id)?;
        let now = Instant::now();
        if e.stale.as_deref() == cached_rv && now < e.until {
            return Some(e.until - now);
        }
        map.remove(id);
        None
    }

    /// Records that `write`, planned on `planned_on`, had `outcome`.
    pub fn record(&self, write: &Write, planned_on: Option<String>, outcome: &Outcome) {
        let Outcome::Done(new_rv) = outcome else {
            return;
        };
        if new_rv.is_some() && *new_rv == planned_on {
            return; // A no-op write: the cache will not change.
        }
        let key = write.object_key();
        let (ns, name) = match key.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, key),
        };
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            (write.side, ns, name),
            Expectation {
                stale: planned_on,
                until: Instant::now() + TIMEOUT,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Op, Target};

    fn write() -> Write {
        Write {
            side: Side::Provider,
            target: Target::Synced,
            op: Op::Delete {
                namespace: Some("ns".into()),
                name: "x".into(),
                uid: None,
            },
            reason: "test",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stale_until_the_cache_changes_or_the_timeout() {
        let e = Expectations::default();
        let id = (Side::Provider, Some("ns".to_string()), "x".to_string());
        e.record(&write(), Some("1".into()), &Outcome::Done(Some("2".into())));
        assert!(e.still_stale(&id, Some("1")).is_some());
        assert!(e.still_stale(&id, Some("2")).is_none(), "cache caught up");
        assert!(
            e.still_stale(&id, Some("1")).is_none(),
            "expectation consumed"
        );
        e.record(&write(), None, &Outcome::Done(Some("3".into())));
        assert!(
            e.still_stale(&id, None).is_some(),
            "created object not in the cache yet"
        );
        tokio::time::advance(TIMEOUT).await;
        assert!(e.still_stale(&id, None).is_none(), "expired");
        e.record(&write(), Some("4".into()), &Outcome::Done(Some("4".into())));
        assert!(
            e.still_stale(&id, Some("4")).is_none(),
            "no-op writes set no expectation"
        );
        e.record(&write(), Some("4".into()), &Outcome::Moot);
        assert!(e.still_stale(&id, Some("4")).is_none());
    }
}
