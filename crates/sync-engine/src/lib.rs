//! The konnector's sync engine.
//!
//! Decisions are pure functions (observed state in, planned writes out) in [`plan`], [`mapping`],
//! [`crd`] and [`version`]; the code that talks to clusters executes those plans and stays thin.

pub mod crd;
pub mod engine;
pub mod fleet;
pub mod mapping;
pub mod metrics;
pub mod objects;
pub mod plan;
pub mod runtime;
pub mod ssa;
pub mod version;
