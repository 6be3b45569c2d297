//! Leader election of the konnector (reference 9.2, decision L1): the Lease logic lives in
//! [`sync_engine::runtime::lease`]; this replica's identity is decided here.

pub use sync_engine::runtime::lease::{LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, run};

use k8s_openapi::jiff::Timestamp;

/// This replica's identity: `POD_NAME`, or a random non-negative number as in the reference.
pub fn identity(pod_name: Option<String>) -> String {
    match pod_name.filter(|n| !n.is_empty()) {
        Some(name) => name,
        None => {
            // A process-unique value without a random-number dependency: time and pid mixed.
            let nanos = Timestamp::now().as_nanosecond();
            let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
            ((mixed % i32::MAX as u64) as i32).to_string()
        }
    }
}
