//! An in-memory Kubernetes API server that speaks the real HTTP protocol, for tests, demos and
//! benchmarks.
//!
//! It follows the real kube-apiserver's semantics where controllers depend on them
//! (resourceVersion, watch with bookmarks and `410 Gone`, status subresource, generation,
//! finalizers, owner-reference garbage collection, namespace termination, server-side apply,
//! CRD validation/pruning/defaulting, RBAC), so that a test passing here means something on a
//! real cluster. CEL validation rules (`x-kubernetes-validations`) are evaluated for a subset of
//! CEL (rules outside it are skipped). See the crate's README for the full list of what is
//! faithful and what is skipped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use test_apiserver::{Options, TestApiServer};
//! let server = TestApiServer::start(Options::default()).await?;
//! let kubeconfig_yaml = server.kubeconfig("admin");
//! # Ok(()) }
//! ```

// Modules in layers, bottom to top: a module uses only modules of lower layers, or of its own
// layer without a cycle (`tests/layers.rs` checks this).
//
// 1. Leaves: errors, pure semantics, wire formats, the clock and the request's identity.
mod builtin;
mod clock;
mod error;
mod events;
mod protobuf;
mod request;
pub mod semantics;
mod tls;
// 2. Resource definitions and the store.
mod resources;
mod store;
// 3. Over the store: the semantics adapter, authentication of issued tokens, authorization, CRD
//    storage decisions.
mod authn;
mod crd_storage;
mod rbac;
mod sem;
// 4. The verbs (no HTTP types), Table output and discovery documents.
mod api;
mod discovery;
mod table;
// 5. State shared by everything that runs on the server.
mod shared;
// 6. What runs on the shared state: watches, the controllers (garbage collector, ClusterRole
//    aggregation), CRD storage switches.
mod aggregation;
mod crd_switch;
mod gc;
mod watch;
// 7. The HTTP front end: decode, authenticate, authorize, dispatch.
mod http;
// 8. The server handle.
mod server;

pub use error::{ApiError, Cause, Details};
pub use request::User;
pub use server::{ADMIN, StartError, TestApiServer};
pub use shared::{Fault, Options, RecordedRequest};
