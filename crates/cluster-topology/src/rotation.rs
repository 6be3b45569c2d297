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

use crate::flags::SecretKeyRef;
use crate::handle::{ClusterConnection, ClusterHandle, Role};
use crate::identity::ContentDigest;
use crate::kubeconfig::{KubeconfigError, NamespaceRequirement, build_client, parse_kubeconfig};

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

/// The message the API server gave (`secrets "x" not found`), or the transport error.
pub(crate) fn describe_kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
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
fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
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

/// Parses kubeconfig bytes and builds a connection (no network access).
pub(crate) fn connect_bytes(
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

/// What to watch and how to judge its content.
#[derive(Clone)]
pub(crate) struct WatchSpec {
    /// Client of the cluster that stores the Secret.
    pub reader: kube::Client,
    /// The Secret and key.
    pub secret: SecretKeyRef,
    /// The role whose handle is swapped.
    pub role: Role,
    /// Whether the context must name a namespace.
    pub requirement: NamespaceRequirement,
}

/// Reads the Secret once, builds the first connection and starts watching the Secret.
///
/// This is the building block for every Secret-sourced kubeconfig: the app cluster kubeconfig in
/// control-plane mode and provider kubeconfigs in default mode.
pub async fn watch_secret_kubeconfig(
    reader: kube::Client,
    secret: SecretKeyRef,
    role: Role,
    requirement: NamespaceRequirement,
    events: broadcast::Sender<CredentialEvent>,
) -> Result<(ClusterHandle, CredentialWatch), SecretKubeconfigError> {
    let bytes = fetch_secret_kubeconfig(&reader, &secret).await?;
    let connection = connect_bytes(&bytes, requirement)?;
    let handle = ClusterHandle::new(role, connection);
    let watch = spawn_watch(
        WatchSpec {
            reader,
            secret,
            role,
            requirement,
        },
        handle.sender(),
        events,
    );
    Ok((handle, watch))
}

/// Starts the rotation task for a handle whose sender is `tx`.
pub(crate) fn spawn_watch(
    spec: WatchSpec,
    tx: Arc<watch::Sender<Arc<ClusterConnection>>>,
    events: broadcast::Sender<CredentialEvent>,
) -> CredentialWatch {
    CredentialWatch {
        task: tokio::spawn(run(spec, tx, events)),
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

async fn run(
    spec: WatchSpec,
    tx: Arc<watch::Sender<Arc<ClusterConnection>>>,
    events: broadcast::Sender<CredentialEvent>,
) {
    let api: Api<Secret> = Api::namespaced(spec.reader.clone(), &spec.secret.namespace);
    let mut stream = watcher::watch_object(api, &spec.secret.name)
        .default_backoff()
        .boxed();
    let mut last: Option<Observed> = tx.borrow().digest().map(Observed::Content);
    let mut pending: Option<Pending> = None;
    let reject = |reason: RejectReason| {
        tracing::warn!(
            role = %spec.role,
            secret = %spec.secret,
            reason = %reason,
            "kubeconfig secret rejected; keeping the last good kubeconfig"
        );
        let _ = events.send(CredentialEvent::Rejected {
            role: spec.role,
            secret: spec.secret.clone(),
            reason,
        });
    };
    let swap = |connection: ClusterConnection| {
        let generation = tx.borrow().generation() + 1;
        let connection = connection.with_generation(generation);
        tracing::info!(
            role = %spec.role,
            secret = %spec.secret,
            server = %connection.server(),
            generation,
            "kubeconfig secret changed; now using the new credentials"
        );
        tx.send_replace(Arc::new(connection));
        let _ = events.send(CredentialEvent::Reloaded {
            role: spec.role,
            secret: spec.secret.clone(),
            generation,
            at: Utc::now(),
        });
    };

    loop {
        let retry_at = pending.as_ref().map(|p| p.retry_at);
        let item = tokio::select! {
            item = stream.next() => item,
            () = sleep_until(retry_at), if retry_at.is_some() => {
                if let Some(mut p) = pending.take() {
                    match verify(&p.connection).await {
                        Ok(()) => swap(p.connection),
                        Err(reason) => {
                            tracing::debug!(role = %spec.role, secret = %spec.secret, reason = %reason, "new kubeconfig still not usable");
                            p.delay = (p.delay * 2).min(RETRY_MAX);
                            p.retry_at = Instant::now() + p.delay;
                            pending = Some(p);
                        }
                    }
                }
                continue;
            }
        };
        let Some(item) = item else {
            // A watcher stream never ends on its own; stop quietly if it does.
            return;
        };
        let secret = match item {
            Ok(secret) => secret,
            Err(e) => {
                // The watcher re-lists with backoff; the current client keeps serving meanwhile.
                tracing::warn!(role = %spec.role, secret = %spec.secret, error = %e, "watching kubeconfig secret failed; retrying");
                continue;
            }
        };
        let (observed, bytes) = match &secret {
            None => (Observed::Missing, None),
            Some(s) => match secret_value(s, &spec.secret.key) {
                None => (Observed::MissingKey, None),
                Some(b) => (Observed::Content(ContentDigest::of(&b)), Some(b)),
            },
        };
        if last == Some(observed) {
            continue;
        }
        last = Some(observed);
        pending = None;
        let Some(bytes) = bytes else {
            reject(if observed == Observed::Missing {
                RejectReason::SecretNotFound
            } else {
                RejectReason::MissingKey(spec.secret.key.clone())
            });
            continue;
        };
        if tx.borrow().digest() == Some(ContentDigest::of(&bytes)) {
            // Back to the content already in use (e.g. a bad edit was reverted).
            continue;
        }
        let connection = match connect_bytes(&bytes, spec.requirement) {
            Ok(c) => c,
            Err(SecretKubeconfigError::Invalid(e)) => {
                reject(RejectReason::Invalid(e));
                continue;
            }
            Err(e) => {
                reject(RejectReason::Client(e.to_string()));
                continue;
            }
        };
        match verify(&connection).await {
            Ok(()) => swap(connection),
            Err(reason) => {
                reject(reason);
                pending = Some(Pending {
                    connection,
                    retry_at: Instant::now() + RETRY_MIN,
                    delay: RETRY_MIN,
                });
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
