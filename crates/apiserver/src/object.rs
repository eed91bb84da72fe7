//! Access to the uniform parts of an object (`apiVersion`, `kind`, `metadata`)
//! held as JSON, so that generic handlers work for every kind alike.

use serde_json::{Map, Value};

/// An API object as JSON. Always a JSON object at the top.
pub type Object = Value;

/// The `metadata` map, created if missing. `obj` must be a JSON object (the
/// request decoder refuses anything else).
pub fn meta_mut(obj: &mut Object) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata was made an object above")
}

/// A string field of `metadata`, or "".
pub fn meta_str<'a>(obj: &'a Object, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(obj: &Object) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Object) -> &str {
    meta_str(obj, "namespace")
}

/// `metadata.labels`, if any.
pub fn labels(obj: &Object) -> Option<&Value> {
    obj.get("metadata").and_then(|m| m.get("labels"))
}

/// The strings of an array value, borrowed (non-strings skipped; none
/// when it is not an array).
pub fn str_items(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The strings of the array at a JSON pointer (non-strings skipped; none when absent).
pub fn strings_at(obj: &Object, pointer: &str) -> Vec<String> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Object) -> Vec<String> {
    strings_at(obj, "/metadata/finalizers")
}

/// Whether something still holds a deleting object: its finalizers, or for a
/// namespace the `spec.finalizers` the namespace controller clears.
pub fn held(obj: &Object) -> bool {
    !finalizers(obj).is_empty()
        || (obj.get("kind").and_then(Value::as_str) == Some("Namespace")
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()))
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Object) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
}

/// Sets a `metadata` field.
pub fn set_meta(obj: &mut Object, field: &str, value: Value) {
    meta_mut(obj).insert(field.to_owned(), value);
}

/// Removes a `metadata` field.
pub fn remove_meta(obj: &mut Object, field: &str) -> Option<Value> {
    meta_mut(obj).remove(field)
}

/// The current time as upstream writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A value of a dotted path such as `spec.nodeName`, rendered as a field
/// selector compares it (strings as they are, other scalars as JSON).
pub fn field_value(obj: &Object, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_metadata() {
        let mut o = json!({"kind": "ConfigMap"});
        assert_eq!(name(&o), "");
        set_meta(&mut o, "name", json!("x"));
        assert_eq!(name(&o), "x");
        assert!(!is_deleting(&o));
        set_meta(&mut o, "finalizers", json!(["a", "b"]));
        assert_eq!(finalizers(&o), vec!["a", "b"]);
        assert_eq!(
            field_value(
                &json!({"spec": {"nodeName": "n1", "replicas": 3}}),
                "spec.replicas"
            ),
            Some("3".into())
        );
        assert_eq!(field_value(&o, "spec.nodeName"), None);
    }
}
