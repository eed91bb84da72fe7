//! Which requests an admission policy or webhook applies to: upstream's
//! `MatchResources` (resource rules with operations, exclusions, and
//! namespace and object label selectors).

use kybern_apimachinery::ApiError;
use kybern_apimachinery::labels::Selector;
use serde_json::Value;

use crate::server::ApiState;

/// One admission request, as the matchers and CEL's `request` see it.
#[derive(Clone, Debug)]
pub struct AdmissionAttempt<'a> {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'static str,
    /// API group of the resource.
    pub group: &'a str,
    /// Version the request was made in.
    pub version: &'a str,
    /// Kind of the object.
    pub kind: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource, or "".
    pub subresource: &'a str,
    /// Namespace, or "" for cluster-scoped resources.
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// The object after the change (`None` on delete).
    pub object: Option<&'a Value>,
    /// The object before it (`None` on create).
    pub old_object: Option<&'a Value>,
    /// Whether the request is a dry run.
    pub dry_run: bool,
}

fn listed(list: &Value, value: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
}

/// Whether a `NamedRuleWithOperations` covers the request.
fn rule_matches(rule: &Value, a: &AdmissionAttempt<'_>) -> bool {
    if !listed(&rule["operations"], a.operation)
        || !listed(&rule["apiGroups"], a.group)
        || !listed(&rule["apiVersions"], a.version)
    {
        return false;
    }
    let resource_matches = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            let (res, sub) = r.split_once('/').unwrap_or((r, ""));
            (res == "*" || res == a.resource) && (sub == "*" || sub == a.subresource)
        })
    });
    if !resource_matches {
        return false;
    }
    let scope_matches = match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => a.namespace.is_empty(),
        "Namespaced" => !a.namespace.is_empty(),
        _ => true,
    };
    let names = rule["resourceNames"].as_array();
    scope_matches && names.is_none_or(|n| n.is_empty() || n.iter().any(|v| v == a.name))
}

fn labels_of(obj: Option<&Value>) -> Option<&Value> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
}

fn selector(value: &Value, field: &str) -> Result<Selector, ApiError> {
    Selector::from_label_selector(value)
        .map_err(|e| ApiError::internal(format!("invalid {field}: {e}")))
}

/// Whether `match_resources` (a `MatchResources`) selects the request. A
/// policy's constraints must list resource rules; a binding's may leave them
/// out (`rules_required` false) to narrow only by selectors. The
/// namespace's labels are read only when a namespace selector asks for them.
pub async fn matches(
    state: &ApiState,
    match_resources: &Value,
    a: &AdmissionAttempt<'_>,
    rules_required: bool,
) -> Result<bool, ApiError> {
    let rules = match_resources["resourceRules"].as_array();
    let constrained = rules_required || rules.is_some();
    if constrained && !rules.is_some_and(|r| r.iter().any(|r| rule_matches(r, a))) {
        return Ok(false);
    }
    if match_resources["excludeResourceRules"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| rule_matches(r, a)))
    {
        return Ok(false);
    }
    let objects = selector(&match_resources["objectSelector"], "objectSelector")?;
    if !objects.is_empty()
        && !objects.matches_labels(labels_of(a.object))
        && !objects.matches_labels(labels_of(a.old_object))
    {
        return Ok(false);
    }
    let namespaces = selector(&match_resources["namespaceSelector"], "namespaceSelector")?;
    if namespaces.is_empty() {
        return Ok(true);
    }
    // A namespace is matched by its own labels; other cluster-scoped
    // objects are never filtered out by a namespace selector.
    if a.group.is_empty() && a.resource == "namespaces" {
        return Ok(namespaces.matches_labels(labels_of(a.object.or(a.old_object))));
    }
    if a.namespace.is_empty() {
        return Ok(true);
    }
    let labels = namespace_object(state, a.namespace)
        .await?
        .and_then(|ns| ns.pointer("/metadata/labels").cloned());
    Ok(namespaces.matches_labels(labels.as_ref()))
}

/// The request's namespace object (`None` for cluster-scoped requests or a
/// namespace that does not exist).
pub async fn namespace_object(state: &ApiState, name: &str) -> Result<Option<Value>, ApiError> {
    if name.is_empty() {
        return Ok(None);
    }
    match state.cached_or_stored("", "namespaces", "", name).await {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.reason == kybern_apimachinery::StatusReason::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attempt<'a>(
        op: &'static str,
        resource: &'a str,
        sub: &'a str,
        ns: &'a str,
    ) -> AdmissionAttempt<'a> {
        AdmissionAttempt {
            operation: op,
            group: "apps",
            version: "v1",
            kind: "Deployment",
            resource,
            subresource: sub,
            namespace: ns,
            name: "web",
            object: None,
            old_object: None,
            dry_run: false,
        }
    }

    #[test]
    fn rules_match_operations_resources_subresources_and_scope() {
        let rule = json!({"operations": ["CREATE", "UPDATE"], "apiGroups": ["apps"],
            "apiVersions": ["v1"], "resources": ["deployments"]});
        assert!(rule_matches(
            &rule,
            &attempt("CREATE", "deployments", "", "dev")
        ));
        assert!(!rule_matches(
            &rule,
            &attempt("DELETE", "deployments", "", "dev")
        ));
        assert!(!rule_matches(
            &rule,
            &attempt("UPDATE", "deployments", "scale", "dev")
        ));
        assert!(!rule_matches(
            &rule,
            &attempt("CREATE", "replicasets", "", "dev")
        ));
        let any = json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
            "resources": ["*/*"], "scope": "Cluster"});
        assert!(!rule_matches(
            &any,
            &attempt("CREATE", "deployments", "", "dev")
        ));
        assert!(rule_matches(
            &any,
            &attempt("CREATE", "deployments", "status", "")
        ));
        let status = json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
            "resources": ["*/status"], "resourceNames": ["web"]});
        assert!(rule_matches(
            &status,
            &attempt("UPDATE", "deployments", "status", "dev")
        ));
        assert!(!rule_matches(
            &status,
            &attempt("UPDATE", "deployments", "", "dev")
        ));
        let mut other = attempt("UPDATE", "deployments", "status", "dev");
        other.name = "db";
        assert!(!rule_matches(&status, &other));
    }
}
