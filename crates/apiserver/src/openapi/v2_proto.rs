//! The protobuf form of `/openapi/v2` (gnostic's `openapi.v2.Document`),
//! which client-go asks for and cannot do without: kubectl validates a file
//! whose kind is `List` on the client against it. Only what the
//! consumers read is encoded: the document's version and info, and every
//! definition with its schema tree and `x-` extensions. Schemas are made
//! safe for kube-openapi's strict parser on the way (one type per schema,
//! arrays with exactly one item schema, references to definitions that
//! exist), since one definition it cannot parse fails the whole document.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::builtin::REF_PREFIX;
use crate::proto::wire::Writer;

/// The media type the document is sent as. client-go asks for
/// `...spec.v2@v1.0+protobuf`, but `@` is not allowed in a media type and
/// Go's parser refuses it in a response, so kube-openapi answers with this
/// spelling, as here.
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Deeper schemas are cut off (encoded as "anything"): definitions are
/// finite trees, but CRD schemas are user input.
const MAX_DEPTH: usize = 64;

const VARINT: u8 = 0;

fn string(w: &mut Writer, tag: u32, v: Option<&Value>) {
    if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
        w.bytes(tag, s.as_bytes());
    }
}

fn boolean(w: &mut Writer, tag: u32, v: Option<&Value>) {
    if v.and_then(Value::as_bool) == Some(true) {
        w.key(tag, VARINT);
        w.varint(1);
    }
}

fn int64(w: &mut Writer, tag: u32, v: Option<&Value>) {
    if let Some(n) = v.and_then(Value::as_i64).filter(|n| *n != 0) {
        w.key(tag, VARINT);
        // Two's complement, as protobuf encodes a negative int64.
        w.varint(n as u64);
    }
}

fn double(w: &mut Writer, tag: u32, v: Option<&Value>) {
    if let Some(n) = v.and_then(Value::as_f64) {
        w.double(tag, n);
    }
}

fn message(w: &mut Writer, tag: u32, body: impl FnOnce(&mut Writer)) {
    let mut inner = Writer::default();
    body(&mut inner);
    w.bytes(tag, &inner.buf);
}

/// gnostic's `Any`: the value as YAML (JSON is YAML).
fn any(w: &mut Writer, tag: u32, v: &Value) {
    message(w, tag, |a| a.bytes(2, v.to_string().as_bytes()));
}

/// `NamedAny` entries for the `x-` keys of an object.
fn extensions(w: &mut Writer, tag: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        message(w, tag, |n| {
            n.bytes(1, k.as_bytes());
            any(n, 2, v);
        });
    }
}

/// Encodes `doc` (with v3-style `#/components/schemas/` references).
pub fn document(doc: &Value) -> Vec<u8> {
    let definitions = doc["definitions"].as_object();
    let names: HashSet<&str> = definitions
        .map(|d| d.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut w = Writer::default();
    string(&mut w, 1, doc.get("swagger"));
    if let Some(info) = doc["info"].as_object() {
        message(&mut w, 2, |i| {
            string(i, 1, info.get("title"));
            string(i, 2, info.get("version"));
        });
    }
    message(&mut w, 9, |d| {
        for (name, s) in definitions.into_iter().flatten() {
            message(d, 1, |n| {
                n.bytes(1, name.as_bytes());
                message(n, 2, |body| schema(body, s, &names, 0));
            });
        }
    });
    w.buf
}

/// The definition a reference names, if it exists.
fn reference<'a>(r: &'a str, names: &HashSet<&str>) -> Option<&'a str> {
    let name = r
        .strip_prefix(REF_PREFIX)
        .or_else(|| r.strip_prefix("#/definitions/"))?;
    names.contains(name).then_some(name)
}

/// The one type kube-openapi can take: `null` dropped from a list, and
/// nothing when there is no single known type left.
fn single_type(v: Option<&Value>) -> Option<&str> {
    const KNOWN: [&str; 6] = ["object", "array", "string", "number", "integer", "boolean"];
    let types: Vec<&str> = match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut known = types.into_iter().filter(|t| KNOWN.contains(t));
    match (known.next(), known.next()) {
        (Some(t), None) => Some(t),
        _ => None,
    }
}

fn schema(w: &mut Writer, v: &Value, names: &HashSet<&str>, depth: usize) {
    let Some(s) = v.as_object() else {
        return;
    };
    if depth > MAX_DEPTH {
        return;
    }
    // `allOf: [{$ref}]` (how v3 hangs a description on a reference) is the
    // reference.
    let all_of = s.get("allOf").and_then(Value::as_array);
    let lone_ref = all_of
        .filter(|a| a.len() == 1)
        .and_then(|a| a[0].get("$ref"))
        .and_then(Value::as_str);
    if let Some(name) = s
        .get("$ref")
        .and_then(Value::as_str)
        .or(lone_ref)
        .and_then(|r| reference(r, names))
    {
        w.bytes(1, format!("#/definitions/{name}").as_bytes());
        string(w, 4, s.get("description"));
        extensions(w, 31, s);
        return;
    }
    string(w, 2, s.get("format"));
    string(w, 3, s.get("title"));
    string(w, 4, s.get("description"));
    if let Some(d) = s.get("default") {
        any(w, 5, d);
    }
    double(w, 6, s.get("multipleOf"));
    double(w, 7, s.get("maximum"));
    boolean(w, 8, s.get("exclusiveMaximum"));
    double(w, 9, s.get("minimum"));
    boolean(w, 10, s.get("exclusiveMinimum"));
    int64(w, 11, s.get("maxLength"));
    int64(w, 12, s.get("minLength"));
    string(w, 13, s.get("pattern"));
    int64(w, 14, s.get("maxItems"));
    int64(w, 15, s.get("minItems"));
    boolean(w, 16, s.get("uniqueItems"));
    int64(w, 17, s.get("maxProperties"));
    int64(w, 18, s.get("minProperties"));
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        string(w, 19, Some(r));
    }
    for e in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        any(w, 20, e);
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => message(w, 21, |a| {
            a.key(2, VARINT);
            a.varint(u64::from(*b));
        }),
        Some(sub @ Value::Object(_)) => message(w, 21, |a| {
            message(a, 1, |body| schema(body, sub, names, depth + 1));
        }),
        _ => {}
    }
    let ty = single_type(s.get("type"));
    if let Some(t) = ty {
        message(w, 22, |item| item.bytes(1, t.as_bytes()));
    }
    // Exactly one item schema: the first of a list, "anything" if none.
    let item = match s.get("items") {
        Some(Value::Array(list)) => list.first(),
        other => other,
    };
    if item.is_some() || ty == Some("array") {
        let empty = Value::Object(Map::new());
        message(w, 23, |items| {
            message(items, 1, |body| {
                schema(body, item.unwrap_or(&empty), names, depth + 1);
            });
        });
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        message(w, 25, |p| {
            for (name, sub) in props {
                message(p, 1, |n| {
                    n.bytes(1, name.as_bytes());
                    message(n, 2, |body| schema(body, sub, names, depth + 1));
                });
            }
        });
    }
    boolean(w, 27, s.get("readOnly"));
    extensions(w, 31, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::Reader;
    use serde_json::json;

    /// The length-delimited fields of a message, by tag, in order.
    fn fields(buf: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.done() {
            let (tag, wire) = r.key().expect("key");
            if wire == 2 {
                out.push((tag, r.bytes().expect("bytes").to_vec()));
            } else {
                r.skip(wire).expect("skip");
                out.push((tag, Vec::new()));
            }
        }
        out
    }

    fn field(buf: &[u8], tag: u32) -> Vec<u8> {
        fields(buf)
            .into_iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    #[test]
    fn a_definition_encodes_as_gnostic_reads_it() {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "definitions": {
            "a.Meta": {"type": "object", "properties": {"name": {"type": "string"}}},
            "a.Thing": {
                "type": "object", "required": ["spec"],
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "Thing", "version": "v1"}],
                "properties": {
                    "metadata": {"allOf": [{"$ref": format!("{REF_PREFIX}a.Meta")}], "description": "m"},
                    "gone": {"$ref": format!("{REF_PREFIX}a.Missing")},
                    "list": {"type": "array"},
                    "either": {"type": ["string", "null"]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                }},
        }});
        let buf = document(&doc);
        assert_eq!(field(&buf, 1), b"2.0");
        let defs = fields(&field(&buf, 9));
        assert_eq!(defs.len(), 2);
        let thing = &defs[1].1;
        assert_eq!(field(thing, 1), b"a.Thing");
        let schema = field(thing, 2);
        assert_eq!(field(&field(&schema, 22), 1), b"object");
        assert_eq!(field(&schema, 19), b"spec");
        let ext = field(&schema, 31);
        assert_eq!(field(&ext, 1), b"x-kubernetes-group-version-kind");
        let yaml: Value = serde_json::from_slice(&field(&field(&ext, 2), 2)).expect("yaml is json");
        assert_eq!(yaml[0]["kind"], "Thing");
        let props: Vec<(String, Vec<u8>)> = fields(&field(&schema, 25))
            .into_iter()
            .map(|(_, named)| {
                let name = String::from_utf8(field(&named, 1)).expect("utf8");
                (name, field(&named, 2))
            })
            .collect();
        let prop = |n: &str| props.iter().find(|(k, _)| k == n).expect(n).1.clone();
        assert_eq!(field(&prop("metadata"), 1), b"#/definitions/a.Meta");
        assert!(
            field(&prop("gone"), 1).is_empty(),
            "a dangling reference is dropped"
        );
        let items = fields(&field(&prop("list"), 23));
        assert_eq!(items.len(), 1, "an array has exactly one item schema");
        assert_eq!(field(&field(&prop("either"), 22), 1), b"string");
        let additional = field(&prop("labels"), 21);
        assert_eq!(field(&field(&field(&additional, 1), 22), 1), b"string");
    }

    #[test]
    fn a_deep_schema_is_cut_off_not_overflowed() {
        let mut s = json!({"type": "string"});
        for _ in 0..1_000 {
            s = json!({"type": "object", "properties": {"x": s}});
        }
        let doc = json!({"definitions": {"deep": s}});
        assert!(!document(&doc).is_empty());
    }
}
