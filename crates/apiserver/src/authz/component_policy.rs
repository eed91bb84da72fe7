//! The bootstrap roles of the control-plane components other than the
//! controllers: the scheduler (and its volume binder) and the nodes.

use serde_json::Value;

use super::policy::{READ, named, rule};

/// The rules of `system:kube-scheduler`.
pub(super) fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(&["coordination.k8s.io"], &["leases"], &["create"]),
        named(
            &["coordination.k8s.io"],
            &["leases"],
            &["kube-scheduler"],
            &["get", "update"],
        ),
        rule(&[""], &["nodes"], READ),
        rule(&[""], &["pods"], &["delete", "get", "list", "watch"]),
        rule(&[""], &["bindings", "pods/binding"], &["create"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(&[""], &["replicationcontrollers", "services"], READ),
        rule(&["apps"], &["replicasets", "statefulsets"], READ),
        rule(&["policy"], &["poddisruptionbudgets"], READ),
        rule(
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
            READ,
        ),
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
        rule(
            &["storage.k8s.io"],
            &["csinodes", "csidrivers", "storageclasses"],
            READ,
        ),
        rule(&[""], &["namespaces"], READ),
    ]
}

/// The rules of `system:node`, which the Node authorizer grants every node.
pub(super) fn node_rules() -> Vec<Value> {
    vec![
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews", "subjectaccessreviews"],
            &["create"],
        ),
        rule(&[""], &["services"], READ),
        rule(
            &[""],
            &["nodes"],
            &["create", "get", "list", "watch", "patch", "update"],
        ),
        rule(&[""], &["nodes/status"], &["patch", "update"]),
        rule(&[""], &["events"], &["create", "patch", "update"]),
        rule(
            &[""],
            &["pods"],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(&[""], &["configmaps", "secrets"], READ),
        rule(
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
            &["get"],
        ),
        rule(&[""], &["endpoints"], &["get"]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["create", "delete", "get", "patch", "update"],
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &[""],
            &["persistentvolumeclaims/status"],
            &["get", "patch", "update"],
        ),
        rule(&["storage.k8s.io"], &["csidrivers"], READ),
        rule(
            &["storage.k8s.io"],
            &["csinodes"],
            &["create", "delete", "get", "patch", "update"],
        ),
        rule(&["node.k8s.io"], &["runtimeclasses"], READ),
    ]
}

/// The rules of `system:volume-scheduler`: the scheduler reserves volumes
/// for claims that wait for their first consumer.
pub(super) fn volume_scheduler_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &["persistentvolumes"],
            &["get", "list", "patch", "update", "watch"],
        ),
        rule(&["storage.k8s.io"], &["storageclasses"], READ),
        rule(
            &[""],
            &["persistentvolumeclaims"],
            &["get", "list", "patch", "update", "watch"],
        ),
    ]
}
