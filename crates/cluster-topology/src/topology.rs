//! Startup in each mode (reference §3): which connection serves which role, and the provider
//! connections that bindings need.

use std::path::PathBuf;

use tokio::sync::broadcast;

use crate::client_layer::{ClientHealth, ClientOptions};
use crate::flags::{Mode, SecretKeyRef};
use crate::handle::{ClusterConnection, ClusterHandle, Role};
use crate::identity::EndpointId;
use crate::kubeconfig::{
    KubeconfigError, LocalConfigError, NamespaceRequirement, build_client_with_health, load_local,
    parse_kubeconfig,
};
use crate::rotation::{
    CredentialEvent, CredentialWatch, SecretKubeconfigError, connect_kubeconfig_with_health,
    fetch_secret_kubeconfig, spawn_watch, watch_secret_kubeconfig,
};

/// Capacity of the credential event channel; a lagging receiver loses the oldest events.
const EVENT_CAPACITY: usize = 64;

/// What [`Topology::connect`] needs.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// `--kubeconfig` (empty/`None`: `KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The validated mode.
    pub mode: Mode,
    /// How every client behaves towards its API server (`--max-concurrent-requests`, ...), per
    /// cluster; the label is set per cluster (`app`, `binding`, `provider`).
    pub client: ClientOptions,
}

/// A startup failure; the Display texts are what the konnector prints before exiting non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// Default mode: the local configuration cannot be loaded (reported unwrapped).
    #[error("{0}")]
    LoadLocal(LocalConfigError),
    /// Control-plane mode: the control plane configuration cannot be loaded.
    #[error("failed to load control plane kubeconfig: {0}")]
    LoadControlPlane(LocalConfigError),
    /// A client cannot be built from the local configuration.
    #[error("failed to create {role} cluster client: {reason}")]
    LocalClient {
        /// The role of the local configuration.
        role: Role,
        /// Why.
        reason: String,
    },
    /// Control-plane mode: the app kubeconfig Secret cannot be read.
    #[error("failed to fetch app cluster kubeconfig secret {secret}: {reason}")]
    FetchAppSecret {
        /// The Secret.
        secret: SecretKeyRef,
        /// The API server's message, e.g. `secrets "x" not found`.
        reason: String,
    },
    /// Control-plane mode: the Secret lacks the key.
    #[error("secret {secret} does not contain key {key}", key = secret.key)]
    MissingAppSecretKey {
        /// The Secret.
        secret: SecretKeyRef,
    },
    /// Control-plane mode: the app kubeconfig cannot be used.
    #[error("failed to parse app cluster kubeconfig: {0}")]
    ParseAppKubeconfig(String),
    /// Fleet mode has no single app cluster (connect with [`connect_control_plane`]).
    #[error("fleet mode serves many app clusters, not one")]
    Fleet,
}

/// Connects to the control plane (the local configuration: `--kubeconfig`, `KUBECONFIG`,
/// `~/.kube/config` or in-cluster), as control-plane and fleet mode do. Its clients report to a
/// health labelled `binding`.
pub fn connect_control_plane(
    kubeconfig: Option<&std::path::Path>,
    client: &ClientOptions,
) -> Result<ClusterHandle, StartupError> {
    let local = load_local(kubeconfig).map_err(StartupError::LoadControlPlane)?;
    let health = ClientHealth::new(client.clone().with_label("binding"));
    let built = build_client_with_health(local.config.clone(), &health).map_err(|e| {
        StartupError::LocalClient {
            role: Role::Binding,
            reason: e.to_string(),
        }
    })?;
    Ok(ClusterHandle::with_health(
        Role::Binding,
        ClusterConnection::new(built, local.config, local.namespace, None),
        health,
    ))
}

/// Namespace scope of the binding-cluster watches (APIServiceBindings, their Secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// All namespaces (default mode).
    All,
    /// Only this namespace (control-plane mode: `--binding-root-namespace`).
    Namespace(String),
}

impl NamespaceScope {
    /// The namespace, or `None` for all namespaces.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::Namespace(ns) => Some(ns),
        }
    }
}

/// The clusters of a running konnector and the roles they play.
///
/// Dropping it stops the credential watch of the app cluster (control-plane mode); handles that
/// are still held keep serving their last connection.
#[derive(Debug)]
pub struct Topology {
    mode: Mode,
    /// The binding root namespace in control-plane mode; `None` in default mode.
    root: Option<String>,
    binding: ClusterHandle,
    app: ClusterHandle,
    events: broadcast::Sender<CredentialEvent>,
    client: ClientOptions,
    _app_watch: Option<CredentialWatch>,
}

impl Topology {
    /// Loads the configuration of `options.mode` and builds the clients. In control-plane mode
    /// this reads the app kubeconfig Secret once and starts watching it; nothing is written.
    pub async fn connect(options: TopologyOptions) -> Result<Self, StartupError> {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        match &options.mode {
            Mode::Fleet { .. } => Err(StartupError::Fleet),
            Mode::Default => {
                let local =
                    load_local(options.kubeconfig.as_deref()).map_err(StartupError::LoadLocal)?;
                // One cluster in both roles: one health, labelled as the app cluster it is.
                let health = ClientHealth::new(options.client.clone().with_label("app"));
                let client =
                    build_client_with_health(local.config.clone(), &health).map_err(|e| {
                        StartupError::LocalClient {
                            role: Role::Binding,
                            reason: e.to_string(),
                        }
                    })?;
                let binding = ClusterHandle::with_health(
                    Role::Binding,
                    ClusterConnection::new(client, local.config, local.namespace, None),
                    health,
                );
                let app = binding.for_role(Role::App);
                tracing::info!(
                    source = ?local.source,
                    server = %binding.current().server(),
                    "default mode: the local cluster is the binding and the app cluster"
                );
                Ok(Self {
                    mode: options.mode,
                    root: None,
                    binding,
                    app,
                    events,
                    client: options.client,
                    _app_watch: None,
                })
            }
            Mode::ControlPlane {
                app_kubeconfig_secret,
                binding_root_namespace,
            } => {
                // The control plane serves the binding role and (as `binding` in the engine)
                // the provider role.
                let binding =
                    connect_control_plane(options.kubeconfig.as_deref(), &options.client)?;
                let client = binding.client();
                let secret = app_kubeconfig_secret.clone();
                let bytes = fetch_secret_kubeconfig(&client, &secret)
                    .await
                    .map_err(|e| startup_secret_error(&secret, e))?;
                let app_health = ClientHealth::new(options.client.clone().with_label("app"));
                let connection = connect_kubeconfig_with_health(
                    &bytes,
                    NamespaceRequirement::Optional,
                    &app_health,
                )
                .map_err(|e| startup_secret_error(&secret, e))?;
                let app = ClusterHandle::with_health(Role::App, connection, app_health);
                tracing::info!(
                    control_plane = %binding.current().server(),
                    app = %app.current().server(),
                    secret = %secret,
                    "control-plane mode: app cluster kubeconfig read from secret"
                );
                let watch = spawn_watch(
                    client,
                    &app,
                    secret,
                    NamespaceRequirement::Optional,
                    events.clone(),
                );
                Ok(Self {
                    root: Some(binding_root_namespace.clone()),
                    mode: options.mode,
                    binding,
                    app,
                    events,
                    client: options.client,
                    _app_watch: Some(watch),
                })
            }
        }
    }

    /// The mode.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The client options every cluster's clients follow (without a label), for clients built
    /// later (e.g. the engine's provider clients in default mode).
    pub fn client_options(&self) -> &ClientOptions {
        &self.client
    }

    /// The binding cluster (default mode: the app cluster; control-plane mode: the control
    /// plane).
    pub fn binding(&self) -> &ClusterHandle {
        &self.binding
    }

    /// The app cluster (swapped on credential rotation in control-plane mode).
    pub fn app(&self) -> &ClusterHandle {
        &self.app
    }

    /// `--binding-root-namespace` in control-plane mode; `None` in default mode, where it is
    /// the provider namespace of each binding's kubeconfig.
    pub fn binding_root_namespace(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// Where binding-cluster watches look: all namespaces in default mode, only the binding root
    /// namespace in control-plane mode.
    pub fn binding_watch_scope(&self) -> NamespaceScope {
        match self.binding_root_namespace() {
            None => NamespaceScope::All,
            Some(ns) => NamespaceScope::Namespace(ns.to_owned()),
        }
    }

    /// Receives every credential event from now on (app cluster in control-plane mode, and the
    /// provider watches started with [`Topology::provider`]).
    pub fn credential_events(&self) -> broadcast::Receiver<CredentialEvent> {
        self.events.subscribe()
    }

    /// The provider endpoint a binding's kubeconfig (the bytes of its Secret) designates, without
    /// any I/O: for sharing one provider session per endpoint + namespace (decisions K6).
    ///
    /// Default mode: parsed from the kubeconfig, whose context must name the provider namespace.
    /// Control-plane mode: the control plane itself in the binding root namespace; the kubeconfig
    /// is only checked to parse (the reference uses it solely as a cache key).
    pub fn provider_endpoint(
        &self,
        kubeconfig: &[u8],
    ) -> Result<ProviderEndpoint, KubeconfigError> {
        match &self.root {
            None => {
                let parsed = parse_kubeconfig(kubeconfig, NamespaceRequirement::Required)?;
                let namespace = parsed.namespace.clone().unwrap_or_default();
                Ok(ProviderEndpoint {
                    id: parsed.endpoint(&namespace),
                    namespace,
                })
            }
            Some(binding_root_namespace) => {
                parse_kubeconfig(kubeconfig, NamespaceRequirement::Optional)?;
                Ok(ProviderEndpoint {
                    id: self.binding.current().endpoint(binding_root_namespace),
                    namespace: binding_root_namespace.clone(),
                })
            }
        }
    }

    /// Connects to the provider of a binding whose kubeconfig is `secret` (in the binding
    /// cluster).
    ///
    /// Default mode: reads the Secret, builds a client from it and watches that one Secret, so
    /// that the returned handle follows credential rotation; events go to
    /// [`Topology::credential_events`]. Control-plane mode: the provider is the control plane
    /// (the binding handle) in the binding root namespace; the Secret is not read.
    pub async fn provider(
        &self,
        secret: &SecretKeyRef,
    ) -> Result<ProviderConnection, SecretKubeconfigError> {
        match &self.root {
            None => {
                let (handle, watch) = watch_secret_kubeconfig(
                    self.binding.client(),
                    secret.clone(),
                    Role::Provider,
                    NamespaceRequirement::Required,
                    self.events.clone(),
                    &self.client.clone().with_label(format!("provider:{secret}")),
                )
                .await?;
                Ok(ProviderConnection {
                    handle,
                    fixed_namespace: None,
                    _watch: Some(watch),
                })
            }
            Some(binding_root_namespace) => Ok(ProviderConnection {
                handle: self.binding.for_role(Role::Provider),
                fixed_namespace: Some(binding_root_namespace.clone()),
                _watch: None,
            }),
        }
    }
}

fn startup_secret_error(secret: &SecretKeyRef, e: SecretKubeconfigError) -> StartupError {
    match e {
        SecretKubeconfigError::Fetch { reason, .. } => StartupError::FetchAppSecret {
            secret: secret.clone(),
            reason,
        },
        SecretKubeconfigError::MissingKey { .. } => StartupError::MissingAppSecretKey {
            secret: secret.clone(),
        },
        SecretKubeconfigError::Invalid(e) => StartupError::ParseAppKubeconfig(e.to_string()),
        SecretKubeconfigError::Client(e) => StartupError::ParseAppKubeconfig(e),
    }
}

/// A provider endpoint and namespace, as a session key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderEndpoint {
    /// Identity of server + trust + credentials + namespace.
    pub id: EndpointId,
    /// The provider namespace `P` (also the binding root namespace on the provider).
    pub namespace: String,
}

/// A live provider connection. Dropping it stops the Secret watch behind it (default mode).
#[derive(Debug)]
pub struct ProviderConnection {
    handle: ClusterHandle,
    fixed_namespace: Option<String>,
    _watch: Option<CredentialWatch>,
}

impl ProviderConnection {
    /// The handle serving the provider role.
    pub fn handle(&self) -> &ClusterHandle {
        &self.handle
    }

    /// The provider namespace `P` of the current connection.
    pub fn namespace(&self) -> String {
        match &self.fixed_namespace {
            Some(ns) => ns.clone(),
            None => self
                .handle
                .current()
                .namespace()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The endpoint identity of the current connection.
    pub fn endpoint(&self) -> ProviderEndpoint {
        let namespace = self.namespace();
        ProviderEndpoint {
            id: self.handle.current().endpoint(&namespace),
            namespace,
        }
    }
}
