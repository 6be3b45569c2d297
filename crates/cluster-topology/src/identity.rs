//! Fingerprints: of kubeconfig bytes (to tell a changed Secret from an unchanged one) and of a
//! provider endpoint (to share one provider session per endpoint + namespace, decisions K6).
//! Both are SHA-256 digests, so they can be logged and compared without exposing credentials.

use std::fmt;

use ring::digest::{Context, SHA256};
use secrecy::ExposeSecret as _;

/// SHA-256 of some bytes (a Secret's kubeconfig value).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest([u8; 32]);

impl ContentDigest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let d = ring::digest::digest(&SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentDigest({})", hex(&self.0[..8]))
    }
}

/// Identity of "this API server, trusted this way, with these credentials, in this namespace".
///
/// Two kubeconfigs that differ only in names (context, cluster, user names), formatting or
/// unrelated entries have the same identity; a different token, certificate, CA, server or
/// namespace gives a different one. Contains no credential material, only a digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(String);

impl EndpointId {
    /// The identity of `config`'s endpoint and credentials, used in `namespace`.
    pub fn of(config: &kube::Config, namespace: &str) -> Self {
        let mut ctx = Context::new(&SHA256);
        let mut field = |name: &str, value: &[u8]| {
            ctx.update(name.as_bytes());
            ctx.update(&(value.len() as u64).to_be_bytes());
            ctx.update(value);
        };
        field("server", config.cluster_url.to_string().as_bytes());
        for (i, der) in config.root_cert.iter().flatten().enumerate() {
            field(&format!("ca{i}"), der);
        }
        if let Some(path) = &config.root_cert_file {
            field("ca-file", path.to_string_lossy().as_bytes());
        }
        field("insecure", &[u8::from(config.accept_invalid_certs)]);
        if let Some(name) = &config.tls_server_name {
            field("tls-server-name", name.as_bytes());
        }
        if let Some(proxy) = &config.proxy_url {
            field("proxy", proxy.to_string().as_bytes());
        }
        let auth = &config.auth_info;
        if let Some(token) = &auth.token {
            field("token", token.expose_secret().as_bytes());
        }
        if let Some(path) = &auth.token_file {
            field("token-file", path.as_bytes());
        }
        if let Some(cert) = &auth.client_certificate_data {
            field("client-cert", cert.as_bytes());
        }
        if let Some(path) = &auth.client_certificate {
            field("client-cert-file", path.as_bytes());
        }
        if let Some(key) = &auth.client_key_data {
            field("client-key", key.expose_secret().as_bytes());
        }
        if let Some(path) = &auth.client_key {
            field("client-key-file", path.as_bytes());
        }
        if let Some(user) = &auth.username {
            field("username", user.as_bytes());
        }
        if let Some(password) = &auth.password {
            field("password", password.expose_secret().as_bytes());
        }
        if let Some(user) = &auth.impersonate {
            field("as", user.as_bytes());
        }
        if let Some(uid) = &auth.impersonate_uid {
            field("as-uid", uid.as_bytes());
        }
        for group in auth.impersonate_groups.iter().flatten() {
            field("as-group", group.as_bytes());
        }
        // Plugins are compared by their whole (canonicalised) configuration.
        if let Some(exec) = &auth.exec
            && let Ok(v) = serde_json::to_value(exec)
        {
            field("exec", canonical(&v).as_bytes());
        }
        if let Some(provider) = &auth.auth_provider
            && let Ok(v) = serde_json::to_value(provider)
        {
            field("auth-provider", canonical(&v).as_bytes());
        }
        field("namespace", namespace.as_bytes());
        Self(hex(ctx.finish().as_ref()))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointId({})", &self.0[..self.0.len().min(16)])
    }
}

/// JSON with object keys sorted, so that map ordering never changes a digest.
fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(k.as_str()),
                        canonical(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeconfig::{NamespaceRequirement, parse_kubeconfig};

    fn config(server: &str, token: &str, names: &str) -> kube::Config {
        let text = format!(
            "clusters:\n- name: c{names}\n  cluster:\n    server: {server}\nusers:\n- name: u{names}\n  user:\n    token: {token}\ncontexts:\n- name: x{names}\n  context:\n    cluster: c{names}\n    user: u{names}\ncurrent-context: x{names}\n"
        );
        match parse_kubeconfig(text.as_bytes(), NamespaceRequirement::Optional) {
            Ok(p) => p.config,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn same_endpoint_and_namespace_give_the_same_id_regardless_of_names() {
        let a = EndpointId::of(&config("https://p:6443", "t1", "1"), "ns");
        let b = EndpointId::of(&config("https://p:6443", "t1", "2"), "ns");
        assert_eq!(a, b);
    }

    #[test]
    fn token_server_or_namespace_change_the_id() {
        let base = EndpointId::of(&config("https://p:6443", "t1", ""), "ns");
        assert_ne!(
            base,
            EndpointId::of(&config("https://p:6443", "t2", ""), "ns")
        );
        assert_ne!(
            base,
            EndpointId::of(&config("https://q:6443", "t1", ""), "ns")
        );
        assert_ne!(
            base,
            EndpointId::of(&config("https://p:6443", "t1", ""), "ns2")
        );
    }

    #[test]
    fn id_never_contains_the_token() {
        let id = EndpointId::of(&config("https://p:6443", "supersecret", ""), "ns");
        assert!(!id.to_string().contains("supersecret"));
        assert!(!format!("{id:?}").contains("supersecret"));
        assert_eq!(id.as_str().len(), 64);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a = serde_json::json!({"b": 1, "a": [{"y": 2, "x": 1}]});
        assert_eq!(canonical(&a), r#"{"a":[{"x":1,"y":2}],"b":1}"#);
    }

    #[test]
    fn content_digest_distinguishes_bytes() {
        assert_eq!(ContentDigest::of(b"a"), ContentDigest::of(b"a"));
        assert_ne!(ContentDigest::of(b"a"), ContentDigest::of(b"b"));
    }
}
