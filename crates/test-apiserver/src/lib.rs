//! An in-memory Kubernetes API server that speaks the real HTTP protocol, for tests, demos and
//! benchmarks.
//!
//! It follows the real kube-apiserver's semantics where controllers depend on them
//! (resourceVersion, watch with bookmarks and `410 Gone`, status subresource, generation,
//! finalizers, owner-reference garbage collection, namespace termination, server-side apply,
//! CRD validation/pruning/defaulting, RBAC), so that a test passing here means something on a
//! real cluster. CEL validation rules (`x-kubernetes-validations`) are not evaluated. See the
//! crate's README for the full list of what is faithful and what is skipped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use test_apiserver::{Options, TestApiServer};
//! let server = TestApiServer::start(Options::default()).await?;
//! let kubeconfig_yaml = server.kubeconfig("admin");
//! # Ok(()) }
//! ```

mod api;
mod crd_storage;
mod error;
mod events;
mod gc;
mod http;
mod protobuf;
mod rbac;
mod resources;
mod sem;
pub mod semantics;
mod server;
mod store;
mod table;
mod tls;
mod watch;

pub use error::{ApiError, Cause, Details};
pub use server::{ADMIN, Fault, Options, RecordedRequest, StartError, TestApiServer, User};
