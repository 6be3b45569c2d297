//! HTTP front end: authentication, request attributes, fault injection, authorization,
//! dispatch to the verbs, watches and discovery documents, and request recording.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use crate::api::{self, DeleteOpts, Req};
use crate::error::{ApiError, ApiResult};
use crate::request::{RequestInfo, User};
use crate::shared::{RecordedRequest, Shared};

/// Response body: a full buffer or a watch stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Parses a request path into resource attributes.
pub fn request_info(method: &Method, path: &str, query: &HashMap<String, String>) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_owned(),
        verb: method.as_str().to_lowercase(),
        ..RequestInfo::default()
    };
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let rest: &[&str] = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => {
            info.version = (*v).to_owned();
            rest
        }
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            info.group = (*g).to_owned();
            info.version = (*v).to_owned();
            rest
        }
        _ => return info,
    };
    let mut rest = rest;
    let mut legacy_watch = false;
    if rest.first() == Some(&"watch") {
        legacy_watch = true;
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        info.namespace = rest[1].to_owned();
        rest = &rest[2..];
    }
    let Some(resource) = rest.first() else {
        return info;
    };
    info.is_resource = true;
    info.resource = (*resource).to_owned();
    if let Some(n) = rest.get(1) {
        info.name = (*n).to_owned();
    }
    if resource == &"namespaces" && info.namespace.is_empty() && !info.name.is_empty() {
        // `/api/v1/namespaces/x` addresses namespace x; RBAC sees it in namespace x too.
        info.namespace = info.name.clone();
    }
    if let Some(sub) = rest.get(2) {
        info.subresource = (*sub).to_owned();
    }
    let watch = legacy_watch || query.get("watch").is_some_and(|w| w == "true" || w == "1");
    info.verb = match (method, info.name.is_empty()) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "list",
        (&Method::GET, false) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "deletecollection",
        (&Method::DELETE, false) => "delete",
        _ => "unknown",
    }
    .to_owned();
    info
}

/// The request as authorization and the audit record see it: like the real `RequestInfo`, a
/// list or watch that selects one object by `fieldSelector=metadata.name=<x>` carries that name,
/// so RBAC `resourceNames` can allow a named watch.
pub fn authz_info(info: &RequestInfo, query: &HashMap<String, String>) -> RequestInfo {
    let mut out = info.clone();
    if (out.verb == "list" || out.verb == "watch")
        && out.name.is_empty()
        && let Some(selector) = query.get("fieldSelector")
    {
        let names: Vec<&str> = selector
            .split(',')
            .filter_map(|req| {
                let req = req.trim();
                req.strip_prefix("metadata.name==")
                    .or_else(|| req.strip_prefix("metadata.name="))
            })
            .collect();
        if let [name] = names.as_slice() {
            out.name = (*name).to_owned();
        }
    }
    out
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A JSON response.
pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A `Status` error response.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let mut resp = json_response(err.code, &err.to_status());
    if let Some(r) = err.details.retry_after
        && let Ok(v) = HeaderValue::from_str(&r.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

/// Who sends the request: a configured user or the ServiceAccount of a token issued by a
/// `TokenRequest`; without a bearer token, `system:anonymous` (the real server's anonymous
/// authenticator); `None` for a bearer token that no authenticator accepts (`401`).
fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Option<User> {
    let Some(auth) = req.headers().get(header::AUTHORIZATION) else {
        return Some(User::anonymous());
    };
    let auth = auth.to_str().ok()?;
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Some(User::anonymous());
    };
    if let Some(user) = shared.users.get(token) {
        return Some(user.clone());
    }
    let store = shared.store.read().ok()?;
    crate::authn::authenticate(&store, token)
}

/// Serves one HTTP request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    let query = parse_query(req.uri().query());
    let path = req.uri().path().to_owned();
    let info = request_info(req.method(), &path, &query);
    let user = authenticate(&shared, &req);
    let resp = match &user {
        None => error_response(&ApiError::unauthorized()),
        Some(user) => match serve(&shared, req, &info, &query, user).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        },
    };
    if let Ok(mut r) = shared.requests.lock() {
        let audit = authz_info(&info, &query);
        r.push(RecordedRequest {
            user: user.map(|u| u.name).unwrap_or_default(),
            verb: audit.verb,
            group: audit.group,
            resource: audit.resource,
            subresource: audit.subresource,
            namespace: audit.namespace,
            name: audit.name,
            path,
            query: raw_query,
            code: resp.status().as_u16(),
        });
    }
    Ok(resp)
}

async fn serve(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    info: &RequestInfo,
    query: &HashMap<String, String>,
    user: &User,
) -> ApiResult<Response<Body>> {
    let fault = shared.faults.lock().ok().and_then(|mut faults| {
        let idx = faults
            .iter()
            .position(|f| f.count > 0 && f.matches(&info.verb, &info.resource))?;
        let f = faults[idx].clone();
        faults[idx].count -= 1;
        if faults[idx].count == 0 {
            faults.remove(idx);
        }
        Some(f)
    });
    if let Some(f) = fault {
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        if let Some(code) = f.code {
            return Err(ApiError::injected(code, f.retry_after));
        }
    }
    // As on the real server, authorization comes before routing: what a user may not do is
    // `403` whether or not the path exists.
    if shared.options.rbac && !crate::rbac::is_privileged(user) {
        let store = shared
            .store
            .read()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        crate::rbac::authorize(&store, user, &authz_info(info, query))?;
    }
    if !info.is_resource {
        return non_resource(shared, info, req.headers());
    }
    let def = {
        let store = shared
            .store
            .read()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        store.resource(&info.group, &info.version, &info.resource)
    };
    let Some(def) = def else {
        return no_route(shared, info);
    };
    let subresource_ok = info.subresource.is_empty()
        || (info.subresource == "status" && def.has_status)
        || (info.subresource == "token" && def.kind == "ServiceAccount" && def.group.is_empty())
        || (info.subresource == "finalize" && def.kind == "Namespace" && def.group.is_empty());
    if !subresource_ok {
        return Err(ApiError::no_route());
    }
    // A verb the resource does not offer (e.g. deletecollection of namespaces).
    if info.subresource.is_empty()
        && !def.review
        && !crate::discovery::verbs(&def).contains(&info.verb.as_str())
    {
        return Err(ApiError::method_not_allowed());
    }
    if def.namespaced && !info.name.is_empty() && info.namespace.is_empty() {
        return Err(ApiError::no_route());
    }
    if !def.namespaced && info.resource != "namespaces" && !info.namespace.is_empty() {
        return Err(ApiError::no_route());
    }
    // events.k8s.io/v1 Events are stored as core Events and converted on the way in and out.
    let alias = def.alias_of.is_some();
    let core_query;
    let query = if alias {
        core_query = crate::events::query_to_core(query);
        &core_query
    } else {
        query
    };
    let view = def.alias_of.map(|_| api::View {
        def: def.clone(),
        to_view: crate::events::to_new,
    });
    let (def, version) = match def.alias_of {
        Some(target) => {
            let store = shared
                .store
                .read()
                .map_err(|_| ApiError::internal("store lock poisoned"))?;
            let core = store
                .resources
                .get(target)
                .cloned()
                .ok_or_else(ApiError::no_route)?;
            let v = core.storage_version().to_owned();
            (core, v)
        }
        None => (def, info.version.clone()),
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    // Cluster-scoped resources ignore the namespace (only `namespaces` sets it, for RBAC).
    let namespace = if def.namespaced {
        info.namespace.as_str()
    } else {
        ""
    };
    let name = info.name.as_str();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let table = crate::table::wanted(accept).then(|| {
        query
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".to_owned())
    });
    if info.verb == "watch" {
        // Watching one object by name is a watch with a `metadata.name` field selector.
        let mut query = query.clone();
        if !name.is_empty() {
            let by_name = format!("metadata.name={name}");
            let combined = match query.get("fieldSelector").filter(|f| !f.is_empty()) {
                Some(f) => format!("{f},{by_name}"),
                None => by_name,
            };
            query.insert("fieldSelector".into(), combined);
        }
        let chunks = crate::watch::watch(
            shared.clone(),
            def,
            &version,
            namespace,
            &query,
            table,
            alias,
        )?;
        return Ok(watch_response(chunks));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?
        .to_bytes();
    // Typed Go clients (kubectl's `create` generators) send protobuf for a few built-in kinds;
    // those are decoded, anything else gets the real `415`. Responses are always JSON.
    let (body, content_type) = if content_type.contains("protobuf") || content_type.contains("cbor")
    {
        match crate::protobuf::decode(&body) {
            Some(v) if content_type.contains("protobuf") => (
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                "application/json".to_owned(),
            ),
            _ => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {content_type}"
                )));
            }
        }
    } else {
        (body, content_type)
    };
    let body = if alias && matches!(info.verb.as_str(), "create" | "update") {
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })?;
        Bytes::from(serde_json::to_vec(&crate::events::to_core(&v)).unwrap_or_default())
    } else {
        body
    };
    if def.review {
        if info.verb != "create" {
            return Err(ApiError::method_not_allowed());
        }
        if def.kind == "SelfSubjectReview" {
            return Ok(json_response(
                201,
                &crate::authn::self_subject_review(user, &body)?,
            ));
        }
        return self_subject_access_review(shared, user, &body, &user_agent, query);
    }
    if info.subresource == "token" {
        if info.verb != "create" {
            return Err(ApiError::method_not_allowed());
        }
        let mut store = shared
            .store
            .write()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        let manager = api::field_manager(query, &user_agent);
        let value = crate::authn::token_request(&mut store, namespace, name, &body, &manager)?;
        return Ok(json_response(201, &value));
    }
    // Apply and update may create the object: the real server then authorizes `create` too.
    let create_authz = (shared.options.rbac && !crate::rbac::is_privileged(user)).then(|| {
        let mut attrs = authz_info(info, query);
        attrs.verb = "create".to_owned();
        (user, attrs)
    });
    let r = Req {
        def: def.clone(),
        version: &version,
        namespace,
        name,
        subresource: &info.subresource,
        query,
        user_agent: &user_agent,
        create_authz,
        view,
        warnings: std::cell::RefCell::default(),
    };
    let (code, value) = match info.verb.as_str() {
        "get" => {
            let store = shared
                .store
                .read()
                .map_err(|_| ApiError::internal("store lock poisoned"))?;
            (200, api::get(&store, &r)?)
        }
        "list" => {
            let store = shared
                .store
                .read()
                .map_err(|_| ApiError::internal("store lock poisoned"))?;
            (200, api::list(&store, &r)?)
        }
        verb => {
            let mut guard = shared
                .store
                .write()
                .map_err(|_| ApiError::internal("store lock poisoned"))?;
            // dryRun=All runs the whole write path on a detached copy and discards it.
            let mut scratch =
                (query.get("dryRun").is_some_and(|d| d == "All")).then(|| guard.scratch());
            let store: &mut crate::store::Store = match scratch.as_mut() {
                Some(s) => s,
                None => &mut guard,
            };
            let result = match verb {
                "create" if name.is_empty() => api::create(store, &r, &body),
                "update" => api::update(store, &r, &body),
                _ if info.subresource == "finalize" => Err(ApiError::method_not_allowed()),
                "patch" if alias => api::patch_converted(
                    store,
                    &r,
                    &content_type,
                    &body,
                    crate::events::to_new,
                    crate::events::to_core,
                ),
                "patch" => api::patch(store, &r, &content_type, &body),
                "delete" => {
                    DeleteOpts::parse(query, &body).and_then(|o| api::delete(store, &r, &o))
                }
                "deletecollection" if info.subresource.is_empty() => {
                    DeleteOpts::parse(query, &body)
                        .and_then(|o| api::delete_collection(store, &r, &o))
                }
                _ => Err(ApiError::method_not_allowed()),
            };
            if store.gc_pending {
                shared.gc.notify_one();
            }
            if store.aggregation_pending {
                shared.aggregation.notify_one();
            }
            // CRD spec changes replace their resource's storage (never for dry runs: a scratch
            // store is discarded with what it asked for).
            crate::crd_switch::schedule(shared, &mut guard);
            result?
        }
    };
    let value = if alias {
        crate::events::response_to_new(value)
    } else {
        value
    };
    if let Some(include) = table
        && matches!(info.verb.as_str(), "get" | "list")
    {
        let printer = def
            .version(&version)
            .and_then(|v| v.printer_columns.as_ref());
        let (objects, meta) = match value.get("items").and_then(Value::as_array) {
            Some(items) => (
                items.clone(),
                value.get("metadata").cloned().unwrap_or(Value::Null),
            ),
            None => (
                vec![value.clone()],
                json!({"resourceVersion": value.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)}),
            ),
        };
        let t = crate::table::table(&def, printer, &objects, meta, &include, true);
        return Ok(with_warnings(json_response(code, &t), &r.warnings.take()));
    }
    Ok(with_warnings(
        json_response(code, &value),
        &r.warnings.take(),
    ))
}

/// Adds one `Warning: 299 - "<text>"` header per warning (the text quoted as Go's
/// `strconv.Quote` does), as the real server does.
fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The streaming response of a watch: its chunks as they come, JSON lines.
fn watch_response(chunks: futures::stream::BoxStream<'static, Bytes>) -> Response<Body> {
    let stream = chunks.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    resp
}

fn non_resource(
    shared: &Arc<Shared>,
    info: &RequestInfo,
    _headers: &http::HeaderMap,
) -> ApiResult<Response<Body>> {
    if info.verb != "get" {
        return Err(ApiError::method_not_allowed());
    }
    let store = shared
        .store
        .read()
        .map_err(|_| ApiError::internal("store lock poisoned"))?;
    let segs = path_segments(&info.path);
    if matches!(segs.as_slice(), ["healthz"] | ["livez"] | ["readyz"]) {
        let mut resp = Response::new(full("ok"));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(resp);
    }
    // Aggregated discovery is not offered: answering with plain `application/json` makes
    // kubectl and kube-rs fall back to the legacy per-group documents.
    match crate::discovery::document(&store, &segs) {
        Ok(value) => Ok(json_response(200, &value)),
        Err(e) if e.code == 404 && !crate::discovery::serves_path(&store, &segs) => {
            Ok(page_not_found())
        }
        Err(e) => Err(e),
    }
}

/// The non-empty segments of a request path.
fn path_segments(path: &str) -> Vec<&str> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

/// The answer to a resource path nothing serves: a JSON `Status` under `/api` and under the
/// groups the server knows (their handlers answer), else the plain text `404 page not found`
/// of the real server's fallback handler.
fn no_route(shared: &Shared, info: &RequestInfo) -> ApiResult<Response<Body>> {
    let store = shared
        .store
        .read()
        .map_err(|_| ApiError::internal("store lock poisoned"))?;
    let segs = path_segments(&info.path);
    if crate::discovery::serves_path(&store, &segs) {
        Err(ApiError::no_route())
    } else {
        Ok(page_not_found())
    }
}

/// The real server's `404 page not found` for a path outside every API it serves.
fn page_not_found() -> Response<Body> {
    let mut resp = Response::new(full("404 page not found\n"));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `SelfSubjectAccessReview`: asks the authorizer whether the caller may do something, as
/// `kubectl auth can-i` does, answered with the real authorizer's reason and the `managedFields`
/// the real server records for the request. Without RBAC every request is allowed.
fn self_subject_access_review(
    shared: &Shared,
    user: &User,
    body: &[u8],
    user_agent: &str,
    query: &HashMap<String, String>,
) -> ApiResult<Response<Body>> {
    let review: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("error decoding SelfSubjectAccessReview: {e}"))
    })?;
    let resource = review
        .pointer("/spec/resourceAttributes")
        .filter(|v| !v.is_null());
    let non_resource = review
        .pointer("/spec/nonResourceAttributes")
        .filter(|v| !v.is_null());
    let field = |attrs: &Value, k: &str| {
        attrs
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let invalid = |field: &str, message: &str| {
        ApiError::invalid_field(
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "",
            "FieldValueInvalid",
            field,
            format!("Invalid value: \"null\": {message}"),
        )
    };
    let info = match (resource, non_resource) {
        (Some(attrs), None) => RequestInfo {
            is_resource: true,
            verb: field(attrs, "verb"),
            group: field(attrs, "group"),
            version: field(attrs, "version"),
            resource: field(attrs, "resource"),
            subresource: field(attrs, "subresource"),
            namespace: field(attrs, "namespace"),
            name: field(attrs, "name"),
            path: String::new(),
        },
        (None, Some(attrs)) => RequestInfo {
            verb: field(attrs, "verb"),
            path: field(attrs, "path"),
            ..RequestInfo::default()
        },
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.nonResourceAttributes",
                "cannot be specified in combination with resourceAttributes",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    let (allowed, reason) = if shared.options.rbac {
        let store = shared
            .store
            .read()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        crate::rbac::decide(&store, user, &info)
    } else {
        (true, String::new())
    };
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    let manager = api::field_manager(query, user_agent);
    let mut review = crate::authn::review_managed_fields(&review, &manager);
    if let Some(o) = review.as_object_mut() {
        o.insert("status".into(), status);
        o.insert("apiVersion".into(), json!("authorization.k8s.io/v1"));
        o.insert("kind".into(), json!("SelfSubjectAccessReview"));
        o.entry("metadata").or_insert_with(|| json!({}));
    }
    Ok(json_response(201, &review))
}
