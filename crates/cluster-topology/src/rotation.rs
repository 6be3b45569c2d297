//! Kubeconfigs that live in a Secret: the one-off read at startup and the watch that swaps the
//! client when the Secret's content changes (credential rotation without restart).
//!
//! Exactly one Secret is watched per source: a namespaced watch with the field selector
//! `metadata.name=<name>`, never a cluster-wide Secret watch (least privilege). A new kubeconfig
//! is used only after it parses, yields a client and that client reaches its API server; until
//! then the last good client keeps serving and the problem is published as a
//! [`CredentialEvent::Rejected`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client_layer::{ClientHealth, ClientOptions};
use crate::flags::SecretKeyRef;
use crate::handle::{ClusterConnection, ClusterHandle, Role};
use crate::identity::ContentDigest;
use crate::kubeconfig::{
    KubeconfigError, NamespaceRequirement, build_client, build_client_with_health, parse_kubeconfig,
};

/// How long the reachability check of a new kubeconfig may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// First and largest delay between reachability re-checks of a new, not yet reachable kubeconfig.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What happened to a Secret-sourced kubeconfig; later layers turn these into conditions, log
/// lines, events and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialEvent {
    /// A new kubeconfig was verified and its client now serves `role`.
    Reloaded {
        /// The role whose client was swapped.
        role: Role,
        /// The Secret it came from.
        secret: SecretKeyRef,
        /// Generation of the new connection.
        generation: u64,
        /// When the swap happened.
        at: DateTime<Utc>,
    },
    /// The Secret's current content cannot be used; the last good client keeps serving.
    Rejected {
        /// The role whose client was kept.
        role: Role,
        /// The Secret.
        secret: SecretKeyRef,
        /// Why.
        reason: RejectReason,
    },
}

/// Why a Secret's kubeconfig was not taken into use. Never contains credential material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The Secret does not exist (any more).
    #[error("secret not found")]
    SecretNotFound,
    /// The data key is absent.
    #[error("secret does not contain key {0}")]
    MissingKey(String),
    /// The kubeconfig does not parse or is incomplete.
    #[error("invalid kubeconfig: {0}")]
    Invalid(KubeconfigError),
    /// No client can be built from it (e.g. an unusable client certificate).
    #[error("{0}")]
    Client(String),
    /// The new client cannot reach its API server (checked with `GET /version`).
    #[error("cannot reach the API server {server}: {reason}")]
    Unreachable {
        /// Server URL.
        server: String,
        /// The error.
        reason: String,
    },
}

impl RejectReason {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::SecretNotFound => "secret_not_found",
            Self::MissingKey(_) => "missing_key",
            Self::Invalid(_) => "invalid_kubeconfig",
            Self::Client(_) => "client",
            Self::Unreachable { .. } => "unreachable",
        }
    }
}

/// Why a Secret-sourced kubeconfig could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKubeconfigError {
    /// The GET failed; `reason` is the API server's message (e.g. `secrets "x" not found`).
    #[error("failed to fetch kubeconfig secret {secret}: {reason}")]
    Fetch {
        /// The Secret.
        secret: SecretKeyRef,
        /// The error.
        reason: String,
        /// Whether the API server said NotFound.
        not_found: bool,
    },
    /// The data key is absent.
    #[error("secret {secret} does not contain key {key}", key = secret.key)]
    MissingKey {
        /// The Secret.
        secret: SecretKeyRef,
    },
    /// The kubeconfig cannot be used.
    #[error("{0}")]
    Invalid(KubeconfigError),
    /// No client can be built.
    #[error("{0}")]
    Client(String),
}

/// The message the API server gave (`secrets "x" not found`), or the transport error with its
/// causes (`... tcp connect error: Connection refused`), which kube's Display alone omits.
pub(crate) fn describe_kube_error(e: &kube::Error) -> String {
    if let kube::Error::Api(status) = e
        && !status.message.is_empty()
    {
        return status.message.clone();
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// One GET of the Secret; returns the bytes under its key.
pub async fn fetch_secret_kubeconfig(
    reader: &kube::Client,
    secret: &SecretKeyRef,
) -> Result<Vec<u8>, SecretKubeconfigError> {
    let api: Api<Secret> = Api::namespaced(reader.clone(), &secret.namespace);
    let object = api
        .get(&secret.name)
        .await
        .map_err(|e| SecretKubeconfigError::Fetch {
            secret: secret.clone(),
            reason: describe_kube_error(&e),
            not_found: matches!(&e, kube::Error::Api(s) if s.code == 404),
        })?;
    secret_value(&object, &secret.key).ok_or_else(|| SecretKubeconfigError::MissingKey {
        secret: secret.clone(),
    })
}

/// `data[key]`, falling back to `stringData[key]` (which real API servers never return, but
/// hand-built objects may carry).
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
}

/// Parses kubeconfig bytes (a Secret's value) and builds a connection whose client has a
/// health of its own; no network access, but must run inside a tokio runtime (the client spawns
/// its connection pool).
pub fn connect_kubeconfig(
    bytes: &[u8],
    requirement: NamespaceRequirement,
) -> Result<ClusterConnection, SecretKubeconfigError> {
    let parsed = parse_kubeconfig(bytes, requirement).map_err(SecretKubeconfigError::Invalid)?;
    let client = build_client(parsed.config.clone())
        .map_err(|e| SecretKubeconfigError::Client(e.to_string()))?;
    Ok(ClusterConnection::new(
        client,
        parsed.config,
        parsed.namespace,
        parsed.digest,
    ))
}

/// [`connect_kubeconfig`], with a client that reports to (and is throttled with) `health`.
pub fn connect_kubeconfig_with_health(
    bytes: &[u8],
    requirement: NamespaceRequirement,
    health: &ClientHealth,
) -> Result<ClusterConnection, SecretKubeconfigError> {
    let parsed = parse_kubeconfig(bytes, requirement).map_err(SecretKubeconfigError::Invalid)?;
    let client = build_client_with_health(parsed.config.clone(), health)
        .map_err(|e| SecretKubeconfigError::Client(e.to_string()))?;
    Ok(ClusterConnection::new(
        client,
        parsed.config,
        parsed.namespace,
        parsed.digest,
    ))
}

/// Keeps a Secret watch running; dropping it stops the watch (the handle keeps serving the last
/// connection).
pub struct CredentialWatch {
    task: JoinHandle<()>,
}

impl CredentialWatch {
    /// Whether the watch task has ended (it only ends when aborted).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for CredentialWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for CredentialWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialWatch")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

/// Reads the Secret once, builds the first connection and starts watching the Secret.
///
/// This is the building block for every Secret-sourced kubeconfig: the app cluster kubeconfig in
/// control-plane mode and provider kubeconfigs in default mode. The handle's clients (the first
/// and every rotated one) share one [`ClientHealth`] with `client` options.
pub async fn watch_secret_kubeconfig(
    reader: kube::Client,
    secret: SecretKeyRef,
    role: Role,
    requirement: NamespaceRequirement,
    events: broadcast::Sender<CredentialEvent>,
    client: &ClientOptions,
) -> Result<(ClusterHandle, CredentialWatch), SecretKubeconfigError> {
    let bytes = fetch_secret_kubeconfig(&reader, &secret).await?;
    let health = ClientHealth::new(client.clone());
    let connection = connect_kubeconfig_with_health(&bytes, requirement, &health)?;
    let handle = ClusterHandle::with_health(role, connection, health);
    let watch = spawn_watch(reader, &handle, secret, requirement, events);
    Ok((handle, watch))
}

/// Starts watching `secret` (read with `reader`) and swapping `handle` on changes.
pub fn spawn_watch(
    reader: kube::Client,
    handle: &ClusterHandle,
    secret: SecretKeyRef,
    requirement: NamespaceRequirement,
    events: broadcast::Sender<CredentialEvent>,
) -> CredentialWatch {
    let updater = CredentialUpdater::new(handle, secret, requirement, events);
    CredentialWatch {
        task: tokio::spawn(run(reader, updater)),
    }
}

/// The state of the Secret as last judged, so that re-lists and metadata-only updates neither
/// swap nor re-report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    Missing,
    MissingKey,
    Content(ContentDigest),
}

/// A new connection that parsed but did not yet reach its server.
struct Pending {
    connection: ClusterConnection,
    retry_at: Instant,
    delay: Duration,
}

/// Judges observed states of one kubeconfig Secret and swaps a [`ClusterHandle`] when the
/// content changes to something usable.
///
/// [`watch_secret_kubeconfig`] drives one from its own single-Secret watch; a caller that
/// already watches the Secret (e.g. through a shared informer) can drive one directly with
/// [`CredentialUpdater::observe`] and [`CredentialUpdater::retry`].
pub struct CredentialUpdater {
    secret: SecretKeyRef,
    role: Role,
    requirement: NamespaceRequirement,
    tx: Arc<watch::Sender<Arc<ClusterConnection>>>,
    /// The handle's health, which the client swapped in must report to.
    health: ClientHealth,
    events: broadcast::Sender<CredentialEvent>,
    last: Option<Observed>,
    pending: Option<Pending>,
}

impl CredentialUpdater {
    /// An updater for `handle`, whose content came from `secret`. Events are published on
    /// `events` (and returned by the methods).
    pub fn new(
        handle: &ClusterHandle,
        secret: SecretKeyRef,
        requirement: NamespaceRequirement,
        events: broadcast::Sender<CredentialEvent>,
    ) -> Self {
        let tx = handle.sender();
        let last = tx.borrow().digest().map(Observed::Content);
        Self {
            secret,
            role: handle.role(),
            requirement,
            tx,
            health: handle.health(),
            events,
            last,
            pending: None,
        }
    }

    /// Takes in the Secret as it is now (`None`: it does not exist). Swaps the handle if the
    /// kubeconfig changed and the new one parses, builds and reaches its server; otherwise keeps
    /// the current connection and reports why. Unchanged content does nothing.
    pub async fn observe(&mut self, secret: Option<&Secret>) -> Option<CredentialEvent> {
        let (observed, bytes) = match secret {
            None => (Observed::Missing, None),
            Some(s) => match secret_value(s, &self.secret.key) {
                None => (Observed::MissingKey, None),
                Some(b) => (Observed::Content(ContentDigest::of(&b)), Some(b)),
            },
        };
        if self.last == Some(observed) {
            return None;
        }
        self.last = Some(observed);
        self.pending = None;
        let Some(bytes) = bytes else {
            return Some(self.reject(if observed == Observed::Missing {
                RejectReason::SecretNotFound
            } else {
                RejectReason::MissingKey(self.secret.key.clone())
            }));
        };
        if self.tx.borrow().digest() == Some(ContentDigest::of(&bytes)) {
            // Back to the content already in use (e.g. a bad edit was reverted).
            return None;
        }
        // Verified with a client of its own: a new kubeconfig that cannot reach its server
        // must not mark the cluster unreachable while the current client works.
        let connection = match connect_kubeconfig(&bytes, self.requirement) {
            Ok(c) => c,
            Err(SecretKubeconfigError::Invalid(e)) => {
                return Some(self.reject(RejectReason::Invalid(e)));
            }
            Err(e) => return Some(self.reject(RejectReason::Client(e.to_string()))),
        };
        match verify(&connection).await {
            Ok(()) => Some(self.swap(connection)),
            Err(reason) => {
                self.pending = Some(Pending {
                    connection,
                    retry_at: Instant::now() + RETRY_MIN,
                    delay: RETRY_MIN,
                });
                Some(self.reject(reason))
            }
        }
    }

    /// When a new kubeconfig that could not reach its server should be checked again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.retry_at)
    }

    /// Checks the pending kubeconfig again (see [`Self::next_retry`]); swaps when it now works.
    /// Repeated failures back off (up to a minute) and are not reported again.
    pub async fn retry(&mut self) -> Option<CredentialEvent> {
        let mut p = self.pending.take()?;
        match verify(&p.connection).await {
            Ok(()) => Some(self.swap(p.connection)),
            Err(reason) => {
                tracing::debug!(role = %self.role, secret = %self.secret, reason = %reason, "new kubeconfig still not usable");
                p.delay = (p.delay * 2).min(RETRY_MAX);
                p.retry_at = Instant::now() + p.delay;
                self.pending = Some(p);
                None
            }
        }
    }

    fn reject(&self, reason: RejectReason) -> CredentialEvent {
        tracing::warn!(
            role = %self.role,
            secret = %self.secret,
            reason = %reason,
            "kubeconfig secret rejected; keeping the last good kubeconfig"
        );
        let event = CredentialEvent::Rejected {
            role: self.role,
            secret: self.secret.clone(),
            reason,
        };
        let _ = self.events.send(event.clone());
        event
    }

    fn swap(&self, connection: ClusterConnection) -> CredentialEvent {
        let generation = self.tx.borrow().generation() + 1;
        // The verified client becomes one that shares the handle's health (limit, gate,
        // reachability). Building from a configuration that built once does not fail; if it
        // did, the verified client still works, only outside the shared limit.
        let connection = match build_client_with_health(connection.config().clone(), &self.health) {
            Ok(client) => connection.with_client(client),
            Err(e) => {
                tracing::warn!(role = %self.role, secret = %self.secret, error = %e, "cannot attach the new client to the cluster's shared limits; using it without");
                connection
            }
        };
        let connection = connection.with_generation(generation);
        tracing::info!(
            role = %self.role,
            secret = %self.secret,
            server = %connection.server(),
            generation,
            "kubeconfig secret changed; now using the new credentials"
        );
        self.tx.send_replace(Arc::new(connection));
        let event = CredentialEvent::Reloaded {
            role: self.role,
            secret: self.secret.clone(),
            generation,
            at: Utc::now(),
        };
        let _ = self.events.send(event.clone());
        event
    }
}

impl fmt::Debug for CredentialUpdater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialUpdater")
            .field("secret", &self.secret)
            .field("role", &self.role)
            .field("last", &self.last)
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

/// The watch task: a namespaced, name-selected watch of exactly one Secret feeding an updater.
async fn run(reader: kube::Client, mut updater: CredentialUpdater) {
    let api: Api<Secret> = Api::namespaced(reader, &updater.secret.namespace);
    let mut stream = watcher::watch_object(api, &updater.secret.name)
        .default_backoff()
        .boxed();
    loop {
        let retry_at = updater.next_retry();
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(secret)) => {
                    updater.observe(secret.as_ref()).await;
                }
                Some(Err(e)) => {
                    // The watcher re-lists with backoff; the current client keeps serving.
                    tracing::warn!(role = %updater.role, secret = %updater.secret, error = %e, "watching kubeconfig secret failed; retrying");
                }
                // A watcher stream never ends on its own; stop quietly if it does.
                None => return,
            },
            () = sleep_until(retry_at), if retry_at.is_some() => {
                updater.retry().await;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Checks that the new client reaches its API server and is accepted (`GET /version`).
async fn verify(connection: &ClusterConnection) -> Result<(), RejectReason> {
    let unreachable = |reason: String| RejectReason::Unreachable {
        server: connection.server(),
        reason,
    };
    match tokio::time::timeout(VERIFY_TIMEOUT, connection.client().apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(describe_kube_error(&e))),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            VERIFY_TIMEOUT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_reasons_have_stable_labels_and_texts() {
        assert_eq!(
            RejectReason::SecretNotFound.metric_label(),
            "secret_not_found"
        );
        assert_eq!(
            RejectReason::MissingKey("kubeconfig".into()).to_string(),
            "secret does not contain key kubeconfig"
        );
        assert_eq!(
            RejectReason::Invalid(KubeconfigError::ContextNotFound("x".into())).to_string(),
            "invalid kubeconfig: current context \"x\" not found"
        );
    }

    #[test]
    fn missing_key_message_matches_the_reference() {
        let e = SecretKubeconfigError::MissingKey {
            secret: SecretKeyRef::new("ns", "app", "kubeconfig"),
        };
        assert_eq!(
            e.to_string(),
            "secret ns/app does not contain key kubeconfig"
        );
    }

    #[test]
    fn secret_value_prefers_data_then_string_data() {
        let mut s = Secret::default();
        assert_eq!(secret_value(&s, "k"), None);
        s.string_data = Some([("k".to_owned(), "text".to_owned())].into());
        assert_eq!(secret_value(&s, "k"), Some(b"text".to_vec()));
        s.data = Some([("k".to_owned(), k8s_openapi::ByteString(b"bytes".to_vec()))].into());
        assert_eq!(secret_value(&s, "k"), Some(b"bytes".to_vec()));
    }
}
