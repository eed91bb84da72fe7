//! The RBAC objects parsed once for every request: bindings and the rules
//! of roles, rebuilt when one of the four RBAC watch caches moves on.
//!
//! Every request of a user outside `system:masters` (each controller, the
//! scheduler, every node agent) is authorized against all bindings; parsing
//! their JSON for each request cost more than the rest of authorizing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kybern_apimachinery::ApiError;
use kybern_store::Revision;
use serde_json::Value;

use super::rbac::{RBAC_GROUP, Subject};
use super::rules::PolicyRule;
use crate::cache::CachedObject;
use crate::server::ApiState;

/// The RBAC resources, in the order their revisions are kept.
const RESOURCES: [&str; 4] = [
    "clusterrolebindings",
    "clusterroles",
    "rolebindings",
    "roles",
];

/// One ClusterRoleBinding or RoleBinding, parsed.
#[derive(Debug)]
pub struct Binding {
    /// Its name.
    pub name: String,
    /// Its namespace: `Some` for a RoleBinding.
    pub namespace: Option<String>,
    /// Its subjects, parsed.
    pub subjects: Vec<Subject>,
    /// `roleRef.kind`: `ClusterRole` or `Role`.
    pub role_kind: String,
    /// `roleRef.name`.
    pub role_name: String,
}

impl Binding {
    fn parse(obj: &CachedObject) -> Self {
        let binding: Value = serde_json::from_slice(&obj.json()).unwrap_or(Value::Null);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Binding {
            name: obj.name().to_owned(),
            namespace: obj.namespaced.then(|| obj.namespace().to_owned()),
            subjects: binding["subjects"]
                .as_array()
                .map(|s| s.iter().map(Subject::parse).collect())
                .unwrap_or_default(),
            role_kind: text(&binding["roleRef"]["kind"]),
            role_name: text(&binding["roleRef"]["name"]),
        }
    }
}

/// The parsed RBAC objects as of one revision of each cache.
#[derive(Debug, Default)]
pub struct RbacSnapshot {
    revisions: [Revision; 4],
    /// ClusterRoleBindings, by name.
    pub cluster_bindings: Vec<Binding>,
    /// RoleBindings by namespace, each by name.
    pub bindings: HashMap<String, Vec<Binding>>,
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
}

fn rules_of(obj: &CachedObject) -> Arc<Vec<PolicyRule>> {
    let role: Value = serde_json::from_slice(&obj.json()).unwrap_or(Value::Null);
    Arc::new(serde_json::from_value(role["rules"].clone()).unwrap_or_default())
}

impl RbacSnapshot {
    /// The RoleBindings of `namespace`.
    pub fn bindings_in(&self, namespace: &str) -> &[Binding] {
        self.bindings.get(namespace).map_or(&[], Vec::as_slice)
    }

    /// The rules of a ClusterRole, or of a Role in `namespace`; `None` if
    /// there is no such role.
    pub fn rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Arc<Vec<PolicyRule>>> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).cloned(),
            "Role" => self
                .roles
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned(),
            _ => None,
        }
    }

    fn build(objects: [Vec<Arc<CachedObject>>; 4], revisions: [Revision; 4]) -> Self {
        let [cluster_bindings, cluster_roles, bindings, roles] = objects;
        let mut by_namespace: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in &bindings {
            by_namespace
                .entry(b.namespace().to_owned())
                .or_default()
                .push(Binding::parse(b));
        }
        RbacSnapshot {
            revisions,
            cluster_bindings: cluster_bindings.iter().map(|b| Binding::parse(b)).collect(),
            bindings: by_namespace,
            cluster_roles: cluster_roles
                .iter()
                .map(|r| (r.name().to_owned(), rules_of(r)))
                .collect(),
            roles: roles
                .iter()
                .map(|r| ((r.namespace().to_owned(), r.name().to_owned()), rules_of(r)))
                .collect(),
        }
    }
}

/// The current [`RbacSnapshot`], kept with the API server's state.
#[derive(Debug, Default)]
pub struct RbacIndex {
    current: Mutex<Option<Arc<RbacSnapshot>>>,
}

impl RbacIndex {
    /// The parsed RBAC objects, as fresh as the watch caches: rebuilt when
    /// any cache has moved past the revision the last build saw.
    pub async fn snapshot(&self, state: &ApiState) -> Result<Arc<RbacSnapshot>, ApiError> {
        let mut caches = Vec::with_capacity(RESOURCES.len());
        for plural in RESOURCES {
            caches.push(state.loaded_cache(RBAC_GROUP, plural).await?.1);
        }
        let revisions: [Revision; 4] =
            std::array::from_fn(|i| caches[i].revision().unwrap_or_default());
        let mut current = self
            .current
            .lock()
            .map_err(|_| ApiError::internal("the RBAC index lock is poisoned"))?;
        if let Some(snapshot) = current.as_ref().filter(|s| s.revisions == revisions) {
            return Ok(snapshot.clone());
        }
        // Each snapshot carries its own revision, so that a change landing
        // between the two reads is seen at the next request.
        let mut seen = [0; 4];
        let objects: [Vec<Arc<CachedObject>>; 4] = std::array::from_fn(|i| {
            let (objects, revision) = caches[i].snapshot(None).unwrap_or_default();
            seen[i] = revision;
            objects
        });
        let fresh = Arc::new(RbacSnapshot::build(objects, seen));
        *current = Some(fresh.clone());
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectStore;
    use serde_json::json;

    fn cached(plural: &str, namespace: &str, object: Value) -> Arc<CachedObject> {
        let registry = crate::registry::Registry::with_builtins();
        let info = registry.get(RBAC_GROUP, "v1", plural).expect("served");
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let key = ObjectStore::key(&info, namespace, &name);
        Arc::new(CachedObject::new(&info, &key, &object, 1))
    }

    #[test]
    fn roles_and_bindings_are_found_in_their_scope() {
        let rule = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        let snapshot = RbacSnapshot::build(
            [
                vec![cached(
                    "clusterrolebindings",
                    "",
                    json!({"metadata": {"name": "everyone"},
                        "subjects": [{"kind": "Group", "name": "system:authenticated"}],
                        "roleRef": {"kind": "ClusterRole", "name": "reader"}}),
                )],
                vec![cached(
                    "clusterroles",
                    "",
                    json!({"metadata": {"name": "reader"}, "rules": rule}),
                )],
                vec![cached(
                    "rolebindings",
                    "team",
                    json!({"metadata": {"name": "b", "namespace": "team"},
                        "subjects": [{"kind": "User", "name": "alice"}],
                        "roleRef": {"kind": "Role", "name": "r"}}),
                )],
                vec![cached(
                    "roles",
                    "team",
                    json!({"metadata": {"name": "r", "namespace": "team"}, "rules": rule}),
                )],
            ],
            [1; 4],
        );
        assert_eq!(snapshot.cluster_bindings.len(), 1);
        assert_eq!(snapshot.cluster_bindings[0].namespace, None);
        assert_eq!(snapshot.cluster_bindings[0].role_name, "reader");
        let in_team = snapshot.bindings_in("team");
        assert_eq!(in_team.len(), 1);
        assert_eq!(in_team[0].namespace.as_deref(), Some("team"));
        assert!(snapshot.bindings_in("other").is_empty());
        let rules = snapshot
            .rules("ClusterRole", "", "reader")
            .expect("cluster role");
        assert_eq!(rules[0].resources, ["pods"]);
        assert!(snapshot.rules("Role", "team", "r").is_some());
        assert!(snapshot.rules("Role", "other", "r").is_none());
        assert!(snapshot.rules("ClusterRole", "", "r").is_none());
    }
}
