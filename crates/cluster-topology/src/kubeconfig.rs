//! Kubeconfig loading: from the local environment (`--kubeconfig`, `KUBECONFIG`,
//! `~/.kube/config`, in-cluster service account) and from bytes stored in a Secret.
//!
//! Parsing is pure (no I/O apart from reading files a kubeconfig itself names) so that the
//! `SecretValid` logic of the engine can call it on every Secret change. Errors never quote
//! kubeconfig contents: a Secret may be garbage that happens to contain a token.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, Kubeconfig, KubeconfigError as KubeError};
use secrecy::{ExposeSecret as _, SecretString};

use crate::client_layer::{ClientHealth, ClientLayer, ClientOptions};
use crate::identity::{ContentDigest, EndpointId};

/// Whether the current context of a kubeconfig must name a namespace.
///
/// Provider kubeconfigs in default mode must (the namespace is the provider namespace `P`);
/// the app cluster kubeconfig of control-plane mode need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceRequirement {
    /// A missing namespace is an error ([`KubeconfigError::NoNamespace`]).
    Required,
    /// A missing namespace is fine; `default` is used for namespaced defaults.
    Optional,
}

/// Why a kubeconfig cannot be used. The texts are what the konnector prints after
/// `... has an invalid kubeconfig: ` or `failed to parse app cluster kubeconfig: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    /// The bytes are not UTF-8 text.
    #[error("couldn't parse kubeconfig: not valid UTF-8 text")]
    NotUtf8,
    /// Nothing is configured (empty document, or no clusters, users, contexts nor current
    /// context). Same wording as client-go.
    #[error("invalid configuration: no configuration has been provided")]
    Empty,
    /// Not YAML, or YAML that is not shaped like a kubeconfig. The detail never quotes values.
    #[error("couldn't parse kubeconfig: {0}")]
    Parse(String),
    /// The current context (possibly the empty name) is not among the contexts.
    #[error("current context \"{0}\" not found")]
    ContextNotFound(String),
    /// The current context has no namespace and the caller requires one.
    #[error("current context \"{0}\" has no namespace set")]
    NoNamespace(String),
    /// The cluster the current context refers to does not exist.
    #[error("cluster \"{cluster}\" of context \"{context}\" not found")]
    ClusterNotFound {
        /// Context name.
        context: String,
        /// Cluster name.
        cluster: String,
    },
    /// The cluster has no `server`.
    #[error("cluster \"{0}\" has no server")]
    NoServer(String),
    /// The cluster's `server` is not a usable URL.
    #[error("cluster \"{cluster}\" has an invalid server URL: {reason}")]
    InvalidServer {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        reason: String,
    },
    /// A `*-data` field is not base64.
    #[error("{field} of {owner} is not valid base64")]
    InvalidBase64 {
        /// Field name, e.g. `certificate-authority-data`.
        field: &'static str,
        /// `cluster "x"` or `user "y"`.
        owner: String,
    },
    /// The certificate authority holds no PEM certificate.
    #[error("certificate authority of cluster \"{0}\" contains no PEM certificate")]
    InvalidCertificateAuthority(String),
    /// A file the kubeconfig names (CA, client certificate, key) cannot be read.
    #[error("{field} of {owner}: cannot read {path}: {reason}")]
    ReadReferencedFile {
        /// Field name.
        field: &'static str,
        /// `cluster "x"` or `user "y"`.
        owner: String,
        /// The path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// A setting this konnector cannot honour; ignoring it would connect differently than asked.
    #[error("cluster \"{cluster}\" uses {setting}, which is not supported")]
    Unsupported {
        /// Cluster name.
        cluster: String,
        /// The kubeconfig field.
        setting: &'static str,
    },
    /// Only one half of a client certificate / key pair is given.
    #[error("user \"{user}\" has a client {present} but no client {missing}")]
    IncompleteClientCertificate {
        /// User name.
        user: String,
        /// `certificate` or `key`.
        present: &'static str,
        /// `key` or `certificate`.
        missing: &'static str,
    },
}

/// A parsed, validated kubeconfig: the connection settings of its current context.
#[derive(Debug, Clone)]
pub struct ParsedKubeconfig {
    /// Name of the current context.
    pub context: String,
    /// Namespace of the current context, if set.
    pub namespace: Option<String>,
    /// Connection settings, user agent `konnector` included; `default_namespace` is the
    /// context namespace or `default`.
    pub config: kube::Config,
    /// Digest of the bytes this was parsed from (`None` for kubeconfigs read from files), used
    /// to tell a changed Secret from an unchanged one.
    pub digest: Option<ContentDigest>,
}

impl ParsedKubeconfig {
    /// The endpoint identity of this kubeconfig's cluster and credentials with `namespace`.
    pub fn endpoint(&self, namespace: &str) -> EndpointId {
        EndpointId::of(&self.config, namespace)
    }
}

/// Parses kubeconfig bytes as stored in a Secret and resolves the current context.
pub fn parse_kubeconfig(
    bytes: &[u8],
    namespace: NamespaceRequirement,
) -> Result<ParsedKubeconfig, KubeconfigError> {
    let text = std::str::from_utf8(bytes).map_err(|_| KubeconfigError::NotUtf8)?;
    let kubeconfig = decode(text)?;
    let mut parsed = resolve(kubeconfig, namespace)?;
    parsed.digest = Some(ContentDigest::of(bytes));
    Ok(parsed)
}

/// Decodes YAML (or JSON) text into a [`Kubeconfig`] without echoing values in errors.
fn decode(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| KubeconfigError::Parse(redact(&e.to_string())))?;
    match &value {
        serde_yaml::Value::Null => return Err(KubeconfigError::Empty),
        serde_yaml::Value::Mapping(_) => {}
        other => {
            return Err(KubeconfigError::Parse(format!(
                "expected a YAML mapping with clusters, users and contexts, found {}",
                yaml_kind(other)
            )));
        }
    }
    let kubeconfig: Kubeconfig =
        serde_yaml::from_str(text).map_err(|e| KubeconfigError::Parse(redact(&e.to_string())))?;
    Ok(kubeconfig)
}

fn yaml_kind(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a sequence",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Removes double-quoted fragments from a decoder message: serde quotes the offending value
/// (`invalid type: string "..."`), which could be a token.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    for c in message.chars() {
        if c == '"' {
            if in_quotes {
                out.push_str("\"…\"");
            }
            in_quotes = !in_quotes;
        } else if !in_quotes {
            out.push(c);
        }
    }
    out
}

/// Resolves the current context of a decoded kubeconfig into connection settings.
pub(crate) fn resolve(
    kubeconfig: Kubeconfig,
    requirement: NamespaceRequirement,
) -> Result<ParsedKubeconfig, KubeconfigError> {
    if kubeconfig.clusters.is_empty()
        && kubeconfig.auth_infos.is_empty()
        && kubeconfig.contexts.is_empty()
        && kubeconfig
            .current_context
            .as_deref()
            .unwrap_or("")
            .is_empty()
    {
        return Err(KubeconfigError::Empty);
    }
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name && !context_name.is_empty())
        .and_then(|c| c.context.clone())
        .ok_or_else(|| KubeconfigError::ContextNotFound(context_name.clone()))?;
    let namespace = context.namespace.clone().filter(|ns| !ns.is_empty());
    if requirement == NamespaceRequirement::Required && namespace.is_none() {
        return Err(KubeconfigError::NoNamespace(context_name));
    }
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| KubeconfigError::ClusterNotFound {
            context: context_name.clone(),
            cluster: context.cluster.clone(),
        })?;
    // Like client-go, a context without a (known) user means anonymous access.
    let user_name = context.user.clone().unwrap_or_default();
    let user = kubeconfig
        .auth_infos
        .iter()
        .find(|u| !user_name.is_empty() && u.name == user_name)
        .and_then(|u| u.auth_info.clone())
        .unwrap_or_default();

    let config = build_config(
        &context.cluster,
        cluster,
        &user_name,
        user,
        namespace.as_deref(),
    )?;
    Ok(ParsedKubeconfig {
        context: context_name,
        namespace,
        config,
        digest: None,
    })
}

fn build_config(
    cluster_name: &str,
    cluster: Cluster,
    user_name: &str,
    mut user: AuthInfo,
    namespace: Option<&str>,
) -> Result<kube::Config, KubeconfigError> {
    let server = cluster
        .server
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| KubeconfigError::NoServer(cluster_name.to_owned()))?;
    let uri: http::Uri =
        server
            .parse()
            .map_err(|e: http::uri::InvalidUri| KubeconfigError::InvalidServer {
                cluster: cluster_name.to_owned(),
                reason: e.to_string(),
            })?;
    if uri.scheme().is_none() || uri.host().is_none() {
        return Err(KubeconfigError::InvalidServer {
            cluster: cluster_name.to_owned(),
            reason: "expected scheme://host[:port]".to_owned(),
        });
    }
    if cluster.proxy_url.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(KubeconfigError::Unsupported {
            cluster: cluster_name.to_owned(),
            setting: "proxy-url",
        });
    }
    let cluster_owner = format!("cluster \"{cluster_name}\"");
    let user_owner = format!("user \"{user_name}\"");

    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) if !data.trim().is_empty() => Some(decode_base64(
            data,
            "certificate-authority-data",
            &cluster_owner,
        )?),
        (_, Some(path)) if !path.is_empty() => {
            Some(read_file(path, "certificate-authority", &cluster_owner)?)
        }
        _ => None,
    };
    let root_cert = match ca {
        Some(pem) => {
            let ders = pem_certificates(&pem);
            if ders.is_empty() {
                return Err(KubeconfigError::InvalidCertificateAuthority(
                    cluster_name.to_owned(),
                ));
            }
            Some(ders)
        }
        None => None,
    };

    // Normalise the client certificate and key to base64 data without whitespace (client-go
    // tolerates line breaks in `*-data`; kube's strict decoder does not), reading files here so
    // that a bad reference fails now rather than when the first request is made.
    let cert = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(data), _) if !data.trim().is_empty() => {
            Some(decode_base64(data, "client-certificate-data", &user_owner)?)
        }
        (_, Some(path)) if !path.is_empty() => {
            Some(read_file(path, "client-certificate", &user_owner)?)
        }
        _ => None,
    };
    let key = match (&user.client_key_data, &user.client_key) {
        (Some(data), _) if !data.expose_secret().trim().is_empty() => Some(decode_base64(
            data.expose_secret(),
            "client-key-data",
            &user_owner,
        )?),
        (_, Some(path)) if !path.is_empty() => Some(read_file(path, "client-key", &user_owner)?),
        _ => None,
    };
    match (&cert, &key) {
        (Some(_), None) => {
            return Err(KubeconfigError::IncompleteClientCertificate {
                user: user_name.to_owned(),
                present: "certificate",
                missing: "key",
            });
        }
        (None, Some(_)) => {
            return Err(KubeconfigError::IncompleteClientCertificate {
                user: user_name.to_owned(),
                present: "key",
                missing: "certificate",
            });
        }
        _ => {}
    }
    let engine = base64::engine::general_purpose::STANDARD;
    user.client_certificate = None;
    user.client_key = None;
    user.client_certificate_data = cert.map(|c| engine.encode(c));
    user.client_key_data = key.map(|k| SecretString::from(engine.encode(k)));
    if user
        .token
        .as_ref()
        .is_some_and(|t| t.expose_secret().is_empty())
    {
        user.token = None;
    }

    // Exec plugins that ask for cluster information get it, as kube's own loader does.
    if let Some(exec) = user.exec.as_mut()
        && exec.provide_cluster_info
    {
        exec.cluster =
            Some(
                (&cluster)
                    .try_into()
                    .map_err(|e: KubeError| KubeconfigError::InvalidServer {
                        cluster: cluster_name.to_owned(),
                        reason: e.to_string(),
                    })?,
            );
    }

    let mut config = kube::Config::new(uri);
    config.default_namespace = namespace.unwrap_or("default").to_owned();
    config.root_cert = root_cert;
    config.accept_invalid_certs = cluster.insecure_skip_tls_verify.unwrap_or(false);
    config.tls_server_name = cluster.tls_server_name.filter(|s| !s.is_empty());
    config.disable_compression = cluster.disable_compression.unwrap_or(false);
    config.auth_info = user;
    add_user_agent(&mut config);
    Ok(config)
}

fn decode_base64(data: &str, field: &'static str, owner: &str) -> Result<Vec<u8>, KubeconfigError> {
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| KubeconfigError::InvalidBase64 {
            field,
            owner: owner.to_owned(),
        })
}

fn read_file(path: &str, field: &'static str, owner: &str) -> Result<Vec<u8>, KubeconfigError> {
    std::fs::read(path).map_err(|e| KubeconfigError::ReadReferencedFile {
        field,
        owner: owner.to_owned(),
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// DER bodies of the `CERTIFICATE` blocks of a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b) = body.take()
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b)
                && !der.is_empty()
            {
                out.push(der);
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    out
}

/// Sets `User-Agent: konnector` (reference: every client carries the `konnector` suffix).
fn add_user_agent(config: &mut kube::Config) {
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(konnector_api::strings::USER_AGENT),
    ));
}

/// Where the local configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSource {
    /// `--kubeconfig <path>`.
    Path(PathBuf),
    /// The `KUBECONFIG` environment variable (possibly several files, merged).
    Env,
    /// `~/.kube/config`.
    HomeFile(PathBuf),
    /// The in-cluster service account.
    InCluster,
}

/// A local configuration, ready to build a client from.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where it came from.
    pub source: LocalSource,
    /// Connection settings, user agent `konnector` included.
    pub config: kube::Config,
    /// Namespace of the current context (or of the service account in-cluster), if any.
    pub namespace: Option<String>,
}

/// Why no local configuration could be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalConfigError {
    /// A kubeconfig file cannot be read.
    #[error("cannot read kubeconfig {path}: {reason}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// A kubeconfig was read but cannot be used.
    #[error("kubeconfig {path}: {source}")]
    Invalid {
        /// The path (or `$KUBECONFIG`).
        path: String,
        /// What is wrong.
        source: KubeconfigError,
    },
    /// No kubeconfig file exists and the in-cluster configuration is unavailable.
    #[error(
        "no kubeconfig found (--kubeconfig not set, KUBECONFIG not set, no ~/.kube/config) and in-cluster configuration failed: {0}"
    )]
    NoConfiguration(String),
}

/// Loads the local configuration with client-go's precedence: the explicit path, else
/// `KUBECONFIG`, else `~/.kube/config`, else the in-cluster service account.
pub fn load_local(explicit: Option<&Path>) -> Result<LocalConfig, LocalConfigError> {
    if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return load_file(path, LocalSource::Path(path.to_owned()));
    }
    if let Some(value) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<PathBuf> = std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            let mut merged = Kubeconfig::default();
            for path in &paths {
                let next = read_kubeconfig_file(path)?;
                merged = merged.merge(next).map_err(|e| LocalConfigError::Invalid {
                    path: "$KUBECONFIG".to_owned(),
                    source: KubeconfigError::Parse(redact(&e.to_string())),
                })?;
            }
            return from_kubeconfig(merged, "$KUBECONFIG", LocalSource::Env);
        }
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let path = PathBuf::from(home).join(".kube").join("config");
        if path.exists() {
            return load_file(&path, LocalSource::HomeFile(path.clone()));
        }
    }
    let mut config =
        kube::Config::incluster().map_err(|e| LocalConfigError::NoConfiguration(e.to_string()))?;
    add_user_agent(&mut config);
    let namespace = Some(config.default_namespace.clone());
    Ok(LocalConfig {
        source: LocalSource::InCluster,
        config,
        namespace,
    })
}

fn load_file(path: &Path, source: LocalSource) -> Result<LocalConfig, LocalConfigError> {
    let kubeconfig = read_kubeconfig_file(path)?;
    from_kubeconfig(kubeconfig, &path.display().to_string(), source)
}

fn read_kubeconfig_file(path: &Path) -> Result<Kubeconfig, LocalConfigError> {
    // Read first to report I/O errors plainly; kube then parses (multi-document files) and
    // resolves relative file references against the file's directory.
    std::fs::metadata(path)
        .and_then(|m| {
            if m.is_dir() {
                Err(std::io::Error::other("is a directory"))
            } else {
                Ok(())
            }
        })
        .map_err(|e| LocalConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    Kubeconfig::read_from(path).map_err(|e| match e {
        KubeError::ReadConfig(io, _) => LocalConfigError::Read {
            path: path.display().to_string(),
            reason: io.to_string(),
        },
        other => LocalConfigError::Invalid {
            path: path.display().to_string(),
            source: KubeconfigError::Parse(redact(&other.to_string())),
        },
    })
}

fn from_kubeconfig(
    kubeconfig: Kubeconfig,
    label: &str,
    source: LocalSource,
) -> Result<LocalConfig, LocalConfigError> {
    let parsed = resolve(kubeconfig, NamespaceRequirement::Optional).map_err(|e| {
        LocalConfigError::Invalid {
            path: label.to_owned(),
            source: e,
        }
    })?;
    Ok(LocalConfig {
        source,
        config: parsed.config,
        namespace: parsed.namespace,
    })
}

/// Why a client cannot be built from a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build client: {0}")]
pub struct ClientError(String);

/// Builds a client through the [`ClientLayer`] with default [`ClientOptions`] and a health of
/// its own (which nobody else sees). Must run inside a tokio runtime (the client spawns its
/// connection pool).
pub fn build_client(config: kube::Config) -> Result<kube::Client, ClientError> {
    build_layered_client(config, &ClientOptions::default()).map(|(client, _)| client)
}

/// Builds a client through the [`ClientLayer`] and returns it with the [`ClientHealth`] it
/// reports to (reachability, throttling, counters). For embedders and tests; the konnector's
/// own handles share one health per cluster across credential rotations
/// ([`build_client_with_health`]).
pub fn build_layered_client(
    config: kube::Config,
    options: &ClientOptions,
) -> Result<(kube::Client, ClientHealth), ClientError> {
    let health = ClientHealth::new(options.clone());
    let client = build_client_with_health(config, &health)?;
    Ok((client, health))
}

/// Builds a client through the [`ClientLayer`] sharing `health` (its limit, `Retry-After` gate,
/// reachability and counters) with every other client built with it.
pub fn build_client_with_health(
    mut config: kube::Config,
    health: &ClientHealth,
) -> Result<kube::Client, ClientError> {
    // kube's own retry layer sits below ours: it would sleep out 429s while holding a
    // concurrency slot and hide them from the adaptive limit. The layer retries instead.
    config.default_retry = false;
    let layer = ClientLayer::new(health.clone());
    if needs_kube_stack(&config) {
        let builder = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| ClientError(e.to_string()))?;
        return Ok(builder.with_layer(&layer).build());
    }
    nodelay_client(&config, Some(&layer))
}

/// A client on kube's stack with `TCP_NODELAY` (see [`build_client_with_health`]) but without
/// the konnector's layer: for tools and tests that drive API servers themselves, so that what
/// they measure is the server rather than Nagle's algorithm.
pub fn build_unlayered_client(config: kube::Config) -> Result<kube::Client, ClientError> {
    if needs_kube_stack(&config) {
        return kube::Client::try_from(config).map_err(|e| ClientError(e.to_string()));
    }
    nodelay_client(&config, None)
}

/// Whether only kube's own stack can serve `config`: its proxy handling (or its error without
/// the proxy features), and the expiry of exec-issued client certificates, which only it reads.
fn needs_kube_stack(config: &kube::Config) -> bool {
    config.proxy_url.is_some() || config.auth_info.exec.is_some()
}

/// kube's default service stack (TLS, timeouts, base URI, retries, authentication, extra
/// headers; not its tracing layer: the client layer traces responses instead), under `layer`
/// if any, on a connector with `TCP_NODELAY`. kube's own connector leaves Nagle's algorithm
/// on: a request whose TLS records go out in two writes then waits for the server's delayed
/// ACK, and on the bench's real API servers about one request in two took 40 ms longer than
/// its work (the first object in a new namespace: 4-6 ms or 45-50 ms). Go's clients set the
/// option by default.
fn nodelay_client(
    config: &kube::Config,
    layer: Option<&ClientLayer>,
) -> Result<kube::Client, ClientError> {
    use kube::client::ConfigExt as _;
    let err = |e: kube::Error| ClientError(e.to_string());
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config
        .rustls_https_connector_with_connector(http)
        .map_err(err)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let client = hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    // kube's retries of 429/503/504 where the config asks for them (clients without the
    // konnector's layer, which retries itself).
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer().map_err(err)?)
        .layer(config.extra_headers_layer().map_err(err)?)
        .map_err(tower::BoxError::from)
        .service(client);
    let builder = kube::client::ClientBuilder::new(service, config.default_namespace.clone());
    Ok(match layer {
        Some(layer) => builder.with_layer(layer).build(),
        None => builder.build(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_PEM: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBVzCB/qADAgECAhQ=\n-----END CERTIFICATE-----\n";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn kubeconfig(cluster: &str, user: &str, context_extra: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n{cluster}users:\n- name: u\n  user:\n{user}contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\n{context_extra}current-context: ctx\n"
        )
    }

    fn parse_ok(text: &str, req: NamespaceRequirement) -> ParsedKubeconfig {
        match parse_kubeconfig(text.as_bytes(), req) {
            Ok(p) => p,
            Err(e) => panic!("expected a valid kubeconfig, got: {e}"),
        }
    }

    fn parse_err(text: &str, req: NamespaceRequirement) -> KubeconfigError {
        match parse_kubeconfig(text.as_bytes(), req) {
            Ok(p) => panic!("expected an error, parsed context {}", p.context),
            Err(e) => e,
        }
    }

    #[test]
    fn token_server_and_namespace_are_read() {
        let text = kubeconfig(
            "    server: https://10.0.0.1:6443\n",
            "    token: sekrit-token\n",
            "    namespace: kube-bind-abc\n",
        );
        let p = parse_ok(&text, NamespaceRequirement::Required);
        assert_eq!(p.context, "ctx");
        assert_eq!(p.namespace.as_deref(), Some("kube-bind-abc"));
        assert_eq!(p.config.default_namespace, "kube-bind-abc");
        assert_eq!(p.config.cluster_url.to_string(), "https://10.0.0.1:6443/");
        assert_eq!(
            p.config
                .auth_info
                .token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            Some("sekrit-token".to_owned())
        );
        assert!(!p.config.accept_invalid_certs);
        assert!(p.config.root_cert.is_none());
        assert!(p.digest.is_some());
    }

    #[test]
    fn user_agent_is_konnector() {
        let text = kubeconfig("    server: https://h\n", "    token: t\n", "");
        let p = parse_ok(&text, NamespaceRequirement::Optional);
        let ua: Vec<_> = p
            .config
            .headers
            .iter()
            .filter(|(n, _)| n == http::header::USER_AGENT)
            .map(|(_, v)| v.to_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ua, vec!["konnector".to_owned()]);
    }

    #[test]
    fn certificate_authority_data_is_decoded_even_with_line_breaks() {
        let encoded = b64(CA_PEM);
        let (a, b) = encoded.split_at(20);
        let text = kubeconfig(
            &format!("    server: https://h\n    certificate-authority-data: \"{a}\\n{b}\"\n"),
            "    token: t\n",
            "",
        );
        let p = parse_ok(&text, NamespaceRequirement::Optional);
        let roots = p.config.root_cert.unwrap_or_default();
        assert_eq!(roots.len(), 1);
        assert_eq!(
            roots[0],
            base64::engine::general_purpose::STANDARD
                .decode("MIIBVzCB/qADAgECAhQ=")
                .unwrap_or_default()
        );
    }

    #[test]
    fn certificate_authority_data_that_is_not_base64_or_pem_is_rejected() {
        let text = kubeconfig(
            "    server: https://h\n    certificate-authority-data: '%%%not-base64'\n",
            "    token: t\n",
            "",
        );
        let e = parse_err(&text, NamespaceRequirement::Optional);
        assert_eq!(
            e.to_string(),
            "certificate-authority-data of cluster \"c\" is not valid base64"
        );
        let text = kubeconfig(
            &format!(
                "    server: https://h\n    certificate-authority-data: {}\n",
                b64("no pem here")
            ),
            "    token: t\n",
            "",
        );
        assert_eq!(
            parse_err(&text, NamespaceRequirement::Optional),
            KubeconfigError::InvalidCertificateAuthority("c".into())
        );
    }

    #[test]
    fn insecure_skip_tls_verify_is_honoured() {
        let text = kubeconfig(
            "    server: https://h\n    insecure-skip-tls-verify: true\n",
            "    token: t\n",
            "",
        );
        assert!(
            parse_ok(&text, NamespaceRequirement::Optional)
                .config
                .accept_invalid_certs
        );
    }

    #[test]
    fn client_certificate_data_is_kept_normalised() {
        let text = kubeconfig(
            "    server: https://h\n",
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64("CERT"),
                b64("KEY")
            ),
            "",
        );
        let p = parse_ok(&text, NamespaceRequirement::Optional);
        assert_eq!(
            p.config.auth_info.client_certificate_data.as_deref(),
            Some(b64("CERT").as_str())
        );
        assert_eq!(
            p.config
                .auth_info
                .client_key_data
                .as_ref()
                .map(|k| k.expose_secret().to_owned()),
            Some(b64("KEY"))
        );
        assert!(p.config.auth_info.token.is_none());
    }

    #[tokio::test]
    async fn client_certificate_kubeconfig_builds_a_client_and_bad_pem_fails_without_leaking() {
        let certified = rcgen::generate_simple_self_signed(vec!["konnector".to_owned()])
            .unwrap_or_else(|e| panic!("{e}"));
        let cert_pem = certified.cert.pem();
        let key_pem = certified.signing_key.serialize_pem();
        let text = kubeconfig(
            &format!(
                "    server: https://h\n    certificate-authority-data: {}\n",
                b64(&cert_pem)
            ),
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&cert_pem),
                b64(&key_pem)
            ),
            "",
        );
        let parsed = parse_ok(&text, NamespaceRequirement::Optional);
        assert_eq!(parsed.config.root_cert.as_ref().map(Vec::len), Some(1));
        if let Err(e) = build_client(parsed.config) {
            panic!("client with a certificate: {e}");
        }

        let bad_key = "not-a-private-key-0123456789";
        let text = kubeconfig(
            "    server: https://h\n",
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&cert_pem),
                b64(bad_key)
            ),
            "",
        );
        let parsed = parse_ok(&text, NamespaceRequirement::Optional);
        match build_client(parsed.config) {
            Ok(_) => panic!("a client was built from an invalid key"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("cannot build client: "), "{msg}");
                assert!(!msg.contains(bad_key), "{msg}");
                assert!(!msg.contains(&b64(bad_key)), "{msg}");
            }
        }
    }

    #[test]
    fn half_a_client_certificate_is_rejected() {
        let text = kubeconfig(
            "    server: https://h\n",
            &format!("    client-certificate-data: {}\n", b64("CERT")),
            "",
        );
        assert_eq!(
            parse_err(&text, NamespaceRequirement::Optional).to_string(),
            "user \"u\" has a client certificate but no client key"
        );
    }

    #[test]
    fn missing_current_context_is_reported_with_its_name() {
        let text = kubeconfig("    server: https://h\n", "    token: t\n", "")
            .replace("current-context: ctx", "current-context: gone");
        assert_eq!(
            parse_err(&text, NamespaceRequirement::Optional).to_string(),
            "current context \"gone\" not found"
        );
        let unset = kubeconfig("    server: https://h\n", "    token: t\n", "")
            .replace("current-context: ctx\n", "");
        assert_eq!(
            parse_err(&unset, NamespaceRequirement::Optional).to_string(),
            "current context \"\" not found"
        );
    }

    #[test]
    fn missing_namespace_is_an_error_only_when_required() {
        let text = kubeconfig("    server: https://h\n", "    token: t\n", "");
        assert_eq!(
            parse_err(&text, NamespaceRequirement::Required).to_string(),
            "current context \"ctx\" has no namespace set"
        );
        let p = parse_ok(&text, NamespaceRequirement::Optional);
        assert_eq!(p.namespace, None);
        assert_eq!(p.config.default_namespace, "default");
    }

    #[test]
    fn garbage_is_a_readable_parse_error_without_the_content() {
        let e = parse_err("invalid-yaml-content", NamespaceRequirement::Optional);
        assert!(matches!(e, KubeconfigError::Parse(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("couldn't parse kubeconfig: "), "{msg}");
        assert!(msg.contains("found a string"), "{msg}");
        assert!(!msg.contains("invalid-yaml-content"), "{msg}");

        let e = parse_err("clusters: [\n  - {", NamespaceRequirement::Optional);
        assert!(matches!(e, KubeconfigError::Parse(_)), "{e:?}");

        let e = parse_err(
            "clusters: \"secret-token-value\"\n",
            NamespaceRequirement::Optional,
        );
        let msg = e.to_string();
        assert!(msg.starts_with("couldn't parse kubeconfig: "), "{msg}");
        assert!(!msg.contains("secret-token-value"), "{msg}");

        assert_eq!(
            parse_kubeconfig(&[0xff, 0xfe, 0x00], NamespaceRequirement::Optional)
                .map(|p| p.context),
            Err(KubeconfigError::NotUtf8)
        );
    }

    #[test]
    fn empty_config_says_nothing_is_configured() {
        for text in ["", "   \n", "apiVersion: v1\nkind: Config\n", "{}"] {
            assert_eq!(
                parse_err(text, NamespaceRequirement::Optional),
                KubeconfigError::Empty,
                "{text:?}"
            );
        }
        assert_eq!(
            KubeconfigError::Empty.to_string(),
            "invalid configuration: no configuration has been provided"
        );
    }

    #[test]
    fn missing_cluster_or_server_is_reported() {
        let text = kubeconfig("    server: https://h\n", "    token: t\n", "")
            .replace("    cluster: c\n", "    cluster: other\n");
        assert_eq!(
            parse_err(&text, NamespaceRequirement::Optional).to_string(),
            "cluster \"other\" of context \"ctx\" not found"
        );
        let text = kubeconfig("    insecure-skip-tls-verify: true\n", "    token: t\n", "");
        assert_eq!(
            parse_err(&text, NamespaceRequirement::Optional).to_string(),
            "cluster \"c\" has no server"
        );
        let text = kubeconfig("    server: not a url\n", "    token: t\n", "");
        assert!(matches!(
            parse_err(&text, NamespaceRequirement::Optional),
            KubeconfigError::InvalidServer { .. }
        ));
    }

    #[test]
    fn proxy_url_is_refused_rather_than_ignored() {
        let text = kubeconfig(
            "    server: https://h\n    proxy-url: http://proxy:3128\n",
            "    token: t\n",
            "",
        );
        assert_eq!(
            parse_err(&text, NamespaceRequirement::Optional).to_string(),
            "cluster \"c\" uses proxy-url, which is not supported"
        );
    }

    #[test]
    fn errors_never_contain_the_token() {
        let token = "tok-0123456789-very-secret";
        let texts = [
            kubeconfig(
                "    server: https://h\n",
                &format!("    token: {token}\n"),
                "",
            )
            .replace("current-context: ctx", "current-context: x"),
            kubeconfig(
                "    server: https://h\n",
                &format!("    token: {token}\n"),
                "",
            ),
            format!("users: {token}\n"),
            format!("users:\n- name: u\n  user:\n    token: [{token}]\n"),
        ];
        for text in texts {
            if let Err(e) = parse_kubeconfig(text.as_bytes(), NamespaceRequirement::Required) {
                assert!(!e.to_string().contains(token), "{e}");
                assert!(!format!("{e:?}").contains(token), "{e:?}");
            }
        }
    }

    #[test]
    fn redact_removes_quoted_values() {
        assert_eq!(
            redact("invalid type: string \"abc\", expected a sequence at line 1"),
            "invalid type: string \"…\", expected a sequence at line 1"
        );
    }

    #[test]
    fn explicit_path_that_cannot_be_read_is_reported() {
        let missing = Path::new("/nonexistent/konnector/kubeconfig");
        match load_local(Some(missing)) {
            Err(LocalConfigError::Read { path, reason }) => {
                assert_eq!(path, "/nonexistent/konnector/kubeconfig");
                assert!(reason.contains("No such file"), "{reason}");
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }

    #[test]
    fn explicit_path_is_loaded_with_its_namespace() {
        let dir = std::env::temp_dir().join(format!("ct-kubeconfig-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("config");
        let text = kubeconfig(
            "    server: https://127.0.0.1:1\n",
            "    token: t\n",
            "    namespace: ns1\n",
        );
        if let Err(e) = std::fs::write(&path, text) {
            panic!("writing {}: {e}", path.display());
        }
        match load_local(Some(&path)) {
            Ok(local) => {
                assert_eq!(local.source, LocalSource::Path(path.clone()));
                assert_eq!(local.namespace.as_deref(), Some("ns1"));
                assert_eq!(local.config.cluster_url.to_string(), "https://127.0.0.1:1/");
            }
            Err(e) => panic!("{e}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
