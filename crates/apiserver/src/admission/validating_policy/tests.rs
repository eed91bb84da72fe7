use super::*;

fn policy(spec: Value) -> Value {
    json!({"metadata": {"name": "limits"}, "spec": spec})
}

fn binding() -> Value {
    json!({"metadata": {"name": "limits-binding"}, "spec": {"policyName": "limits"}})
}

fn run(policy: &Value, object: &Value) -> Vec<Violation> {
    let inputs = Inputs {
        object,
        old_object: &Value::Null,
        request: &json!({"operation": "CREATE", "userInfo": {"username": "alice"}}),
        params: &json!({"data": {"max": "3"}}),
        namespace_object: &json!({"metadata": {"labels": {"env": "prod"}}}),
    };
    let mut out = Vec::new();
    evaluate(policy, &binding(), &inputs, &mut out).expect("evaluate");
    out
}

fn deployment(replicas: i64) -> Value {
    json!({"metadata": {"name": "web", "labels": {"team": "a"}}, "spec": {"replicas": replicas}})
}

#[test]
fn a_false_validation_is_a_violation_with_upstream_s_default_message() {
    let p = policy(json!({"validations": [{"expression": "object.spec.replicas <= 5"}]}));
    assert!(run(&p, &deployment(3)).is_empty());
    let v = run(&p, &deployment(10));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].message, "failed expression: object.spec.replicas <= 5");
    assert_eq!(v[0].reason, StatusReason::Invalid);
    assert_eq!(
        (v[0].policy.as_str(), v[0].binding.as_str()),
        ("limits", "limits-binding")
    );
}

#[test]
fn messages_reasons_variables_params_and_the_namespace_are_available() {
    let p = policy(json!({
        "variables": [{"name": "limit", "expression": "int(params.data.max)"}],
        "validations": [
            {"expression": "object.spec.replicas <= variables.limit",
             "messageExpression": "'replicas must be at most ' + string(variables.limit)",
             "reason": "Forbidden"},
            {"expression": "namespaceObject.metadata.labels.env != 'prod' || has(object.metadata.labels.team)",
             "message": "prod needs a team"},
            {"expression": "request.userInfo.username == 'alice' && request.operation == 'CREATE'"},
            {"expression": "object.metadata.name.startsWith('w') && ['a', 'b'].exists(t, t == object.metadata.labels.team)"}
        ]
    }));
    assert!(run(&p, &deployment(3)).is_empty());
    let v = run(&p, &deployment(4));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].message, "replicas must be at most 3");
    assert_eq!(v[0].reason, StatusReason::Forbidden);
    // (Without a labels map at all, `has(...labels.team)` errors, as in CEL.)
    let v = run(
        &p,
        &json!({"metadata": {"name": "web", "labels": {}}, "spec": {"replicas": 1}}),
    );
    let messages: Vec<&str> = v.iter().map(|v| v.message.as_str()).collect();
    assert!(messages.contains(&"prod needs a team"), "{messages:?}");
    assert_eq!(
        v.iter()
            .find(|v| v.message == "prod needs a team")
            .map(|v| v.index),
        Some(1)
    );
}

#[test]
fn errors_follow_the_failure_policy_and_match_conditions_gate() {
    let failing = json!({"validations": [{"expression": "object.spec.missing > 1"}]});
    let v = run(&policy(failing.clone()), &deployment(1));
    assert_eq!(v.len(), 1);
    assert!(
        v[0].message
            .starts_with("expression 'object.spec.missing > 1' resulted in error: "),
        "{}",
        v[0].message
    );
    let mut ignored = failing;
    ignored["failurePolicy"] = json!("Ignore");
    assert!(run(&policy(ignored), &deployment(1)).is_empty());
    let not_bool = json!({"validations": [{"expression": "object.spec.replicas"}]});
    assert!(
        run(&policy(not_bool), &deployment(1))[0]
            .message
            .contains("must evaluate to bool")
    );
    let gated = json!({
        "matchConditions": [{"name": "only-team-b", "expression": "object.metadata.labels.team == 'b'"}],
        "validations": [{"expression": "false"}]
    });
    assert!(run(&policy(gated.clone()), &deployment(1)).is_empty());
    let mut other = deployment(1);
    other["metadata"]["labels"]["team"] = json!("b");
    assert_eq!(run(&policy(gated), &other).len(), 1);
}

#[test]
fn denials_read_as_upstream_s() {
    let object = deployment(10);
    let a = AdmissionAttempt {
        operation: "CREATE",
        group: "apps",
        version: "v1",
        kind: "Deployment",
        resource: "deployments",
        subresource: "",
        namespace: "dev",
        name: "web",
        object: Some(&object),
        old_object: None,
        dry_run: false,
    };
    let v = Violation {
        policy: "limits".into(),
        binding: "limits-binding".into(),
        message: "failed expression: object.spec.replicas <= 5".into(),
        reason: StatusReason::Invalid,
        index: 0,
    };
    let e = denial(&a, &v);
    assert_eq!(e.code(), 422);
    assert_eq!(
        e.message,
        "deployments.apps \"web\" is forbidden: ValidatingAdmissionPolicy 'limits' with binding 'limits-binding' denied request: failed expression: object.spec.replicas <= 5"
    );
    assert_eq!(e.causes.len(), 1);
}

#[test]
fn policies_and_bindings_are_validated_on_write() {
    let ok = policy(json!({
        "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
            "operations": ["CREATE"], "resources": ["deployments"]}]},
        "validations": [{"expression": "object.spec.replicas <= 5"}]
    }));
    assert!(validation::policy(&ok).is_empty());
    let bad = policy(json!({
        "failurePolicy": "Sometimes",
        "validations": [{"expression": "object.spec.replicas <="}, {"expression": ""}]
    }));
    let fields: Vec<String> = validation::policy(&bad)
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            "spec.matchConstraints",
            "spec.failurePolicy",
            "spec.validations[0].expression",
            "spec.validations[1].expression"
        ]
    );
    let b = json!({"spec": {"policyName": "p", "validationActions": ["Deny", "Warn", "Deny", "Shout"]}});
    let fields: Vec<String> = validation::binding(&b)
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            "spec.validationActions[2]",
            "spec.validationActions[3]",
            "spec.validationActions"
        ]
    );
    assert!(
        validation::binding(
            &json!({"spec": {"policyName": "p", "validationActions": ["Audit", "Warn"]}})
        )
        .is_empty()
    );
}
