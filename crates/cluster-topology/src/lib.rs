//! Which cluster plays which role in which konnector mode.
//!
//! - [`ModeFlags::validate`] turns the control-plane flags into a [`Mode`] (reference §1.3).
//! - [`kubeconfig`] loads configurations from the local environment or from Secret bytes and
//!   builds clients (user agent `konnector`).
//! - [`Topology::connect`] performs the startup of reference §3 and hands out one
//!   [`ClusterHandle`] per role; Secret-sourced kubeconfigs are watched ([`rotation`]) and their
//!   handles swapped when the credentials change, keeping the last good client on bad input.
//! - [`EndpointId`] identifies a provider endpoint + namespace without exposing credentials, so
//!   that bindings pointing at the same provider share one session.

pub mod flags;
pub mod handle;
pub mod identity;
pub mod kubeconfig;
pub mod rotation;
pub mod topology;

pub use flags::{FlagError, Mode, ModeFlags, SecretKeyRef};
pub use handle::{ClusterConnection, ClusterHandle, Role};
pub use identity::{ContentDigest, EndpointId};
pub use kubeconfig::{
    ClientError, KubeconfigError, LocalConfig, LocalConfigError, LocalSource, NamespaceRequirement,
    ParsedKubeconfig, build_client, load_local, parse_kubeconfig,
};
pub use rotation::{
    CredentialEvent, CredentialUpdater, CredentialWatch, RejectReason, SecretKubeconfigError,
    connect_kubeconfig, fetch_secret_kubeconfig, spawn_watch, watch_secret_kubeconfig,
};
pub use topology::{
    NamespaceScope, ProviderConnection, ProviderEndpoint, StartupError, Topology, TopologyOptions,
};
