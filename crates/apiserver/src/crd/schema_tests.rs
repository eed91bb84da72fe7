//! Pruning, defaulting and validation against structural schemas.

use serde_json::json;

use super::*;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                    "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                    "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                    "port": {"x-kubernetes-int-or-string": true},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "nested": {"type": "object", "default": {}, "properties": {"level": {"type": "integer", "default": 3}}}
                }
            },
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }
    })
}

#[test]
fn prunes_unknown_fields_except_where_preserved() {
    let mut obj = json!({
        "apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"},
        "spec": {"size": 1, "bogus": true, "extra": {"anything": [1]}, "labels": {"a": "b"}},
        "top": 1
    });
    let mut pruned = prune(&mut obj, &schema());
    pruned.sort();
    assert_eq!(pruned, vec!["spec.bogus", "top"]);
    assert_eq!(obj["spec"]["extra"]["anything"], json!([1]));
    assert_eq!(obj["spec"]["labels"]["a"], "b");
    assert_eq!(obj["metadata"]["name"], "w");
}

#[test]
fn defaults_apply_recursively() {
    let mut obj = json!({"spec": {"size": 2}});
    default(&mut obj, &schema());
    assert_eq!(obj["spec"]["color"], "red");
    assert_eq!(obj["spec"]["nested"], json!({"level": 3}));
}

#[test]
fn validation_reports_each_field() {
    let ok = json!({"spec": {"size": 3, "port": "http", "tags": ["a"]}});
    assert!(validate(&ok, &schema()).is_empty());
    let bad = json!({"spec": {"size": "three", "color": "green", "name": "ABCDEFG", "port": true, "tags": ["a", "b", "c"]}});
    let causes = validate(&bad, &schema());
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    for f in [
        "spec.size",
        "spec.color",
        "spec.name",
        "spec.port",
        "spec.tags",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    let missing = validate(&json!({"spec": {}}), &schema());
    assert_eq!(missing[0].field, "spec.size");
    assert_eq!(missing[0].reason, "FieldValueRequired");
    let range = validate(&json!({"spec": {"size": 11}}), &schema());
    assert!(
        range[0].message.contains("less than or equal to 10"),
        "{}",
        range[0].message
    );
}

#[test]
fn hostile_schemas_do_not_recurse_forever_or_panic() {
    let mut deep = json!({"type": "object"});
    for _ in 0..200 {
        deep = json!({"type": "object", "properties": {"a": deep}});
    }
    let mut obj = json!({"a": {"a": {"a": 1}}});
    let _ = prune(&mut obj, &deep);
    default(&mut obj, &deep);
    let _ = validate(&obj, &deep);
    let bad_pattern =
        json!({"type": "object", "properties": {"s": {"type": "string", "pattern": "("}}});
    assert!(validate(&json!({"s": "x"}), &bad_pattern).is_empty());
}

#[test]
fn list_types_set_and_map_refuse_duplicates() {
    let schema = json!({"type": "object", "properties": {
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["name", "protocol"],
                  "items": {"type": "object", "properties": {
                      "name": {"type": "string"}, "protocol": {"type": "string"}, "port": {"type": "integer"}}}}
    }});
    let ok = json!({"tags": ["a", "b"], "ports": [
        {"name": "web", "protocol": "TCP", "port": 80},
        {"name": "web", "protocol": "UDP", "port": 80}]});
    assert!(validate(&ok, &schema).is_empty());
    let bad = json!({"tags": ["a", "b", "a"], "ports": [
        {"name": "web", "protocol": "TCP", "port": 80},
        {"name": "web", "protocol": "TCP", "port": 81}]});
    let causes: Vec<(String, &str)> = validate(&bad, &schema)
        .into_iter()
        .map(|c| (c.field, c.reason))
        .collect();
    assert_eq!(
        causes,
        [
            ("ports[1]".to_owned(), "FieldValueDuplicate"),
            ("tags[2]".to_owned(), "FieldValueDuplicate"),
        ]
    );
}
