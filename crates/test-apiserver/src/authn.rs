//! ServiceAccount tokens and who they authenticate: `TokenRequest` (the `token` subresource of
//! ServiceAccounts) issues an opaque JWT-shaped token, the store keeps its claims
//! ([`BoundToken`]), and [`authenticate`] accepts it only while it is unexpired and the
//! ServiceAccount (and the Secret or Pod it is bound to) still exist with the same uid, as the
//! real server's ServiceAccount token authenticator checks. Also `SelfSubjectReview`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::request::User;
use crate::semantics::ssa::{Manager, record_update};
use crate::semantics::types::DefaultTypes;
use crate::store::{BoundToken, Store};

/// The issuer and default audience of the tokens, as a real cluster's
/// `--service-account-issuer` (and `--api-audiences`) default.
pub const ISSUER: &str = "https://kubernetes.default.svc";
/// The extra attribute naming the credential a request authenticated with.
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

const AUTHN_V1: &str = "authentication.k8s.io/v1";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; n];
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        // Practically unreachable; uuids are random too.
        buf = (0..n.div_ceil(16))
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .take(n)
            .collect();
    }
    buf
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn meta_str<'v>(obj: &'v Value, key: &str) -> &'v str {
    obj.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The fields a request body sets, as the `Update` entry the real server records for it (the
/// type's value structs, here `spec`, are owned only through their fields).
fn managed(body: &Value, manager: &str, subresource: Option<&str>) -> Value {
    let time = crate::clock::now();
    let mgr = Manager {
        name: manager,
        api_version: body
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        subresource,
        status_subresource: false,
        time: &time,
    };
    let zero = json!({"spec": {}});
    record_update(Some(&zero), body, &mgr, &DefaultTypes)
}

/// `POST .../serviceaccounts/<name>/token`: validates the `TokenRequest` as the real registry
/// does (404 for a missing ServiceAccount, the bound object must exist with the given uid,
/// `expirationSeconds` of at least 10 minutes), issues the token, keeps its claims in the
/// store and answers the request with `status.token` and `status.expirationTimestamp`.
pub fn token_request(
    store: &mut Store,
    namespace: &str,
    name: &str,
    body: &[u8],
    manager: &str,
) -> ApiResult<Value> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding TokenRequest: {e}")))?;
    if !req.is_object() {
        return Err(ApiError::bad_request("TokenRequest must be an object"));
    }
    for (key, want) in [("name", name), ("namespace", namespace)] {
        let have = meta_str(&req, key);
        if !have.is_empty() && have != want {
            return Err(ApiError::invalid_field(
                "TokenRequest",
                "authentication.k8s.io",
                name,
                "FieldValueInvalid",
                &format!("metadata.{key}"),
                format!(
                    "Invalid value: \"{have}\": must match the service account {key} if specified"
                ),
            ));
        }
    }
    let sa = store
        .get("serviceaccounts", &(namespace.to_owned(), name.to_owned()))
        .cloned()
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", name))?;
    let sa_uid = meta_str(&sa, "uid").to_owned();
    // Decoding defaults `expirationSeconds` to an hour; `audiences` default to the issuer.
    let expiration = match req.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request("TokenRequest.spec.expirationSeconds: expected an integer")
        })?,
    };
    let mut out = managed(&req, manager, Some("token"));
    let spec = out
        .as_object_mut()
        .map(|o| o.entry("spec").or_insert_with(|| json!({})));
    let Some(Value::Object(spec)) = spec else {
        return Err(ApiError::bad_request("TokenRequest.spec must be an object"));
    };
    spec.insert("expirationSeconds".into(), json!(expiration));
    let no_audiences = spec
        .get("audiences")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_audiences {
        spec.insert("audiences".into(), json!([ISSUER]));
    }
    let bound_ref = spec.entry("boundObjectRef").or_insert(Value::Null).clone();
    let audiences = spec.get("audiences").cloned().unwrap_or(Value::Null);
    let mut causes = Vec::new();
    if expiration < 600 {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
            ),
            field: "spec.expirationSeconds".into(),
        });
    }
    if expiration > 1 << 32 {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
            field: "spec.expirationSeconds".into(),
        });
    }
    if !causes.is_empty() {
        // The real registry validates before naming the request: no name in the details.
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            "",
            causes,
        ));
    }
    let bound = if bound_ref.is_object() {
        let kind = bound_ref
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let api_version = bound_ref
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ref_name = bound_ref
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Only the group counts, as in the real `schema.FromAPIVersionAndKind` check.
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let plural = match (group, kind) {
            ("", "Secret") => "secrets",
            ("", "Pod") => "pods",
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to object of type {group}/{version}, Kind={kind}"
                )));
            }
        };
        let obj = store
            .get(plural, &(namespace.to_owned(), ref_name.to_owned()))
            .ok_or_else(|| ApiError::not_found(plural, "", ref_name))?;
        let uid = meta_str(obj, "uid").to_owned();
        let want = bound_ref
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !want.is_empty() && want != uid {
            return Err(ApiError::conflict(
                kind,
                "",
                ref_name,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        Some((plural.to_owned(), ref_name.to_owned(), uid))
    } else {
        None
    };
    let now = now_secs();
    let expires = now.saturating_add(expiration.unsigned_abs());
    let jti = uuid::Uuid::new_v4().to_string();
    let mut k8s = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": sa_uid},
    });
    if let Some((plural, n, uid)) = &bound {
        let key = if plural == "pods" { "pod" } else { "secret" };
        k8s[key] = json!({"name": n, "uid": uid});
    }
    let claims = json!({
        "aud": audiences, "exp": expires, "iat": now, "iss": ISSUER, "jti": jti,
        "kubernetes.io": k8s, "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    });
    let header = json!({"alg": "RS256", "kid": b64(&random_bytes(16))});
    let token = format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(&random_bytes(64)),
    );
    store.tokens.insert(
        token.clone(),
        BoundToken {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: sa_uid,
            bound,
            expires,
            jti,
        },
    );
    // Forget tokens that can no longer authenticate anyone.
    store.tokens.retain(|_, t| t.expires > now);
    let meta = out
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    if let Some(Value::Object(m)) = meta {
        m.entry("name").or_insert_with(|| json!(name));
        m.entry("namespace").or_insert_with(|| json!(namespace));
        m.insert("creationTimestamp".into(), json!(crate::clock::now()));
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    }
    if let Some(o) = out.as_object_mut() {
        o.insert("apiVersion".into(), json!(AUTHN_V1));
        o.insert("kind".into(), json!("TokenRequest"));
        o.insert(
            "status".into(),
            json!({"token": token, "expirationTimestamp": rfc3339(expires)}),
        );
    }
    Ok(out)
}

/// Whether an object has been marked for deletion for over a minute: the real validator still
/// accepts tokens bound to an object in its first minute of deletion.
fn deleted_long_ago(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| {
            u64::try_from(t.timestamp())
                .unwrap_or_default()
                .saturating_add(60)
                < now_secs()
        })
}

/// The user a token issued by [`token_request`] authenticates, if it still does: unexpired,
/// its ServiceAccount and bound object still there with the same uids (deleting either revokes
/// it).
pub fn authenticate(store: &Store, token: &str) -> Option<User> {
    let t = store.tokens.get(token)?;
    if t.expires <= now_secs() {
        return None;
    }
    let live_uid = |plural: &str, name: &str| {
        store
            .get(plural, &(t.namespace.clone(), name.to_owned()))
            .filter(|o| !deleted_long_ago(o))
            .map(|o| meta_str(o, "uid").to_owned())
    };
    if live_uid("serviceaccounts", &t.name).as_deref() != Some(t.uid.as_str()) {
        return None;
    }
    if let Some((plural, name, uid)) = &t.bound
        && live_uid(plural, name).as_deref() != Some(uid.as_str())
    {
        return None;
    }
    Some(User {
        name: format!("system:serviceaccount:{}:{}", t.namespace, t.name),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{}", t.namespace),
            "system:authenticated".to_owned(),
        ],
        token: token.to_owned(),
        uid: t.uid.clone(),
        extra: BTreeMap::from([(CREDENTIAL_ID.to_owned(), vec![format!("JTI={}", t.jti)])]),
    })
}

/// `SelfSubjectReview`: the caller's user info, as the authenticator saw it.
pub fn self_subject_review(user: &User, body: &[u8]) -> ApiResult<Value> {
    let review: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding SelfSubjectReview: {e}")))?;
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    let mut meta = review
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    meta["creationTimestamp"] = json!(crate::clock::now());
    Ok(json!({
        "apiVersion": AUTHN_V1, "kind": "SelfSubjectReview",
        "metadata": meta,
        "status": {"userInfo": info},
    }))
}

/// The `managedFields` a review object's response carries (an `Update` entry for what the
/// request body set).
pub fn review_managed_fields(body: &Value, manager: &str) -> Value {
    managed(body, manager, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventType;

    fn put(store: &mut Store, plural: &str, name: &str, uid: &str) {
        let def = store.resources.get(plural).cloned().unwrap();
        let rv = store.next_rv();
        let obj = json!({"metadata": {"name": name, "namespace": "ns", "uid": uid}});
        store.put(&def, rv, obj, EventType::Added);
    }

    fn request(store: &mut Store, spec: Value) -> ApiResult<Value> {
        let body = json!({"apiVersion": AUTHN_V1, "kind": "TokenRequest", "spec": spec});
        token_request(store, "ns", "sa", body.to_string().as_bytes(), "m")
    }

    #[test]
    fn a_bound_token_authenticates_until_its_secret_goes() {
        let mut store = Store::new(100);
        assert_eq!(request(&mut store, json!({})).unwrap_err().code, 404);
        put(&mut store, "serviceaccounts", "sa", "sa-uid");
        put(&mut store, "secrets", "s", "s-uid");
        let err = request(&mut store, json!({"expirationSeconds": 599})).unwrap_err();
        assert_eq!((err.code, err.details.causes.len()), (422, 1));
        let wrong = json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s",
            "uid": "other"}});
        assert_eq!(request(&mut store, wrong).unwrap_err().code, 409);
        let bound = json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s"}});
        let out = request(&mut store, bound).unwrap();
        assert_eq!(out["spec"]["audiences"], json!([ISSUER]));
        assert_eq!(out["spec"]["expirationSeconds"], 3600);
        let token = out["status"]["token"].as_str().unwrap().to_owned();
        assert_eq!(token.split('.').count(), 3);
        let user = authenticate(&store, &token).unwrap();
        assert_eq!(user.name, "system:serviceaccount:ns:sa");
        assert_eq!(user.uid, "sa-uid");
        assert!(user.extra[CREDENTIAL_ID][0].starts_with("JTI="));
        // A Secret of the same name but another uid does not bring the token back.
        put(&mut store, "secrets", "s", "new-uid");
        assert!(authenticate(&store, &token).is_none());
        assert!(authenticate(&store, "guessed").is_none());
    }

    #[test]
    fn an_unbound_token_dies_with_its_service_account_or_at_expiry() {
        let mut store = Store::new(100);
        put(&mut store, "serviceaccounts", "sa", "sa-uid");
        let out = request(&mut store, json!({"expirationSeconds": 600})).unwrap();
        let token = out["status"]["token"].as_str().unwrap().to_owned();
        assert!(authenticate(&store, &token).is_some());
        if let Some(t) = store.tokens.get_mut(&token) {
            t.expires = now_secs();
        }
        assert!(authenticate(&store, &token).is_none());
        let out = request(&mut store, json!({})).unwrap();
        let token = out["status"]["token"].as_str().unwrap().to_owned();
        let def = store.resources.get("serviceaccounts").cloned().unwrap();
        store.remove(&def, &("ns".to_owned(), "sa".to_owned()));
        assert!(authenticate(&store, &token).is_none());
    }
}
