//! CRD structural schemas: validation, pruning and defaulting as `apiextensions-apiserver` does
//! them, plus the list/map types server-side apply needs.
//!
//! Public API:
//! - [`StructuralSchema::from_value`]`(&Value) -> Result<StructuralSchema, SchemaError>` on a
//!   version's `schema.openAPIV3Schema`.
//! - [`StructuralSchema::admit`]`(&self, &mut Value) -> Vec<FieldError>`: the whole write path of a
//!   custom object, in the real order: [`prune`](StructuralSchema::prune), drop `null`s of
//!   non-nullable fields, [`apply_defaults`](StructuralSchema::apply_defaults),
//!   [`validate`](StructuralSchema::validate).
//! - [`FieldError`] (`path`, `kind`, `value`, `detail`) with [`FieldError::message`] rendering
//!   `spec.tier: Unsupported value: "x": supported values: "a", "b"`,
//!   [`FieldError::reason`] (`FieldValueInvalid`, …) for `Status.details.causes`, and
//!   [`invalid_message`] for the `422` `Status.message`.
//! - [`structural_errors`]`(&Value) -> Vec<FieldError>`: the checks a CRD's schema must pass
//!   (structural types, no `uniqueItems`, `metadata` limited to `name`/`generateName`, valid and
//!   prune-stable defaults), with paths from `openAPIV3Schema`.
//! - [`normalize_object_meta`]`(&mut Value)`: `metadata` as the Go `ObjectMeta` round trip leaves
//!   it (unknown and empty `omitempty` fields dropped), for every kind.
//! - [`TypeInfo`] for server-side apply (`x-kubernetes-list-type`, `-list-map-keys`, `-map-type`).
//!
//! Not implemented: CEL (`x-kubernetes-validations`); of the string formats only `date-time`,
//! `date`, `uuid*`, `ipv4`, `ipv6` and `byte` are checked.

use crate::semantics::cel;
use crate::semantics::types::{ListType, MapType, Seg, TypeInfo, object_meta_list_type};
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A schema that is not usable (bad pattern, malformed keyword).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// Where in the schema, e.g. `properties.spec.pattern`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Kind of a validation failure, mirroring `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `Required value`.
    Required,
    /// `Invalid value` (pattern, bounds, lengths, formats…).
    Invalid,
    /// `Unsupported value` (enum).
    Unsupported,
    /// `Invalid value` for a wrong JSON type.
    TypeInvalid,
    /// `Too long` (maxLength).
    TooLong,
    /// `Too many` (maxItems, maxProperties).
    TooMany,
    /// `Duplicate value` (`set` and `map` lists).
    Duplicate,
    /// `Forbidden` (schema constructs the server refuses).
    Forbidden,
}

impl FieldErrorKind {
    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::Unsupported => "Unsupported value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Duplicate => "Duplicate value",
            Self::Forbidden => "Forbidden",
        }
    }
}

/// One validation failure of a custom object.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Field path, e.g. `spec.items[2].name`.
    pub path: String,
    /// Kind of failure.
    pub kind: FieldErrorKind,
    /// The offending value as the real server prints it (`None` for `Required`/`Too long`).
    pub value: Option<Value>,
    /// Detail after the value, e.g. `supported values: "a", "b"`.
    pub detail: String,
}

/// Formats a float like Go's `%v` (`%g` with the shortest digits: exponent form below 1e-4 and
/// from 1e6, e.g. `1e+06`), which is how bounds appear in the real messages.
pub fn go_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return format!("{f}");
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".to_owned(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => go_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

impl FieldError {
    fn new(path: &str, kind: FieldErrorKind, value: Option<Value>, detail: String) -> Self {
        Self {
            path: path.to_owned(),
            kind,
            value,
            detail,
        }
    }

    /// The message without the field path (`Status.details.causes[].message`).
    pub fn body(&self) -> String {
        let mut s = self.kind.label().to_owned();
        if let (Some(v), false) = (
            &self.value,
            matches!(
                self.kind,
                FieldErrorKind::Required | FieldErrorKind::TooLong | FieldErrorKind::Forbidden
            ),
        ) {
            s.push_str(": ");
            s.push_str(&render_value(v));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `path: body`, as `field.Error.Error()`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.path, self.body())
    }

    /// `Status.details.causes[].reason`.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Unsupported => "FieldValueNotSupported",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
        }
    }
}

/// `Status.message` of a `422 Invalid`: `Kind.group "name" is invalid: <errors>`, with one error
/// bare and several as `[a, b]` (duplicates removed), like `errors.NewInvalid`.
pub fn invalid_message(qualified_kind: &str, name: &str, errors: &[FieldError]) -> String {
    let mut msgs: Vec<String> = Vec::new();
    for e in errors {
        let m = e.message();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    let agg = if msgs.len() == 1 {
        msgs.remove(0)
    } else {
        format!("[{}]", msgs.join(", "))
    };
    format!("{qualified_kind} {name:?} is invalid: {agg}")
}

/// Fields of `ObjectMeta`: everything else in a `metadata` is dropped, as decoding into the Go
/// struct does.
pub const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Normalizes a `metadata` object as a round trip through the Go `ObjectMeta` struct would:
/// unknown fields dropped, and `omitempty` fields that are empty (`""`, `0` generation, `[]`,
/// `{}`, `null`) removed. Clients rely on this, e.g. kube-runtime's finalizer helper sends a JSON
/// patch `test /metadata/finalizers == null`, which fails against a stored `finalizers: []`.
/// `deletionGracePeriodSeconds: 0` is kept (a pointer in Go).
pub fn normalize_object_meta(meta: &mut Value) {
    let Value::Object(m) = meta else { return };
    m.retain(|k, v| {
        OBJECT_META_FIELDS.contains(&k.as_str())
            && match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                Value::Number(n) => k != "generation" || n.as_i64() != Some(0),
                Value::Bool(_) => true,
            }
    });
}

/// A parsed CRD schema node (recursive).
#[derive(Debug, Clone, Default)]
pub struct StructuralSchema {
    type_: Option<String>,
    properties: BTreeMap<String, StructuralSchema>,
    additional_properties: Option<Box<StructuralSchema>>,
    items: Option<Box<StructuralSchema>>,
    required: Vec<String>,
    enum_values: Option<Vec<Value>>,
    pattern: Option<(String, Regex)>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: bool,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    format: Option<String>,
    nullable: bool,
    default: Option<Value>,
    preserve_unknown_fields: bool,
    int_or_string: bool,
    embedded_resource: bool,
    list_type: Option<String>,
    list_map_keys: Vec<String>,
    map_type: Option<String>,
    all_of: Vec<StructuralSchema>,
    any_of: Vec<StructuralSchema>,
    one_of: Vec<StructuralSchema>,
    not: Option<Box<StructuralSchema>>,
    /// `x-kubernetes-validations`.
    validations: Vec<CelRule>,
}

/// One `x-kubernetes-validations` rule of a schema node.
#[derive(Debug, Clone)]
struct CelRule {
    rule: String,
    /// `None` when the rule is outside the supported CEL subset: it is not evaluated.
    expr: Option<cel::Expr>,
    message: Option<String>,
    reason: Option<String>,
    field_path: Option<String>,
}

fn schema_err<T>(path: &str, message: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError {
        path: path.to_owned(),
        message: message.into(),
    })
}

fn get_u64(m: &Map<String, Value>, k: &str, path: &str) -> Result<Option<u64>, SchemaError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n)),
            None => schema_err(&format!("{path}.{k}"), "must be a non-negative integer"),
        },
    }
}

fn get_f64(m: &Map<String, Value>, k: &str, path: &str) -> Result<Option<f64>, SchemaError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) => Ok(Some(n)),
            None => schema_err(&format!("{path}.{k}"), "must be a number"),
        },
    }
}

fn get_bool(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn get_str(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// Light RFC 3339 check (`2006-01-02T15:04:05Z`, fractional seconds, offsets).
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|x| x.len() == r.len() && x.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3)
                && b.get(i + 3) == Some(&b':')
                && digits(i + 4..i + 6)
                && i + 6 == b.len()
        }
        _ => false,
    }
}

/// Checks that an `openAPIV3Schema` is structural and that its defaults validate and survive
/// pruning, as the real server does before it accepts a CRD. Paths start at `openAPIV3Schema`
/// (prefix them with `spec.versions[i].schema.`); empty means acceptable.
pub fn structural_errors(schema: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    check_node(schema, "openAPIV3Schema", Position::Root, &mut errs);
    errs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    Property,
    Items,
    AdditionalProperties,
}

fn check_node(v: &Value, path: &str, pos: Position, errs: &mut Vec<FieldError>) {
    let Value::Object(m) = v else { return };
    let err = |errs: &mut Vec<FieldError>, at: &str, kind, value: Option<Value>, detail: &str| {
        errs.push(FieldError::new(
            &format!("{path}.{at}"),
            kind,
            value,
            detail.to_owned(),
        ));
    };
    let type_ = m.get("type").and_then(Value::as_str);
    let int_or_string = get_bool(m, "x-kubernetes-int-or-string");
    let preserve = get_bool(m, "x-kubernetes-preserve-unknown-fields");
    match (pos, type_) {
        (Position::Root, None) => err(
            errs,
            "type",
            FieldErrorKind::Required,
            None,
            "must not be empty at the root",
        ),
        (Position::Root, Some(t)) if t != "object" => err(
            errs,
            "type",
            FieldErrorKind::Invalid,
            Some(Value::String(t.to_owned())),
            "must be object at the root",
        ),
        (_, None) if !int_or_string && !preserve => {
            let detail = match pos {
                Position::Items => "must not be empty for specified array items",
                _ => "must not be empty for specified object fields",
            };
            err(errs, "type", FieldErrorKind::Required, None, detail);
        }
        (_, Some(t)) if int_or_string => err(
            errs,
            "type",
            FieldErrorKind::Invalid,
            Some(Value::String(t.to_owned())),
            "must be empty if x-kubernetes-int-or-string is true",
        ),
        _ => {}
    }
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        err(
            errs,
            "additionalProperties",
            FieldErrorKind::Forbidden,
            None,
            "additionalProperties and properties are mutual exclusive",
        );
    }
    if m.get("additionalProperties") == Some(&Value::Bool(false)) {
        err(
            errs,
            "additionalProperties",
            FieldErrorKind::Forbidden,
            None,
            "must not be false",
        );
    }
    if get_bool(m, "uniqueItems") {
        err(
            errs,
            "uniqueItems",
            FieldErrorKind::Forbidden,
            None,
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        );
    }
    if m.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map")
        && m.get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        err(
            errs,
            "x-kubernetes-list-map-keys",
            FieldErrorKind::Required,
            None,
            "must not be empty if x-kubernetes-list-type is map",
        );
    }
    if let Some(Value::Object(props)) = m.get("properties") {
        for (k, child) in props {
            let cp = format!("{path}.properties[{k}]");
            if pos == Position::Root && k == "metadata" {
                let only_names = child
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_none_or(|p| p.keys().all(|k| k == "name" || k == "generateName"));
                if !only_names {
                    errs.push(FieldError::new(
                        &cp,
                        FieldErrorKind::Forbidden,
                        None,
                        "must not specify anything other than name and generateName, but metadata is implicitly specified".to_owned(),
                    ));
                }
            }
            check_node(child, &cp, Position::Property, errs);
        }
    }
    if let Some(items) = m.get("items") {
        check_node(items, &format!("{path}.items"), Position::Items, errs);
    }
    if let Some(ap @ Value::Object(_)) = m.get("additionalProperties") {
        check_node(
            ap,
            &format!("{path}.additionalProperties"),
            Position::AdditionalProperties,
            errs,
        );
    }
    if let Some(default) = m.get("default") {
        let dpath = format!("{path}.default");
        match StructuralSchema::parse(v, path) {
            Ok(node) => {
                let mut pruned = default.clone();
                node.prune_node(&mut pruned, false);
                if pruned != *default {
                    errs.push(FieldError::new(
                        &dpath,
                        FieldErrorKind::Invalid,
                        Some(default.clone()),
                        "must not have unknown fields".to_owned(),
                    ));
                }
                let mut inner = Vec::new();
                node.validate_node(default, "", &mut inner, false);
                for e in inner {
                    let at = if e.path.is_empty() {
                        dpath.clone()
                    } else {
                        format!("{dpath}.{}", e.path)
                    };
                    errs.push(FieldError { path: at, ..e });
                }
            }
            Err(e) => errs.push(FieldError::new(
                &dpath,
                FieldErrorKind::Invalid,
                None,
                e.message,
            )),
        }
    }
}

/// The string formats checked (as kube-openapi's `strfmt` registry does); other formats
/// (`int32`, `password`, `duration`, …) accept any string.
fn format_ok(format: &str, s: &str) -> bool {
    let hex = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_hexdigit());
    match format {
        "date-time" | "datetime" => is_date_time(s),
        "date" => is_date_time(&format!("{s}T00:00:00Z")) && s.len() == 10,
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            let p: Vec<&str> = s.split('-').collect();
            p.len() == 5
                && hex(p[0], 8)
                && hex(p[1], 4)
                && hex(p[2], 4)
                && hex(p[3], 4)
                && hex(p[4], 12)
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "byte" => {
            let body = s.trim_end_matches('=');
            s.len().is_multiple_of(4)
                && s.len() - body.len() <= 2
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        }
        _ => true,
    }
}

impl StructuralSchema {
    /// Parses an `openAPIV3Schema`. Unknown keywords are ignored; an invalid `pattern` or a
    /// malformed keyword is an error.
    pub fn from_value(v: &Value) -> Result<Self, SchemaError> {
        Self::parse(v, "openAPIV3Schema")
    }

    fn parse(v: &Value, path: &str) -> Result<Self, SchemaError> {
        let Value::Object(m) = v else {
            return schema_err(path, "must be an object");
        };
        let mut s = Self {
            type_: get_str(m, "type"),
            nullable: get_bool(m, "nullable"),
            default: m.get("default").cloned(),
            preserve_unknown_fields: get_bool(m, "x-kubernetes-preserve-unknown-fields"),
            int_or_string: get_bool(m, "x-kubernetes-int-or-string"),
            embedded_resource: get_bool(m, "x-kubernetes-embedded-resource"),
            list_type: get_str(m, "x-kubernetes-list-type"),
            map_type: get_str(m, "x-kubernetes-map-type"),
            format: get_str(m, "format"),
            minimum: get_f64(m, "minimum", path)?,
            maximum: get_f64(m, "maximum", path)?,
            exclusive_minimum: get_bool(m, "exclusiveMinimum"),
            exclusive_maximum: get_bool(m, "exclusiveMaximum"),
            multiple_of: get_f64(m, "multipleOf", path)?,
            min_length: get_u64(m, "minLength", path)?,
            max_length: get_u64(m, "maxLength", path)?,
            min_items: get_u64(m, "minItems", path)?,
            max_items: get_u64(m, "maxItems", path)?,
            min_properties: get_u64(m, "minProperties", path)?,
            max_properties: get_u64(m, "maxProperties", path)?,
            ..Self::default()
        };
        if let Some(t) = &s.type_
            && !matches!(
                t.as_str(),
                "object" | "array" | "string" | "integer" | "number" | "boolean"
            )
        {
            return schema_err(&format!("{path}.type"), format!("unsupported type {t:?}"));
        }
        if let Some(Value::Object(props)) = m.get("properties") {
            for (k, pv) in props {
                let child = Self::parse(pv, &format!("{path}.properties[{k}]"))?;
                s.properties.insert(k.clone(), child);
            }
        }
        match m.get("additionalProperties") {
            Some(Value::Object(_)) => {
                let ap = m.get("additionalProperties").unwrap_or(&Value::Null);
                s.additional_properties = Some(Box::new(Self::parse(
                    ap,
                    &format!("{path}.additionalProperties"),
                )?));
            }
            // `additionalProperties: true` keeps unknown keys (a map of anything).
            Some(Value::Bool(true)) => {
                s.additional_properties = Some(Box::new(Self {
                    preserve_unknown_fields: true,
                    ..Self::default()
                }));
            }
            _ => {}
        }
        if let Some(items) = m.get("items") {
            s.items = Some(Box::new(Self::parse(items, &format!("{path}.items"))?));
        }
        if let Some(Value::Array(req)) = m.get("required") {
            s.required = req
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        if let Some(Value::Array(e)) = m.get("enum") {
            s.enum_values = Some(e.clone());
        }
        if let Some(Value::Array(keys)) = m.get("x-kubernetes-list-map-keys") {
            s.list_map_keys = keys
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        if let Some(p) = get_str(m, "pattern") {
            match Regex::new(&p) {
                Ok(re) => s.pattern = Some((p, re)),
                Err(e) => return schema_err(&format!("{path}.pattern"), format!("{e}")),
            }
        }
        for (kw, target) in [("allOf", 0), ("anyOf", 1), ("oneOf", 2)] {
            if let Some(Value::Array(list)) = m.get(kw) {
                let parsed = list
                    .iter()
                    .enumerate()
                    .map(|(i, x)| Self::parse(x, &format!("{path}.{kw}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                match target {
                    0 => s.all_of = parsed,
                    1 => s.any_of = parsed,
                    _ => s.one_of = parsed,
                }
            }
        }
        if let Some(n) = m.get("not") {
            s.not = Some(Box::new(Self::parse(n, &format!("{path}.not"))?));
        }
        if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
            s.validations = rules
                .iter()
                .filter_map(|r| {
                    let rule = r.get("rule").and_then(Value::as_str)?.to_owned();
                    Some(CelRule {
                        expr: cel::parse(&rule).ok(),
                        rule,
                        message: r.get("message").and_then(Value::as_str).map(str::to_owned),
                        reason: r.get("reason").and_then(Value::as_str).map(str::to_owned),
                        field_path: r
                            .get("fieldPath")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    })
                })
                .collect();
        }
        Ok(s)
    }

    // -----------------------------------------------------------------------------------------
    // Validation rules (CEL)

    /// Evaluates the `x-kubernetes-validations` rules of every node of `obj` (`old`: the object
    /// before an update, which transition rules reading `oldSelf` need; they are skipped on
    /// create and where the old value is missing). Rules outside the supported CEL subset, and
    /// rules whose evaluation fails, are skipped.
    pub fn validate_rules(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        self.rules_node(obj, old, "", &mut errs);
        errs
    }

    fn rules_node(&self, v: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
        if v.is_null() {
            return;
        }
        for r in &self.validations {
            let Some(expr) = &r.expr else { continue };
            let transition = expr.uses("oldSelf");
            if transition && old.is_none() {
                continue;
            }
            if cel::check(expr, v, old.filter(|_| transition)) != Ok(false) {
                continue;
            }
            let at = match r.field_path.as_deref() {
                Some(fp) if !fp.is_empty() => {
                    let fp = fp.trim_start_matches('.');
                    if path.is_empty() {
                        fp.to_owned()
                    } else {
                        format!("{path}.{fp}")
                    }
                }
                _ => path.to_owned(),
            };
            let kind = match r.reason.as_deref() {
                Some("FieldValueForbidden") => FieldErrorKind::Forbidden,
                Some("FieldValueRequired") => FieldErrorKind::Required,
                Some("FieldValueDuplicate") => FieldErrorKind::Duplicate,
                _ => FieldErrorKind::Invalid,
            };
            let shown = if self.int_or_string {
                "integer-or-string".to_owned()
            } else {
                self.type_.clone().unwrap_or_else(|| "object".to_owned())
            };
            let message = r
                .message
                .clone()
                .unwrap_or_else(|| format!("failed rule: {}", r.rule));
            errs.push(FieldError::new(
                &at,
                kind,
                Some(Value::String(shown)),
                message,
            ));
        }
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let Some(s) = self
                        .properties
                        .get(k)
                        .or(self.additional_properties.as_deref())
                    else {
                        continue;
                    };
                    let o = old.and_then(|o| o.get(k));
                    s.rules_node(child, o, &Self::child_path(path, k), errs);
                }
            }
            Value::Array(items) => {
                let Some(s) = &self.items else { return };
                for (i, it) in items.iter().enumerate() {
                    // Only items of map lists correlate with an old item (by their keys).
                    let o = (self.list_type.as_deref() == Some("map"))
                        .then(|| {
                            old.and_then(Value::as_array)?
                                .iter()
                                .find(|o| self.list_map_keys.iter().all(|k| o.get(k) == it.get(k)))
                        })
                        .flatten();
                    s.rules_node(it, o, &format!("{path}[{i}]"), errs);
                }
            }
            _ => {}
        }
    }

    /// The full write path of a custom object: prune unknown fields, drop `null`s of
    /// non-nullable fields, apply defaults, validate. Returns the validation errors (empty = ok).
    pub fn admit(&self, obj: &mut Value) -> Vec<FieldError> {
        self.admit_update(obj, None)
    }

    /// [`Self::admit`], then the validation rules (`old`: the object an update replaces). As on
    /// the real server, the rules are not evaluated when the schema validation found errors
    /// that bound their cost (wrong types, unsupported or missing values, too long or too many).
    pub fn admit_update(&self, obj: &mut Value, old: Option<&Value>) -> Vec<FieldError> {
        self.prune(obj);
        self.apply_defaults(obj);
        let mut errs = self.validate(obj);
        let blocking = errs.iter().any(|e| {
            matches!(
                e.kind,
                FieldErrorKind::TypeInvalid
                    | FieldErrorKind::Unsupported
                    | FieldErrorKind::Required
                    | FieldErrorKind::TooLong
                    | FieldErrorKind::TooMany
            )
        });
        if !self.has_rules() {
            return errs;
        }
        if blocking {
            // `field.Invalid(nil, nil, …)`: a nil path prints as `<nil>`.
            errs.push(FieldError::new(
                "<nil>",
                FieldErrorKind::Invalid,
                Some(Value::Null),
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".to_owned(),
            ));
        } else {
            errs.extend(self.validate_rules(obj, old));
        }
        errs
    }

    /// Whether any node has `x-kubernetes-validations` (the real server has a CEL validator
    /// for the version only then).
    fn has_rules(&self) -> bool {
        !self.validations.is_empty()
            || self.properties.values().any(Self::has_rules)
            || self
                .additional_properties
                .as_deref()
                .is_some_and(Self::has_rules)
            || self.items.as_deref().is_some_and(Self::has_rules)
    }

    // -----------------------------------------------------------------------------------------
    // Pruning

    /// Drops every field the schema does not declare, except below
    /// `x-kubernetes-preserve-unknown-fields: true`. At the root (and in embedded resources)
    /// `apiVersion`, `kind` and `metadata` are kept, and `metadata` is cut down to `ObjectMeta`.
    pub fn prune(&self, obj: &mut Value) {
        self.prune_node(obj, true);
    }

    fn prune_node(&self, v: &mut Value, is_resource: bool) {
        match v {
            Value::Object(m) => {
                let keep_meta = is_resource || self.embedded_resource;
                if keep_meta && let Some(Value::Object(meta)) = m.get_mut("metadata") {
                    meta.retain(|k, _| OBJECT_META_FIELDS.contains(&k.as_str()));
                }
                let mut drop = Vec::new();
                for (k, child) in m.iter_mut() {
                    if keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if let Some(p) = self.properties.get(k) {
                        p.prune_node(child, false);
                    } else if let Some(ap) = &self.additional_properties {
                        ap.prune_node(child, false);
                    } else if self.preserve_unknown_fields {
                        // Unknown values are kept as they are.
                    } else {
                        drop.push(k.clone());
                    }
                }
                for k in drop {
                    m.remove(&k);
                }
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for it in items {
                        s.prune_node(it, false);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether [`Self::prune`] followed by [`Self::apply_defaults`] would change `obj`, checked
    /// without copying it. That is how a stored object is read back (the real server prunes and
    /// defaults what it decodes from etcd); an object written through the same schema reads back
    /// unchanged.
    pub fn changes_on_read(&self, obj: &Value) -> bool {
        self.would_prune(obj, true) || self.would_default(obj)
    }

    fn would_prune(&self, v: &Value, is_resource: bool) -> bool {
        match v {
            Value::Object(m) => {
                let keep_meta = is_resource || self.embedded_resource;
                if keep_meta
                    && let Some(Value::Object(meta)) = m.get("metadata")
                    && meta
                        .keys()
                        .any(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
                {
                    return true;
                }
                m.iter().any(|(k, child)| {
                    if keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        false
                    } else if let Some(p) = self.properties.get(k) {
                        p.would_prune(child, false)
                    } else if let Some(ap) = &self.additional_properties {
                        ap.would_prune(child, false)
                    } else {
                        !self.preserve_unknown_fields
                    }
                })
            }
            Value::Array(items) => self
                .items
                .as_ref()
                .is_some_and(|s| items.iter().any(|it| s.would_prune(it, false))),
            _ => false,
        }
    }

    /// Whether [`Self::apply_defaults`] would change `v`: a missing defaulted property, or a
    /// `null` that is not nullable (dropped or defaulted), anywhere.
    fn would_default(&self, v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                let missing_default = self
                    .properties
                    .iter()
                    .any(|(k, p)| p.default.is_some() && !m.contains_key(k));
                missing_default
                    || m.iter().any(|(k, child)| {
                        match self
                            .properties
                            .get(k)
                            .or(self.additional_properties.as_deref())
                        {
                            Some(s) => s.is_non_nullable_null(child) || s.would_default(child),
                            None => false,
                        }
                    })
            }
            Value::Array(items) => self.items.as_ref().is_some_and(|s| {
                items.iter().any(|it| {
                    (s.is_non_nullable_null(it) && s.default.is_some()) || s.would_default(it)
                })
            }),
            _ => false,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Defaulting

    fn is_non_nullable_null(&self, v: &Value) -> bool {
        v.is_null() && !self.nullable
    }

    /// Applies defaults as `structuraldefaulting.Default` does: a missing property (or a `null`
    /// one that is not nullable) gets its default, then defaults apply recursively inside it, so
    /// `default: {}` creates an object whose children are defaulted in turn. `null` items and map
    /// values that are not nullable get the items/additionalProperties default. `null`s of
    /// non-nullable fields without a default are dropped first.
    pub fn apply_defaults(&self, obj: &mut Value) {
        self.prune_nulls(obj);
        self.default_node(obj);
    }

    fn prune_nulls(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, child| {
                    let s = self
                        .properties
                        .get(k)
                        .or(self.additional_properties.as_deref());
                    match s {
                        Some(s) => !(s.is_non_nullable_null(child) && s.default.is_none()),
                        None => true,
                    }
                });
                for (k, child) in m.iter_mut() {
                    if let Some(s) = self
                        .properties
                        .get(k)
                        .or(self.additional_properties.as_deref())
                    {
                        s.prune_nulls(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for it in items {
                        s.prune_nulls(it);
                    }
                }
            }
            _ => {}
        }
    }

    fn default_node(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, p) in &self.properties {
                    let Some(d) = &p.default else { continue };
                    let missing = m.get(k).is_none_or(|cur| p.is_non_nullable_null(cur));
                    if missing {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(p) = self.properties.get(k) {
                        p.default_node(child);
                    } else if let Some(ap) = &self.additional_properties {
                        if ap.is_non_nullable_null(child)
                            && let Some(d) = &ap.default
                        {
                            *child = d.clone();
                        }
                        ap.default_node(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for it in items {
                        if s.is_non_nullable_null(it)
                            && let Some(d) = &s.default
                        {
                            *it = d.clone();
                        }
                        s.default_node(it);
                    }
                }
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------------------------
    // Validation

    /// Validates `obj` against the schema and returns every failure, with paths like
    /// `spec.items[2].name` and the real server's messages. `metadata` at the root is only
    /// checked against what the schema says about it (the server validates `ObjectMeta` itself).
    pub fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        self.validate_node(obj, "", &mut errs, true);
        errs
    }

    fn child_path(base: &str, key: &str) -> String {
        if base.is_empty() {
            key.to_owned()
        } else {
            format!("{base}.{key}")
        }
    }

    fn validate_node(&self, v: &Value, path: &str, errs: &mut Vec<FieldError>, is_root: bool) {
        let shown = if path.is_empty() { "<root>" } else { path };
        if v.is_null() {
            if self.nullable || (self.type_.is_none() && !self.int_or_string) {
                return;
            }
            let t = if self.int_or_string {
                "integer-or-string".to_owned()
            } else {
                self.type_.clone().unwrap_or_default()
            };
            errs.push(FieldError::new(
                path,
                FieldErrorKind::TypeInvalid,
                Some(Value::String("null".into())),
                format!("{shown} in body must be of type {t}: \"null\""),
            ));
            return;
        }
        // Type.
        let actual = type_name(v);
        let type_ok = if self.int_or_string {
            is_integer(v) || v.is_string()
        } else {
            match self.type_.as_deref() {
                None => true,
                Some("integer") => is_integer(v),
                Some("number") => v.is_number(),
                Some(t) => t == actual,
            }
        };
        if !type_ok {
            let t = if self.int_or_string {
                "integer,string".to_owned()
            } else {
                self.type_.clone().unwrap_or_default()
            };
            errs.push(FieldError::new(
                path,
                FieldErrorKind::TypeInvalid,
                Some(Value::String(actual.into())),
                format!("{shown} in body must be of type {t}: \"{actual}\""),
            ));
            return;
        }
        // Enum.
        if let Some(values) = &self.enum_values
            && !values.iter().any(|e| json_eq(e, v))
        {
            let supported: Vec<String> = values
                .iter()
                .map(|e| match e {
                    Value::String(s) => format!("{s:?}"),
                    other => format!("{:?}", other.to_string()),
                })
                .collect();
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Unsupported,
                Some(v.clone()),
                format!("supported values: {}", supported.join(", ")),
            ));
        }
        match v {
            Value::String(s) => self.validate_string(s, v, path, shown, errs),
            Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    self.validate_number(f, v, path, shown, errs);
                }
            }
            Value::Array(items) => self.validate_array(items, v, path, shown, errs),
            Value::Object(m) => self.validate_object(m, v, path, shown, errs, is_root),
            _ => {}
        }
        self.validate_combinators(v, path, shown, errs, is_root);
    }

    fn validate_string(
        &self,
        s: &str,
        v: &Value,
        path: &str,
        shown: &str,
        errs: &mut Vec<FieldError>,
    ) {
        // go-openapi's string validator stops at the first failing check (maxLength, then
        // minLength, then pattern); the format is checked separately.
        let len = s.chars().count() as u64;
        if let Some(max) = self.max_length
            && len > max
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::TooLong,
                Some(v.clone()),
                format!(
                    "may not be more than {max} {}",
                    if max == 1 { "byte" } else { "bytes" }
                ),
            ));
        } else if let Some(min) = self.min_length
            && len < min
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body should be at least {min} chars long"),
            ));
        } else if let Some((p, re)) = &self.pattern
            && !re.is_match(s)
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body should match '{p}'"),
            ));
        }
        if let Some(f) = &self.format
            && !format_ok(f, s)
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::TypeInvalid,
                Some(v.clone()),
                format!("{shown} in body must be of type {f}: {s:?}"),
            ));
        }
    }

    fn validate_number(
        &self,
        f: f64,
        v: &Value,
        path: &str,
        shown: &str,
        errs: &mut Vec<FieldError>,
    ) {
        if let Some(m) = self.multiple_of
            && m > 0.0
            && (f / m).fract().abs() > 1e-9
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body should be a multiple of {}", go_float(m)),
            ));
        }
        if let Some(max) = self.maximum {
            let bad = if self.exclusive_maximum {
                f >= max
            } else {
                f > max
            };
            if bad {
                let rel = if self.exclusive_maximum {
                    "less than"
                } else {
                    "less than or equal to"
                };
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid,
                    Some(v.clone()),
                    format!("{shown} in body should be {rel} {}", go_float(max)),
                ));
            }
        }
        if let Some(min) = self.minimum {
            let bad = if self.exclusive_minimum {
                f <= min
            } else {
                f < min
            };
            if bad {
                let rel = if self.exclusive_minimum {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid,
                    Some(v.clone()),
                    format!("{shown} in body should be {rel} {}", go_float(min)),
                ));
            }
        }
    }

    fn validate_array(
        &self,
        items: &[Value],
        v: &Value,
        path: &str,
        shown: &str,
        errs: &mut Vec<FieldError>,
    ) {
        let n = items.len() as u64;
        if let Some(max) = self.max_items
            && n > max
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::TooMany,
                Some(Value::from(n)),
                format!("must have at most {max} items"),
            ));
        }
        if let Some(min) = self.min_items
            && n < min
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body should have at least {min} items"),
            ));
        }
        if let Some(s) = &self.items {
            for (i, it) in items.iter().enumerate() {
                s.validate_node(it, &format!("{path}[{i}]"), errs, false);
            }
        }
        // Uniqueness of `set` items and `map` keys (listtype validation).
        match self.list_type.as_deref() {
            Some("set") => {
                for (i, it) in items.iter().enumerate() {
                    if items[..i].iter().any(|p| json_eq(p, it)) {
                        errs.push(FieldError::new(
                            &format!("{path}[{i}]"),
                            FieldErrorKind::Duplicate,
                            Some(it.clone()),
                            String::new(),
                        ));
                    }
                }
            }
            Some("map") => {
                let key_of = |it: &Value| -> Vec<Value> {
                    self.list_map_keys
                        .iter()
                        .map(|k| it.get(k).cloned().unwrap_or(Value::Null))
                        .collect()
                };
                for (i, it) in items.iter().enumerate() {
                    let k = key_of(it);
                    if items[..i].iter().any(|p| key_of(p) == k) {
                        let shown_key: Map<String, Value> =
                            self.list_map_keys.iter().cloned().zip(k).collect();
                        errs.push(FieldError::new(
                            &format!("{path}[{i}]"),
                            FieldErrorKind::Duplicate,
                            Some(Value::Object(shown_key)),
                            String::new(),
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    fn validate_object(
        &self,
        m: &Map<String, Value>,
        v: &Value,
        path: &str,
        shown: &str,
        errs: &mut Vec<FieldError>,
        is_root: bool,
    ) {
        let n = m.len() as u64;
        if let Some(max) = self.max_properties
            && n > max
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::TooMany,
                Some(Value::from(n)),
                format!("must have at most {max} items"),
            ));
        }
        if let Some(min) = self.min_properties
            && n < min
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body should have at least {min} properties"),
            ));
        }
        for r in &self.required {
            if !m.contains_key(r) {
                errs.push(FieldError::new(
                    &Self::child_path(path, r),
                    FieldErrorKind::Required,
                    None,
                    String::new(),
                ));
            }
        }
        let embedded = is_root || self.embedded_resource;
        if self.embedded_resource {
            for k in ["apiVersion", "kind"] {
                if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(FieldError::new(
                        &Self::child_path(path, k),
                        FieldErrorKind::Required,
                        None,
                        String::new(),
                    ));
                }
            }
        }
        for (k, child) in m {
            let cp = Self::child_path(path, k);
            if let Some(p) = self.properties.get(k) {
                p.validate_node(child, &cp, errs, false);
            } else if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            } else if let Some(ap) = &self.additional_properties {
                ap.validate_node(child, &cp, errs, false);
            }
        }
    }

    fn validate_combinators(
        &self,
        v: &Value,
        path: &str,
        shown: &str,
        errs: &mut Vec<FieldError>,
        is_root: bool,
    ) {
        for s in &self.all_of {
            s.validate_node(v, path, errs, is_root);
        }
        let ok = |s: &StructuralSchema| {
            let mut e = Vec::new();
            s.validate_node(v, path, &mut e, is_root);
            e.is_empty()
        };
        if !self.any_of.is_empty() && !self.any_of.iter().any(ok) {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body must validate at least one schema (anyOf)"),
            ));
        }
        if !self.one_of.is_empty() && self.one_of.iter().filter(|s| ok(s)).count() != 1 {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body must validate one and only one schema (oneOf)"),
            ));
        }
        if let Some(n) = &self.not
            && ok(n)
        {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(v.clone()),
                format!("{shown} in body must not validate the schema (not)"),
            ));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Shape information

    /// The schema node at `path` (`None` below preserved-unknown or undeclared fields).
    pub fn node_at(&self, path: &[Seg<'_>]) -> Option<&StructuralSchema> {
        let mut cur = self;
        for seg in path {
            cur = match seg {
                Seg::Field(f) => match cur.properties.get(*f) {
                    Some(p) => p,
                    None => cur.additional_properties.as_deref()?,
                },
                Seg::Item => cur.items.as_deref()?,
            };
        }
        Some(cur)
    }

    /// The `x-kubernetes-list-type` of the list at `path` (atomic when unset or unknown).
    pub fn list_type_at(&self, path: &[Seg<'_>]) -> ListType {
        if let Some(t) = object_meta_list_type(path) {
            return t;
        }
        match self.node_at(path) {
            Some(n) => match n.list_type.as_deref() {
                Some("set") => ListType::Set,
                Some("map") => ListType::Map(n.list_map_keys.clone()),
                _ => ListType::Atomic,
            },
            None => ListType::Atomic,
        }
    }

    /// The `x-kubernetes-map-type` of the object at `path` (granular when unset).
    pub fn map_type_at(&self, path: &[Seg<'_>]) -> MapType {
        match self.node_at(path).and_then(|n| n.map_type.as_deref()) {
            Some("atomic") => MapType::Atomic,
            _ => MapType::Granular,
        }
    }
}

impl TypeInfo for StructuralSchema {
    fn list_type(&self, path: &[Seg<'_>]) -> ListType {
        self.list_type_at(path)
    }

    fn map_type(&self, path: &[Seg<'_>]) -> MapType {
        crate::semantics::types::object_meta_map_type(path)
            .unwrap_or_else(|| self.map_type_at(path))
    }

    fn is_declared_field(&self, path: &[Seg<'_>]) -> bool {
        let Some((Seg::Field(last), parent)) = path.split_last() else {
            return true;
        };
        match parent {
            [] => {
                matches!(*last, "apiVersion" | "kind" | "metadata")
                    || self.properties.contains_key(*last)
            }
            [Seg::Field("metadata"), ..] => true,
            _ => self
                .node_at(parent)
                .is_some_and(|n| n.properties.contains_key(*last)),
        }
    }
}

/// JSON equality where `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> StructuralSchema {
        StructuralSchema::from_value(&v).unwrap()
    }

    fn ruled_schema() -> StructuralSchema {
        schema(
            json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "ref": {"type": "object", "properties": {"name": {"type": "string"}},
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "ref is immutable"}]},
            "size": {"type": "integer", "maximum": 5},
            "a": {"type": "boolean"}, "b": {"type": "boolean"}},
            "x-kubernetes-validations": [
                {"rule": "!(has(self.a) && self.a && has(self.b) && self.b)",
                    "fieldPath": ".a", "reason": "FieldValueForbidden"},
                {"rule": "self.unknownFunction()"}]}}}),
        )
    }

    #[test]
    fn validation_rules_run_on_create_and_transition_rules_on_update() {
        let s = ruled_schema();
        let old = json!({"spec": {"ref": {"name": "x"}}});
        let mut created = old.clone();
        assert!(s.admit_update(&mut created, None).is_empty());
        let mut changed = json!({"spec": {"ref": {"name": "y"}}});
        let errs = s.admit_update(&mut changed, Some(&old));
        assert_eq!(
            errs.iter().map(FieldError::message).collect::<Vec<_>>(),
            ["spec.ref: Invalid value: \"object\": ref is immutable"]
        );
        let mut both = json!({"spec": {"a": true, "b": true}});
        let errs = s.admit_update(&mut both, None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "spec.a");
        assert_eq!(errs[0].reason(), "FieldValueForbidden");
        // A schema error that bounds the rules' cost stops them, with a note.
        let mut big = json!({"spec": {"a": true, "b": true, "size": "x"}});
        let errs = s.admit_update(&mut big, None);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[1].path, "<nil>");
    }

    fn crd_schema() -> StructuralSchema {
        schema(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 2, "maxLength": 5},
                        "tier": {"type": "string", "enum": ["a", "b"]},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                        "ratio": {"type": "number", "exclusiveMaximum": true, "maximum": 1},
                        "cron": {"type": "string", "pattern": "^\\d+$"},
                        "when": {"type": "string", "format": "date-time"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "items": {
                            "type": "array",
                            "maxItems": 3,
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
                        },
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "maybe": {"type": "string", "nullable": true},
                        "embedded": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}}
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        }))
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn valid_object_has_no_errors() {
        let s = crd_schema();
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"name": "abc", "tier": "a", "replicas": 3, "ratio": 0.5, "cron": "12",
                     "when": "2024-01-02T03:04:05Z", "port": "http", "items": [{"name": "x"}],
                     "labels": {"a": "b"}, "maybe": null}});
        assert_eq!(messages(&s.validate(&obj)), Vec::<String>::new());
        let obj = json!({"spec": {"name": "abc", "port": 8080, "replicas": 2.0}});
        assert!(s.validate(&obj).is_empty());
    }

    #[test]
    fn real_server_messages() {
        let s = crd_schema();
        let cases = [
            (json!({"spec": {}}), "spec.name: Required value"),
            (
                json!({"spec": {"name": "abc", "tier": "x"}}),
                "spec.tier: Unsupported value: \"x\": supported values: \"a\", \"b\"",
            ),
            (
                json!({"spec": {"name": "abc", "replicas": "three"}}),
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            ),
            (
                json!({"spec": {"name": "abc", "replicas": 1.5}}),
                "spec.replicas: Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\"",
            ),
            (
                json!({"spec": {"name": "abc", "replicas": 0}}),
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            ),
            (
                json!({"spec": {"name": "abc", "replicas": 11}}),
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
            ),
            (
                json!({"spec": {"name": "abc", "ratio": 1}}),
                "spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1",
            ),
            (
                json!({"spec": {"name": "abcdef"}}),
                "spec.name: Too long: may not be more than 5 bytes",
            ),
            (
                json!({"spec": {"name": "a"}}),
                "spec.name: Invalid value: \"a\": spec.name in body should be at least 2 chars long",
            ),
            (
                json!({"spec": {"name": "abc", "cron": "x"}}),
                "spec.cron: Invalid value: \"x\": spec.cron in body should match '^\\d+$'",
            ),
            (
                json!({"spec": {"name": "abc", "when": "yesterday"}}),
                "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
            ),
            (
                json!({"spec": {"name": "abc", "items": [{"name": "a"}, {}, {"name": 1}]}}),
                "spec.items[1].name: Required value",
            ),
            (
                json!({"spec": {"name": "abc", "items": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}}),
                "spec.items: Too many: 4: must have at most 3 items",
            ),
            (
                json!({"spec": {"name": "abc", "labels": {"k": 1}}}),
                "spec.labels.k: Invalid value: \"integer\": spec.labels.k in body must be of type string: \"integer\"",
            ),
            (
                json!({"spec": {"name": "abc", "port": true}}),
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
            ),
            (
                json!({"spec": {"name": "abc", "embedded": {"spec": {}}}}),
                "spec.embedded.apiVersion: Required value",
            ),
        ];
        for (obj, want) in cases {
            let got = messages(&s.validate(&obj));
            assert!(got.contains(&want.to_owned()), "want {want:?}, got {got:?}");
        }
        let errs = s.validate(&json!({"spec": {"name": "abc", "items": [{"name": 1}]}}));
        assert_eq!(errs[0].path, "spec.items[0].name");
        assert_eq!(errs[0].reason(), "FieldValueTypeInvalid");
    }

    #[test]
    fn invalid_message_aggregates_like_go() {
        let s = crd_schema();
        let errs = s.validate(&json!({"spec": {"tier": "x"}}));
        assert_eq!(
            invalid_message("K.example.com", "n", &errs),
            "K.example.com \"n\" is invalid: [spec.name: Required value, spec.tier: Unsupported value: \"x\": supported values: \"a\", \"b\"]"
        );
        let errs = s.validate(&json!({"spec": {}}));
        assert_eq!(
            invalid_message("K.example.com", "n", &errs),
            "K.example.com \"n\" is invalid: spec.name: Required value"
        );
    }

    #[test]
    fn null_only_allowed_when_nullable() {
        let s = crd_schema();
        let errs = s.validate(&json!({"spec": {"name": "abc", "tier": null}}));
        assert_eq!(
            messages(&errs),
            vec![
                "spec.tier: Invalid value: \"null\": spec.tier in body must be of type string: \"null\""
            ]
        );
        // On the write path, nulls of non-nullable fields are dropped before validation.
        let mut obj = json!({"spec": {"name": "abc", "tier": null, "maybe": null}});
        assert!(s.admit(&mut obj).is_empty());
        assert_eq!(obj, json!({"spec": {"name": "abc", "maybe": null}}));
    }

    #[test]
    fn pruning_drops_unknown_fields() {
        let s = crd_schema();
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "K",
            "metadata": {"name": "n", "bogus": 1, "labels": {"a": "b"}},
            "spec": {"name": "abc", "unknown": 1, "free": {"anything": {"deep": 1}},
                     "items": [{"name": "a", "extra": 2}], "labels": {"x": "y"},
                     "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1}, "spec": {"a": 1}, "other": 1}},
            "status": {"ready": true, "junk": 1},
            "top": 1
        });
        s.prune(&mut obj);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "x/v1", "kind": "K",
                "metadata": {"name": "n", "labels": {"a": "b"}},
                "spec": {"name": "abc", "free": {"anything": {"deep": 1}},
                         "items": [{"name": "a"}], "labels": {"x": "y"},
                         "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}},
                "status": {"ready": true}
            })
        );
    }

    #[test]
    fn preserve_unknown_fields_at_root_keeps_everything() {
        let s = schema(
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}}),
        );
        let mut obj = json!({"x": 1, "spec": {"a": "b", "drop": 1}});
        s.prune(&mut obj);
        assert_eq!(obj, json!({"x": 1, "spec": {"a": "b"}}));
    }

    #[test]
    fn defaults_apply_recursively() {
        let s = schema(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "default": {},
                    "properties": {
                        "replicas": {"type": "integer", "default": 1},
                        "mode": {"type": "string", "default": "fast"},
                        "nested": {"type": "object", "default": {"a": "x"}, "properties": {
                            "a": {"type": "string"}, "b": {"type": "string", "default": "y"}}},
                        "list": {"type": "array", "items": {"type": "object", "default": {"k": "d"},
                            "properties": {"k": {"type": "string"}, "v": {"type": "integer", "default": 0}}}},
                        "map": {"type": "object", "additionalProperties": {"type": "object",
                            "properties": {"p": {"type": "integer", "default": 7}}}},
                        "nullable": {"type": "string", "nullable": true, "default": "d"}
                    }
                }
            }
        }));
        let mut obj = json!({});
        s.apply_defaults(&mut obj);
        assert_eq!(
            obj,
            json!({"spec": {"replicas": 1, "mode": "fast", "nested": {"a": "x", "b": "y"}, "nullable": "d"}})
        );

        let mut obj = json!({"spec": {"replicas": 3, "mode": null, "list": [{"k": "a"}, null],
            "map": {"x": {}}, "nullable": null}});
        s.apply_defaults(&mut obj);
        assert_eq!(
            obj,
            json!({"spec": {"replicas": 3, "mode": "fast",
            "nested": {"a": "x", "b": "y"},
            "list": [{"k": "a", "v": 0}, {"k": "d", "v": 0}],
            "map": {"x": {"p": 7}}, "nullable": null}})
        );
    }

    #[test]
    fn changes_on_read_is_exactly_what_pruning_and_defaulting_change() {
        let defaults = schema(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "default": {}, "properties": {
                "replicas": {"type": "integer", "default": 1},
                "list": {"type": "array", "items": {"type": "object", "default": {"k": "d"},
                    "properties": {"k": {"type": "string"}}}},
                "map": {"type": "object", "additionalProperties": {"type": "object",
                    "properties": {"p": {"type": "integer", "default": 7}}}},
                "plain": {"type": "string"},
                "maybe": {"type": "string", "nullable": true}
            }}}
        }));
        let meta = json!({"name": "n", "uid": "u", "labels": {"a": "b"}});
        let crd_cases = [
            json!({"metadata": meta, "spec": {"name": "abc"}}),
            json!({"metadata": {"name": "n", "bogus": 1}}),
            json!({"spec": {"name": "abc", "color": "red"}}),
            json!({"spec": {"free": {"x": {"y": 1}}, "labels": {"a": "b"}}}),
            json!({"spec": {"items": [{"name": "a", "extra": 1}]}}),
            json!({"spec": {"embedded": {"metadata": {"junk": 1}}}}),
            json!({"spec": {"tier": null, "maybe": null}}),
            json!({"spec": {"maybe": null}, "status": {"ready": true}}),
            json!({"top": 1}),
        ];
        let default_cases = [
            json!({}),
            json!({"spec": {"replicas": 2}}),
            json!({"spec": {"replicas": 2, "list": [{"k": "a"}, null]}}),
            json!({"spec": {"replicas": 2, "map": {"x": {}}}}),
            json!({"spec": {"replicas": 2, "map": {"x": {"p": 1}}}}),
            json!({"spec": {"replicas": 2, "plain": null}}),
            json!({"spec": {"replicas": 2, "maybe": null, "list": [{"k": "a"}]}}),
        ];
        let crd = crd_schema();
        let cases = crd_cases
            .into_iter()
            .map(|o| (&crd, o))
            .chain(default_cases.into_iter().map(|o| (&defaults, o)));
        for (s, obj) in cases {
            let mut read = obj.clone();
            s.prune(&mut read);
            s.apply_defaults(&mut read);
            assert_eq!(s.changes_on_read(&obj), read != obj, "{obj}");
            assert!(
                !s.changes_on_read(&read),
                "a read object reads back unchanged: {read}"
            );
        }
    }

    #[test]
    fn list_and_map_types_for_apply() {
        let s = schema(
            json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
                "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "map": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "proto"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "proto": {"type": "string"}}}},
                "plain": {"type": "array", "items": {"type": "string"}},
                "sel": {"type": "object", "x-kubernetes-map-type": "atomic"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }}}}),
        );
        let p = |f: &'static str| [Seg::Field("spec"), Seg::Field(f)];
        assert_eq!(s.list_type(&p("set")), ListType::Set);
        assert_eq!(
            s.list_type(&p("map")),
            ListType::Map(vec!["name".into(), "proto".into()])
        );
        assert_eq!(s.list_type(&p("plain")), ListType::Atomic);
        assert_eq!(s.map_type(&p("sel")), MapType::Atomic);
        assert_eq!(s.map_type(&p("labels")), MapType::Granular);
        assert_eq!(
            s.list_type(&[Seg::Field("metadata"), Seg::Field("finalizers")]),
            ListType::Set
        );
        assert!(s.is_declared_field(&p("labels")));
        assert!(!s.is_declared_field(&[Seg::Field("spec"), Seg::Field("labels"), Seg::Field("x")]));
        // Duplicate set items and map keys are rejected.
        let errs = s.validate(&json!({"spec": {"set": ["a", "a"], "map": [{"name": "x", "proto": "t"}, {"name": "x", "proto": "t"}]}}));
        let msgs = messages(&errs);
        assert!(
            msgs.contains(&"spec.set[1]: Duplicate value: \"a\"".to_owned()),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.map[1]: Duplicate value")),
            "{msgs:?}"
        );
    }

    #[test]
    fn bad_schemas_are_rejected() {
        assert!(
            StructuralSchema::from_value(
                &json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}})
            )
            .is_err()
        );
        assert!(StructuralSchema::from_value(&json!({"type": "thing"})).is_err());
        assert!(StructuralSchema::from_value(&json!({"type": "string", "maxLength": -1})).is_err());
    }

    #[test]
    fn string_formats() {
        let s = schema(json!({"type": "object", "properties": {
            "u": {"type": "string", "format": "uuid"},
            "d": {"type": "string", "format": "date"},
            "ip": {"type": "string", "format": "ipv4"},
            "b": {"type": "string", "format": "byte"},
            "n": {"type": "string", "format": "int32"}
        }}));
        let ok = json!({"u": "123e4567-e89b-12d3-a456-426614174000", "d": "2024-02-03",
            "ip": "10.0.0.1", "b": "aGk=", "n": "anything"});
        assert!(s.validate(&ok).is_empty());
        let bad = json!({"u": "x", "d": "2024-2-3", "ip": "10.0.0", "b": "a"});
        let msgs = messages(&s.validate(&bad));
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs.contains(
            &"u: Invalid value: \"x\": u in body must be of type uuid: \"x\"".to_owned()
        ));
    }

    #[test]
    fn structural_schema_rules() {
        let good = json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}},
        "spec": {"type": "object", "properties": {
            "n": {"type": "integer", "default": 1},
            "port": {"x-kubernetes-int-or-string": true},
            "free": {"x-kubernetes-preserve-unknown-fields": true},
            "obj": {"type": "object", "default": {"a": "x"}, "properties": {"a": {"type": "string"}}}
        }}}});
        assert_eq!(messages(&structural_errors(&good)), Vec::<String>::new());
        let bad = json!({"properties": {
        "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
        "spec": {"type": "object", "properties": {
            "untyped": {"description": "x"},
            "n": {"type": "integer", "default": "one"},
            "obj": {"type": "object", "default": {"zzz": 1}, "properties": {"a": {"type": "string"}}},
            "list": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
            "m": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}}
        }}}});
        let msgs = messages(&structural_errors(&bad));
        for want in [
            "openAPIV3Schema.type: Required value: must not be empty at the root",
            "openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
            "openAPIV3Schema.properties[spec].properties[untyped].type: Required value: must not be empty for specified object fields",
            "openAPIV3Schema.properties[spec].properties[n].default: Invalid value: \"string\": <root> in body must be of type integer: \"string\"",
            "openAPIV3Schema.properties[spec].properties[obj].default: Invalid value: {\"zzz\":1}: must not have unknown fields",
            "openAPIV3Schema.properties[spec].properties[list].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            "openAPIV3Schema.properties[spec].properties[m].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map",
        ] {
            assert!(
                msgs.contains(&want.to_owned()),
                "missing {want:?} in {msgs:#?}"
            );
        }
    }

    #[test]
    fn object_meta_is_normalized_like_go() {
        let mut meta = json!({"name": "a", "namespace": "", "finalizers": [], "labels": {},
            "annotations": {"k": ""}, "generation": 0, "deletionGracePeriodSeconds": 0,
            "ownerReferences": null, "bogus": 1});
        normalize_object_meta(&mut meta);
        assert_eq!(
            meta,
            json!({"name": "a", "annotations": {"k": ""}, "deletionGracePeriodSeconds": 0})
        );
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(0.00001), "1e-05");
    }
}
