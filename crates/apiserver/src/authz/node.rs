//! The Node authorizer and NodeRestriction, as upstream runs them before
//! RBAC: a node agent (`system:node:NAME` in `system:nodes`) reads only the
//! Secrets, ConfigMaps, claims and volumes of pods bound to it, asks tokens
//! only for their ServiceAccounts, and writes only its own Node, Lease,
//! CSINode and its pods' status. Everything else a node may do comes from
//! the `system:node` rules; what they do not cover is left to RBAC.
//!
//! Upstream keeps a graph of pods and what they use; this reads the pods
//! of the node from the watch cache on each decision about a referenced
//! object, which costs a scan of one namespace's pods.

use std::sync::OnceLock;

use kybern_apimachinery::ApiError;
use serde_json::Value;

use super::rules::{Attributes, PolicyRule};
use crate::auth::UserInfo;
use crate::server::ApiState;

/// The group every node is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The namespace of the nodes' heartbeat Leases.
const NODE_LEASES: &str = "kube-node-lease";

/// What the Node authorizer says.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeDecision {
    /// Allowed.
    Allow,
    /// Refused, whatever RBAC would say (upstream's NodeRestriction message).
    Deny(String),
    /// Not the authorizer's business, or no relationship: RBAC decides;
    /// the reason (if any) goes into the 403.
    NoOpinion(String),
}

/// The node a user is, if it is one.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

fn node_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        super::component_policy::node_rules()
            .into_iter()
            .filter_map(|r| serde_json::from_value(r).ok())
            .collect()
    })
}

fn by_rules(attrs: &Attributes) -> NodeDecision {
    if node_rules().iter().any(|r| r.allows(attrs)) {
        NodeDecision::Allow
    } else {
        NodeDecision::NoOpinion(String::new())
    }
}

/// Every container of a pod spec: init, app and ephemeral.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec[k].as_array().into_iter().flatten())
}

/// What a pod refers to, by kind: `secrets`, `configmaps`,
/// `persistentvolumeclaims`, `serviceaccounts`.
pub fn references(pod: &Value, resource: &str) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: &Value| {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            out.push(s.to_owned());
        }
    };
    let volumes = spec["volumes"].as_array().into_iter().flatten();
    let projected = |v: &Value| -> Vec<Value> {
        v["projected"]["sources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    match resource {
        "secrets" => {
            for v in volumes {
                add(&v["secret"]["secretName"]);
                projected(v).iter().for_each(|s| add(&s["secret"]["name"]));
            }
            for c in containers(spec) {
                for e in c["env"].as_array().into_iter().flatten() {
                    add(&e["valueFrom"]["secretKeyRef"]["name"]);
                }
                for e in c["envFrom"].as_array().into_iter().flatten() {
                    add(&e["secretRef"]["name"]);
                }
            }
            for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
                add(&s["name"]);
            }
        }
        "configmaps" => {
            for v in volumes {
                add(&v["configMap"]["name"]);
                projected(v)
                    .iter()
                    .for_each(|s| add(&s["configMap"]["name"]));
            }
            for c in containers(spec) {
                for e in c["env"].as_array().into_iter().flatten() {
                    add(&e["valueFrom"]["configMapKeyRef"]["name"]);
                }
                for e in c["envFrom"].as_array().into_iter().flatten() {
                    add(&e["configMapRef"]["name"]);
                }
            }
        }
        "persistentvolumeclaims" => {
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
            for v in volumes {
                add(&v["persistentVolumeClaim"]["claimName"]);
                // A generic ephemeral volume's claim is named after both.
                if v.get("ephemeral").is_some()
                    && let Some(name) = v["name"].as_str()
                {
                    add(&Value::String(format!("{pod_name}-{name}")));
                }
            }
        }
        "serviceaccounts" => match spec["serviceAccountName"].as_str() {
            Some(sa) if !sa.is_empty() => add(&Value::String(sa.to_owned())),
            _ => add(&Value::String("default".into())),
        },
        _ => {}
    }
    out
}

/// The pods bound to `node`, in `namespace` (all when `None`).
async fn pods_on(
    state: &ApiState,
    node: &str,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let pods = state.cached_objects("", "pods", namespace).await?;
    Ok(pods
        .iter()
        .filter(|p| p.field("spec.nodeName") == Some(node))
        .filter_map(|p| serde_json::from_slice(&p.json()).ok())
        .collect())
}

/// Whether a pod on `node` uses the object `attrs` names.
async fn reachable(state: &ApiState, node: &str, attrs: &Attributes) -> Result<bool, ApiError> {
    if attrs.resource == "persistentvolumes" {
        // A volume is reachable through a claim of a pod on the node.
        let claims = state
            .cached_objects("", "persistentvolumeclaims", None)
            .await?;
        for pod in pods_on(state, node, None).await? {
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
            for claim in references(&pod, "persistentvolumeclaims") {
                let bound = claims
                    .iter()
                    .find(|c| c.namespace() == ns && c.name() == claim);
                let volume = bound
                    .and_then(|c| serde_json::from_slice::<Value>(&c.json()).ok())
                    .and_then(|c| c["spec"]["volumeName"].as_str().map(str::to_owned));
                if volume.as_deref() == Some(attrs.name.as_str()) {
                    return Ok(true);
                }
            }
        }
        return Ok(false);
    }
    let pods = pods_on(state, node, Some(&attrs.namespace)).await?;
    Ok(pods
        .iter()
        .any(|p| references(p, &attrs.resource).contains(&attrs.name)))
}

/// Whether the pod `namespace/name` is bound to `node`.
async fn pod_on(
    state: &ApiState,
    node: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, ApiError> {
    let pods = state.cached_objects("", "pods", Some(namespace)).await?;
    Ok(pods
        .iter()
        .any(|p| p.name() == name && p.field("spec.nodeName") == Some(node)))
}

const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Decides a request of `node`.
pub async fn authorize(
    state: &ApiState,
    node: &str,
    attrs: &Attributes,
) -> Result<NodeDecision, ApiError> {
    if !attrs.resource_request {
        return Ok(by_rules(attrs));
    }
    let verb = attrs.verb.as_str();
    let none = || {
        NodeDecision::NoOpinion(format!(
            "no relationship found between node '{node}' and this object"
        ))
    };
    let decision = match (
        attrs.api_group.as_str(),
        attrs.resource.as_str(),
        attrs.subresource.as_str(),
    ) {
        ("", "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes", "") => {
            if !matches!(verb, "get" | "list" | "watch") || attrs.name.is_empty() {
                NodeDecision::NoOpinion("can only get individual resources of this type".into())
            } else if reachable(state, node, attrs).await? {
                NodeDecision::Allow
            } else {
                none()
            }
        }
        ("", "serviceaccounts", "token") if verb == "create" => {
            let pods = pods_on(state, node, Some(&attrs.namespace)).await?;
            if pods
                .iter()
                .any(|p| references(p, "serviceaccounts").contains(&attrs.name))
            {
                NodeDecision::Allow
            } else {
                none()
            }
        }
        ("coordination.k8s.io", "leases", "") => {
            // Created by name in the body: admission checks that one.
            let own = attrs.namespace == NODE_LEASES
                && (attrs.name == node || (verb == "create" && attrs.name.is_empty()));
            if own && matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
                NodeDecision::Allow
            } else {
                none()
            }
        }
        ("storage.k8s.io", "csinodes", "") if WRITES.contains(&verb) => {
            if attrs.name == node || (verb == "create" && attrs.name.is_empty()) {
                NodeDecision::Allow
            } else {
                none()
            }
        }
        ("", "nodes", _) if WRITES.contains(&verb) && !attrs.name.is_empty() => {
            if attrs.name == node {
                by_rules(attrs)
            } else {
                NodeDecision::Deny(format!(
                    "node {node:?} is not allowed to modify node {:?}",
                    attrs.name
                ))
            }
        }
        ("", "pods", "") if verb == "create" => NodeDecision::Deny(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
        )),
        ("", "pods", "") if verb == "delete" => {
            if pod_on(state, node, &attrs.namespace, &attrs.name).await? {
                by_rules(attrs)
            } else {
                NodeDecision::Deny(format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                ))
            }
        }
        ("", "pods", "status") if WRITES.contains(&verb) => {
            if pod_on(state, node, &attrs.namespace, &attrs.name).await? {
                by_rules(attrs)
            } else {
                NodeDecision::Deny(format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                ))
            }
        }
        ("", "pods", "eviction") => {
            if pod_on(state, node, &attrs.namespace, &attrs.name).await? {
                by_rules(attrs)
            } else {
                NodeDecision::Deny(format!(
                    "node {node:?} can only evict pods with spec.nodeName set to itself"
                ))
            }
        }
        _ => by_rules(attrs),
    };
    Ok(decision)
}

/// NodeRestriction for creations, whose name is in the body: a node
/// creates only its own Node, Lease and CSINode.
pub fn admit_create(
    user: &UserInfo,
    resource: &str,
    group: &str,
    name: &str,
) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let own = match (group, resource) {
        ("", "nodes") | ("coordination.k8s.io", "leases") | ("storage.k8s.io", "csinodes") => {
            name == node
        }
        _ => true,
    };
    if own {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{resource} {name:?} is forbidden: node {node:?} is not allowed to modify {resource} {name:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_are_users_in_the_nodes_group() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        assert_eq!(node_of(&user("system:node:n1", &[NODES_GROUP])), Some("n1"));
        assert_eq!(node_of(&user("system:node:n1", &[])), None);
        assert_eq!(node_of(&user("system:node:", &[NODES_GROUP])), None);
        assert_eq!(node_of(&user("alice", &[NODES_GROUP])), None);
    }

    #[test]
    fn a_pod_refers_to_what_its_spec_names() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "configMap": {"name": "cfg"}},
                {"name": "c", "projected": {"sources": [{"secret": {"name": "proj"}},
                    {"configMap": {"name": "projcfg"}}]}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}}],
            "initContainers": [{"envFrom": [{"secretRef": {"name": "init"}}]}],
            "containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "env"}}},
                {"valueFrom": {"configMapKeyRef": {"name": "envcfg"}}}]}]}});
        let mut secrets = references(&pod, "secrets");
        secrets.sort();
        assert_eq!(secrets, ["env", "init", "proj", "pull", "vol"]);
        let mut maps = references(&pod, "configmaps");
        maps.sort();
        assert_eq!(maps, ["cfg", "envcfg", "projcfg"]);
        assert_eq!(references(&pod, "persistentvolumeclaims"), ["data", "p-e"]);
        assert_eq!(references(&pod, "serviceaccounts"), ["default"]);
        assert!(references(&pod, "pods").is_empty());
    }

    #[test]
    fn nodes_create_only_themselves() {
        let n1 = UserInfo {
            name: "system:node:n1".into(),
            uid: String::new(),
            groups: vec![NODES_GROUP.into()],
        };
        assert!(admit_create(&n1, "nodes", "", "n1").is_ok());
        assert!(admit_create(&n1, "leases", "coordination.k8s.io", "n1").is_ok());
        let e = admit_create(&n1, "nodes", "", "n2").expect_err("not its own");
        assert_eq!(e.code(), 403);
        assert!(admit_create(&n1, "events", "", "x").is_ok());
    }
}
