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
//! This module holds the decisions over the store (which storage a CRD describes, whether an
//! update replaces it, the replacement itself); [`crate::crd_switch`] carries them out on the
//! running server, with the delays.
//!
//! [`Options::crd_storage_switch_delay`]: crate::Options
//! [`Options::crd_storage_teardown_delay`]: crate::Options

use std::sync::Arc;

use serde_json::Value;

use crate::resources::{CrdStorage, ResourceDef, ResourceRef};
use crate::store::Store;

/// The storage (resource definition with its lifetime) a stored CRD describes.
pub fn build(crd: &Value) -> Result<ResourceDef, String> {
    let mut def = crate::resources::from_crd(crd)?;
    def.storage = Some(Arc::new(CrdStorage::new(crd)));
    Ok(def)
}

/// Whether a CRD update from `old` to `new` replaces the storage.
pub fn changes_storage(old: &Value, new: &Value) -> bool {
    CrdStorage::source(old) != CrdStorage::source(new)
}

/// Replaces the storage of `crd`'s resource by one built from `crd`; returns the old storage to
/// tear down. Nothing happens if the CRD is gone (or was recreated), if the current storage was
/// built from a newer CRD, or if it already has this spec and these names.
pub fn swap(store: &mut Store, crd: &Value) -> Option<ResourceRef> {
    let new = build(crd).ok()?;
    let current = store.resources.get(&new.key())?.clone();
    let (cur, next) = (current.storage.as_ref()?, new.storage.as_ref()?);
    if cur.crd_uid != next.crd_uid || cur.crd_rv >= next.crd_rv || cur.source == next.source {
        return None;
    }
    store.register(new);
    Some(current)
}
