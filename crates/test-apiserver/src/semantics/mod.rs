//! Pure Kubernetes API semantics used by the server: label and field selectors, the three patch
//! formats, CRD structural schemas (validation, pruning, defaulting) and server-side apply with
//! `managedFields`.
//!
//! Everything here works on [`serde_json::Value`] and is free of I/O, locking and async, so each
//! rule can be unit-tested against the behaviour of the real kube-apiserver in isolation.

pub mod cel;
pub mod patch;
pub mod schema;
pub mod selector;
pub mod ssa;
pub mod types;
