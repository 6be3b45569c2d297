//! SIGTERM/SIGINT handling as in the reference (`SetupSignalContext`): the first signal asks
//! for a graceful shutdown, a second one exits at once.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Exit code when a second signal forces the exit.
const FORCED_EXIT_CODE: i32 = 1;

/// Resolves the shutdown futures handed out by [`Shutdown::requested`].
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A future that resolves once shutdown was requested (at once if it already was).
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // An error means the sender is gone, which only happens when the process ends.
            let _ = rx.wait_for(|requested| *requested).await;
        }
    }
}

/// Installs the handlers. Must be called inside the runtime, before any long startup step, so
/// that a signal during startup is a clean shutdown too.
pub fn install() -> std::io::Result<Shutdown> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = |is_term: bool| if is_term { "SIGTERM" } else { "SIGINT" };
        let first = tokio::select! {
            _ = term.recv() => true,
            _ = int.recv() => false,
        };
        tracing::info!(signal = name(first), "shutting down");
        let _ = tx.send(true);
        let second = tokio::select! {
            _ = term.recv() => true,
            _ = int.recv() => false,
        };
        tracing::warn!(signal = name(second), "second signal, exiting immediately");
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(Shutdown { rx })
}
