//! The `konnector` binary's building blocks, kept in a library so that the decisions (flag
//! normalization, listen addresses, CRD create/update, probe answers) have unit tests while
//! `main.rs` stays a few lines of wiring.

pub mod app;
pub mod cli;
pub mod crd;
pub mod engine;
pub mod health;
pub mod http_server;
pub mod leader;
pub mod logging;
pub mod metrics_server;
pub mod signals;
