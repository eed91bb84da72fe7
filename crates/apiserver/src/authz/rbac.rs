//! The RBAC authorizer: the rules a user holds, from the ClusterRoleBindings
//! and the RoleBindings of the request's namespace, read from the watch
//! caches of the rbac.authorization.k8s.io resources.

use std::sync::Arc;

use kybern_apimachinery::ApiError;
use serde_json::Value;

use super::rules::{Attributes, PolicyRule};
use crate::auth::UserInfo;
use crate::cache::CachedObject;
use crate::server::ApiState;
use crate::storage::ObjectStore;

/// The group holding the RBAC resources.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The group that is allowed everything without looking at any rule.
pub const MASTERS: &str = "system:masters";

/// One binding's grant to the user: where it comes from, for reasons.
#[derive(Debug)]
pub struct Grant {
    /// `ClusterRoleBinding "x" of ClusterRole "y"` (upstream's wording).
    pub source: String,
    /// The rules of the bound role.
    pub rules: Vec<PolicyRule>,
}

/// The cached objects of one RBAC resource, in `namespace` (all when `None`).
async fn cached(
    state: &ApiState,
    plural: &str,
    namespace: Option<&str>,
) -> Result<Vec<Arc<CachedObject>>, ApiError> {
    state.cached_objects(RBAC_GROUP, plural, namespace).await
}

/// The rules of a Role (in `namespace`) or ClusterRole; `None` if missing.
pub async fn role_rules(
    state: &ApiState,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<PolicyRule>>, ApiError> {
    let (plural, ns) = match kind {
        "ClusterRole" => ("clusterroles", ""),
        "Role" => ("roles", namespace),
        _ => return Ok(None),
    };
    let (info, cache) = state.loaded_cache(RBAC_GROUP, plural).await?;
    let Some(obj) = cache.get(&ObjectStore::key(&info, ns, name)) else {
        return Ok(None);
    };
    let role: Value = serde_json::from_slice(&obj.json).unwrap_or(Value::Null);
    Ok(Some(
        serde_json::from_value(role["rules"].clone()).unwrap_or_default(),
    ))
}

/// Whether `subject` of a binding in `binding_ns` names this user.
pub fn applies(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => !name.is_empty() && user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Every grant the user holds in `namespace` ("" for cluster-wide only).
pub async fn grants(
    state: &ApiState,
    user: &UserInfo,
    namespace: &str,
) -> Result<Vec<Grant>, ApiError> {
    let mut out = Vec::new();
    let mut scopes = vec![("clusterrolebindings", None)];
    if !namespace.is_empty() {
        scopes.push(("rolebindings", Some(namespace)));
    }
    for (plural, ns) in scopes {
        for obj in cached(state, plural, ns).await? {
            let binding: Value = serde_json::from_slice(&obj.json).unwrap_or(Value::Null);
            let subjects = binding["subjects"].as_array().map(Vec::as_slice);
            if !subjects
                .unwrap_or_default()
                .iter()
                .any(|s| applies(s, user, namespace))
            {
                continue;
            }
            let kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
            let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
            if let Some(rules) = role_rules(state, kind, namespace, role).await? {
                let what = if ns.is_some() {
                    "RoleBinding"
                } else {
                    "ClusterRoleBinding"
                };
                let source = match ns {
                    Some(ns) => format!("{what} \"{}/{}\" of {kind} {role:?}", ns, obj.name()),
                    None => format!("{what} {:?} of {kind} {role:?}", obj.name()),
                };
                out.push(Grant { source, rules });
            }
        }
    }
    Ok(out)
}

/// The outcome of authorizing one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why it was allowed (upstream's RBAC reason), or "".
    pub reason: String,
}

/// Authorizes `attrs` for `user`.
pub async fn authorize(
    state: &ApiState,
    user: &UserInfo,
    attrs: &Attributes,
) -> Result<Decision, ApiError> {
    // Upstream's privileged-group authorizer comes before RBAC.
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(Decision {
            allowed: true,
            reason: String::new(),
        });
    }
    for grant in grants(state, user, &attrs.namespace).await? {
        if grant.rules.iter().any(|r| r.allows(attrs)) {
            let who = if user.name.starts_with("system:serviceaccount:") {
                "ServiceAccount"
            } else {
                "User"
            };
            return Ok(Decision {
                allowed: true,
                reason: format!("RBAC: allowed by {} to {who} {:?}", grant.source, user.name),
            });
        }
    }
    Ok(Decision {
        allowed: false,
        reason: String::new(),
    })
}

/// Every rule the user holds in `namespace`, for rules reviews and the
/// escalation check.
pub async fn rules_of(
    state: &ApiState,
    user: &UserInfo,
    namespace: &str,
) -> Result<Vec<PolicyRule>, ApiError> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(vec![
            PolicyRule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..PolicyRule::default()
            },
            PolicyRule {
                verbs: vec!["*".into()],
                non_resource_urls: vec!["*".into()],
                ..PolicyRule::default()
            },
        ]);
    }
    Ok(grants(state, user, namespace)
        .await?
        .into_iter()
        .flat_map(|g| g.rules)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let user = UserInfo {
            name: "system:serviceaccount:team:builder".into(),
            uid: String::new(),
            groups: vec!["system:serviceaccounts".into()],
        };
        assert!(applies(
            &json!({"kind": "ServiceAccount", "name": "builder"}),
            &user,
            "team"
        ));
        assert!(!applies(
            &json!({"kind": "ServiceAccount", "name": "builder"}),
            &user,
            "other"
        ));
        assert!(applies(
            &json!({"kind": "ServiceAccount", "name": "builder", "namespace": "team"}),
            &user,
            ""
        ));
        assert!(applies(
            &json!({"kind": "Group", "name": "system:serviceaccounts"}),
            &user,
            ""
        ));
        assert!(!applies(
            &json!({"kind": "User", "name": "builder"}),
            &user,
            "team"
        ));
        assert!(!applies(
            &json!({"kind": "User", "name": ""}),
            &user,
            "team"
        ));
    }
}
