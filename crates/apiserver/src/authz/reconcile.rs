//! Bringing stored bootstrap roles and bindings up to the server's policy
//! (upstream's `auth reconcile` as the API server runs it at start): missing
//! rules, aggregation selectors, subjects, labels and annotations are added,
//! nothing is taken away, and objects annotated `autoupdate: "false"` are left
//! as the administrator made them.

use serde_json::{Map, Value};

use super::policy::AUTOUPDATE;
use super::rules::{PolicyRule, uncovered};

/// What reconciling one stored object against its expected form decided.
#[derive(Debug, PartialEq)]
pub enum Reconciled {
    /// The stored object already holds everything expected, or is protected.
    Unchanged,
    /// Write this object (the stored one with what was missing added).
    Update(Value),
    /// A binding's `roleRef` differs and cannot be changed in place: delete
    /// the stored binding and create the expected one.
    Recreate,
}

fn protected(existing: &Value) -> bool {
    existing["metadata"]["annotations"][AUTOUPDATE].as_str() == Some("false")
}

/// Adds the expected keys a map lacks; values already stored win, as
/// upstream's reconciliation keeps an administrator's edits.
fn merge_missing(stored: &mut Value, expected: &Value) -> bool {
    let Some(expected) = expected.as_object() else {
        return false;
    };
    if !stored.is_object() {
        *stored = Value::Object(Map::new());
    }
    let Some(map) = stored.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for (k, v) in expected {
        if !map.contains_key(k) {
            map.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

fn merge_metadata(result: &mut Value, expected: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let want = &expected["metadata"][field];
        if want.as_object().is_some_and(|m| !m.is_empty()) {
            changed |= merge_missing(&mut result["metadata"][field], want);
        }
    }
    changed
}

fn rules(obj: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(obj["rules"].clone()).unwrap_or_default()
}

/// Reconciles a stored Role or ClusterRole with the policy's `expected` one.
pub fn role(expected: &Value, existing: &Value) -> Reconciled {
    if protected(existing) {
        return Reconciled::Unchanged;
    }
    let mut result = existing.clone();
    let mut changed = merge_metadata(&mut result, expected);
    let have = rules(existing);
    let missing: Vec<&Value> = expected["rules"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| {
                    serde_json::from_value::<PolicyRule>((*r).clone())
                        .is_ok_and(|rule| !uncovered(&have, std::slice::from_ref(&rule)).is_empty())
                })
                .collect()
        })
        .unwrap_or_default();
    // An aggregated role's rules are the aggregation controller's to fill.
    if !missing.is_empty() && expected.get("aggregationRule").is_none() {
        let list = result["rules"].as_array().cloned().unwrap_or_default();
        result["rules"] = Value::Array(
            list.into_iter()
                .chain(missing.into_iter().cloned())
                .collect(),
        );
        changed = true;
    }
    if let Some(selectors) = expected["aggregationRule"]["clusterRoleSelectors"].as_array() {
        let stored = &mut result["aggregationRule"]["clusterRoleSelectors"];
        let mut list = stored.as_array().cloned().unwrap_or_default();
        for s in selectors {
            if !list.contains(s) {
                list.push(s.clone());
                changed = true;
            }
        }
        *stored = Value::Array(list);
    }
    if changed {
        Reconciled::Update(result)
    } else {
        Reconciled::Unchanged
    }
}

/// Reconciles a stored RoleBinding or ClusterRoleBinding with the policy's
/// `expected` one.
pub fn binding(expected: &Value, existing: &Value) -> Reconciled {
    if protected(existing) {
        return Reconciled::Unchanged;
    }
    if existing["roleRef"] != expected["roleRef"] {
        return Reconciled::Recreate;
    }
    let mut result = existing.clone();
    let mut changed = merge_metadata(&mut result, expected);
    let mut subjects = existing["subjects"].as_array().cloned().unwrap_or_default();
    for s in expected["subjects"].as_array().into_iter().flatten() {
        if !subjects.iter().any(|have| same_subject(have, s)) {
            subjects.push(s.clone());
            changed = true;
        }
    }
    if changed {
        result["subjects"] = Value::Array(subjects);
        Reconciled::Update(result)
    } else {
        Reconciled::Unchanged
    }
}

/// Subjects are the same when kind, name and namespace agree; `apiGroup` is
/// defaulted and may be written either way.
fn same_subject(a: &Value, b: &Value) -> bool {
    let ns = |v: &Value| v["namespace"].as_str().unwrap_or_default().to_owned();
    a["kind"] == b["kind"] && a["name"] == b["name"] && ns(a) == ns(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster_role(rules: Value, annotations: Value) -> Value {
        json!({"kind": "ClusterRole", "metadata": {"name": "r", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}, "annotations": annotations}, "rules": rules})
    }

    #[test]
    fn a_role_missing_a_rule_gains_it_and_keeps_its_own() {
        let expected = cluster_role(
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]),
            json!({AUTOUPDATE: "true"}),
        );
        let existing = cluster_role(
            json!([{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list"]}]),
            json!({AUTOUPDATE: "true", "mine": "kept"}),
        );
        let Reconciled::Update(out) = role(&expected, &existing) else {
            panic!("expected an update");
        };
        let rules = out["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 2, "{out}");
        assert_eq!(rules[0], existing["rules"][0], "the stored rule stays");
        assert_eq!(rules[1]["resources"], json!(["nodes"]));
        assert_eq!(out["metadata"]["annotations"]["mine"], "kept");
        assert_eq!(role(&expected, &out), Reconciled::Unchanged, "idempotent");
    }

    #[test]
    fn autoupdate_false_protects_a_role_and_a_binding() {
        let expected = cluster_role(
            json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]),
            json!({AUTOUPDATE: "true"}),
        );
        let existing = cluster_role(json!([]), json!({AUTOUPDATE: "false"}));
        assert_eq!(role(&expected, &existing), Reconciled::Unchanged);
        let b = json!({"metadata": {"annotations": {AUTOUPDATE: "false"}}, "roleRef": {"name": "x"}, "subjects": []});
        let want = json!({"metadata": {}, "roleRef": {"name": "y"}, "subjects": [{"kind": "User", "name": "u"}]});
        assert_eq!(binding(&want, &b), Reconciled::Unchanged);
    }

    #[test]
    fn aggregation_selectors_are_unioned_and_rules_left_to_the_controller() {
        let sel = |k: &str| json!({"matchLabels": {k: "true"}});
        let expected = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [sel("a"), sel("b")]}, "rules": []});
        let existing = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [sel("c"), sel("a")]},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        let Reconciled::Update(out) = role(&expected, &existing) else {
            panic!("expected an update");
        };
        assert_eq!(
            out["aggregationRule"]["clusterRoleSelectors"],
            json!([sel("c"), sel("a"), sel("b")])
        );
        assert_eq!(out["rules"], existing["rules"]);
    }

    #[test]
    fn a_binding_gains_missing_subjects_and_is_recreated_for_a_new_role_ref() {
        let expected = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]});
        let mut existing = expected.clone();
        existing["subjects"] = json!([{"kind": "User", "name": "alice"}]);
        let Reconciled::Update(out) = binding(&expected, &existing) else {
            panic!("expected an update");
        };
        assert_eq!(out["subjects"].as_array().map(Vec::len), Some(2));
        assert_eq!(binding(&expected, &out), Reconciled::Unchanged);
        existing["roleRef"]["name"] = json!("other");
        assert_eq!(binding(&expected, &existing), Reconciled::Recreate);
    }
}
