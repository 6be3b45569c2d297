//! Custom resource storages, as the real apiextensions-apiserver's crdHandler keeps them.
//!
//! Every custom resource is served by the *storage* of its CRD: a snapshot of the CRD's spec (the
//! [`ResourceDef`] in [`Store::resources`], with its schemas) that prunes, defaults and validates
//! writes and reads every stored object back through its schema. Objects are stored as written;
//! what a request or a watch returns depends on the storage that serves it.
//!
//! A CRD update that changes `spec` or `status.acceptedNames` replaces the storage, like the
//! crdHandler's CRD informer does: after [`Options::crd_storage_switch_delay`] (the informer's
//! lag; 0 by default) new requests get a storage built from the new spec, and the old one is torn
//! down [`Options::crd_storage_teardown_delay`] later (1 s by default), which ends every watch
//! opened on it cleanly. Until then those watches keep delivering events read through the old
//! schema. Other CRD updates (metadata, status) keep the storage.
//!
//! [`Options::crd_storage_switch_delay`]: crate::Options
//! [`Options::crd_storage_teardown_delay`]: crate::Options

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::resources::{ResourceDef, ResourceRef};
use crate::server::Shared;
use crate::store::Store;

/// The identity and lifetime of one custom resource storage.
#[derive(Debug)]
pub struct CrdStorage {
    /// The uid of the CRD it serves.
    pub crd_uid: String,
    /// The resourceVersion of the CRD it was built from.
    pub crd_rv: u64,
    /// `spec` and `status.acceptedNames` of that CRD: a change of either replaces the storage.
    source: Value,
    /// Set to `true` when the storage is torn down.
    destroyed: watch::Sender<bool>,
}

impl CrdStorage {
    fn new(crd: &Value) -> Self {
        let (destroyed, _) = watch::channel(false);
        Self {
            crd_uid: crd
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            crd_rv: crd
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|rv| rv.parse().ok())
                .unwrap_or_default(),
            source: source(crd),
            destroyed,
        }
    }

    /// Tears the storage down: every watch opened on it ends.
    pub fn destroy(&self) {
        self.destroyed.send_replace(true);
    }

    /// Resolves when the storage is torn down (at once if it already is).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.destroyed.subscribe()
    }
}

/// What a change of replaces a CRD's storage: its `spec` and `status.acceptedNames`.
pub fn source(crd: &Value) -> Value {
    json!({
        "spec": crd.get("spec").cloned().unwrap_or(Value::Null),
        "acceptedNames": crd.pointer("/status/acceptedNames").cloned().unwrap_or(Value::Null),
    })
}

/// The storage (resource definition with its lifetime) a stored CRD describes.
pub fn build(crd: &Value) -> Result<ResourceDef, String> {
    let mut def = crate::resources::from_crd(crd)?;
    def.storage = Some(Arc::new(CrdStorage::new(crd)));
    Ok(def)
}

/// Whether a CRD update from `old` to `new` replaces the storage.
pub fn changes_storage(old: &Value, new: &Value) -> bool {
    source(old) != source(new)
}

/// Replaces the storage of `crd`'s resource by one built from `crd`; returns the old storage to
/// tear down. Nothing happens if the CRD is gone (or was recreated), if the current storage was
/// built from a newer CRD, or if it already has this spec and these names.
fn swap(store: &mut Store, crd: &Value) -> Option<ResourceRef> {
    let new = build(crd).ok()?;
    let current = store.resources.get(&new.key())?.clone();
    let (cur, next) = (current.storage.as_ref()?, new.storage.as_ref()?);
    if cur.crd_uid != next.crd_uid || cur.crd_rv >= next.crd_rv || cur.source == next.source {
        return None;
    }
    store.register(new);
    Some(current)
}

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
