//! The code that talks to clusters: shared watches, work queues, the executor of planned
//! writes, and the syncers that tie them to the planning functions.

pub mod cache;
pub mod claim_sync;
pub mod cluster;
pub mod contain;
pub mod events;
pub mod exec;
pub mod expectations;
pub mod export_sync;
pub mod leadership;
pub mod lease;
pub mod named;
pub mod provider_view;
pub mod queue;
pub mod session;
pub mod status_writer;
pub mod watch;

pub use cluster::Cluster;
pub use export_sync::{Clusters, ExportSyncConfig, ExportSyncer};
pub use watch::{Scope, SharedWatch, WatchHub};
