//! A real Kubernetes control plane for tests: etcd, kube-apiserver and (when its binary is there)
//! kube-controller-manager as child processes, like controller-runtime's envtest.
//!
//! The in-memory `test-apiserver` is fast and observable, but only the real server tells whether
//! the konnector is right about authentication, RBAC, garbage collection, namespace deletion,
//! compaction (`410 Gone`) or an API server that restarts. This crate starts one in a few
//! seconds, hands out admin and ServiceAccount identities, reads the audit log (who wrote what),
//! and makes sure that no server outlives the test process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_control_plane::{Binaries, ControlPlane, Options};
//! if let Err(reason) = Binaries::find() {
//!     eprintln!("real control plane not found: {reason}");
//!     return Ok(());
//! }
//! let cp = ControlPlane::start(Options::default().name("app")).await?;
//! let client = cp.admin_client().await?;
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

mod audit;
mod binaries;
mod control_plane;
mod identity;
mod pki;
mod process;

pub use audit::AuditEvent;
pub use binaries::{Binaries, NotFound};
pub use control_plane::{ControlPlane, Options};

/// What can go wrong while starting, stopping or talking to a control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries are not there; tests usually skip on this.
    #[error("real control plane not found: {0}")]
    NotFound(#[from] NotFound),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating the PKI failed.
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// A request to the API server failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A server exited or did not become ready in time; the message holds the log tails.
    #[error("{0}")]
    Start(String),
    /// Anything else (a malformed audit log line, an option that cannot work, ...).
    #[error("{0}")]
    Other(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

pub(crate) fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}
