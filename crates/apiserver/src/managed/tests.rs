//! Field ownership and apply semantics on plain JSON objects.

use serde_json::json;

use super::*;

fn writer<'a>(manager: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version: "apps/v1",
        subresource: "",
        domain: Domain::NoStatus,
        types: Types::Builtin,
    }
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"app": "d"}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}
    })
}

#[test]
fn fields_v1_round_trips_and_uses_merge_keys() {
    let set = fields_of(&deployment(1, "a"), Domain::NoStatus, Types::Builtin);
    let v1 = to_fields_v1(&set);
    assert_eq!(
        v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"],
        json!({})
    );
    assert!(v1["f:metadata"]["f:labels"].get(".").is_some());
    assert!(
        v1["f:metadata"].get("f:name").is_none(),
        "identity is owned by nobody"
    );
    let mut back = FieldSet::new();
    from_fields_v1(&v1, &mut Vec::new(), &mut back);
    assert_eq!(back, set);
}

#[test]
fn apply_conflicts_with_another_manager_unless_forced() {
    let first = apply(None, &deployment(1, "a"), &writer("alice"), false).expect("create");
    // Same values: shared ownership, no conflict.
    let shared = apply(Some(&first), &deployment(1, "a"), &writer("bob"), false).expect("shared");
    assert_eq!(entries(&shared).len(), 2);
    let err =
        apply(Some(&shared), &deployment(3, "a"), &writer("bob"), false).expect_err("conflict");
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].manager, "alice");
    assert_eq!(err[0].field, ".spec.replicas");
    let forced = apply(Some(&shared), &deployment(3, "a"), &writer("bob"), true).expect("force");
    assert_eq!(forced["spec"]["replicas"], 3);
    let alice = entries(&forced)
        .into_iter()
        .find(|e| e.manager == "alice")
        .expect("alice");
    assert!(
        !alice
            .fields
            .contains(&vec!["f:spec".to_string(), "f:replicas".to_string()])
    );
}

#[test]
fn apply_removes_what_it_stops_applying_unless_someone_else_owns_it() {
    let mut with_label = deployment(1, "a");
    with_label["metadata"]["labels"]["extra"] = json!("x");
    let live = apply(None, &with_label, &writer("alice"), false).expect("create");
    let live = apply(Some(&live), &deployment(1, "a"), &writer("alice"), false).expect("reapply");
    assert!(live["metadata"]["labels"].get("extra").is_none());
    assert_eq!(live["metadata"]["labels"]["app"], "d");

    // A field another manager set survives the applier dropping it.
    let mut live = apply(None, &with_label, &writer("alice"), false).expect("create");
    let mut updated = live.clone();
    updated["metadata"]["labels"]["extra"] = json!("y");
    record_update(&mut updated, Some(&live), &writer("kubectl-label"));
    live = updated;
    let live = apply(Some(&live), &deployment(1, "a"), &writer("alice"), false).expect("reapply");
    assert_eq!(live["metadata"]["labels"]["extra"], "y");
}

#[test]
fn updates_take_the_fields_they_change() {
    let mut created = deployment(1, "a");
    record_update(&mut created, None, &writer("kubectl-create"));
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update(&mut scaled, Some(&created), &writer("kubectl-scale"));
    let list = entries(&scaled);
    let replicas = vec!["f:spec".to_string(), "f:replicas".to_string()];
    let owner: Vec<_> = list
        .iter()
        .filter(|e| e.fields.contains(&replicas))
        .map(|e| e.manager.as_str())
        .collect();
    assert_eq!(owner, vec!["kubectl-scale"]);
    assert!(list.iter().all(|e| e.operation == "Update"));
    // Nothing changed: nothing recorded for the writer.
    let mut same = scaled.clone();
    record_update(&mut same, Some(&scaled), &writer("noop"));
    assert!(entries(&same).iter().all(|e| e.manager != "noop"));
}

#[test]
fn status_writes_own_status_only() {
    let w = Writer {
        manager: "ctl",
        api_version: "apps/v1",
        subresource: "status",
        domain: Domain::StatusOnly,
        types: Types::Builtin,
    };
    let mut obj = deployment(1, "a");
    obj["status"] = json!({"replicas": 1});
    let old = deployment(1, "a");
    record_update(&mut obj, Some(&old), &w);
    let e = &entries(&obj)[0];
    assert_eq!(e.subresource, "status");
    assert!(e.fields.iter().all(|p| p[0] == "f:status"));
}

#[test]
fn malformed_managed_fields_are_dropped_not_fatal() {
    let mut obj = deployment(1, "a");
    obj["metadata"]["managedFields"] =
        json!([{"manager": 5}, "junk", {"manager": "m", "fieldsV1": {"f:spec": 3}}]);
    let list = entries(&obj);
    assert!(list.len() <= 1);
    assert_eq!(
        display(&[
            "f:spec".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:image".into()
        ]),
        ".spec[name=\"c\"].image"
    );
}

fn widget_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {"type": "object", "properties": {
                    "port": {"type": "integer"}, "protocol": {"type": "string"},
                    "name": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "args": {"type": "array", "items": {"type": "string"}},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                "additionalProperties": {"type": "string"}}
        }}
    }})
}

fn custom_writer<'a>(manager: &'a str, schema: &'a Value) -> Writer<'a> {
    Writer {
        manager,
        api_version: "example.com/v1",
        subresource: "",
        domain: Domain::All,
        types: Types::Schema(Some(schema)),
    }
}

fn widget(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": spec})
}

#[test]
fn custom_resources_merge_lists_as_their_schema_says() {
    let schema = widget_schema();
    let cr = |manager| custom_writer(manager, &schema);
    let alice = widget(json!({
        "ports": [{"port": 80, "protocol": "TCP", "name": "http"}],
        "tags": ["a"], "args": ["x"], "selector": {"app": "w"}
    }));
    let live = apply(None, &alice, &cr("alice"), false).expect("create");
    let fields = to_fields_v1(&entries(&live)[0].fields);
    assert_eq!(
        fields["f:spec"]["f:ports"][r#"k:{"port":80,"protocol":"TCP"}"#]["f:name"],
        json!({})
    );
    assert_eq!(fields["f:spec"]["f:tags"][r#"v:"a""#], json!({}));
    assert_eq!(
        fields["f:spec"]["f:args"],
        json!({}),
        "an atomic list is one field"
    );
    assert_eq!(
        fields["f:spec"]["f:selector"],
        json!({}),
        "an atomic map is one field"
    );

    // Bob adds his own port (same number, other protocol) and tag: no conflict, both kept.
    let bob = widget(json!({"ports": [{"port": 80, "protocol": "UDP"}], "tags": ["b"]}));
    let live = apply(Some(&live), &bob, &cr("bob"), false).expect("no conflict");
    assert_eq!(live["spec"]["ports"].as_array().map(Vec::len), Some(2));
    assert_eq!(live["spec"]["tags"], json!(["a", "b"]));

    // An atomic list or map set to something else conflicts.
    let err = apply(
        Some(&live),
        &widget(json!({"args": ["y"]})),
        &cr("bob"),
        false,
    )
    .expect_err("atomic list");
    assert_eq!(err[0].field, ".spec.args");
    let err = apply(
        Some(&live),
        &widget(json!({"selector": {"app": "w", "tier": "x"}})),
        &cr("bob"),
        false,
    )
    .expect_err("atomic map");
    assert_eq!(err[0].field, ".spec.selector");

    // Alice stops applying her port and tag: only hers go.
    let alice_again = widget(json!({"args": ["x"], "selector": {"app": "w"}}));
    let live = apply(Some(&live), &alice_again, &cr("alice"), false).expect("reapply");
    assert_eq!(
        live["spec"]["ports"],
        json!([{"port": 80, "protocol": "UDP"}])
    );
    assert_eq!(live["spec"]["tags"], json!(["b"]));
}

#[test]
fn applied_items_without_a_defaulted_key_are_the_defaulted_items() {
    let mut schema = widget_schema();
    schema["properties"]["spec"]["properties"]["ports"]["items"]["properties"]["protocol"]["default"] =
        json!("TCP");
    let cr = |manager| custom_writer(manager, &schema);
    let mut live = apply(
        None,
        &widget(json!({"ports": [{"port": 80, "name": "http"}]})),
        &cr("alice"),
        false,
    )
    .expect("create");
    assert_eq!(live["spec"]["ports"][0]["protocol"], "TCP");
    // The stored object is defaulted; alice re-applies without protocol.
    live["spec"]["ports"][0]["protocol"] = json!("TCP");
    let bob = apply(
        Some(&live),
        &widget(json!({"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]})),
        &cr("bob"),
        false,
    )
    .expect("same value, shared");
    let again = apply(
        Some(&bob),
        &widget(json!({"ports": [{"port": 80, "name": "http"}]})),
        &cr("alice"),
        false,
    )
    .expect("no conflict with bob over the same item");
    assert_eq!(again["spec"]["ports"].as_array().map(Vec::len), Some(1));
}

#[test]
fn label_selectors_are_owned_whole_as_upstream_marks_them() {
    let mut d = deployment(1, "a");
    d["spec"]["selector"] = json!({"matchLabels": {"app": "d"}});
    let v1 = to_fields_v1(&fields_of(&d, Domain::NoStatus, Types::Builtin));
    assert_eq!(v1["f:spec"]["f:selector"], json!({}));
    // Another applier's different selector replaces it whole (after a forced conflict).
    let live = apply(None, &d, &writer("alice"), false).expect("create");
    let mut other = d.clone();
    other["spec"]["selector"] = json!({"matchLabels": {"tier": "x"}});
    let err = apply(Some(&live), &other, &writer("bob"), false).expect_err("conflict");
    assert_eq!(err[0].field, ".spec.selector");
    let forced = apply(Some(&live), &other, &writer("bob"), true).expect("force");
    assert_eq!(
        forced["spec"]["selector"],
        json!({"matchLabels": {"tier": "x"}})
    );
}

#[test]
fn entries_recorded_inside_a_now_atomic_field_do_not_strip_it() {
    // An entry as an older server wrote it: the selector and a custom
    // resource's `containers` owned field by field.
    let mut live = deployment(1, "a");
    live["spec"]["selector"] = json!({"matchLabels": {"app": "d"}});
    live["metadata"]["managedFields"] = json!([{
        "manager": "alice", "operation": "Apply", "apiVersion": "apps/v1",
        "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}, "f:selector": {"f:matchLabels": {".": {}, "f:app": {}}},
            "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}
    }]);
    let mut config = deployment(1, "a");
    config["spec"]["selector"] = json!({"matchLabels": {"app": "d"}});
    let again = apply(Some(&live), &config, &writer("alice"), false).expect("re-apply");
    assert_eq!(
        again["spec"]["selector"],
        json!({"matchLabels": {"app": "d"}})
    );
    let alice = &entries(&again)[0];
    assert!(
        alice
            .fields
            .contains(&vec!["f:spec".to_string(), "f:selector".to_string()])
    );

    let schema = widget_schema();
    let mut cr = widget(json!({"args": ["x"], "containers": [{"name": "c", "image": "i"}]}));
    cr["metadata"]["managedFields"] = json!([{
        "manager": "alice", "operation": "Apply", "apiVersion": "example.com/v1",
        "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:args": {}, "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:name": {}, "f:image": {}}}}}
    }]);
    let config = widget(json!({"args": ["x"], "containers": [{"name": "c", "image": "i"}]}));
    let again =
        apply(Some(&cr), &config, &custom_writer("alice", &schema), false).expect("re-apply");
    assert_eq!(
        again["spec"]["containers"],
        json!([{"name": "c", "image": "i"}])
    );
}

#[test]
fn a_creates_field_tree_is_the_folded_set_of_its_paths() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "a"},
            "finalizers": ["x", "y"], "annotations": {},
            "ownerReferences": [{"uid": "o1", "name": "rs"}, {"uid": "o2", "name": "rs2"}]},
        "spec": {
            "containers": [
                {"name": "c", "image": "i", "command": ["sleep", "1"],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}],
                    "resources": {"requests": {"cpu": "1"}}, "env": []},
                // The same key twice: both items' fields fold into one.
                {"name": "c", "stdin": true}],
            "nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "dnsConfig": {}},
        "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
    });
    let schema = widget_schema();
    let cr = widget(
        json!({"ports": [{"port": 80, "protocol": "UDP"}], "tags": ["a", "b"],
        "args": ["x"], "selector": {"app": "w"}, "empty": {}}),
    );
    let cases = [
        (&pod, Domain::NoStatus, Types::Builtin),
        (&pod, Domain::StatusOnly, Types::Builtin),
        (&pod, Domain::All, Types::Builtin),
        (&cr, Domain::All, Types::Schema(Some(&schema))),
        (
            &json!({"metadata": {"name": "bare"}}),
            Domain::All,
            Types::Builtin,
        ),
    ];
    for (obj, domain, types) in cases {
        let folded = to_fields_v1(&fields_of(obj, domain, types));
        assert_eq!(Value::Object(fields_v1_of(obj, domain, types)), folded);
    }
}

#[test]
fn a_create_owns_every_field_it_sets_in_one_entry() {
    let mut obj = deployment(1, "a");
    obj["metadata"]["managedFields"] = json!([{"manager": "forged", "operation": "Apply"}]);
    record_update(&mut obj, None, &writer("alice"));
    let entries = obj["metadata"]["managedFields"]
        .as_array()
        .expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            &entries[0]["manager"],
            &entries[0]["operation"],
            &entries[0]["apiVersion"]
        ),
        (&json!("alice"), &json!("Update"), &json!("apps/v1"))
    );
    assert!(entries[0].get("subresource").is_none());
    let expected = to_fields_v1(&fields_of(&obj, Domain::NoStatus, Types::Builtin));
    assert_eq!(entries[0]["fieldsV1"], expected);
    // Through a subresource, and with nothing in its domain: no entry.
    let mut status_writer = writer("kubelet");
    status_writer.subresource = "status";
    status_writer.domain = Domain::StatusOnly;
    let mut bare = deployment(1, "a");
    record_update(&mut bare, None, &status_writer);
    assert!(bare["metadata"].get("managedFields").is_none());
    bare["status"] = json!({"replicas": 1});
    record_update(&mut bare, None, &status_writer);
    assert_eq!(
        bare["metadata"]["managedFields"][0]["subresource"],
        json!("status")
    );
}
