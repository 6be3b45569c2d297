//! Which cluster plays which role in which konnector mode.
//!
//! - [`ModeFlags::validate`] turns the control-plane flags into a [`Mode`] (reference §1.3).
//! - [`kubeconfig`] loads configurations from the local environment or from Secret bytes and
//!   builds clients (user agent `konnector`).
//! - [`Topology::connect`] performs the startup of reference §3 and hands out one
//!   [`ClusterHandle`] per role; Secret-sourced kubeconfigs are watched ([`rotation`]) and their
//!   handles swapped when the credentials change, keeping the last good client on bad input.
//! - [`client_layer`]: every client goes through a tower layer that bounds concurrent requests
//!   (adaptively), honours `Retry-After`, puts a deadline on requests and tracks reachability
//!   in a [`ClientHealth`] shared by all clients of one cluster.
//! - [`EndpointId`] identifies a provider endpoint + namespace without exposing credentials, so
//!   that bindings pointing at the same provider share one session.

pub mod client_layer;
pub mod flags;
pub mod fleet;
pub mod handle;
pub mod identity;
pub mod kubeconfig;
pub mod rotation;
pub mod topology;

pub use client_layer::{
    ClientHealth, ClientLayer, ClientOptions, ClientStats, Reachability, RequestTimeout,
    WeakClientHealth,
};
pub use flags::{FlagError, Mode, ModeFlags, SecretKeyRef};
pub use handle::{ClusterConnection, ClusterHandle, Role};
pub use identity::{ContentDigest, EndpointId};
pub use kubeconfig::{
    ClientError, KubeconfigError, LocalConfig, LocalConfigError, LocalSource, NamespaceRequirement,
    ParsedKubeconfig, build_client, build_client_with_health, build_layered_client,
    build_unlayered_client, load_local, parse_kubeconfig,
};
pub use rotation::{
    CredentialEvent, CredentialUpdater, CredentialWatch, RejectReason, SecretKubeconfigError,
    connect_kubeconfig, connect_kubeconfig_with_health, fetch_secret_kubeconfig, spawn_watch,
    watch_secret_kubeconfig,
};
pub use topology::{
    NamespaceScope, ProviderConnection, ProviderEndpoint, StartupError, Topology, TopologyOptions,
    connect_control_plane,
};
