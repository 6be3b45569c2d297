//! Whether this replica may write (decision L1).
//!
//! Every replica runs the whole engine, so its caches stay warm; only while it leads do its
//! workers plan and write. A worker waits at the gate *before* planning, so a new leader plans
//! on its current caches, never on a plan made while it was following; and the executor checks
//! again before every single write, so a replica that loses the lease mid-reconcile stops at
//! once.

use std::time::Instant;

use tokio::sync::watch;

/// Until when this replica may write: the time of its last successful lease renewal plus the
/// renew deadline (well before the lease could expire and another replica take it), or `None`
/// while it does not hold the lease.
pub type LeaseDeadline = Option<Instant>;

#[derive(Debug, Clone)]
enum Source {
    Flag(watch::Receiver<bool>),
    Deadline(watch::Receiver<LeaseDeadline>),
}

/// A cloneable view of this replica's leadership.
#[derive(Debug, Clone)]
pub struct Leadership {
    source: Source,
    // Keeps the channel open for `always`.
    _tx: Option<std::sync::Arc<watch::Sender<bool>>>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::always()
    }
}

impl Leadership {
    /// Always leading: for embedders without leader election, and for tests.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Leadership {
            source: Source::Flag(rx),
            _tx: Some(std::sync::Arc::new(tx)),
        }
    }

    /// Follows `rx` (true while this replica holds the lease).
    pub fn from_receiver(rx: watch::Receiver<bool>) -> Self {
        Leadership {
            source: Source::Flag(rx),
            _tx: None,
        }
    }

    /// Follows the lease deadlines an elector publishes. Leadership ends when the deadline
    /// passes even if nobody updates the channel: a process that was stopped (SIGSTOP, a long
    /// GC-like pause, a frozen VM) and resumes after its lease expired must not write a single
    /// request before it renewed, whichever of its tasks runs first.
    pub fn from_deadlines(rx: watch::Receiver<LeaseDeadline>) -> Self {
        Leadership {
            source: Source::Deadline(rx),
            _tx: None,
        }
    }

    /// Whether this replica leads now.
    pub fn is_leading(&self) -> bool {
        match &self.source {
            Source::Flag(rx) => *rx.borrow(),
            Source::Deadline(rx) => valid(&rx.borrow()),
        }
    }

    /// Waits until this replica leads (at once if it does). If the sender is gone (the
    /// process is shutting down), waits forever: nothing may be written any more.
    pub async fn leading(&self) {
        let ended = match &self.source {
            Source::Flag(rx) => rx.clone().wait_for(|l| *l).await.is_err(),
            Source::Deadline(rx) => rx.clone().wait_for(valid).await.is_err(),
        };
        if ended {
            std::future::pending::<()>().await;
        }
    }
}

fn valid(deadline: &LeaseDeadline) -> bool {
    deadline.is_some_and(|t| Instant::now() < t)
}

/// A write was refused because this replica does not lead.
#[derive(Debug, thiserror::Error)]
#[error("not the leader: write withheld")]
pub struct NotLeader;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gate_opens_with_leadership() {
        assert!(Leadership::always().is_leading());
        let (tx, rx) = watch::channel(false);
        let l = Leadership::from_receiver(rx);
        assert!(!l.is_leading());
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.leading().await }
        });
        tx.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(l.is_leading());
    }

    #[tokio::test]
    async fn a_passed_deadline_ends_leadership_without_any_update() {
        let (tx, rx) = watch::channel(None);
        let l = Leadership::from_deadlines(rx);
        assert!(!l.is_leading());
        tx.send_replace(Some(Instant::now() + std::time::Duration::from_millis(50)));
        assert!(l.is_leading());
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(
            !l.is_leading(),
            "the deadline passed: no writes until renewed"
        );
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.leading().await }
        });
        tx.send_replace(Some(Instant::now() + std::time::Duration::from_secs(10)));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
