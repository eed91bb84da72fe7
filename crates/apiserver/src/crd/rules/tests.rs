use super::*;

fn schema(spec_rules: Value) -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-validations": spec_rules,
                "properties": {
                    "replicas": {"type": "integer"},
                    "minReplicas": {"type": "integer"},
                    "mode": {"type": "string", "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "message": "mode is immutable"}
                    ]},
                    "ports": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {
                            "name": {"type": "string"},
                            "port": {"type": "integer", "x-kubernetes-validations": [
                                {"rule": "self >= oldSelf", "message": "ports only grow"}
                            ]}
                        }}
                    }
                }
            }
        }
    })
}

fn obj(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}}, "spec": spec})
}

fn messages(causes: &[Cause]) -> Vec<(String, String)> {
    causes
        .iter()
        .map(|c| (c.field.clone(), c.message.clone()))
        .collect()
}

#[test]
fn a_failing_rule_is_a_cause_with_upstreams_message() {
    let s = schema(json!([
        {"rule": "self.minReplicas <= self.replicas", "message": "replicas must be at least minReplicas"},
        {"rule": "self.replicas < 100"}
    ]));
    assert!(validate(&obj(json!({"replicas": 3, "minReplicas": 1})), None, &s).is_empty());
    let causes = validate(&obj(json!({"replicas": 300, "minReplicas": 400})), None, &s);
    assert_eq!(
        messages(&causes),
        [
            (
                "spec".to_owned(),
                "Invalid value: \"object\": replicas must be at least minReplicas".to_owned()
            ),
            (
                "spec".to_owned(),
                "Invalid value: \"object\": failed rule: self.replicas < 100".to_owned()
            ),
        ]
    );
    assert_eq!(causes[0].reason, "FieldValueInvalid");
}

#[test]
fn reasons_field_paths_and_message_expressions() {
    let s = schema(json!([{
        "rule": "self.replicas <= 5",
        "messageExpression": "'replicas ' + string(self.replicas) + ' is over 5'",
        "reason": "FieldValueForbidden",
        "fieldPath": ".replicas"
    }]));
    let causes = validate(&obj(json!({"replicas": 7})), None, &s);
    assert_eq!(
        messages(&causes),
        [(
            "spec.replicas".to_owned(),
            "Forbidden: replicas 7 is over 5".to_owned()
        )]
    );
    assert_eq!(causes[0].reason, "FieldValueForbidden");
}

#[test]
fn an_evaluation_error_is_reported_not_raised() {
    let s = schema(json!([{"rule": "self.absent == 1"}]));
    let causes = validate(&obj(json!({"replicas": 1})), None, &s);
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].field, "spec");
    assert!(
        causes[0]
            .message
            .contains("evaluating rule: self.absent == 1"),
        "{causes:?}"
    );
}

#[test]
fn transition_rules_run_on_update_where_the_old_value_correlates() {
    let s = schema(json!([]));
    let v1 = obj(json!({"mode": "a", "ports": [{"name": "http", "port": 80}]}));
    // On create, rules naming oldSelf do not run.
    assert!(validate(&v1, None, &s).is_empty());
    let v2 = obj(
        json!({"mode": "b", "ports": [{"name": "https", "port": 1}, {"name": "http", "port": 79}]}),
    );
    let causes = validate(&v2, Some(&v1), &s);
    assert_eq!(
        messages(&causes),
        [
            (
                "spec.mode".to_owned(),
                "Invalid value: \"string\": mode is immutable".to_owned()
            ),
            // The new `https` item has no old self; `http` is matched by name.
            (
                "spec.ports[1].port".to_owned(),
                "Invalid value: \"integer\": ports only grow".to_owned()
            ),
        ]
    );
}

#[test]
fn unchanged_values_are_not_checked_again() {
    let s = schema(json!([{"rule": "self.replicas < 10"}]));
    let stored = obj(json!({"replicas": 20}));
    let relabelled = obj(json!({"replicas": 20}));
    assert!(validate(&relabelled, Some(&stored), &s).is_empty());
    assert_eq!(
        validate(&obj(json!({"replicas": 21})), Some(&stored), &s).len(),
        1
    );
}

#[test]
fn optional_old_self_runs_on_create_too() {
    let s = schema(json!([{
        "rule": "!oldSelf.hasValue() || self.replicas >= oldSelf.value().replicas",
        "optionalOldSelf": true,
        "message": "no scaling down"
    }]));
    assert!(validate(&obj(json!({"replicas": 3})), None, &s).is_empty());
    let old = obj(json!({"replicas": 3}));
    assert!(validate(&obj(json!({"replicas": 4})), Some(&old), &s).is_empty());
    assert_eq!(
        validate(&obj(json!({"replicas": 2})), Some(&old), &s).len(),
        1
    );
}

#[test]
fn root_rules_see_only_name_and_generate_name_of_metadata() {
    let s = json!({"type": "object", "x-kubernetes-validations": [
        {"rule": "self.metadata.name.startsWith('w') && !has(self.metadata.labels)"},
        {"rule": "self.spec.size() > 0", "message": "spec must not be empty"}
    ], "properties": {"spec": {"type": "object"}}});
    assert!(validate(&obj(json!({"x": 1})), None, &s).is_empty());
    let causes = validate(&obj(json!({})), None, &s);
    assert_eq!(
        messages(&causes),
        [(
            "".to_owned(),
            "Invalid value: \"object\": spec must not be empty".to_owned()
        )]
    );
}

#[test]
fn schemas_upstream_refuses_are_named_by_path() {
    let s = schema(json!([{"rule": "self.replicas <"}, {"rule": "true", "reason": "Nope"}]));
    let causes = schema_errors(&s, "spec.versions[0].schema.openAPIV3Schema");
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].reason",
        ]
    );
    assert!(
        causes[0].message.contains("compilation failed"),
        "{causes:?}"
    );
    assert!(schema_errors(&schema(json!([{"rule": "self.replicas > 0"}])), "s").is_empty());
    let quadratic =
        json!({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true}}});
    let causes = schema_errors(&quadratic, "s");
    assert_eq!(causes.len(), 1);
    assert_eq!(
        (causes[0].field.as_str(), causes[0].reason),
        ("s.properties[tags].uniqueItems", "FieldValueForbidden")
    );
}

#[test]
fn nested_comprehensions_over_large_values_are_refused_not_run() {
    let s = json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.items.all(x, self.items.all(y, x == y || x != y))"}],
        "properties": {"items": {"type": "array", "items": {"type": "integer"}}}}}});
    let small = obj(json!({"items": [1, 2, 3]}));
    assert!(validate(&small, None, &s).is_empty());
    let huge = obj(json!({"items": (0..20_000).collect::<Vec<_>>()}));
    let causes = validate(&huge, None, &s);
    assert_eq!(causes.len(), 1);
    assert!(
        causes[0].message.contains("cost limit exceeded"),
        "{causes:?}"
    );
}

#[test]
fn comprehension_depth_counts_nesting_not_occurrences() {
    assert_eq!(comprehension_depth("self.a > 1"), 0);
    assert_eq!(
        comprehension_depth("self.a.all(x, x > 0) && self.b.exists(y, y == 1)"),
        1
    );
    assert_eq!(
        comprehension_depth("self.all(f1, self.exists_one(f2, f1.name == f2.name))"),
        2
    );
    assert_eq!(
        comprehension_depth("self.a.all(x, ')' == x || x.b.map(y, y).size() > 0)"),
        2
    );
}

#[test]
fn a_crd_update_keeping_a_stored_schema_is_not_refused_for_it() {
    let crd = |schema: Value| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": schema}}]}})
    };
    let quadratic =
        json!({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true}}});
    let stored = crd(quadratic.clone());
    assert_eq!(crate::crd::validate(&stored, None).len(), 1);
    // A status write, or any update that keeps the schema, passes.
    let mut status_write = stored.clone();
    status_write["status"] = json!({"conditions": []});
    assert!(crate::crd::validate(&status_write, Some(&stored)).is_empty());
    // A changed schema is checked again.
    let mut changed = quadratic;
    changed["properties"]["more"] = json!({"type": "string"});
    assert_eq!(crate::crd::validate(&crd(changed), Some(&stored)).len(), 1);
}

#[test]
fn rules_are_found_at_any_depth_of_a_schema() {
    assert!(declared(&schema(json!([]))), "mode and port declare rules");
    let plain = json!({"type": "object", "properties": {"spec": {"type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "string"}}}}}});
    assert!(!declared(&plain));
    let in_items = json!({"type": "array", "items": {"type": "string",
        "x-kubernetes-validations": [{"rule": "self != ''"}]}});
    assert!(declared(&in_items));
}
