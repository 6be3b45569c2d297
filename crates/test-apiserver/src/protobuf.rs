//! Decoding of Kubernetes protobuf request bodies for the few built-in kinds whose typed clients
//! send protobuf (kubectl's `create namespace|secret|configmap|serviceaccount|role|...`). Each
//! supported message is described by a small table of field numbers from the Go types'
//! `generated.proto`; anything else is refused with `415`, never guessed.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// How one protobuf field maps to JSON.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    RepStr,
    RepMsg(&'static [Field]),
    MapStr,
    MapBytes,
}

type Field = (u64, &'static str, Ty);

const OWNER_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "controller", Ty::Bool),
    (7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Ty::Str),
    (2, "generateName", Ty::Str),
    (3, "namespace", Ty::Str),
    (4, "selfLink", Ty::Str),
    (5, "uid", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "generation", Ty::Int),
    (8, "creationTimestamp", Ty::Time),
    (9, "deletionTimestamp", Ty::Time),
    (10, "deletionGracePeriodSeconds", Ty::Int),
    (11, "labels", Ty::MapStr),
    (12, "annotations", Ty::MapStr),
    (13, "ownerReferences", Ty::RepMsg(OWNER_REF)),
    (14, "finalizers", Ty::RepStr),
];

const NAMESPACE: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "spec", Ty::Msg(&[(1, "finalizers", Ty::RepStr)])),
    (3, "status", Ty::Msg(&[(1, "phase", Ty::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapStr),
    (3, "binaryData", Ty::MapBytes),
    (4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapBytes),
    (3, "type", Ty::Str),
    (4, "stringData", Ty::MapStr),
    (5, "immutable", Ty::Bool),
];

const OBJECT_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (2, "namespace", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "fieldPath", Ty::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "secrets", Ty::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", Ty::RepMsg(&[(1, "name", Ty::Str)])),
    (4, "automountServiceAccountToken", Ty::Bool),
];

const POLICY_RULE: &[Field] = &[
    (1, "verbs", Ty::RepStr),
    (2, "apiGroups", Ty::RepStr),
    (3, "resources", Ty::RepStr),
    (4, "resourceNames", Ty::RepStr),
    (5, "nonResourceURLs", Ty::RepStr),
];

const ROLE: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "rules", Ty::RepMsg(POLICY_RULE)),
];

const SUBJECT: &[Field] = &[
    (1, "kind", Ty::Str),
    (2, "apiGroup", Ty::Str),
    (3, "name", Ty::Str),
    (4, "namespace", Ty::Str),
];

const ROLE_REF: &[Field] = &[
    (1, "apiGroup", Ty::Str),
    (2, "kind", Ty::Str),
    (3, "name", Ty::Str),
];

const BINDING: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "subjects", Ty::RepMsg(SUBJECT)),
    (3, "roleRef", Ty::Msg(ROLE_REF)),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    (1, "namespace", Ty::Str),
    (2, "verb", Ty::Str),
    (3, "group", Ty::Str),
    (4, "version", Ty::Str),
    (5, "resource", Ty::Str),
    (6, "subresource", Ty::Str),
    (7, "name", Ty::Str),
];

const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (
        2,
        "spec",
        Ty::Msg(&[
            (1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            (
                2,
                "nonResourceAttributes",
                Ty::Msg(&[(1, "path", Ty::Str), (2, "verb", Ty::Str)]),
            ),
        ]),
    ),
];

fn schema_for(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_SUBJECT_ACCESS_REVIEW,
        _ => return None,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Next `(field number, wire type)`, or `None` at the end.
    fn key(&mut self) -> Option<(u64, u64)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let k = self.varint()?;
        Some((k >> 3, k & 7))
    }

    fn skip(&mut self, wire: u64) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.pos = self.pos.checked_add(8)?;
                Some(())
            }
            2 => self.bytes().map(|_| ()),
            5 => {
                self.pos = self.pos.checked_add(4)?;
                Some(())
            }
            _ => None,
        }
    }
}

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((f, wire)) = r.key() {
        match (f, wire) {
            (1, 2) => k = text(r.bytes()?)?,
            (2, 2) => {
                let raw = r.bytes()?;
                v = if bytes_value {
                    json!(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    json!(text(raw)?)
                };
            }
            _ => r.skip(wire)?,
        }
    }
    Some((k, v))
}

fn time(b: &[u8]) -> Option<Option<Value>> {
    let mut r = Reader { buf: b, pos: 0 };
    let mut secs = 0i64;
    while let Some((f, wire)) = r.key() {
        match (f, wire) {
            (1, 0) => secs = i64::try_from(r.varint()?).ok()?,
            _ => r.skip(wire)?,
        }
    }
    if secs == 0 {
        return Some(None);
    }
    let t = chrono::DateTime::from_timestamp(secs, 0)?;
    Some(Some(json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())))
}

fn message(b: &[u8], fields: &[Field]) -> Option<Value> {
    let mut out = Map::new();
    let mut r = Reader { buf: b, pos: 0 };
    while let Some((num, wire)) = r.key() {
        let Some((_, name, ty)) = fields.iter().find(|(n, _, _)| *n == num) else {
            r.skip(wire)?;
            continue;
        };
        let name = (*name).to_owned();
        match (ty, wire) {
            (Ty::Str, 2) => {
                // Go always encodes strings; its JSON omits the empty ones.
                let v = text(r.bytes()?)?;
                if !v.is_empty() {
                    out.insert(name, json!(v));
                }
            }
            (Ty::Int, 0) => {
                // int64 is two's complement in a varint.
                out.insert(name, json!(r.varint()?.cast_signed()));
            }
            (Ty::Bool, 0) => {
                out.insert(name, json!(r.varint()? != 0));
            }
            (Ty::Time, 2) => {
                // A zero time is how Go encodes "unset".
                if let Some(v) = time(r.bytes()?)? {
                    out.insert(name, v);
                }
            }
            (Ty::Msg(inner), 2) => {
                out.insert(name, message(r.bytes()?, inner)?);
            }
            (Ty::RepStr, 2) => {
                let v = json!(text(r.bytes()?)?);
                push(&mut out, name, v);
            }
            (Ty::RepMsg(inner), 2) => {
                let v = message(r.bytes()?, inner)?;
                push(&mut out, name, v);
            }
            (Ty::MapStr | Ty::MapBytes, 2) => {
                let (k, v) = map_entry(r.bytes()?, matches!(ty, Ty::MapBytes))?;
                let m = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Some(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: String, v: Value) {
    let arr = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
    if let Some(a) = arr.as_array_mut() {
        a.push(v);
    }
}

/// Decodes a `application/vnd.kubernetes.protobuf` body (`k8s\0` + `runtime.Unknown`) of a
/// supported kind into JSON; `None` if it is malformed or of an unsupported kind.
pub fn decode(body: &[u8]) -> Option<Value> {
    let rest = body.strip_prefix(b"k8s\0")?;
    let mut r = Reader { buf: rest, pos: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    while let Some((f, wire)) = r.key() {
        match (f, wire) {
            (1, 2) => {
                let tm = message(
                    r.bytes()?,
                    &[(1, "apiVersion", Ty::Str), (2, "kind", Ty::Str)],
                )?;
                api_version = tm.get("apiVersion")?.as_str()?.to_owned();
                kind = tm.get("kind")?.as_str()?.to_owned();
            }
            (2, 2) => raw = Some(r.bytes()?),
            _ => r.skip(wire)?,
        }
    }
    let mut obj = message(raw?, schema_for(&api_version, &kind)?)?;
    let m = obj.as_object_mut()?;
    m.insert("apiVersion".into(), json!(api_version));
    m.insert("kind".into(), json!(kind));
    Some(obj)
}
