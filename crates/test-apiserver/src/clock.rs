//! The server's clock: the timestamps it writes into objects (`creationTimestamp`,
//! `deletionTimestamp`, managed fields). A module of its own so that the semantics adapter and the
//! verbs both use it without depending on each other.

/// RFC 3339 timestamp with seconds precision, as in `metadata.creationTimestamp`.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
