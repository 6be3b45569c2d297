//! State shared by the listener, the connections, the watches and the background tasks
//! ([`Shared`]), with the public types it holds: [`Options`], [`RecordedRequest`] and [`Fault`].
//! Everything that runs on the server (HTTP front end, watches, garbage collector, CRD storage
//! switches) depends on this module rather than on the server handle that creates it.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::request::User;
use crate::store::Store;

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Serve HTTPS with a generated CA (default) or plain HTTP.
    pub tls: bool,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Extra users; an `admin` user in `system:masters` always exists.
    pub users: Vec<User>,
    /// Authorize every request with the RBAC objects stored in the server (default, as on a
    /// real cluster: `system:masters` may do anything, everyone else what the bootstrap policy
    /// and the stored bindings grant). `false`: every request is allowed (`AlwaysAllow`), the
    /// anonymous ones included.
    pub rbac: bool,
    /// How many events are kept for watches; older resourceVersions get `410 Gone`.
    pub history_limit: usize,
    /// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How long after a CRD update that changes its `spec` (or accepted names) requests for its
    /// custom resources are still served by the old storage (the old schema), as on a real
    /// server until its CRD informer sees the update. Default 0: requests arriving after the
    /// update returns use the new storage.
    pub crd_storage_switch_delay: Duration,
    /// How long after the switch the old storage of a CRD is torn down, ending (cleanly) every
    /// watch opened on it; until then those watches deliver events read through the old schema.
    /// Default 1 s, the real crdHandler's delay.
    pub crd_storage_teardown_delay: Duration,
    /// etcd's request size limit: objects whose JSON is larger are refused with a 500
    /// `etcdserver: request is too large`, as a real server does (etcd's default is 1.5 MiB).
    /// Default `None`: no limit.
    pub max_object_bytes: Option<usize>,
    /// Like kube-apiserver's `--etcd-compaction-interval`: every interval, history up to the
    /// resourceVersion seen at the previous tick is forgotten, so a watch or an exact list from
    /// a resourceVersion older than one to two intervals gets `410 Expired`. Default `None`:
    /// only `history_limit` bounds the history.
    pub compaction_interval: Option<Duration>,
    /// How long the namespace controller waits after a namespace is marked for deletion before
    /// it deletes the namespace's content (and then the namespace). Default 5 s, the real
    /// controller's `namespaceDeletionGracePeriod`: until then the namespace is `Terminating`
    /// but its objects are untouched.
    pub namespace_deletion_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls: true,
            port: 0,
            users: Vec::new(),
            rbac: true,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            crd_storage_switch_delay: Duration::ZERO,
            crd_storage_teardown_delay: Duration::from_secs(1),
            max_object_bytes: None,
            compaction_interval: None,
            namespace_deletion_delay: Duration::from_secs(5),
        }
    }
}

impl Options {
    /// Plain HTTP instead of HTTPS.
    pub fn http(mut self) -> Self {
        self.tls = false;
        self
    }

    /// Adds a user.
    pub fn user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }

    /// Enables RBAC (the default).
    pub fn rbac(mut self) -> Self {
        self.rbac = true;
        self
    }

    /// Allows every request (`AlwaysAllow` instead of RBAC).
    pub fn always_allow(mut self) -> Self {
        self.rbac = false;
        self
    }

    /// Sets the field of the same name: requests in the `delay` after a CRD spec update
    /// are still served with the old schema.
    pub fn crd_storage_switch_delay(mut self, delay: Duration) -> Self {
        self.crd_storage_switch_delay = delay;
        self
    }

    /// Sets the field of the same name: larger objects are refused as etcd refuses them.
    pub fn max_object_bytes(mut self, bytes: usize) -> Self {
        self.max_object_bytes = Some(bytes);
        self
    }

    /// Sets the field of the same name: history older than one to two `interval`s is
    /// forgotten, as etcd compaction does on a real server.
    pub fn compaction_interval(mut self, interval: Duration) -> Self {
        self.compaction_interval = Some(interval);
        self
    }

    /// Sets the field of the same name: a deleted namespace's content is deleted `delay` after
    /// the namespace was marked for deletion.
    pub fn namespace_deletion_delay(mut self, delay: Duration) -> Self {
        self.namespace_deletion_delay = delay;
        self
    }

    /// Sets the field of the same name: watches of a replaced CRD storage end `delay`
    /// after the switch.
    pub fn crd_storage_teardown_delay(mut self, delay: Duration) -> Self {
        self.crd_storage_teardown_delay = delay;
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Authenticated user name (empty when authentication failed).
    pub user: String,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`) or the lowercase HTTP method for non-resource paths.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource plural (empty for non-resource paths).
    pub resource: String,
    /// Subresource, e.g. `status`.
    pub subresource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Request path.
    pub path: String,
    /// Raw query string (selectors, `watch`, `fieldManager`, ...).
    pub query: String,
    /// HTTP response code.
    pub code: u16,
}

impl RecordedRequest {
    /// Whether the request could have changed state.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// A fault to inject into the next `count` requests matching `verb` and `resource`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Verb to match; `*` matches all.
    pub verb: String,
    /// Resource plural to match; `*` matches all.
    pub resource: String,
    /// How many requests to affect.
    pub count: usize,
    /// Status code to fail with (`None`: only delay).
    pub code: Option<u16>,
    /// Delay before handling (or failing) the request.
    pub delay: Duration,
    /// `Retry-After` seconds for 429/503.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// Fail the next `count` matching requests with `code` (429s carry `Retry-After: 1`).
    pub fn fail(verb: &str, resource: &str, count: usize, code: u16) -> Self {
        Self {
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            count,
            code: Some(code),
            delay: Duration::ZERO,
            retry_after: matches!(code, 429 | 503).then_some(1),
        }
    }

    /// Delay the next `count` matching requests by `delay`.
    pub fn delay(verb: &str, resource: &str, count: usize, delay: Duration) -> Self {
        Self {
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            count,
            code: None,
            delay,
            retry_after: None,
        }
    }

    pub(crate) fn matches(&self, verb: &str, resource: &str) -> bool {
        (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
    }
}

/// State shared by the listener, the connections and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: RwLock<Store>,
    pub options: Options,
    pub users: HashMap<String, User>,
    pub requests: Mutex<Vec<RecordedRequest>>,
    pub faults: Mutex<Vec<Fault>>,
    /// Bumped to end every open watch.
    pub drop_watches: watch::Sender<u64>,
    /// Wakes the garbage collector.
    pub gc: Notify,
    /// Wakes the ClusterRole aggregation controller.
    pub aggregation: Notify,
}
