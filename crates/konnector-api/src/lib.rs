//! API types of `klutch.anynines.com/v1alpha1`, the condition algorithm and the well-known strings
//! that the konnector shares with the reference (Go) konnector and the Klutch backend.
//!
//! This crate does no I/O: it is the vocabulary every other layer speaks.

pub mod conditions;
pub mod crds;
pub mod events;
pub mod strings;
pub mod v1alpha1;
