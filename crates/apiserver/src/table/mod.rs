//! Server-side tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! which `kubectl get` asks for: upstream's columns per kind, human ages, and
//! the `includeObject` choice.

mod cells;
mod custom;
mod group_cells;
mod kinds;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::object::{self, Object};
use crate::registry::ResourceInfo;

/// One column of a table.
#[derive(Clone, Debug)]
pub struct Column {
    /// Header, e.g. `Name`.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `date`.
    pub kind: &'static str,
    /// 0 for default columns, 1 for `-o wide` ones.
    pub priority: u8,
    /// Description shown by `kubectl get -o wide --show-kind`... and API users.
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        priority,
        description,
    }
}

/// Whether the client asked for a Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// The `apiVersion` of Table the client asked for (v1 or v1beta1).
fn table_version(headers: &HeaderMap) -> &'static str {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let first = accept.split(',').next().unwrap_or("");
    if first.contains("v=v1beta1") {
        "meta.k8s.io/v1beta1"
    } else {
        "meta.k8s.io/v1"
    }
}

/// Upstream's `HumanDuration` of the time since an RFC 3339 timestamp.
pub fn age(timestamp: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    human_duration(secs)
}

/// Formats seconds the way kubectl users know (`45s`, `3m10s`, `5h`, `12d`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    let y = d / 365;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if y < 2 {
        format!("{d}d")
    } else if y < 8 {
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{y}y")
    }
}

/// The object attached to a row, as `includeObject` asks (default `Metadata`).
fn row_object(obj: &Object, include: Option<&str>) -> Option<Value> {
    match include {
        Some("None") => None,
        Some("Object") => Some(obj.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// A Table of `items`, with list metadata (resourceVersion, continue).
pub fn table(
    info: &ResourceInfo,
    headers: &HeaderMap,
    include: Option<&str>,
    items: &[Object],
    list_meta: Value,
) -> Value {
    if let Some(printer) = info
        .custom
        .as_ref()
        .map(|c| &c.printer_columns)
        .filter(|p| !p.is_empty())
    {
        let rows: Vec<Value> = items
            .iter()
            .map(|obj| {
                let mut row = json!({"cells": custom::cells(obj, printer)});
                if let Some(o) = row_object(obj, include) {
                    row["object"] = o;
                }
                row
            })
            .collect();
        return json!({
            "kind": "Table",
            "apiVersion": table_version(headers),
            "metadata": list_meta,
            "columnDefinitions": custom::columns(printer),
            "rows": rows,
        });
    }
    let (columns, cells) = kinds::for_resource(info);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut row = json!({"cells": cells(obj)});
            if let Some(o) = row_object(obj, include) {
                row["object"] = o;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": table_version(headers),
        "metadata": list_meta,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// The generic columns of a kind without its own printer: Name and Created At.
pub(crate) fn default_cells(obj: &Object) -> Vec<Value> {
    vec![
        json!(object::name(obj)),
        json!(object::meta_str(obj, "creationTimestamp")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (190, "3m10s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (30 * 3600, "30h"),
            (2 * 86400 + 3600, "2d1h"),
            (9 * 86400, "9d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn detects_table_requests() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .expect("header"),
        );
        assert!(wants_table(&h));
        h.insert(header::ACCEPT, "application/json".parse().expect("header"));
        assert!(!wants_table(&h));
    }
}
