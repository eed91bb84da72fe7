//! Bootstrap RBAC reconciliation through the real server and kubectl: a
//! cluster whose default roles and bindings lack what the running server's
//! policy holds (as after an upgrade) gets the missing rules and subjects back
//! at the next start, keeps what its administrator added, leaves objects
//! annotated `rbac.authorization.kubernetes.io/autoupdate: "false"` alone, and
//! recreates a binding whose `roleRef` was changed.

use serde_json::{Value, json};

use crate::common;
use crate::common::cli::Cli;

fn get(kubectl: &Cli, kind: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl.ok(&["get", kind, name, "-o", "json"])).expect("json")
}

fn replace(kubectl: &Cli, obj: &Value) {
    kubectl.ok_stdin(&["replace", "-f", "-"], &obj.to_string());
}

fn grants(role: &Value, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().into_iter().flatten().any(|r| {
        let has = |field: &str, want: &str| {
            r[field]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
        };
        has("resources", resource) && has("verbs", verb)
    })
}

#[test]
fn a_restart_restores_missing_bootstrap_rules_and_subjects() {
    let mut server = common::Server::start();
    let kubectl = Cli::kubectl(&server);

    // An older policy: the view aggregate without pods, an administrator's
    // own rule and label on it.
    let mut view = get(&kubectl, "clusterrole", "system:aggregate-to-view");
    assert!(grants(&view, "pods", "list"), "{view}");
    view["rules"] =
        json!([{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]);
    view["metadata"]["labels"]["team"] = json!("ops");
    replace(&kubectl, &view);
    // A binding that lost its subjects.
    let mut basic = get(&kubectl, "clusterrolebinding", "system:basic-user");
    basic["subjects"] =
        json!([{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]);
    replace(&kubectl, &basic);
    // A role the administrator froze.
    let mut discovery = get(&kubectl, "clusterrole", "system:discovery");
    discovery["rules"] = json!([]);
    discovery["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] =
        json!("false");
    replace(&kubectl, &discovery);
    // A binding pointed at another role (roleRef cannot change in place).
    kubectl.ok(&["delete", "clusterrolebinding", "system:public-info-viewer"]);
    kubectl.ok(&[
        "create",
        "clusterrolebinding",
        "system:public-info-viewer",
        "--clusterrole=view",
        "--user=bob",
    ]);

    server.restart_with(&[]);

    let view = get(&kubectl, "clusterrole", "system:aggregate-to-view");
    assert!(grants(&view, "pods", "list"), "rules restored: {view}");
    assert!(grants(&view, "widgets", "get"), "own rule kept: {view}");
    assert_eq!(view["metadata"]["labels"]["team"], "ops");
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let basic = get(&kubectl, "clusterrolebinding", "system:basic-user");
    let names: Vec<&str> = basic["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["alice", "system:authenticated"], "{basic}");
    let discovery = get(&kubectl, "clusterrole", "system:discovery");
    assert_eq!(
        discovery["rules"],
        json!([]),
        "a frozen role stays: {discovery}"
    );
    let info = get(&kubectl, "clusterrolebinding", "system:public-info-viewer");
    assert_eq!(
        info["roleRef"]["name"], "system:public-info-viewer",
        "{info}"
    );
    assert!(
        !info["subjects"].to_string().contains("bob"),
        "recreated as the policy has it: {info}"
    );
    // An unchanged restart writes nothing.
    let rv = view["metadata"]["resourceVersion"].clone();
    server.restart_with(&[]);
    let again = get(&kubectl, "clusterrole", "system:aggregate-to-view");
    assert_eq!(again["metadata"]["resourceVersion"], rv);
}
