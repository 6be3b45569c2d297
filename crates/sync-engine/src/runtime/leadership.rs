//! Whether this replica may write (decision L1).
//!
//! Every replica runs the whole engine, so its caches stay warm; only while it leads do its
//! workers plan and write. A worker waits at the gate *before* planning, so a new leader plans
//! on its current caches, never on a plan made while it was following; and the executor checks
//! again before every single write, so a replica that loses the lease mid-reconcile stops at
//! once.

use tokio::sync::watch;

/// A cloneable view of this replica's leadership.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
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
            rx,
            _tx: Some(std::sync::Arc::new(tx)),
        }
    }

    /// Follows `rx` (true while this replica holds the lease).
    pub fn from_receiver(rx: watch::Receiver<bool>) -> Self {
        Leadership { rx, _tx: None }
    }

    /// Whether this replica leads now.
    pub fn is_leading(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until this replica leads (at once if it does). If the sender is gone (the
    /// process is shutting down), waits forever: nothing may be written any more.
    pub async fn leading(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|l| *l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
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
}
