//! Kubeconfigs, clients and ServiceAccount tokens: the identities a test hands to the code under
//! test.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::control_plane::{ControlPlane, b64};
use crate::{Error, Result, kube_err};

/// How long requested tokens are valid.
const TOKEN_EXPIRATION_SECONDS: i64 = 86_400;

/// A one-cluster, one-user kubeconfig. `user_fields` are the user's `key: value` lines.
pub(crate) fn kubeconfig_yaml(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    user_fields: &[(&str, String)],
    namespace: Option<&str>,
) -> String {
    let mut yaml = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {cluster}\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user:?}\n  \
           user:\n",
        ca = b64(ca_pem),
    );
    for (key, value) in user_fields {
        yaml.push_str(&format!("    {key}: {value}\n"));
    }
    yaml.push_str(&format!(
        "contexts:\n\
         - name: {cluster}\n  \
           context:\n    \
             cluster: {cluster}\n    \
             user: {user:?}\n"
    ));
    if let Some(namespace) = namespace {
        yaml.push_str(&format!("    namespace: {namespace}\n"));
    }
    yaml.push_str(&format!("current-context: {cluster}\n"));
    yaml
}

pub(crate) async fn config_from_yaml(yaml: &str) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml)
        .map_err(|e| Error::Other(format!("parse a generated kubeconfig: {e}")))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Other(format!("load a generated kubeconfig: {e}")))
}

pub(crate) async fn client_from_yaml(yaml: &str) -> Result<Client> {
    Client::try_from(config_from_yaml(yaml).await?).map_err(kube_err("build a client"))
}

/// Creates `object` unless it exists; returns the object as stored either way.
async fn ensure<K>(api: &Api<K>, object: K, name: &str) -> Result<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let what = || format!("create {} {name}", K::kind(&()));
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            api.get(name).await.map_err(kube_err(what()))
        }
        Err(e) => Err(kube_err(what())(e)),
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

impl ControlPlane {
    /// A token of ServiceAccount `namespace/name` from the TokenRequest API (valid one day),
    /// creating the namespace and the ServiceAccount when missing.
    ///
    /// With `bound_secret`, the token is bound to that Secret (created when missing): deleting
    /// the Secret revokes the token at once, which is how a test takes a credential away.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        bound_secret: Option<&str>,
    ) -> Result<String> {
        let client = self.harness_client().await?;
        ensure(
            &Api::<Namespace>::all(client.clone()),
            Namespace {
                metadata: meta(namespace),
                ..Namespace::default()
            },
            namespace,
        )
        .await?;
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
        ensure(
            &accounts,
            ServiceAccount {
                metadata: meta(name),
                ..ServiceAccount::default()
            },
            name,
        )
        .await?;
        let bound_object_ref = match bound_secret {
            Some(secret) => {
                let stored = ensure(
                    &Api::<Secret>::namespaced(client.clone(), namespace),
                    Secret {
                        metadata: meta(secret),
                        type_: Some("Opaque".to_owned()),
                        ..Secret::default()
                    },
                    secret,
                )
                .await?;
                Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Secret".to_owned()),
                    name: Some(secret.to_owned()),
                    uid: stored.metadata.uid,
                })
            }
            None => None,
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                bound_object_ref,
                expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
            },
            ..TokenRequest::default()
        };
        let response = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(kube_err(format!(
                "request a token for ServiceAccount {namespace}/{name}"
            )))?;
        response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Other("the TokenRequest response holds no token".to_owned()))
    }

    /// A kubeconfig that authenticates with `token` (the CA included), with `namespace` as the
    /// context's default namespace when given.
    pub fn token_kubeconfig(&self, token: &str, namespace: Option<&str>) -> String {
        kubeconfig_yaml(
            self.name(),
            self.server(),
            self.ca_pem(),
            "token-user",
            &[("token", token.to_owned())],
            namespace,
        )
    }

    /// A client that authenticates with `token`.
    pub async fn token_client(&self, token: &str) -> Result<Client> {
        client_from_yaml(&self.token_kubeconfig(token, None)).await
    }

    /// Binds `cluster-admin` to ServiceAccount `namespace/sa_name` (a test convenience when
    /// RBAC is not what is being tested).
    pub async fn grant_cluster_admin(&self, namespace: &str, sa_name: &str) -> Result<()> {
        let name = format!("kcp-cluster-admin-{namespace}-{sa_name}");
        let binding = ClusterRoleBinding {
            metadata: meta(&name),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "ClusterRole".to_owned(),
                name: "cluster-admin".to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: sa_name.to_owned(),
                namespace: Some(namespace.to_owned()),
                api_group: None,
            }]),
        };
        let client = self.harness_client().await?;
        ensure(&Api::<ClusterRoleBinding>::all(client), binding, &name).await?;
        Ok(())
    }
}
