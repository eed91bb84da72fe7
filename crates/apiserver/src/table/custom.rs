//! Tables of custom resources: `Name` plus the CRD's `additionalPrinterColumns`,
//! each cell read by the column's JSONPath (the subset CRDs use: fields,
//! indexes and `[?(@.key=="value")]` filters).

use serde_json::{Value, json};

use crate::object::{self, Object};

/// Evaluates a printer-column JSONPath (`.status.conditions[?(@.type=="Ready")].status`).
pub fn eval<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut node = obj;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            node = node.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (key, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                node = node.as_array()?.iter().find(|item| {
                    item.get(key.trim()).is_some_and(|v| match v {
                        Value::String(s) => s == want,
                        other => serde_json::to_string(other).ok().as_deref() == Some(want),
                    })
                })?;
            } else {
                node = node.get(inner.trim().parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(node)
}

/// Column definitions and cells for a custom resource with printer columns.
pub fn columns(printer: &[Value]) -> Vec<Value> {
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in printer {
        defs.push(json!({
            "name": c.get("name").cloned().unwrap_or(json!("")),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    defs
}

/// The cells of one object.
pub fn cells(obj: &Object, printer: &[Value]) -> Vec<Value> {
    let mut out = vec![json!(object::name(obj))];
    for c in printer {
        let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
        out.push(eval(obj, path).cloned().unwrap_or(Value::Null));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let obj = json!({"spec": {"size": 3, "tags": ["a", "b"]},
                         "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(eval(&obj, ".spec.size"), Some(&json!(3)));
        assert_eq!(eval(&obj, ".spec.tags[1]"), Some(&json!("b")));
        assert_eq!(
            eval(&obj, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(eval(&obj, ".spec.missing"), None);
        assert_eq!(eval(&obj, "garbage["), None);
    }
}
