//! Upstream's per-controller policy: `system:kube-controller-manager` for the
//! controller manager's own identity (shared informers, leader election,
//! minting its controllers' tokens) and one `system:controller:NAME`
//! ClusterRole per controller, bound to the ServiceAccount `kube-system/NAME`
//! the controller runs as.
//!
//! The rules are upstream's (`bootstrappolicy/controller_policy.go`); where
//! one of our controllers patches what upstream's updates, the role also
//! grants `patch`, and says so beside the rule.

use serde_json::{Value, json};

use super::policy::{READ, binding, meta, named, role, rule, user};

/// The prefix of every controller's ClusterRole.
pub const ROLE_PREFIX: &str = "system:controller:";

/// The namespace of the controllers' ServiceAccounts.
pub const NAMESPACE: &str = "kube-system";

fn events() -> Value {
    rule(
        &["", "events.k8s.io"],
        &["events"],
        &["create", "update", "patch"],
    )
}

/// The controller manager's own identity: what its shared informers read,
/// its leader-election Lease, and the ServiceAccounts and tokens it makes
/// for its controllers.
fn kube_controller_manager() -> Value {
    role(
        "system:kube-controller-manager",
        &[],
        vec![
            events(),
            rule(&["coordination.k8s.io"], &["leases"], &["create"]),
            named(
                &["coordination.k8s.io"],
                &["leases"],
                &["kube-controller-manager"],
                &["get", "update"],
            ),
            rule(&[""], &["secrets", "serviceaccounts"], &["create"]),
            rule(&[""], &["secrets"], &["delete"]),
            rule(
                &[""],
                &["namespaces", "secrets", "serviceaccounts"],
                &["get"],
            ),
            rule(&[""], &["secrets", "serviceaccounts"], &["update"]),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
            ),
            rule(&["*"], &["*"], &["list", "watch"]),
            rule(&[""], &["serviceaccounts/token"], &["create"]),
        ],
    )
}

/// `(controller, rules)`: each controller's ServiceAccount name and what it may do.
fn controllers() -> Vec<(&'static str, Vec<Value>)> {
    const GET_LIST_WATCH_UPDATE: &[&str] = &["get", "list", "watch", "update"];
    const FULL: &[&str] = &[
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    vec![
        (
            "clusterrole-aggregation-controller",
            vec![rule(
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
                &["escalate", "get", "list", "watch", "update", "patch"],
            )],
        ),
        (
            "cronjob-controller",
            vec![
                rule(&["batch"], &["cronjobs"], GET_LIST_WATCH_UPDATE),
                rule(&["batch"], &["jobs"], FULL),
                rule(
                    &["batch"],
                    &["cronjobs/status", "cronjobs/finalizers"],
                    &["update"],
                ),
                rule(&[""], &["pods"], &["list", "watch", "delete"]),
                events(),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                rule(&["extensions", "apps"], &["daemonsets"], READ),
                rule(
                    &["extensions", "apps"],
                    &["daemonsets/status", "daemonsets/finalizers"],
                    &["update"],
                ),
                rule(&[""], &["nodes"], &["list", "watch"]),
                rule(
                    &[""],
                    &["pods"],
                    &["list", "watch", "create", "delete", "patch"],
                ),
                rule(&[""], &["pods/binding"], &["create"]),
                rule(&["apps"], &["controllerrevisions"], FULL),
                events(),
            ],
        ),
        (
            "deployment-controller",
            vec![
                // `patch`: ours writes the revision annotation and the
                // status by merge patch.
                rule(
                    &["extensions", "apps"],
                    &["deployments"],
                    &["get", "list", "watch", "update", "patch"],
                ),
                rule(
                    &["extensions", "apps"],
                    &["deployments/status"],
                    &["update", "patch"],
                ),
                rule(
                    &["extensions", "apps"],
                    &["deployments/finalizers"],
                    &["update"],
                ),
                rule(&["apps", "extensions"], &["replicasets"], FULL),
                rule(&[""], &["pods"], GET_LIST_WATCH_UPDATE),
                events(),
            ],
        ),
        (
            "disruption-controller",
            vec![
                rule(&["extensions", "apps"], &["deployments"], READ),
                rule(&["apps", "extensions"], &["replicasets"], READ),
                rule(&[""], &["replicationcontrollers"], READ),
                rule(&["policy"], &["poddisruptionbudgets"], READ),
                rule(&["apps"], &["statefulsets"], READ),
                rule(&["policy"], &["poddisruptionbudgets/status"], &["update"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&["*"], &["*/scale"], &["get"]),
                events(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(&[""], &["services", "pods"], READ),
                rule(
                    &[""],
                    &["endpoints"],
                    &["get", "list", "watch", "create", "update", "delete"],
                ),
                rule(&[""], &["endpoints/restricted"], &["create"]),
                events(),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                rule(&[""], &["services", "pods", "nodes"], READ),
                rule(&[""], &["services/finalizers"], &["update"]),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["get", "list", "watch", "create", "update", "delete"],
                ),
                events(),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![
                rule(
                    &["*"],
                    &["*"],
                    &["get", "list", "watch", "patch", "update", "delete"],
                ),
                events(),
            ],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                rule(&["autoscaling"], &["horizontalpodautoscalers"], READ),
                rule(
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                    &["update"],
                ),
                // `patch`: ours sets the target's replicas by merge patch.
                rule(&["*"], &["*/scale"], &["get", "update", "patch"]),
                rule(&[""], &["pods"], &["list", "watch"]),
                rule(&["metrics.k8s.io"], &["pods"], &["list", "watch"]),
                rule(&["custom.metrics.k8s.io"], &["*"], READ),
                rule(&["external.metrics.k8s.io"], &["*"], READ),
                events(),
            ],
        ),
        (
            "job-controller",
            vec![
                rule(
                    &["batch"],
                    &["jobs"],
                    &["get", "list", "watch", "update", "patch"],
                ),
                rule(&["batch"], &["jobs/status", "jobs/finalizers"], &["update"]),
                rule(
                    &[""],
                    &["pods"],
                    &["list", "watch", "create", "delete", "patch"],
                ),
                events(),
            ],
        ),
        (
            "namespace-controller",
            vec![
                rule(&[""], &["namespaces"], &["get", "list", "watch", "delete"]),
                // `patch`: ours writes the deletion conditions by merge patch.
                rule(
                    &[""],
                    &["namespaces/finalize", "namespaces/status"],
                    &["update", "patch"],
                ),
                rule(
                    &["*"],
                    &["*"],
                    &["get", "list", "watch", "delete", "deletecollection"],
                ),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(
                    &[""],
                    &["nodes"],
                    &["get", "list", "watch", "update", "delete", "patch"],
                ),
                rule(&[""], &["nodes/status"], &["patch", "update"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["pods"], &["list", "watch", "get", "delete"]),
                events(),
            ],
        ),
        (
            "persistent-volume-binder",
            vec![
                rule(
                    &[""],
                    &["persistentvolumes"],
                    &["get", "list", "watch", "update", "create", "delete"],
                ),
                rule(&[""], &["persistentvolumes/status"], &["update"]),
                rule(&[""], &["persistentvolumeclaims"], GET_LIST_WATCH_UPDATE),
                rule(&[""], &["persistentvolumeclaims/status"], &["update"]),
                rule(
                    &[""],
                    &["pods"],
                    &["list", "watch", "get", "create", "delete"],
                ),
                rule(&["storage.k8s.io"], &["storageclasses"], READ),
                rule(&[""], &["nodes"], &["get", "list"]),
                rule(&[""], &["events"], &["watch"]),
                events(),
            ],
        ),
        (
            // Kybern's own provisioner of local-path volumes: it makes and
            // deletes their volumes, and has the node's agent remove a
            // volume's directory through the node proxy.
            "local-path-provisioner",
            vec![
                rule(
                    &[""],
                    &["persistentvolumes"],
                    &["get", "list", "watch", "create", "delete"],
                ),
                rule(&[""], &["persistentvolumeclaims"], READ),
                rule(&["storage.k8s.io"], &["storageclasses"], READ),
                rule(&[""], &["nodes"], READ),
                rule(&[""], &["nodes/proxy"], &["delete"]),
                events(),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&[""], &["pods"], &["list", "watch", "delete"]),
                rule(&[""], &["nodes"], READ),
                rule(&[""], &["pods/status"], &["patch"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                rule(
                    &["apps", "extensions"],
                    &["replicasets"],
                    GET_LIST_WATCH_UPDATE,
                ),
                // `patch`: ours writes the status by merge patch.
                rule(
                    &["apps", "extensions"],
                    &["replicasets/status"],
                    &["update", "patch"],
                ),
                rule(
                    &["apps", "extensions"],
                    &["replicasets/finalizers"],
                    &["update"],
                ),
                rule(
                    &[""],
                    &["pods"],
                    &["list", "watch", "patch", "create", "delete"],
                ),
                events(),
            ],
        ),
        (
            "replication-controller",
            vec![
                rule(&[""], &["replicationcontrollers"], GET_LIST_WATCH_UPDATE),
                // `patch`: as the ReplicaSet controller's.
                rule(
                    &[""],
                    &["replicationcontrollers/status"],
                    &["update", "patch"],
                ),
                rule(&[""], &["replicationcontrollers/finalizers"], &["update"]),
                rule(
                    &[""],
                    &["pods"],
                    &["list", "watch", "patch", "create", "delete"],
                ),
                events(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                rule(&["*"], &["*"], &["list", "watch"]),
                rule(&[""], &["resourcequotas/status"], &["update"]),
                events(),
            ],
        ),
        (
            "service-account-controller",
            vec![rule(&[""], &["serviceaccounts"], &["create"]), events()],
        ),
        (
            "statefulset-controller",
            vec![
                rule(&[""], &["pods"], &["list", "watch"]),
                rule(&["apps"], &["statefulsets"], READ),
                rule(
                    &["apps"],
                    &["statefulsets/status", "statefulsets/finalizers"],
                    &["update"],
                ),
                rule(
                    &[""],
                    &["pods"],
                    &["get", "create", "delete", "update", "patch"],
                ),
                rule(&["apps"], &["controllerrevisions"], FULL),
                rule(
                    &[""],
                    &["persistentvolumeclaims"],
                    &["get", "create", "list", "watch"],
                ),
                // `patch`: ours sets the retention policy's owners by merge patch.
                rule(
                    &[""],
                    &["persistentvolumeclaims"],
                    &["update", "delete", "patch"],
                ),
                rule(&[""], &["pods/finalizers"], &["update"]),
                events(),
            ],
        ),
        (
            "certificate-controller",
            vec![
                rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                    &["get", "list", "watch", "delete"],
                ),
                rule(
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/status",
                        "certificatesigningrequests/approval",
                    ],
                    // `patch`: ours writes conditions and the certificate by merge patch.
                    &["update", "patch"],
                ),
                // `kubelet-serving` and `nodes`: ours also approves a node's
                // serving request that names only that node's addresses.
                named(
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                    ],
                    &["approve"],
                ),
                rule(&[""], &["nodes"], &["get"]),
                named(
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/legacy-unknown",
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                    ],
                    &["sign"],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                events(),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![
                rule(&["batch"], &["jobs"], &["get", "list", "watch", "delete"]),
                events(),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![
                rule(&[""], &["configmaps"], &["create", "update"]),
                events(),
            ],
        ),
    ]
}

fn service_account(name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE})
}

/// `system:kube-controller-manager` and every `system:controller:*` ClusterRole.
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = vec![kube_controller_manager()];
    for (name, rules) in controllers() {
        roles.push(role(&format!("{ROLE_PREFIX}{name}"), &[], rules));
    }
    roles
}

/// The bindings of those roles: the controller manager's user, and each
/// controller's ServiceAccount.
pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings = vec![binding(
        "system:kube-controller-manager",
        "system:kube-controller-manager",
        vec![user("system:kube-controller-manager")],
    )];
    for (name, _) in controllers() {
        let role = format!("{ROLE_PREFIX}{name}");
        bindings.push(binding(&role, &role, vec![service_account(name)]));
    }
    bindings
}

/// A Role in `namespace` with the RoleBinding that gives it to `subjects`.
fn namespaced_role(
    namespace: &str,
    name: &str,
    rules: Vec<Value>,
    subjects: Vec<Value>,
) -> (Value, Value) {
    let mut r = role(name, &[], rules);
    r["kind"] = json!("Role");
    r["metadata"]["namespace"] = json!(namespace);
    let mut m = meta(name, &[]);
    m["namespace"] = json!(namespace);
    let b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": m,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subjects});
    (r, b)
}

/// The Role that lets anyone, unauthenticated too, read
/// `kube-public/cluster-info` (kubeadm's `bootstrap-signer-clusterinfo`): a
/// joining node reads it before it may trust the server with its token.
pub const CLUSTER_INFO_READER: &str = "kybern:bootstrap-signer-clusterinfo";

/// Upstream's namespaced Roles (with their RoleBindings): the bootstrap
/// token cleaner may only touch `kube-system`'s Secrets; the bootstrap signer
/// reads them and may only write `kube-public/cluster-info`, which anyone may
/// read.
pub fn namespaced_roles() -> Vec<(Value, Value)> {
    use kybern_apimachinery::bootstrap_token::{CLUSTER_INFO, PUBLIC_NAMESPACE};
    let signer = format!("{ROLE_PREFIX}bootstrap-signer");
    vec![
        namespaced_role(
            NAMESPACE,
            &format!("{ROLE_PREFIX}token-cleaner"),
            vec![
                rule(&[""], &["secrets"], &["delete", "get", "list", "watch"]),
                events(),
            ],
            vec![service_account("token-cleaner")],
        ),
        namespaced_role(
            NAMESPACE,
            &signer,
            vec![rule(&[""], &["secrets"], READ)],
            vec![service_account("bootstrap-signer")],
        ),
        namespaced_role(
            PUBLIC_NAMESPACE,
            &signer,
            vec![
                rule(&[""], &["configmaps"], READ),
                named(&[""], &["configmaps"], &[CLUSTER_INFO], &["update"]),
                events(),
            ],
            vec![service_account("bootstrap-signer")],
        ),
        namespaced_role(
            PUBLIC_NAMESPACE,
            CLUSTER_INFO_READER,
            vec![named(&[""], &["configmaps"], &[CLUSTER_INFO], &["get"])],
            vec![user("system:anonymous")],
        ),
    ]
}

/// The ServiceAccount names of every controller with a role here.
pub fn controller_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = controllers().into_iter().map(|(n, _)| n).collect();
    names.extend(["token-cleaner", "bootstrap-signer"]);
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rules::PolicyRule;

    #[test]
    fn every_role_parses_and_is_bound_to_its_service_account() {
        let roles = cluster_roles();
        let bindings = cluster_role_bindings();
        assert_eq!(roles.len(), bindings.len());
        for (r, b) in roles.iter().zip(&bindings) {
            let rules: Vec<PolicyRule> =
                serde_json::from_value(r["rules"].clone()).expect("rules parse");
            assert!(rules.iter().all(|r| !r.verbs.is_empty()), "{r}");
            assert_eq!(r["metadata"]["name"], b["roleRef"]["name"]);
        }
        let deployment = &bindings
            .iter()
            .find(|b| b["metadata"]["name"] == "system:controller:deployment-controller")
            .expect("deployment binding")["subjects"][0];
        assert_eq!(deployment["kind"], "ServiceAccount");
        assert_eq!(deployment["namespace"], "kube-system");
        assert_eq!(deployment["name"], "deployment-controller");
        for (r, b) in namespaced_roles() {
            assert_eq!(r["metadata"]["namespace"], b["metadata"]["namespace"]);
            assert_eq!(r["metadata"]["name"], b["roleRef"]["name"]);
            assert_eq!(b["roleRef"]["kind"], "Role");
        }
        assert!(controller_names().contains(&"token-cleaner"));
    }
}
