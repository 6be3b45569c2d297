//! Strings of the Kubernetes Events (`events.k8s.io/v1`) the konnector records: the reporting
//! controller, the event types, and the `reason` and `action` of every event.
//!
//! Reasons are CamelCase like the reasons of Kubernetes' own controllers, because `kubectl
//! describe` and `kubectl get events --field-selector reason=...` show and select them as they
//! are; users write alerts against them, so they are part of the konnector's interface and must
//! not change. The Go konnector records no Events, so there is nothing to be compatible with.

/// `reportingController` of every Event (a qualified name, as the API server requires).
pub const REPORTING_CONTROLLER: &str = "klutch.anynines.com/konnector";
/// `reportingInstance` when neither `POD_NAME` nor `HOSTNAME` is set.
pub const DEFAULT_REPORTING_INSTANCE: &str = "konnector";

/// Event `type` values (the only two the API server accepts).
pub mod types {
    /// Nothing to worry about.
    pub const NORMAL: &str = "Normal";
    /// Something needs a look.
    pub const WARNING: &str = "Warning";
}

/// Event `reason`s: what happened, in one CamelCase word.
pub mod reasons {
    /// Normal, on a binding: its provider session reaches the provider (or the app cluster)
    /// again, or for the first time.
    pub const CONNECTED: &str = "Connected";
    /// Warning, on a binding: the provider or the app cluster is unreachable.
    pub const DISCONNECTED: &str = "Disconnected";
    /// Normal, on a binding: the CRD of the bound API was created in the app cluster.
    pub const CRD_INSTALLED: &str = "CRDInstalled";
    /// Normal, on a binding: the CRD of the bound API was updated from a changed export.
    pub const CRD_UPDATED: &str = "CRDUpdated";
    /// Warning, on a binding: the CRD in the app cluster does not match the export's schema.
    pub const SCHEMA_OUT_OF_SYNC: &str = "SchemaOutOfSync";
    /// Normal, on a binding: a rotated kubeconfig was taken into use.
    pub const CREDENTIAL_RELOADED: &str = "CredentialReloaded";
    /// Warning, on a binding: a rotated kubeconfig cannot be used; the last good one still is.
    pub const CREDENTIAL_REJECTED: &str = "CredentialRejected";
    /// Warning, on a binding: its kubeconfig Secret is missing, unreadable or malformed
    /// (`SecretValid` turned False).
    pub const SECRET_INVALID: &str = "SecretInvalid";
    /// Warning, on the user's object: it cannot be synced; the note carries the API server's
    /// message.
    pub const SYNC_FAILED: &str = "SyncFailed";
    /// Warning: a watch the konnector needs is forbidden (403) or unauthorized (401); it is
    /// retried with a backoff of up to five minutes.
    pub const WATCH_FORBIDDEN: &str = "WatchForbidden";
    /// Normal, on an `AppClusterBinding` (fleet mode): a replica took its app cluster's Lease
    /// and serves it from now on.
    pub const APP_CLUSTER_ACQUIRED: &str = "AppClusterAcquired";
    /// Normal, on an `AppClusterBinding` (fleet mode): a replica stopped serving its app cluster
    /// and released the Lease (handed over, shutting down, or the binding went).
    pub const APP_CLUSTER_RELEASED: &str = "AppClusterReleased";
    /// Warning, on an `AppClusterBinding` (fleet mode): its app cluster cannot be served (its
    /// kubeconfig Secret is missing or unusable); the other app clusters are not affected.
    pub const APP_CLUSTER_UNAVAILABLE: &str = "AppClusterUnavailable";
}

/// Event `action`s: what the konnector was doing when it happened.
pub mod actions {
    /// Talking to a cluster (session start, heartbeat).
    pub const CONNECT: &str = "Connect";
    /// Creating or updating the CRD of a bound API.
    pub const INSTALL_CRD: &str = "InstallCRD";
    /// Taking a rotated kubeconfig into use.
    pub const RELOAD_CREDENTIALS: &str = "ReloadCredentials";
    /// Reading a binding's kubeconfig Secret.
    pub const READ_SECRET: &str = "ReadSecret";
    /// Syncing an object between the clusters.
    pub const SYNC: &str = "Sync";
    /// Listing and watching a resource.
    pub const WATCH: &str = "Watch";
    /// Taking over or handing over an app cluster's Lease (fleet mode).
    pub const SHARD: &str = "Shard";
}
