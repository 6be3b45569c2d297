//! Rules of the built-in kinds that are pure functions of the object: decoding checks of typed
//! fields (`MicroTime`), validation (Secrets, ConfigMaps, Events, pod specs), defaulting and what
//! admission and the storages add (pods, Services, nodes), the strategies' update rules and the
//! shape the real server's Go types give an object on output (fields that are never omitted,
//! `null` zero times). Kept apart from the verbs so that they can be tested without a store.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};

/// The largest total size of a Secret's or ConfigMap's data (`core.MaxSecretSize`).
const MAX_DATA_BYTES: usize = 1024 * 1024;

fn required(field: String) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field,
    }
}

/// `IsConfigMapKey`: the messages for a data key that is not a valid file name.
fn config_map_key_errors(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if key.is_empty() || key.len() > 253 {
        out.push("must be no more than 253 characters".to_owned());
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        out.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .to_owned(),
        );
    }
    if key == "." {
        out.push("must not be '.'".to_owned());
    } else if key == ".." {
        out.push("must not be '..'".to_owned());
    } else if key.starts_with("..") {
        out.push("must not start with '..'".to_owned());
    }
    out
}

/// The key errors and total size of a data map whose values are decoded with `len`.
fn check_data(obj: &Value, field: &str, len: impl Fn(&str) -> usize, causes: &mut Vec<Cause>) {
    let mut total = 0;
    if let Some(data) = obj.get(field).and_then(Value::as_object) {
        for (k, v) in data {
            for msg in config_map_key_errors(k) {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {k:?}: {msg}"),
                    field: format!("{field}[{k}]"),
                });
            }
            total += len(v.as_str().unwrap_or_default());
        }
    }
    if total > MAX_DATA_BYTES {
        causes.push(Cause {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
            field: field.to_owned(),
        });
    }
}

/// The decoded length of a base64 value (its bytes are what the limits count).
fn base64_len(s: &str) -> usize {
    let pad = s.bytes().rev().take_while(|b| *b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad)
}

/// `ValidateSecret` beyond metadata: data keys and size, and the keys (or annotation) each
/// well-known `type` requires. `obj` has `stringData` merged into `data` already.
pub fn validate_secret(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    check_data(obj, "data", base64_len, &mut causes);
    let data = obj.get("data").and_then(Value::as_object);
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let key = |k: &str| format!("data[{k}]");
    match obj.get("type").and_then(Value::as_str).unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let named = obj
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !named {
                causes.push(required(
                    "metadata.annotations[kubernetes.io/service-account.name]".into(),
                ));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let k = if t == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match data.and_then(|d| d.get(k)).and_then(Value::as_str) {
                None => causes.push(required(key(k))),
                Some(b64) => {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap_or_default();
                    if let Err(e) = serde_json::from_slice::<Map<String, Value>>(&bytes) {
                        causes.push(Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!("Invalid value: \"<secret contents redacted>\": {e}"),
                            field: key(k),
                        });
                    }
                }
            }
        }
        // Either may be empty, but one of the keys must be there.
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            causes.push(required(key("username")));
            causes.push(required(key("password")));
        }
        "kubernetes.io/ssh-auth" => {
            let empty = data
                .and_then(|d| d.get("ssh-privatekey"))
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if empty {
                causes.push(required(key("ssh-privatekey")));
            }
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    causes.push(required(key(k)));
                }
            }
        }
        _ => {}
    }
    causes
}

/// `ValidateConfigMap` beyond metadata: keys of `data` and `binaryData` (also not in both) and
/// the total size.
pub fn validate_config_map(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    check_data(obj, "data", str::len, &mut causes);
    check_data(obj, "binaryData", base64_len, &mut causes);
    if let (Some(d), Some(b)) = (
        obj.get("data").and_then(Value::as_object),
        obj.get("binaryData").and_then(Value::as_object),
    ) {
        for k in b.keys().filter(|k| d.contains_key(*k)) {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {k:?}: duplicate of key present in data"),
                field: format!("binaryData[{k}]"),
            });
        }
    }
    causes
}

/// Whether an update (PUT) may leave out `metadata.resourceVersion` (the strategy's
/// `AllowUnconditionalUpdate`): Leases are the one kind served here that insists on it, since a
/// blind overwrite of a lease would break leader election, and so do CRDs (custom resources
/// too, see the caller).
pub fn allows_unconditional_update(group: &str, kind: &str) -> bool {
    !matches!(
        (group, kind),
        ("coordination.k8s.io", "Lease") | ("apiextensions.k8s.io", "CustomResourceDefinition")
    )
}

/// The `MicroTime` fields of a built-in kind, as JSON pointers.
fn micro_time_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("coordination.k8s.io", "Lease") => &["/spec/acquireTime", "/spec/renewTime"],
        ("", "Event") | ("events.k8s.io", "Event") => &["/eventTime", "/series/lastObservedTime"],
        _ => &[],
    }
}

/// Whether `s` parses as Go's `2006-01-02T15:04:05.000000Z07:00` (exactly six fractional
/// digits, then `Z` or a `±hh:mm` offset), the only form a `MicroTime` decodes from.
pub fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.len() == r.len() && d.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let base = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && at(19, b'.')
        && digits(20..26);
    base && match b.get(26..) {
        Some(b"Z") => true,
        Some([b'+' | b'-', ..]) => {
            b.len() == 32 && digits(27..29) && at(29, b':') && digits(30..32)
        }
        _ => false,
    }
}

/// Decoding checks of typed fields: a `MicroTime` in any other form is a `400`, as the real
/// server's JSON decoding of the request refuses it before any validation.
pub fn check_decoding(group: &str, kind: &str, version: &str, obj: &Value) -> Result<(), ApiError> {
    for ptr in micro_time_fields(group, kind) {
        match obj.pointer(ptr) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if is_micro_time(s) => {}
            Some(v) => {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                // Go names what is left of the value where the layout stopped matching.
                let (rest, elem) = if !is_micro_time(&format!(
                    "{}.000000Z",
                    shown.get(..19).unwrap_or_default()
                )) {
                    (shown.as_str(), "2006-01-02T15:04:05.000000Z07:00")
                } else if !is_micro_time(&format!("{}Z", shown.get(..26).unwrap_or_default())) {
                    (shown.get(19..).unwrap_or_default(), ".000000")
                } else {
                    (shown.get(26..).unwrap_or_default(), "Z07:00")
                };
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: parsing time \"{shown}\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"{rest}\" as \"{elem}\""
                )));
            }
        }
    }
    Ok(())
}

/// Sets the fields the Go type of a core `v1` Event always writes: non-`omitempty` strings,
/// zero times as `null` and the value structs (`source`, `involvedObject`) as objects.
pub fn shape_core_event(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        for (k, zero) in [
            ("eventTime", Value::Null),
            ("firstTimestamp", Value::Null),
            ("lastTimestamp", Value::Null),
            ("reportingComponent", json!("")),
            ("reportingInstance", json!("")),
            ("source", json!({})),
            ("involvedObject", json!({})),
        ] {
            o.entry(k).or_insert(zero);
        }
    }
}

/// The same Event as the Go type of `events.k8s.io/v1` writes it: its strings are `omitempty`,
/// its value structs and times are always there.
pub fn shape_new_event(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        for k in ["reportingController", "reportingInstance"] {
            if o.get(k).is_some_and(|v| v.as_str() == Some("")) {
                o.remove(k);
            }
        }
        for (k, zero) in [
            ("eventTime", Value::Null),
            ("deprecatedFirstTimestamp", Value::Null),
            ("deprecatedLastTimestamp", Value::Null),
            ("deprecatedSource", json!({})),
            ("regarding", json!({})),
        ] {
            o.entry(k).or_insert(zero);
        }
    }
}

/// Sets `key` of the object `o` to `value` unless it is there.
fn default_field(o: &mut Map<String, Value>, key: &str, value: Value) {
    if o.get(key).is_none_or(Value::is_null) {
        o.insert(key.to_owned(), value);
    }
}

/// `SetDefaults_Container` (and of its ports and probes), plus `resources: {}`, a value struct
/// the Go type always writes.
fn default_container(c: &mut Value) {
    let Some(o) = c.as_object_mut() else {
        return;
    };
    let image = o.get("image").and_then(Value::as_str).unwrap_or_default();
    // The tag is what follows the last `:` after the last `/` (a digest pins it too).
    let last = image.rsplit('/').next().unwrap_or_default();
    let tag = if image.contains('@') {
        None
    } else {
        last.rsplit_once(':').map(|(_, t)| t)
    };
    let policy = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
        "IfNotPresent"
    } else {
        "Always"
    };
    default_field(o, "imagePullPolicy", json!(policy));
    default_field(o, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(o, "terminationMessagePolicy", json!("File"));
    default_field(o, "resources", json!({}));
    if let Some(ports) = o.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = o.get_mut(probe).and_then(Value::as_object_mut) {
            default_field(p, "timeoutSeconds", json!(1));
            default_field(p, "periodSeconds", json!(10));
            default_field(p, "successThreshold", json!(1));
            default_field(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                default_field(h, "path", json!("/"));
                default_field(h, "scheme", json!("HTTP"));
            }
        }
    }
    if let Some(env) = o.get_mut("env").and_then(Value::as_array_mut) {
        for f in env
            .iter_mut()
            .filter_map(|e| e.pointer_mut("/valueFrom/fieldRef"))
            .filter_map(Value::as_object_mut)
        {
            default_field(f, "apiVersion", json!("v1"));
        }
    }
}

/// `SetDefaults_PodSpec` and the defaults of its containers and volumes, as a real server
/// applies them to every pod spec it decodes (pods, pod templates, workload templates).
pub fn default_pod_spec(spec: &mut Value) {
    let Some(o) = spec.as_object_mut() else {
        return;
    };
    default_field(o, "dnsPolicy", json!("ClusterFirst"));
    default_field(o, "restartPolicy", json!("Always"));
    default_field(o, "terminationGracePeriodSeconds", json!(30));
    default_field(o, "securityContext", json!({}));
    default_field(o, "schedulerName", json!("default-scheduler"));
    // The v1 conversion mirrors the deprecated `serviceAccount` and `serviceAccountName`.
    for (from, to) in [
        ("serviceAccountName", "serviceAccount"),
        ("serviceAccount", "serviceAccountName"),
    ] {
        if let Some(v) = o
            .get(from)
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            let v = v.clone();
            default_field(o, to, v);
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(cs) = o.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(vols) = o.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols.iter_mut().filter_map(Value::as_object_mut) {
            // A volume without a source is an emptyDir.
            if v.keys().all(|k| k == "name") {
                v.insert("emptyDir".into(), json!({}));
            }
            if let Some(h) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                default_field(h, "type", json!(""));
            }
            for (source, field, mode) in [
                ("secret", "defaultMode", 420),
                ("configMap", "defaultMode", 420),
                ("projected", "defaultMode", 420),
                ("downwardAPI", "defaultMode", 420),
            ] {
                if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
                    default_field(s, field, json!(mode));
                }
            }
        }
    }
}

/// Whether `s` is a DNS-1123 label (a container's name must be one).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The most common rules of `ValidatePodSpec` (the spec at `path`, already defaulted): at least
/// one container, each with a unique DNS-label name and an image, and the supported restart and
/// DNS policies. The many other rules of a pod spec are not checked.
fn validate_pod_spec(path: &str, spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        causes.push(required(format!("{path}.containers")));
    }
    let mut seen = Vec::new();
    for list in ["initContainers", "containers"] {
        let items = spec
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in items.iter().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                causes.push(required(format!("{at}.name")));
            } else if !is_dns_label(name) {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                    ),
                    field: format!("{at}.name"),
                });
            } else if seen.contains(&name) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    message: format!("Duplicate value: {name:?}"),
                    field: format!("{at}.name"),
                });
            } else {
                seen.push(name);
            }
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(|i| i.trim().is_empty())
            {
                causes.push(required(format!("{at}.image")));
            }
        }
    }
    for (field, supported) in [
        ("restartPolicy", &["Always", "OnFailure", "Never"][..]),
        (
            "dnsPolicy",
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"][..],
        ),
    ] {
        if let Some(v) = spec.and_then(|s| s.get(field)).and_then(Value::as_str)
            && !supported.contains(&v)
        {
            let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {v:?}: supported values: {}",
                    quoted.join(", ")
                ),
                field: format!("{path}.{field}"),
            });
        }
    }
}

/// Validation of the built-in kinds that hold a pod spec (see [`validate_pod_spec`]).
pub fn validate_pods(group: &str, kind: &str, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (group, kind) {
        ("", "Pod") => validate_pod_spec("spec", obj.get("spec"), &mut causes),
        ("", "PodTemplate") => {
            validate_pod_spec("template.spec", obj.pointer("/template/spec"), &mut causes)
        }
        ("", "ReplicationController") => {
            if let Some(spec) = obj.pointer("/spec/template/spec") {
                validate_pod_spec("spec.template.spec", Some(spec), &mut causes);
            }
        }
        _ => {}
    }
    causes
}

/// The defaults the real server gives a built-in object on every write, before its fields are
/// recorded: the Go types' `SetDefaults_*` (pod specs, Services, Endpoints ports, LimitRanges,
/// volumes and claims), the value structs they always write, and on create the strategies'
/// initial status. Kinds not named here get none.
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value, creating: bool) {
    if let Some(zero) = zero_object(group, kind)
        && GENERIC_SHAPES.contains(&kind)
        && group.is_empty()
    {
        fill_missing(obj, &zero);
    }
    // The strategies' initial status (what a client sent is dropped; Nodes keep theirs).
    if creating && group.is_empty() {
        let status = match kind {
            "Service" => Some(json!({"loadBalancer": {}})),
            "PersistentVolumeClaim" => Some(json!({"phase": "Pending"})),
            "PersistentVolume" => {
                Some(json!({"phase": "Pending", "lastPhaseTransitionTime": crate::clock::now()}))
            }
            "ReplicationController" => Some(json!({"replicas": 0})),
            "ResourceQuota" => Some(json!({})),
            _ => None,
        };
        if let Some(status) = status
            && let Some(o) = obj.as_object_mut()
        {
            o.insert("status".into(), status);
        }
    }
    match (group, kind) {
        ("", "Endpoints") => {
            let ports = obj
                .get_mut("subsets")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(|s| s.get_mut("ports").and_then(Value::as_array_mut))
                .flatten();
            for p in ports.filter_map(Value::as_object_mut) {
                default_field(p, "protocol", json!("TCP"));
            }
        }
        ("", "LimitRange") => {
            let items = obj
                .pointer_mut("/spec/limits")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut);
            for item in items.filter(|i| i.get("type") == Some(&json!("Container"))) {
                // `SetDefaults_LimitRangeItem`: default limit from max, default request from the
                // default limit, else from min.
                let get = |i: &Map<String, Value>, k: &str| {
                    i.get(k)
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default()
                };
                let mut default = get(item, "default");
                for (k, v) in get(item, "max") {
                    default.entry(k).or_insert(v);
                }
                let mut request = get(item, "defaultRequest");
                for (k, v) in default.iter().chain(get(item, "min").iter()) {
                    request.entry(k.clone()).or_insert_with(|| v.clone());
                }
                for (k, m) in [("default", default), ("defaultRequest", request)] {
                    if !m.is_empty() {
                        item.insert(k.into(), Value::Object(m));
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                default_field(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                default_field(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default_field(spec, "volumeMode", json!("Filesystem"));
                if let Some(h) = spec.get_mut("hostPath").and_then(Value::as_object_mut) {
                    default_field(h, "type", json!(""));
                }
            }
        }
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
                if let Some(o) = spec.as_object_mut() {
                    default_field(o, "enableServiceLinks", json!(true));
                }
                // `SetDefaults_Pod`: a container's requests default to its limits.
                for list in ["initContainers", "containers"] {
                    let containers = spec
                        .get_mut(list)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten();
                    for res in containers.filter_map(|c| c.get_mut("resources")) {
                        let limits = res.get("limits").and_then(Value::as_object).cloned();
                        if let Some(limits) = limits.filter(|l| !l.is_empty())
                            && let Some(r) = res.as_object_mut()
                        {
                            let requests = r.entry("requests").or_insert_with(|| json!({}));
                            if let Some(requests) = requests.as_object_mut() {
                                for (k, v) in limits {
                                    requests.entry(k).or_insert(v);
                                }
                            }
                        }
                    }
                }
            }
            if creating && let Some(o) = obj.as_object_mut() {
                // The pod strategy starts every pod as Pending; nothing schedules it here.
                o.insert(
                    "status".into(),
                    json!({"phase": "Pending", "qosClass": qos_class(o.get("spec"))}),
                );
            }
        }
        ("", "PodTemplate") => {
            if let Some(spec) = obj.pointer_mut("/template/spec") {
                default_pod_spec(spec);
            }
        }
        ("", "Service") => default_service(obj),
        ("", "ReplicationController") => {
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }

            let labels = obj.pointer("/spec/template/metadata/labels").cloned();
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                default_field(spec, "replicas", json!(1));
                if let Some(l) = &labels {
                    default_field(spec, "selector", l.clone());
                }
            }
            if let Some(l) = labels
                && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
            {
                default_field(meta, "labels", l);
            }
        }
        _ => {}
    }
}

/// `SetDefaults_Service`: type, session affinity, traffic policies and port protocols and
/// target ports.
fn default_service(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind != "ExternalName" {
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(p, "protocol", json!("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            if p.get("targetPort")
                .is_none_or(|t| t.is_null() || t == &json!(0) || t == &json!(""))
            {
                p.insert("targetPort".into(), port);
            }
        }
    }
}

/// The cluster IPs and node ports a stored Service holds (so that no other gets them).
pub fn service_allocations(svc: &Value) -> (Vec<String>, Vec<u64>) {
    let ips = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                .collect()
        })
        .unwrap_or_default();
    (ips, ports)
}

/// What the Service storage allocates after defaulting (so not owned by the writer): a cluster
/// IP from `10.0.0.0/24` (`.1` is the `kubernetes` Service's on a real server) with its IP
/// family fields, and node ports from `30000-32767` for `NodePort` and `LoadBalancer`. An update
/// keeps what was allocated unless it sets it; `used_*` are the other Services' allocations.
pub fn allocate_service(
    obj: &mut Value,
    old: Option<&Value>,
    used_ips: &[String],
    used_ports: &[u64],
) -> Result<(), ApiError> {
    let old_spec = old.and_then(|o| o.get("spec"));
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if kind == "ExternalName" {
        return Ok(());
    }
    for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if spec.get(k).is_none_or(Value::is_null)
            && let Some(v) = old_spec.and_then(|s| s.get(k))
        {
            spec.insert(k.into(), v.clone());
        }
    }
    let ip = match spec.get("clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => ip.to_owned(),
        _ => (2..255)
            .map(|n| format!("10.0.0.{n}"))
            .find(|ip| !used_ips.contains(ip))
            .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?,
    };
    spec.insert("clusterIP".into(), json!(ip));
    default_field(spec, "clusterIPs", json!([ip]));
    default_field(spec, "ipFamilies", json!(["IPv4"]));
    default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        let old_ports: Vec<Value> = old_spec
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut taken: Vec<u64> = used_ports.to_vec();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("nodePort")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| n > 0)
                {
                    continue;
                }
                let kept = old_ports
                    .iter()
                    .find(|o| {
                        o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                    })
                    .and_then(|o| o.get("nodePort"))
                    .and_then(Value::as_u64);
                let port = match kept {
                    Some(n) => n,
                    None => (30000..=32767)
                        .find(|n| !taken.contains(n))
                        .ok_or_else(|| {
                            ApiError::internal("failed to allocate a nodePort: range is full")
                        })?,
                };
                taken.push(port);
                p.insert("nodePort".into(), json!(port));
            }
        }
    }
    Ok(())
}

/// What the default admission plugins add to a new object after its fields are recorded (so
/// not owned by its writer). Pods: `Priority` (priority `0`, preemption policy) and
/// `DefaultTolerationSeconds` (tolerating not-ready and unreachable nodes for 300 seconds);
/// `ServiceAccount` admission is not run (there is no `default` ServiceAccount here to name).
pub fn admit(group: &str, kind: &str, obj: &mut Value) {
    if !group.is_empty() {
        return;
    }
    match kind {
        "Pod" => admit_pod(obj),
        // `TaintNodesByCondition`: a new node is not ready until its kubelet says so.
        "Node" => {
            let spec = obj
                .as_object_mut()
                .map(|o| o.entry("spec").or_insert_with(|| json!({})));
            if let Some(spec) = spec.and_then(Value::as_object_mut) {
                let taints = spec.entry("taints").or_insert_with(|| json!([]));
                if let Some(list) = taints.as_array_mut() {
                    let key = "node.kubernetes.io/not-ready";
                    if !list.iter().any(|t| t.get("key") == Some(&json!(key))) {
                        list.push(json!({"key": key, "effect": "NoSchedule"}));
                    }
                }
            }
        }
        // `StorageObjectInUseProtection` is left out: its finalizers would hold every deleted
        // claim and volume forever, with no protection controller here to remove them.
        _ => {}
    }
}

/// Kinds whose value structs (always written by their Go types) are filled in from
/// [`zero_object`] on every write.
const GENERIC_SHAPES: &[&str] = &[
    "Service",
    "Node",
    "LimitRange",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "ResourceQuota",
];

/// Inserts what `zero` has and `obj` lacks, recursively through objects.
fn fill_missing(obj: &mut Value, zero: &Value) {
    if let (Some(o), Some(z)) = (obj.as_object_mut(), zero.as_object()) {
        for (k, zv) in z {
            match o.get_mut(k) {
                Some(v) if !v.is_null() => fill_missing(v, zv),
                _ => {
                    o.insert(k.clone(), zv.clone());
                }
            }
        }
    }
}

fn admit_pod(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("priorityClassName").is_none_or(|p| p == "") {
        default_field(spec, "priority", json!(0));
    }
    default_field(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = list.iter().any(|t| {
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
                let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                let k = t.get("key").and_then(Value::as_str).unwrap_or_default();
                (effect.is_empty() || effect == "NoExecute")
                    && (k == key || (k.is_empty() && op == "Exists"))
            });
            if !tolerated {
                list.push(
                    json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 300}),
                );
            }
        }
    }
}

/// The QoS class of a pod spec: `BestEffort` without requests or limits, `Guaranteed` when every
/// container's requests equal its cpu and memory limits, else `Burstable`.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| spec.and_then(|s| s.get(*l)).and_then(Value::as_array))
        .flatten()
        .collect();
    let res = |c: &Value, k: &str| {
        c.pointer(&format!("/resources/{k}"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    if containers
        .iter()
        .all(|c| res(c, "requests").is_empty() && res(c, "limits").is_empty())
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let (req, lim) = (res(c, "requests"), res(c, "limits"));
        ["cpu", "memory"].iter().all(|r| {
            lim.get(*r)
                .is_some_and(|l| req.get(*r).is_none_or(|q| q == l))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// `IsQualifiedName` (`[prefix/]name`, as label keys, which an Event's reporting controller
/// must be): the messages of what is wrong, empty when valid.
fn qualified_name_errors(s: &str) -> Vec<String> {
    const NAME_REGEX: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else if !is_dns_subdomain(prefix) {
                errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned());
            }
            *name
        }
        _ => {
            errs.push(format!("a qualified name {NAME_REGEX} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_owned());
    }
    let matches = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !matches {
        errs.push(format!("name part {NAME_REGEX}"));
    }
    errs
}

/// Whether `s` is a DNS-1123 subdomain.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `ValidateEventCreate`/`ValidateEventUpdate` of a core Event (the stored form, also for
/// writes through `events.k8s.io/v1`, whose field names the causes still use): the involved
/// object's namespace; for an Event with `eventTime` the reporting fields, action and reason;
/// and, created through `events.k8s.io/v1`, the rules of the new API.
pub fn validate_event(obj: &Value, via_events_api: bool, creating: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let str_at = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let ns = str_at("/metadata/namespace");
    let involved_ns = str_at("/involvedObject/namespace");
    let invalid = |field: &str, value: &str, why: &str| Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value:?}: {why}"),
        field: field.to_owned(),
    };
    let too_long = |field: &str, limit: usize| {
        let n = str_at(&format!("/{field}")).len();
        (n > limit).then(|| invalid(field, "", &format!("can have at most {limit} characters")))
    };
    let has_time = |k: &str| {
        obj.get(k)
            .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    };
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        )
    };
    if !has_time("eventTime") {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                causes.push(mismatch());
            }
        } else if ns != involved_ns {
            causes.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            causes.push(mismatch());
        }
        let controller_field = if via_events_api {
            "reportingController"
        } else {
            "reportingComponent"
        };
        let controller = str_at("/reportingComponent");
        if controller.is_empty() {
            causes.push(required(controller_field.to_owned()));
        }
        for msg in qualified_name_errors(controller) {
            causes.push(invalid(controller_field, controller, &msg));
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            if str_at(&format!("/{field}")).is_empty() {
                causes.push(required(field.to_owned()));
            }
            causes.extend(too_long(field, limit));
        }
        causes.extend(too_long("message", 1024));
    }
    if via_events_api && creating {
        if !has_time("eventTime") {
            causes.push(required("eventTime".to_owned()));
        }
        let t = str_at("/type");
        if t != "Normal" && t != "Warning" {
            causes.push(invalid("type", "", &format!("has invalid value: {t}")));
        }
        if has_time("firstTimestamp") {
            causes.push(invalid("deprecatedFirstTimestamp", "", "needs to be unset"));
        }
        if has_time("lastTimestamp") {
            causes.push(invalid("deprecatedLastTimestamp", "", "needs to be unset"));
        }
        if obj
            .get("count")
            .and_then(Value::as_i64)
            .is_some_and(|c| c != 0)
        {
            causes.push(invalid("deprecatedCount", "", "needs to be unset"));
        }
        if !str_at("/source/component").is_empty() || !str_at("/source/host").is_empty() {
            causes.push(invalid("deprecatedSource", "", "needs to be unset"));
        }
    }
    causes
}

/// The object a create is compared with to find the fields the creator set (and owns): the zero
/// value of the kind's Go type as it encodes, so that fields the type always writes (value
/// structs, non-`omitempty` strings) are not owned unless set. `None`: an empty object.
pub fn zero_object(group: &str, kind: &str) -> Option<Value> {
    match (group, kind) {
        ("", "Event") => {
            let mut e = json!({});
            shape_core_event(&mut e);
            Some(e)
        }
        ("events.k8s.io", "Event") => {
            let mut e = json!({});
            shape_new_event(&mut e);
            Some(e)
        }
        ("", "PodTemplate") => {
            Some(json!({"template": {"metadata": {}, "spec": {"containers": []}}}))
        }
        ("", "Pod") => Some(json!({"spec": {"containers": []}, "status": {}})),
        ("", "ReplicationController") => Some(json!({"spec": {}, "status": {"replicas": 0}})),
        ("", "Service") => Some(json!({"spec": {}, "status": {"loadBalancer": {}}})),
        ("", "LimitRange") => Some(json!({"spec": {}})),
        ("", "PersistentVolumeClaim") => Some(json!({"spec": {"resources": {}}, "status": {}})),
        ("", "PersistentVolume") => Some(json!({"spec": {}, "status": {}})),
        ("", "ResourceQuota") => Some(json!({"spec": {}, "status": {}})),
        ("", "Node") => Some(json!({"spec": {}, "status": {
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"architecture": "", "bootID": "", "containerRuntimeVersion": "",
                "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""},
        }})),
        ("", "Namespace") => Some(json!({"spec": {}, "status": {}})),
        ("coordination.k8s.io", "Lease") => Some(json!({"spec": {}})),
        // `spec.names` and `status.acceptedNames` are value structs; `spec.conversion` is a
        // pointer, so a create owns it as a node (`.`).
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Some(json!({
            "spec": {"names": {}},
            "status": {"acceptedNames": {}},
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(t: &str, data: Value) -> Value {
        json!({"metadata": {"name": "s"}, "type": t, "data": data})
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn secret_types_require_their_keys() {
        assert_eq!(
            fields(&validate_secret(&secret("kubernetes.io/tls", json!({})))),
            ["data[tls.crt]", "data[tls.key]"]
        );
        assert_eq!(
            fields(&validate_secret(&secret(
                "kubernetes.io/dockerconfigjson",
                json!({})
            ))),
            ["data[.dockerconfigjson]"]
        );
        assert_eq!(
            fields(&validate_secret(&secret(
                "kubernetes.io/basic-auth",
                json!({})
            ))),
            ["data[username]", "data[password]"]
        );
        assert!(
            validate_secret(&secret(
                "kubernetes.io/basic-auth",
                json!({"username": "YQ=="})
            ))
            .is_empty()
        );
        assert_eq!(
            fields(&validate_secret(&secret(
                "kubernetes.io/service-account-token",
                json!({})
            ))),
            ["metadata.annotations[kubernetes.io/service-account.name]"]
        );
        // `e30=` is `{}`; `bm9w` is `nop`, no JSON object.
        assert!(
            validate_secret(&secret(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": "e30="})
            ))
            .is_empty()
        );
        assert_eq!(
            validate_secret(&secret(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": "bm9w"})
            ))[0]
                .reason,
            "FieldValueInvalid"
        );
        assert!(validate_secret(&secret("Opaque", json!({"a": "YQ=="}))).is_empty());
        assert_eq!(
            fields(&validate_secret(&secret("Opaque", json!({"a/b": "YQ=="})))),
            ["data[a/b]"]
        );
    }

    #[test]
    fn config_map_keys_are_file_names() {
        let cm = json!({"data": {"ok": "1", "..x": "2"}, "binaryData": {"ok": "AAE="}});
        assert_eq!(
            fields(&validate_config_map(&cm)),
            ["data[..x]", "binaryData[ok]"]
        );
    }

    #[test]
    fn micro_time_has_exactly_six_fractional_digits() {
        assert!(is_micro_time("2026-01-01T00:00:00.123456Z"));
        assert!(is_micro_time("2026-01-01T00:00:00.000000+02:00"));
        assert!(!is_micro_time("2026-01-01T00:00:00Z"));
        assert!(!is_micro_time("2026-01-01T00:00:00.123Z"));
        assert!(!is_micro_time("2026-01-01T00:00:00.1234567Z"));
        let lease = json!({"spec": {"acquireTime": "2026-01-01T00:00:00Z"}});
        let err = check_decoding("coordination.k8s.io", "Lease", "v1", &lease);
        assert_eq!(err.map_err(|e| e.code), Err(400));
        let ok = json!({"spec": {"renewTime": "2026-01-01T00:00:00.123456Z", "acquireTime": null}});
        assert!(check_decoding("coordination.k8s.io", "Lease", "v1", &ok).is_ok());
    }

    #[test]
    fn events_have_the_fields_their_go_types_write() {
        let mut core = json!({"message": "m"});
        shape_core_event(&mut core);
        assert_eq!(core["eventTime"], Value::Null);
        assert_eq!(core["reportingComponent"], json!(""));
        assert_eq!(core["source"], json!({}));
        let mut new = json!({"note": "m", "reportingController": ""});
        shape_new_event(&mut new);
        assert!(new.get("reportingController").is_none());
        assert_eq!(new["deprecatedSource"], json!({}));
        assert_eq!(new["deprecatedFirstTimestamp"], Value::Null);
    }

    #[test]
    fn pod_specs_get_the_real_defaults() {
        let mut pt = json!({"template": {"spec": {"containers": [
            {"name": "c", "image": "busybox:1"},
            {"name": "d", "image": "busybox", "ports": [{"containerPort": 80}]},
        ]}}});
        apply_defaults("", "PodTemplate", &mut pt, true);
        assert_eq!(
            pt["template"]["spec"],
            json!({"containers": [
                {"name": "c", "image": "busybox:1", "imagePullPolicy": "IfNotPresent",
                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"},
                {"name": "d", "image": "busybox", "imagePullPolicy": "Always",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"},
                ],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                "schedulerName": "default-scheduler", "securityContext": {},
                "terminationGracePeriodSeconds": 30})
        );
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "x:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply_defaults("", "Pod", &mut pod, true);
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
        assert_eq!(pod["spec"]["enableServiceLinks"], json!(true));
    }

    #[test]
    fn pod_specs_need_named_containers_with_images() {
        let pt = json!({"template": {"spec": {}}});
        assert_eq!(
            fields(&validate_pods("", "PodTemplate", &pt)),
            ["template.spec.containers"]
        );
        let pod = json!({"spec": {"restartPolicy": "Sometimes", "containers": [
            {"name": "c", "image": "x"}, {"name": "c"}, {"name": "Bad", "image": "x"}]}});
        assert_eq!(
            fields(&validate_pods("", "Pod", &pod)),
            [
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.containers[2].name",
                "spec.restartPolicy"
            ]
        );
    }

    #[test]
    fn services_are_defaulted_and_get_addresses() {
        let mut svc = json!({"spec": {"type": "NodePort", "selector": {"a": "b"},
            "ports": [{"port": 80}]}});
        apply_defaults("", "Service", &mut svc, true);
        assert!(allocate_service(&mut svc, None, &["10.0.0.2".into()], &[30000]).is_ok());
        assert_eq!(
            svc["spec"],
            json!({"type": "NodePort", "selector": {"a": "b"}, "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster", "externalTrafficPolicy": "Cluster",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30001}],
                "clusterIP": "10.0.0.3", "clusterIPs": ["10.0.0.3"], "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack"})
        );
        assert_eq!(svc["status"], json!({"loadBalancer": {}}));
        // An update that leaves them out keeps the allocations.
        let mut update = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply_defaults("", "Service", &mut update, false);
        assert!(allocate_service(&mut update, Some(&svc), &[], &[]).is_ok());
        assert_eq!(update["spec"]["clusterIP"], json!("10.0.0.3"));
        assert_eq!(update["spec"]["ports"][0]["nodePort"], json!(30001));
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        assert!(allocate_service(&mut headless, None, &[], &[]).is_ok());
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn events_are_validated_like_the_real_server() {
        let core = json!({"metadata": {"namespace": "ns"}, "involvedObject": {"namespace": "ns"}});
        assert!(validate_event(&core, false, true).is_empty());
        let other = json!({"metadata": {"namespace": "ns"}, "involvedObject": {"namespace": "x"}});
        assert_eq!(
            fields(&validate_event(&other, false, true)),
            ["involvedObject.namespace"]
        );
        // Through events.k8s.io without a namespace on `regarding`, and nothing reported.
        let new = json!({"metadata": {"namespace": "ns"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "involvedObject": {"kind": "Pod"}, "type": "Normal"});
        assert_eq!(
            fields(&validate_event(&new, true, true)),
            [
                "involvedObject.namespace",
                "reportingController",
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "reason"
            ]
        );
        let ok = json!({"metadata": {"namespace": "ns"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "involvedObject": {"namespace": "ns"}, "type": "Normal", "reportingComponent": "example.com/c",
            "reportingInstance": "i", "action": "A", "reason": "R", "source": {}});
        assert!(validate_event(&ok, true, true).is_empty());
        assert!(qualified_name_errors("example.com/conformance").is_empty());
        assert_eq!(qualified_name_errors("Example.com/x").len(), 1);
        assert_eq!(qualified_name_errors("").len(), 2);
    }

    #[test]
    fn pods_are_admitted_with_priority_and_tolerations() {
        let mut pod = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable",
            "operator": "Exists", "effect": "NoExecute"}]}});
        admit("", "Pod", &mut pod);
        assert_eq!(pod["spec"]["priority"], json!(0));
        assert_eq!(
            pod["spec"]["preemptionPolicy"],
            json!("PreemptLowerPriority")
        );
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn only_leases_need_a_resource_version_to_update() {
        assert!(!allows_unconditional_update("coordination.k8s.io", "Lease"));
        assert!(allows_unconditional_update("", "ConfigMap"));
    }
}
