//! Carries out the CRD storage replacements a write asked for on the running server (see
//! [`crate::crd_storage`]): after the switch delay, with the teardown of the old storage later.
//! Kept apart from the decisions because it needs the shared state (the options and, for a
//! delayed switch, the store lock), which sits above the verbs that make the decisions.

use std::sync::Arc;
use std::time::Duration;

use crate::crd_storage::swap;
use crate::resources::ResourceRef;
use crate::shared::Shared;
use crate::store::Store;

fn tear_down(old: ResourceRef, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(storage) = &old.storage {
            storage.destroy();
        }
    });
}

/// Carries out the storage replacements the last write asked for ([`Store::crd_updates`]): at
/// once without a switch delay (the new storage serves every later request), otherwise after
/// it. Each replaced storage is torn down after the teardown delay.
pub fn schedule(shared: &Arc<Shared>, store: &mut Store) {
    if store.crd_updates.is_empty() {
        return;
    }
    let switch = shared.options.crd_storage_switch_delay;
    let teardown = shared.options.crd_storage_teardown_delay;
    for crd in std::mem::take(&mut store.crd_updates) {
        if switch.is_zero() {
            if let Some(old) = swap(store, &crd) {
                tear_down(old, teardown);
            }
            continue;
        }
        let shared = Arc::downgrade(shared);
        tokio::spawn(async move {
            tokio::time::sleep(switch).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let old = match shared.store.write() {
                Ok(mut store) => swap(&mut store, &crd),
                Err(_) => None,
            };
            if let Some(old) = old {
                tear_down(old, teardown);
            }
        });
    }
}
