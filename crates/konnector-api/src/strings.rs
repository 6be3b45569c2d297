//! Every well-known string the konnector shares with the reference konnector, the Klutch backend
//! and `kubectl bind`: annotations, labels, finalizers, field manager, controller names, condition
//! types and reasons (reference sections 7 and 8). Other crates use these constants instead of
//! literals so that a typo cannot silently break wire compatibility.

/// API group of all Klutch binding kinds.
pub const GROUP: &str = "klutch.anynines.com";
/// The only served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of Klutch binding objects.
pub const API_VERSION: &str = "klutch.anynines.com/v1alpha1";
/// Category of every Klutch CRD (`kubectl get kube-bindings`).
pub const CATEGORY: &str = "kube-bindings";

/// Annotations carried by synced objects and provider-side namespaces.
pub mod annotations {
    /// `"true"` on upstream and downstream instances of bound resources: drives adoption (absent)
    /// and the orphan safety net (present, but no downstream counterpart).
    pub const BOUND: &str = "klutch.anynines.com/bound";
    /// Value of [`BOUND`].
    pub const BOUND_TRUE: &str = "true";
    /// On upstream copies of cluster-scoped objects: the provider namespace `P` of their consumer.
    pub const CLUSTER_NAMESPACE: &str = "klutch.anynines.com/cluster-namespace";
    /// `Provider` or `Consumer` on claimed objects on both sides.
    pub const RESOURCE_OWNER: &str = "klutch.anynines.com/resource-owner";
    /// Value of [`RESOURCE_OWNER`] for provider-owned claimed objects.
    pub const RESOURCE_OWNER_PROVIDER: &str = "Provider";
    /// Value of [`RESOURCE_OWNER`] for consumer-owned claimed objects.
    pub const RESOURCE_OWNER_CONSUMER: &str = "Consumer";
    /// Set by the backend on service namespaces: `<P>/<consumer namespace>`.
    pub const API_SERVICE_NAMESPACE: &str = "klutch.anynines.com/api-service-namespace";
    /// Set by the backend on APIServiceExports: hash of the source CRD spec.
    pub const SOURCE_SPEC_HASH: &str = "klutch.anynines.com/source-spec-hash";
    /// Set by the backend on the provider namespace `P`: the user identity.
    pub const BACKEND_IDENTITY: &str = "example-backend.klutch.anynines.com/identity";
    /// Annotation that the `Resources` printer column of APIServiceBinding shows.
    pub const RESOURCES: &str = "bind.klutch.anynines.com/resources";
}

/// Labels used by the konnector's ecosystem.
pub mod labels {
    /// On provider CRDs that may be exported.
    pub const EXPORTED: &str = "klutch.anynines.com/exported";
    /// Back-reference from backend-created objects (control-plane mode) to their AppClusterBinding.
    pub const APP_CLUSTER_BINDING_NAME: &str = "klutch.anynines.com/appclusterbinding-name";
    /// Namespace half of [`APP_CLUSTER_BINDING_NAME`].
    pub const APP_CLUSTER_BINDING_NAMESPACE: &str =
        "klutch.anynines.com/appclusterbinding-namespace";
    /// Selector label of konnector Deployments and pods.
    pub const APP: &str = "app";
    /// Value of [`APP`].
    pub const APP_KONNECTOR: &str = "konnector";
}

/// Finalizers.
pub mod finalizers {
    /// On downstream instances: blocks deletion until the upstream deletion has been issued.
    pub const SYNCER: &str = "klutch.anynines.com/syncer";
    /// On AppClusterBindings (backend).
    pub const APP_CLUSTER_BINDING_CLEANUP: &str = "klutch.anynines.com/appclusterbinding-cleanup";
}

/// Field manager of server-side apply and of every other write (`fieldManager=`).
pub const FIELD_MANAGER: &str = "klutch.anynines.com";
/// User agent suffix of every client the konnector builds.
pub const USER_AGENT: &str = "konnector";
/// Name of the singleton ClusterBinding in the binding root namespace.
pub const CLUSTER_BINDING_NAME: &str = "cluster";
/// Default data key of kubeconfig Secrets (the only one the CRDs accept).
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// Controller names, used in logs and metrics labels exactly as the reference names them.
pub mod controllers {
    /// Top-level binding supervisor.
    pub const KONNECTOR: &str = "klutch-bind-konnector";
    /// `SecretValid` on APIServiceBindings.
    pub const SERVICEBINDING: &str = "klutch-bind-konnector-servicebinding";
    /// Per-provider session.
    pub const CLUSTER: &str = "klutch-bind-konnector-cluster";
    /// ClusterBinding heartbeat.
    pub const CLUSTERBINDING: &str = "klutch-bind-konnector-clusterbinding";
    /// APIServiceNamespace garbage collection.
    pub const NAMESPACEDELETION: &str = "klutch-bind-konnector-namespacedeletion";
    /// CRD installer and `Connected`.
    pub const CLUSTER_SERVICEBINDING: &str = "klutch-bind-konnector-cluster-servicebinding";
    /// Per-export syncer supervisor.
    pub const CLUSTER_SERVICEEXPORT: &str = "klutch-bind-konnector-cluster-serviceexport";
    /// Spec syncer (downstream to upstream).
    pub const CLUSTER_SPEC: &str = "klutch-bind-konnector-cluster-spec";
    /// Status syncer (upstream to downstream).
    pub const CLUSTER_STATUS: &str = "klutch-bind-konnector-cluster-status";
    /// Adoption of upstream-created objects.
    pub const CLUSTER_ADOPT: &str = "klutch-bind-konnector-cluster-adopt";
    /// Claimed resources (for example Secrets).
    pub const CLAIMED_OBJECT: &str = "klutch-bind-konnector-claimed-object";
    /// Provider informer over all service namespaces.
    pub const MULTI_NAMESPACE_INFORMER: &str = "dynamic-multi-namespace-informer";
}

/// Condition types (reference section 7).
pub mod condition_types {
    /// Summary condition, always sorted first.
    pub const READY: &str = "Ready";
    /// APIServiceBinding / ClusterBinding: the kubeconfig Secret is usable.
    pub const SECRET_VALID: &str = "SecretValid";
    /// APIServiceBinding: the provider session's caches synced.
    pub const INFORMERS_SYNCED: &str = "InformersSynced";
    /// APIServiceBinding: the ClusterBinding heartbeat succeeded.
    pub const HEARTBEATING: &str = "Heartbeating";
    /// APIServiceBinding / APIServiceExport: the export and the CRD (or binding) are connected.
    pub const CONNECTED: &str = "Connected";
    /// APIServiceBinding: the consumer CRD matches the export's schema.
    pub const SCHEMA_IN_SYNC: &str = "SchemaInSync";
    /// ClusterBinding: the konnector version parsed.
    pub const VALID_VERSION: &str = "ValidVersion";
    /// ClusterBinding: heartbeat freshness (written by the backend).
    pub const HEALTHY: &str = "Healthy";
    /// APIServiceExport: copy of the binding's `SchemaInSync`.
    pub const CONSUMER_IN_SYNC: &str = "ConsumerInSync";
    /// APIServiceExport: written by the backend.
    pub const PROVIDER_IN_SYNC: &str = "ProviderInSync";
    /// CRD condition copied onto APIServiceExports.
    pub const ESTABLISHED: &str = "Established";
    /// CRD condition copied onto APIServiceExports.
    pub const NAMES_ACCEPTED: &str = "NamesAccepted";
    /// APIServiceExportRequest: exports created by the backend.
    pub const EXPORTS_READY: &str = "ExportsReady";
    /// APIServiceBinding (control-plane mode): the app cluster kubeconfig Secret was accepted;
    /// `False` while a rotated kubeconfig is rejected and the last good one is still in use.
    pub const APP_KUBECONFIG_VALID: &str = "AppKubeconfigValid";
    /// AppClusterBinding: the backend deployed a konnector.
    pub const KONNECTOR_DEPLOYED: &str = "KonnectorDeployed";
}

/// Condition reasons (reference section 7).
pub mod reasons {
    /// `SecretValid=False`: the binding's kubeconfig Secret does not exist.
    pub const KUBECONFIG_SECRET_NOT_FOUND: &str = "KubeconfigSecretNotFound";
    /// `SecretValid=False`: the binding's kubeconfig Secret lacks the key or does not parse.
    pub const KUBECONFIG_SECRET_INVALID: &str = "KubeconfigSecretInvalid";
    /// `SecretValid=False`: the API server refuses the konnector the binding's kubeconfig Secret
    /// (403, 401); the message is the server's. Not in the reference, which sets no condition.
    pub const KUBECONFIG_SECRET_UNREADABLE: &str = "KubeconfigSecretUnreadable";
    /// `InformersSynced=False`: caches did not sync in time.
    pub const INFORMER_SYNC_TIMEOUT: &str = "InformerSyncTimeout";
    /// `Heartbeating=False`: the ClusterBinding status write failed.
    pub const CLUSTER_BINDING_UPDATE_FAILED: &str = "ClusterBindingUpdateFailed";
    /// `Connected=False`: no APIServiceExport of the binding's name.
    pub const API_SERVICE_EXPORT_NOT_FOUND: &str = "APIServiceExportNotFound";
    /// `Connected=False`: the export cannot be turned into a CRD.
    pub const API_SERVICE_EXPORT_INVALID: &str = "APIServiceExportInvalid";
    /// `Connected=False`: the app cluster rejected the new CRD.
    pub const CRD_CREATE_FAILED: &str = "CustomResourceDefinitionCreateFailed";
    /// `Connected=False`: a CRD of that name exists and is not owned by the binding.
    pub const FOREIGN_CRD: &str = "ForeignCustomResourceDefinition";
    /// `Connected=False` (and backend `ProviderInSync=False`): the CRD update was rejected.
    pub const CRD_UPDATE_FAILED: &str = "CustomResourceDefinitionUpdateFailed";
    /// ClusterBinding `SecretValid=False`: the provider-side kubeconfig Secret is missing.
    pub const PROVIDER_SECRET_NOT_FOUND: &str = "ProviderSecretNotFound";
    /// ClusterBinding `SecretValid=False`: the provider-side kubeconfig Secret lacks the key.
    pub const PROVIDER_SECRET_INVALID: &str = "ProviderSecretInvalid";
    /// ClusterBinding `ValidVersion=False`.
    pub const PARSE_ERROR: &str = "ParseError";
    /// Backend `Healthy=False` reasons.
    pub const FIRST_HEARTBEAT_PENDING: &str = "FirstHeartbeatPending";
    /// Backend `Healthy=False`: no interval reported.
    pub const HEARTBEAT_INTERVAL_MISSING: &str = "HeartbeatIntervalMissing";
    /// Backend `Healthy=False`: heartbeat older than twice the interval.
    pub const HEARTBEAT_TIMEOUT: &str = "HeartbeatTimeout";
    /// Backend `Healthy=False`: heartbeat suspiciously recent.
    pub const HEARTBEAT_TIME_DRIFT: &str = "HeartbeatTimeDrift";
    /// APIServiceExport `Connected=False`: no binding of the export's name.
    pub const API_SERVICE_BINDING_NOT_FOUND: &str = "APIServiceBindingNotFound";
    /// APIServiceExport `ConsumerInSync=False` when there is no binding.
    pub const NA: &str = "NA";
    /// APIServiceExport `ConsumerInSync=False` when the binding has no `SchemaInSync`.
    pub const UNKNOWN: &str = "Unknown";
    /// `kubectl bind` initial `Ready=False`.
    pub const PENDING: &str = "Pending";
    /// `SchemaInSync=False`: the consumer CRD's schema differs from the export's.
    pub const SCHEMA_OUT_OF_SYNC: &str = "SchemaOutOfSync";
    /// `SchemaInSync=False`: the consumer CRD is not (yet) Established with the new schema.
    pub const CRD_NOT_ESTABLISHED: &str = "CustomResourceDefinitionNotEstablished";
    /// `AppKubeconfigValid=False`: the rotated app cluster kubeconfig cannot be used.
    pub const APP_KUBECONFIG_REJECTED: &str = "AppKubeconfigRejected";
    /// `Connected=False` after the binding was deleted while its CRD stays installed.
    pub const NO_LONGER_BOUND: &str = "NoLongerBound";
    /// `Connected=False`: the provider cluster's API server cannot be reached (default mode).
    pub const PROVIDER_UNREACHABLE: &str = "ProviderUnreachable";
    /// `Connected=False`: the app cluster's API server cannot be reached (control-plane mode).
    pub const APP_CLUSTER_UNREACHABLE: &str = "AppClusterUnreachable";
    /// `InformersSynced=False`: a watch of a claimed resource is refused (401/403).
    pub const CLAIM_WATCH_FORBIDDEN: &str = "ClaimWatchForbidden";
}

/// Reasons for stopping an export's syncers (log field `reason`).
pub mod stop_reasons {
    /// The APIServiceExport was deleted.
    pub const EXPORT_DELETED: &str = "APIServiceExport deleted";
    /// The consumer CRD is missing.
    pub const NO_CRD: &str = "NoCustomResourceDefinition";
    /// No binding of the export's name.
    pub const NO_BINDING: &str = "NoAPIServiceBinding";
    /// The export's generation changed.
    pub const GENERATION_CHANGED: &str = "GenerationChanged";
}
