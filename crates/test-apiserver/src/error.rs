//! API errors rendered as real `metav1.Status` objects, with the reasons, codes and messages the
//! real kube-apiserver uses, so that clients (kube-rs, kubectl) classify them exactly as they would
//! on a real cluster.

use serde_json::{Value, json};

/// One entry of `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason such as `FieldValueNotSupported`.
    pub reason: String,
    /// Human-readable message (without the field path).
    pub message: String,
    /// Field path such as `spec.tier`.
    pub field: String,
}

/// `Status.details` of an [`ApiError`] (boxed to keep results small).
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind` (the resource plural for most errors, the Kind for `Invalid`).
    pub kind: Option<String>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
    /// `details.retryAfterSeconds` and the `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Render `details: {}` even when nothing above is set: the real server's errors built for
    /// an empty resource (no route, method not allowed) carry empty details, others none.
    pub always: bool,
}

/// A failed API request, convertible into a `Status` object and an HTTP status code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`.
    pub details: Box<Details>,
}

/// `secrets` or `foos.example.com`: how the real server names a resource in messages.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    /// A bare error without details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    fn with_details(mut self, resource: &str, group: &str, name: &str) -> Self {
        if !name.is_empty() {
            self.details.name = Some(name.to_owned());
        }
        if !group.is_empty() {
            self.details.group = Some(group.to_owned());
        }
        self.details.kind = Some(resource.to_owned());
        self
    }

    /// `404 NotFound`: `secrets "x" not found`.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(resource, group, name)
    }

    /// `404 NotFound` for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_empty_details()
    }

    /// The same error with `details: {}` rendered even when empty (see [`Details::always`]).
    pub fn with_empty_details(mut self) -> Self {
        self.details.always = true;
        self
    }

    /// `409 AlreadyExists`.
    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, group)),
        )
        .with_details(resource, group, name)
    }

    /// `409 Conflict` with a custom explanation.
    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(resource, group)
            ),
        )
        .with_details(resource, group, name)
    }

    /// `409 Conflict` for a stale `resourceVersion`, with the real server's wording.
    pub fn stale(resource: &str, group: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `422 Invalid`: `<Kind>.<group> "<name>" is invalid: <path>: <msg>` (several causes are
    /// joined in brackets, as the real server does).
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let body = if rendered.len() == 1 {
            rendered.into_iter().next().unwrap_or_default()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {body}", qualified(kind, group)),
        )
        .with_details(kind, group, name);
        err.details.causes = causes;
        err
    }

    /// A single-cause `422 Invalid`.
    pub fn invalid_field(
        kind: &str,
        group: &str,
        name: &str,
        reason: &str,
        field: &str,
        message: String,
    ) -> Self {
        Self::invalid(
            kind,
            group,
            name,
            vec![Cause {
                reason: reason.to_owned(),
                message,
                field: field.to_owned(),
            }],
        )
    }

    /// `403 Forbidden`: `secrets "x" is forbidden: <why>`.
    pub fn forbidden(resource: &str, group: &str, name: &str, why: &str) -> Self {
        let q = qualified(resource, group);
        let message = if name.is_empty() {
            format!("{q} is forbidden: {why}")
        } else {
            format!("{q} \"{name}\" is forbidden: {why}")
        };
        Self::new(403, "Forbidden", message).with_details(resource, group, name)
    }

    /// `401 Unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `405 MethodNotAllowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_empty_details()
    }

    /// `410 Gone` with reason `Expired`.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// `415 UnsupportedMediaType`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// `500 InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// A `500` from a plain Go error (not an API status) inside the server: the real server
    /// answers it with neither reason nor details.
    pub fn plain(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    /// An injected failure with the reason a real server would give for `code`.
    pub fn injected(code: u16, retry_after: Option<u64>) -> Self {
        let (reason, message): (&'static str, &str) = match code {
            429 => (
                "TooManyRequests",
                // What API Priority and Fairness answers when it rejects a request.
                "Too many requests, please try again later.",
            ),
            500 => ("InternalError", "Internal error occurred: injected fault"),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            409 => ("Conflict", "injected conflict"),
            404 => (
                "NotFound",
                "the server could not find the requested resource",
            ),
            _ => ("InternalError", "injected fault"),
        };
        let mut err = Self::new(code, reason, message);
        err.details.retry_after = retry_after;
        err
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut details = serde_json::Map::new();
        if let Some(n) = &self.details.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = &self.details.group {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &self.details.kind {
            details.insert("kind".into(), json!(k));
        }
        if !self.details.causes.is_empty() {
            let causes: Vec<Value> = self
                .details
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = self.details.retry_after {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if (!details.is_empty() || self.details.always)
            && let Some(obj) = status.as_object_mut()
        {
            obj.insert("details".into(), Value::Object(details));
        }
        // `StatusReasonUnknown` is the empty string, which `Status` omits.
        if self.reason.is_empty()
            && let Some(obj) = status.as_object_mut()
        {
            obj.remove("reason");
        }
        status
    }
}

/// Result type of request handling.
pub type ApiResult<T> = Result<T, ApiError>;
