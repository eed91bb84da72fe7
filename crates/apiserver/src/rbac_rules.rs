//! Upstream's validation of the RBAC kinds: a role's rules, an aggregated
//! ClusterRole's selectors, a binding's role reference (fixed once made)
//! and subjects (`pkg/apis/rbac/validation`, paths and messages as upstream's).

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{items, text};

/// The RBAC API group, which role references and user or group subjects name.
const GROUP: &str = "rbac.authorization.k8s.io";

/// A Role's or ClusterRole's rules (`namespaced` for a Role, whose rules
/// cannot reach non-resource URLs) and a ClusterRole's aggregation.
pub fn role(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    for (i, rule) in items(Some(obj), "rules").enumerate() {
        policy_rule(rule, namespaced, &format!("rules[{i}]"), causes);
    }
    if let Some(agg) = obj.get("aggregationRule").filter(|a| !a.is_null()) {
        let at = "aggregationRule.clusterRoleSelectors";
        let selectors: Vec<&Value> = items(Some(agg), "clusterRoleSelectors").collect();
        if selectors.is_empty() {
            causes.push(Cause::required(
                at,
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, sel) in selectors.into_iter().enumerate() {
            crate::scheduling_rules::label_selector(sel, &format!("{at}[{i}]"), causes);
        }
    }
}

fn policy_rule(rule: &Value, namespaced: bool, at: &str, causes: &mut Vec<Cause>) {
    let has = |key: &str| items(Some(rule), key).next().is_some();
    if !has("verbs") {
        causes.push(Cause::required(
            format!("{at}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    if has("nonResourceURLs") {
        let urls = &rule["nonResourceURLs"];
        if namespaced {
            causes.push(Cause::invalid(
                format!("{at}.nonResourceURLs"),
                urls,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if has("apiGroups") || has("resources") || has("resourceNames") {
            causes.push(Cause::invalid(
                format!("{at}.nonResourceURLs"),
                urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if !has("apiGroups") {
        causes.push(Cause::required(
            format!("{at}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if !has("resources") {
        causes.push(Cause::required(
            format!("{at}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

/// A RoleBinding (`namespaced`) or ClusterRoleBinding: a role reference of
/// the RBAC group, kept once made, and well-formed subjects.
pub fn binding(obj: &Value, old: Option<&Value>, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    if let Some(group) = text(role_ref, "apiGroup").filter(|g| !g.is_empty() && *g != GROUP) {
        causes.push(Cause::not_supported(
            "roleRef.apiGroup",
            &json!(group),
            &[GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = text(role_ref, "kind").unwrap_or("");
    if !kinds.contains(&kind) {
        causes.push(Cause::not_supported("roleRef.kind", &json!(kind), kinds));
    }
    match text(role_ref, "name").filter(|n| !n.is_empty()) {
        None => causes.push(Cause::required("roleRef.name", "")),
        Some(name) => {
            for msg in names::path_segment(name) {
                causes.push(Cause::invalid("roleRef.name", &json!(name), msg));
            }
        }
    }
    for (i, subject) in items(Some(obj), "subjects").enumerate() {
        self::subject(subject, namespaced, &format!("subjects[{i}]"), causes);
    }
    // A reference stored before its group was defaulted names the RBAC group.
    let reference = |v: &Value| {
        let r = v.get("roleRef").unwrap_or(&Value::Null);
        let group = text(r, "apiGroup")
            .filter(|g| !g.is_empty())
            .unwrap_or(GROUP);
        (
            group.to_owned(),
            text(r, "kind").map(str::to_owned),
            text(r, "name").map(str::to_owned),
        )
    };
    if let Some(old) = old
        && reference(old) != reference(obj)
    {
        causes.push(Cause::invalid("roleRef", role_ref, "cannot change roleRef"));
    }
}

fn subject(s: &Value, namespaced: bool, at: &str, causes: &mut Vec<Cause>) {
    let name = text(s, "name").unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required(format!("{at}.name"), ""));
    }
    let group = text(s, "apiGroup").unwrap_or("");
    match text(s, "kind").unwrap_or("") {
        "ServiceAccount" => {
            if !name.is_empty() {
                for msg in names::dns1123_subdomain(name) {
                    causes.push(Cause::invalid(format!("{at}.name"), &json!(name), msg));
                }
            }
            if !group.is_empty() {
                causes.push(Cause::not_supported(
                    format!("{at}.apiGroup"),
                    &json!(group),
                    &[""],
                ));
            }
            if !namespaced && text(s, "namespace").is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{at}.namespace"), ""));
            }
        }
        "User" | "Group" => {
            if group != GROUP {
                causes.push(Cause::not_supported(
                    format!("{at}.apiGroup"),
                    &json!(group),
                    &[GROUP],
                ));
            }
        }
        other => causes.push(Cause::not_supported(
            format!("{at}.kind"),
            &json!(other),
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines as lines;

    #[test]
    fn rules_name_verbs_and_either_resources_or_urls() {
        let mut causes = Vec::new();
        role(
            &json!({"rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                {"resources": ["pods"]},
                {"nonResourceURLs": ["/healthz"], "apiGroups": [""], "verbs": ["get"]}]}),
            true,
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "rules[1].verbs: Required value: verbs must contain at least one value",
                "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[2].nonResourceURLs: Invalid value: [\"/healthz\"]: namespaced rules cannot apply to non-resource URLs",
                "rules[2].nonResourceURLs: Invalid value: [\"/healthz\"]: rules cannot apply to both regular resources and non-resource URLs",
            ]
        );
        let mut causes = Vec::new();
        role(&json!({"aggregationRule": {}}), false, &mut causes);
        assert_eq!(
            lines(&causes),
            vec![
                "aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"
            ]
        );
    }

    #[test]
    fn bindings_refer_to_roles_and_name_their_subjects() {
        let mut causes = Vec::new();
        binding(
            &json!({"roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa"},
                    {"kind": "User", "name": "u"}, {"kind": "Robot", "name": "x"}]}),
            Some(&json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "r"}})),
            false,
            &mut causes,
        );
        let got = lines(&causes);
        assert_eq!(
            got[0],
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""
        );
        assert_eq!(got[1], "subjects[0].namespace: Required value");
        assert_eq!(
            got[2],
            "subjects[1].apiGroup: Unsupported value: \"\": supported values: \"rbac.authorization.k8s.io\""
        );
        assert!(got[3].starts_with("subjects[2].kind: Unsupported value: \"Robot\""));
        assert!(
            got[4].starts_with("roleRef: Invalid value: ")
                && got[4].ends_with("cannot change roleRef")
        );
        assert_eq!(got.len(), 5);
        let mut causes = Vec::new();
        binding(
            &json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "r"}}),
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "r"}})),
            true,
            &mut causes,
        );
        assert!(causes.is_empty(), "{causes:?}");
    }
}
