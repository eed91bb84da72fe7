//! The RBAC authorizer: the rules a user holds, from the ClusterRoleBindings
//! and the RoleBindings of the request's namespace, as parsed from the watch
//! caches of the rbac.authorization.k8s.io resources (`rbac_index`).

use std::sync::Arc;

use kybern_apimachinery::ApiError;
use serde_json::Value;

use super::rbac_index::{Binding, RbacSnapshot};
use super::rules::{Attributes, PolicyRule};
use crate::auth::UserInfo;
use crate::server::ApiState;

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
    pub rules: Arc<Vec<PolicyRule>>,
}

/// The rules of a Role (in `namespace`) or ClusterRole; `None` if missing.
pub async fn role_rules(
    state: &ApiState,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<Vec<PolicyRule>>>, ApiError> {
    Ok(state
        .rbac
        .snapshot(state)
        .await?
        .rules(kind, namespace, name))
}

/// A binding's subject, parsed once when the RBAC snapshot is built:
/// every request of a user outside `system:masters` is checked against the
/// subjects of all cluster-wide bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `kind: User`.
    User(String),
    /// `kind: Group`.
    Group(String),
    /// `kind: ServiceAccount`; without a namespace, the binding's.
    ServiceAccount {
        /// `namespace`, if set and not empty.
        namespace: Option<String>,
        /// `name`.
        name: String,
    },
    /// Any other kind, which names no one.
    Other,
}

/// The prefix of a service account's user name.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

impl Subject {
    /// Parses one entry of a binding's `subjects`.
    pub fn parse(subject: &Value) -> Self {
        let name = subject["name"].as_str().unwrap_or_default().to_owned();
        match subject["kind"].as_str() {
            Some("User") => Subject::User(name),
            Some("Group") => Subject::Group(name),
            Some("ServiceAccount") => Subject::ServiceAccount {
                namespace: subject["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
                name,
            },
            _ => Subject::Other,
        }
    }

    /// Whether this subject of a binding in `binding_ns` names the user.
    pub fn applies(&self, user: &UserInfo, binding_ns: &str) -> bool {
        match self {
            Subject::User(name) => !name.is_empty() && user.name == *name,
            Subject::Group(name) => user.groups.iter().any(|g| g == name),
            Subject::ServiceAccount { namespace, name } => {
                let ns = namespace.as_deref().unwrap_or(binding_ns);
                // `system:serviceaccount:{ns}:{name}`, compared in place.
                user.name
                    .strip_prefix(SERVICE_ACCOUNT_PREFIX)
                    .and_then(|rest| rest.strip_prefix(ns))
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|rest| rest == name)
            }
            Subject::Other => false,
        }
    }
}

/// Every grant the user holds in `namespace` ("" for cluster-wide only),
/// ClusterRoleBindings first, each kind by name.
pub async fn grants(
    state: &ApiState,
    user: &UserInfo,
    namespace: &str,
) -> Result<Vec<Grant>, ApiError> {
    let snapshot = state.rbac.snapshot(state).await?;
    let mut out = Vec::new();
    for_each_grant(&snapshot, user, namespace, |binding, rules| {
        out.push(Grant {
            source: source(binding),
            rules: rules.clone(),
        });
        false
    });
    Ok(out)
}

/// Calls `visit` with each binding that names the user and the rules of
/// its role, in [`grants`]' order, until `visit` returns true; whether one did.
fn for_each_grant(
    snapshot: &RbacSnapshot,
    user: &UserInfo,
    namespace: &str,
    mut visit: impl FnMut(&Binding, &Arc<Vec<PolicyRule>>) -> bool,
) -> bool {
    let scopes = [
        (None, snapshot.cluster_bindings.as_slice()),
        (Some(namespace), snapshot.bindings_in(namespace)),
    ];
    for (ns, bindings) in scopes {
        if ns == Some("") {
            continue;
        }
        for binding in bindings {
            if !binding.subjects.iter().any(|s| s.applies(user, namespace)) {
                continue;
            }
            let role_ns = ns.unwrap_or(namespace);
            if let Some(rules) = snapshot.rules(&binding.role_kind, role_ns, &binding.role_name)
                && visit(binding, &rules)
            {
                return true;
            }
        }
    }
    false
}

/// Where a grant comes from, in upstream's words.
fn source(binding: &Binding) -> String {
    let (kind, role) = (&binding.role_kind, &binding.role_name);
    match &binding.namespace {
        Some(ns) => format!("RoleBinding \"{ns}/{}\" of {kind} {role:?}", binding.name),
        None => format!("ClusterRoleBinding {:?} of {kind} {role:?}", binding.name),
    }
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
    let snapshot = state.rbac.snapshot(state).await?;
    let mut reason = String::new();
    let allowed = for_each_grant(&snapshot, user, &attrs.namespace, |binding, rules| {
        if !rules.iter().any(|r| r.allows(attrs)) {
            return false;
        }
        let who = if user.name.starts_with("system:serviceaccount:") {
            "ServiceAccount"
        } else {
            "User"
        };
        reason = format!(
            "RBAC: allowed by {} to {who} {:?}",
            source(binding),
            user.name
        );
        true
    });
    Ok(Decision { allowed, reason })
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
        .flat_map(|g| g.rules.as_ref().clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn applies(subject: Value, user: &UserInfo, binding_ns: &str) -> bool {
        Subject::parse(&subject).applies(user, binding_ns)
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let user = UserInfo {
            name: "system:serviceaccount:team:builder".into(),
            uid: String::new(),
            groups: vec!["system:serviceaccounts".into()],
        };
        assert!(applies(
            json!({"kind": "ServiceAccount", "name": "builder"}),
            &user,
            "team"
        ));
        assert!(!applies(
            json!({"kind": "ServiceAccount", "name": "builder"}),
            &user,
            "other"
        ));
        assert!(applies(
            json!({"kind": "ServiceAccount", "name": "builder", "namespace": "team"}),
            &user,
            ""
        ));
        assert!(applies(
            json!({"kind": "Group", "name": "system:serviceaccounts"}),
            &user,
            ""
        ));
        assert!(!applies(
            json!({"kind": "User", "name": "builder"}),
            &user,
            "team"
        ));
        assert!(!applies(json!({"kind": "User", "name": ""}), &user, "team"));
    }

    #[test]
    fn service_accounts_match_their_whole_namespace_and_name() {
        let user = UserInfo {
            name: "system:serviceaccount:team:builder".into(),
            uid: String::new(),
            groups: vec![],
        };
        let sa =
            |ns: &str, name: &str| json!({"kind": "ServiceAccount", "namespace": ns, "name": name});
        assert!(applies(sa("team", "builder"), &user, "elsewhere"));
        assert!(
            !applies(sa("tea", "builder"), &user, ""),
            "a namespace prefix"
        );
        assert!(!applies(sa("team", "build"), &user, ""), "a name prefix");
        assert!(!applies(sa("team", "builders"), &user, ""));
        assert!(!applies(sa("team:builder", ""), &user, ""));
        assert!(
            applies(sa("", "builder"), &user, "team"),
            "empty means the binding's"
        );
        assert!(!applies(sa("", "builder"), &user, ""));
        assert!(!applies(
            json!({"kind": "Robot", "name": "builder"}),
            &user,
            "team"
        ));
    }
}
