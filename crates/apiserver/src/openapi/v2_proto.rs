//! The protobuf form of `/openapi/v2` (gnostic's `openapi.v2.Document`),
//! which client-go asks for and cannot do without: kubectl validates a file
//! whose kind is `List` on the client against it. Encoded: the document's
//! version and info, its paths (operations with their parameters, media
//! types and response schemas) and every definition with its schema tree
//! and `x-` extensions. Schemas are made
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

/// The items of `v` if it is an array.
fn each(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
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
    if let Some(paths) = doc["paths"].as_object().filter(|p| !p.is_empty()) {
        message(&mut w, 8, |p| {
            for (name, item) in paths {
                message(p, 2, |n| {
                    n.bytes(1, name.as_bytes());
                    message(n, 2, |body| path_item(body, item, &names));
                });
            }
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

/// A `PathItem`: its operations by method, and the parameters they share.
fn path_item(w: &mut Writer, item: &Value, names: &HashSet<&str>) {
    for (tag, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (8, "patch"),
    ] {
        if let Some(op) = item.get(method).and_then(Value::as_object) {
            message(w, tag, |o| operation(o, op, names));
        }
    }
    for p in each(item.get("parameters")) {
        message(w, 9, |i| parameter(i, p, names));
    }
}

fn strings(w: &mut Writer, tag: u32, v: Option<&Value>) {
    for s in each(v) {
        string(w, tag, Some(s));
    }
}

fn operation(w: &mut Writer, op: &Map<String, Value>, names: &HashSet<&str>) {
    strings(w, 1, op.get("tags"));
    string(w, 3, op.get("description"));
    string(w, 5, op.get("operationId"));
    strings(w, 6, op.get("produces"));
    strings(w, 7, op.get("consumes"));
    for p in each(op.get("parameters")) {
        message(w, 8, |i| parameter(i, p, names));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        message(w, 9, |rs| {
            for (code, r) in responses {
                message(rs, 1, |n| {
                    n.bytes(1, code.as_bytes());
                    // ResponseValue → Response.
                    message(n, 2, |value| {
                        message(value, 1, |resp| {
                            string(resp, 1, r.get("description"));
                            if let Some(s) = r.get("schema") {
                                // SchemaItem → Schema.
                                message(resp, 2, |item| {
                                    message(item, 1, |body| schema(body, s, names, 0));
                                });
                            }
                        });
                    });
                });
            }
        });
    }
    strings(w, 10, op.get("schemes"));
    extensions(w, 13, op);
}

/// A `ParametersItem` holding a `Parameter`: a body parameter with its
/// schema, or a path or query parameter (the only kinds the paths have).
fn parameter(w: &mut Writer, p: &Value, names: &HashSet<&str>) {
    message(w, 1, |param| match p.get("in").and_then(Value::as_str) {
        Some("body") => message(param, 1, |b| {
            string(b, 1, p.get("description"));
            string(b, 2, p.get("name"));
            string(b, 3, p.get("in"));
            boolean(b, 4, p.get("required"));
            if let Some(s) = p.get("schema") {
                message(b, 5, |body| schema(body, s, names, 0));
            }
        }),
        Some(place @ ("path" | "query")) => message(param, 2, |nb| {
            // The sub-schemas number their fields alike up to the name;
            // a query parameter has `allowEmptyValue` before its type.
            let (tag, type_tag, unique_tag) = if place == "path" {
                (4, 5, 19)
            } else {
                (3, 6, 20)
            };
            message(nb, tag, |q| {
                boolean(q, 1, p.get("required"));
                string(q, 2, p.get("in"));
                string(q, 3, p.get("description"));
                string(q, 4, p.get("name"));
                string(q, type_tag, p.get("type"));
                boolean(q, unique_tag, p.get("uniqueItems"));
            });
        }),
        _ => {}
    });
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
    for r in each(s.get("required")) {
        string(w, 19, Some(r));
    }
    for e in each(s.get("enum")) {
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
    fn paths_encode_their_operations_and_parameters() {
        let doc = json!({"definitions": {"a.Thing": {"type": "object"}},
        "paths": {"/api/v1/things/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": true, "type": "string"}],
            "put": {"operationId": "replaceThing", "consumes": ["*/*"],
                "parameters": [
                    {"name": "dryRun", "in": "query", "type": "string"},
                    {"name": "body", "in": "body", "required": true, "schema": {"$ref": format!("{REF_PREFIX}a.Thing")}},
                ],
                "responses": {"200": {"description": "OK", "schema": {"$ref": format!("{REF_PREFIX}a.Thing")}}},
                "x-kubernetes-action": "put"},
        }}});
        let buf = document(&doc);
        let named = field(&field(&buf, 8), 2);
        assert_eq!(field(&named, 1), b"/api/v1/things/{name}");
        let item = field(&named, 2);
        // The shared path parameter: ParametersItem → Parameter → NonBody → Path.
        let path = field(&field(&field(&field(&item, 9), 1), 2), 4);
        assert_eq!(field(&path, 4), b"name");
        assert_eq!(field(&path, 5), b"string");
        let put = field(&item, 3);
        assert_eq!(field(&put, 5), b"replaceThing");
        let params = fields(&put)
            .into_iter()
            .filter(|(t, _)| *t == 8)
            .map(|(_, b)| b)
            .collect::<Vec<_>>();
        assert_eq!(params.len(), 2);
        let query = field(&field(&field(&params[0], 1), 2), 3);
        assert_eq!(field(&query, 4), b"dryRun");
        assert_eq!(field(&query, 6), b"string");
        let body = field(&field(&params[1], 1), 1);
        assert_eq!(field(&body, 2), b"body");
        assert_eq!(field(&field(&body, 5), 1), b"#/definitions/a.Thing");
        let response = field(&field(&field(&field(&put, 9), 1), 2), 1);
        assert_eq!(field(&response, 1), b"OK");
        assert_eq!(
            field(&field(&field(&response, 2), 1), 1),
            b"#/definitions/a.Thing"
        );
        assert_eq!(field(&field(&put, 13), 1), b"x-kubernetes-action");
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
