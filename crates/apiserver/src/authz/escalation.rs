//! RBAC's escalation check on writes of Roles, ClusterRoles and their
//! bindings: a user may only grant rights it holds itself, unless it has the
//! `escalate` (roles) or `bind` (bindings) verb.

use kybern_apimachinery::ApiError;
use serde_json::Value;

use super::rbac::{self, MASTERS, RBAC_GROUP};
use super::rules::{Attributes, PolicyRule, uncovered};
use crate::auth::UserInfo;
use crate::object::{self, Object};
use crate::server::ApiState;

fn denied(plural: &str, name: &str, why: String) -> ApiError {
    let mut err = ApiError::forbidden(format!(
        "{plural}.{RBAC_GROUP} {name:?} is forbidden: {why}"
    ));
    err.kind = Some(plural.to_owned());
    err.group = Some(RBAC_GROUP.to_owned());
    if !name.is_empty() {
        err.name = Some(name.to_owned());
    }
    err
}

fn not_held(user: &UserInfo, missing: &[PolicyRule]) -> String {
    let lines: Vec<String> = missing
        .iter()
        .map(|r| {
            if r.non_resource_urls.is_empty() {
                format!(
                    "{{APIGroups:{:?}, Resources:{:?}, ResourceNames:{:?}, Verbs:{:?}}}",
                    r.api_groups, r.resources, r.resource_names, r.verbs
                )
            } else {
                format!(
                    "{{NonResourceURLs:{:?}, Verbs:{:?}}}",
                    r.non_resource_urls, r.verbs
                )
            }
        })
        .collect();
    format!(
        "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        user.groups,
        lines.join("\n")
    )
}

fn everything() -> Vec<PolicyRule> {
    let star = || vec!["*".to_owned()];
    vec![
        PolicyRule {
            verbs: star(),
            api_groups: star(),
            resources: star(),
            ..PolicyRule::default()
        },
        PolicyRule {
            verbs: star(),
            non_resource_urls: star(),
            ..PolicyRule::default()
        },
    ]
}

async fn may(
    state: &ApiState,
    user: &UserInfo,
    verb: &str,
    plural: &str,
    ns: &str,
    name: &str,
) -> Result<bool, ApiError> {
    let attrs = Attributes {
        verb: verb.into(),
        resource_request: true,
        namespace: ns.into(),
        api_group: RBAC_GROUP.into(),
        resource: plural.into(),
        name: name.into(),
        ..Attributes::default()
    };
    Ok(rbac::authorize(state, user, &attrs).await?.allowed)
}

/// Refuses a write of an RBAC object that would grant `user` (or anyone)
/// rights `user` does not hold.
pub async fn admit(
    state: &ApiState,
    user: &UserInfo,
    group: &str,
    plural: &str,
    obj: &Object,
) -> Result<(), ApiError> {
    if group != RBAC_GROUP || user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let (ns, name) = (object::namespace(obj), object::name(obj));
    match plural {
        "roles" | "clusterroles" => {
            if may(state, user, "escalate", plural, ns, name).await? {
                return Ok(());
            }
            let owned = rbac::rules_of(state, user, ns).await?;
            if obj.get("aggregationRule").is_some_and(|a| !a.is_null())
                && !uncovered(&owned, &everything()).is_empty()
            {
                return Err(denied(
                    plural,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule".into(),
                ));
            }
            let rules: Vec<PolicyRule> =
                serde_json::from_value(obj.get("rules").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default();
            let missing = uncovered(&owned, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(denied(plural, name, not_held(user, &missing)))
            }
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or_default();
            let role = obj["roleRef"]["name"].as_str().unwrap_or_default();
            let role_plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if may(state, user, "bind", role_plural, ns, role).await? {
                return Ok(());
            }
            let Some(rules) = rbac::role_rules(state, kind, ns, role).await? else {
                return Err(denied(
                    plural,
                    name,
                    format!("{role_plural}.{RBAC_GROUP} {role:?} not found"),
                ));
            };
            let owned = rbac::rules_of(state, user, ns).await?;
            let missing = uncovered(&owned, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(denied(plural, name, not_held(user, &missing)))
            }
        }
        _ => Ok(()),
    }
}
