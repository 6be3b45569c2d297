//! Server-side `Table` output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which
//! kubectl asks for when it prints human-readable output. Columns follow the real printers for
//! the built-in kinds and the CRD's `additionalPrinterColumns` for custom resources.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// Whether the `Accept` header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// A column: header, type and how to compute a cell.
struct Column {
    name: String,
    ty: &'static str,
    format: &'static str,
    cell: Cell,
}

enum Cell {
    Name,
    Age,
    CreatedAt,
    Path(String),
    Count(&'static [&'static str]),
    RoleRef,
}

fn col(name: &str, ty: &'static str, cell: Cell) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        format: "",
        cell,
    }
}

fn columns(def: &ResourceDef, printer_columns: Option<&Value>) -> Vec<Column> {
    let mut cols = vec![Column {
        name: "Name".into(),
        ty: "string",
        format: "name",
        cell: Cell::Name,
    }];
    let age = || col("Age", "string", Cell::Age);
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => {
            cols.push(col("Status", "string", Cell::Path(".status.phase".into())));
            cols.push(age());
        }
        ("", "Secret") => {
            cols.push(col("Type", "string", Cell::Path(".type".into())));
            cols.push(col("Data", "string", Cell::Count(&["data"])));
            cols.push(age());
        }
        ("", "ConfigMap") => {
            cols.push(col("Data", "string", Cell::Count(&["data", "binaryData"])));
            cols.push(age());
        }
        ("", "ServiceAccount") => {
            cols.push(col("Secrets", "string", Cell::Count(&["secrets"])));
            cols.push(age());
        }
        ("coordination.k8s.io", "Lease") => {
            cols.push(col(
                "Holder",
                "string",
                Cell::Path(".spec.holderIdentity".into()),
            ));
            cols.push(age());
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole")
        | ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            cols.push(col("Created At", "date", Cell::CreatedAt));
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            cols.push(col("Role", "string", Cell::RoleRef));
            cols.push(age());
        }
        _ => {
            let extra: Vec<&Value> = printer_columns
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if extra.is_empty() {
                cols.push(age());
            }
            for c in extra {
                let path = c
                    .get("jsonPath")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                let cell = if path == ".metadata.creationTimestamp" {
                    Cell::Age
                } else {
                    Cell::Path(path)
                };
                cols.push(col(name, "string", cell));
            }
        }
    }
    cols
}

/// Follows a simple JSONPath (`.a.b`, `.a[0].b`) as printer columns use it.
fn follow<'v>(obj: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = obj;
    for part in path.trim_start_matches('.').split('.') {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

fn age(obj: &Value) -> String {
    let ts = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    match ts {
        Some(t) => {
            human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        }
        None => "<unknown>".into(),
    }
}

fn render(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => json!("<none>"),
        Some(Value::String(s)) => json!(s),
        Some(other) => json!(other.to_string()),
    }
}

fn cell(c: &Cell, obj: &Value) -> Value {
    match c {
        Cell::Name => render(obj.pointer("/metadata/name")),
        Cell::Age => json!(age(obj)),
        Cell::CreatedAt => render(obj.pointer("/metadata/creationTimestamp")),
        Cell::Path(p) => render(follow(obj, p)),
        Cell::Count(fields) => {
            let n: usize = fields
                .iter()
                .map(|f| match obj.get(*f) {
                    Some(Value::Object(m)) => m.len(),
                    Some(Value::Array(a)) => a.len(),
                    _ => 0,
                })
                .sum();
            json!(n)
        }
        Cell::RoleRef => {
            let kind = obj
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let name = obj
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            json!(format!("{kind}/{name}"))
        }
    }
}

/// What `includeObject` asks to embed in each row.
fn row_object(obj: &Value, include: &str) -> Option<Value> {
    match include {
        "None" => None,
        "Object" => Some(obj.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// Renders `objects` as a `Table`; `headers: false` leaves out the column definitions (watch
/// events after the first).
pub fn table(
    def: &ResourceDef,
    printer_columns: Option<&Value>,
    objects: &[Value],
    mut list_meta: Value,
    include: &str,
    headers: bool,
) -> Value {
    // A Table's `ListMeta` is typed: an empty `continue` is left out.
    if let Some(m) = list_meta.as_object_mut()
        && m.get("continue").and_then(Value::as_str) == Some("")
    {
        m.remove("continue");
    }
    let cols = columns(def, printer_columns);
    let defs: Vec<Value> = if headers {
        cols.iter()
            .map(|c| {
                json!({"name": c.name, "type": c.ty, "format": c.format, "description": "", "priority": 0})
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|c| cell(&c.cell, o)).collect();
            let mut row = json!({"cells": cells});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}
