//! RBAC policy rules: whether one allows a request, and whether a set of
//! rules covers another (the escalation check).

use serde::{Deserialize, Serialize};

/// What a request asks for, as the authorizer sees it (upstream's
/// `authorizer.Attributes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or another verb (`bind`, `escalate`, `impersonate`).
    pub verb: String,
    /// Whether the request addresses a resource (else a non-resource path).
    pub resource_request: bool,
    /// Namespace; "" for cluster scope.
    pub namespace: String,
    /// API group; "" for core.
    pub api_group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, or "".
    pub subresource: String,
    /// Object name, or "".
    pub name: String,
    /// URL path, for non-resource requests.
    pub path: String,
}

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs; `*` is all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups; `*` is all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*`, `*/sub` or `resource/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names; empty is all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths; a trailing `*` is a prefix.
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|s| s == "*" || s == want)
}

fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        if r == "*" {
            return true;
        }
        if subresource.is_empty() {
            return r == resource;
        }
        match r.split_once('/') {
            Some((res, sub)) => {
                (res == resource || res == "*") && (sub == subresource || sub == "*")
            }
            None => false,
        }
    })
}

fn url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

impl PolicyRule {
    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return url_matches(self, &a.path);
        }
        has(&self.api_groups, &a.api_group)
            && resource_matches(self, &a.resource, &a.subresource)
            && (self.resource_names.is_empty()
                || !a.name.is_empty() && self.resource_names.iter().any(|n| n == &a.name))
    }

    /// The rule broken into single (group, resource, verb, name) grants, or
    /// (url, verb) grants, keeping wildcards as literal values: an owner
    /// covers a wildcard only with a wildcard of its own.
    fn atoms(&self) -> Vec<PolicyRule> {
        let one = |s: &String| vec![s.clone()];
        let mut out = Vec::new();
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(PolicyRule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..PolicyRule::default()
                });
            }
            for group in &self.api_groups {
                for resource in &self.resources {
                    let names: Vec<Vec<String>> = if self.resource_names.is_empty() {
                        vec![Vec::new()]
                    } else {
                        self.resource_names.iter().map(one).collect()
                    };
                    for names in names {
                        out.push(PolicyRule {
                            verbs: one(verb),
                            api_groups: one(group),
                            resources: one(resource),
                            resource_names: names,
                            non_resource_urls: Vec::new(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Whether this rule grants everything the single-grant `atom` does.
    fn covers_atom(&self, atom: &PolicyRule) -> bool {
        let verb = &atom.verbs[0];
        if !has(&self.verbs, verb) {
            return false;
        }
        if let Some(url) = atom.non_resource_urls.first() {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || u == url
                    || u.strip_suffix('*').is_some_and(|p| {
                        url.starts_with(p) && (!url.ends_with('*') || url.len() > p.len())
                    })
            });
        }
        let (group, resource) = (&atom.api_groups[0], &atom.resources[0]);
        if !has(&self.api_groups, group) {
            return false;
        }
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" || r == resource {
                return true;
            }
            // `pods/*` covers `pods/exec` and `pods/*`, `*/scale` covers `deployments/scale`.
            match (r.split_once('/'), resource.split_once('/')) {
                (Some((rr, rs)), Some((ar, asub))) => {
                    (rr == "*" || rr == ar) && (rs == "*" || rs == asub)
                }
                _ => false,
            }
        });
        if !resource_ok {
            return false;
        }
        self.resource_names.is_empty()
            || atom
                .resource_names
                .first()
                .is_some_and(|n| self.resource_names.contains(n))
    }
}

/// Whether `owner` grants everything `requested` does (upstream's
/// `validation.Covers`): a user may only hand out rights it holds itself.
/// Returns the rules not covered.
pub fn uncovered(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    requested
        .iter()
        .flat_map(PolicyRule::atoms)
        .filter(|atom| !owner.iter().any(|o| o.covers_atom(atom)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
        PolicyRule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            ..PolicyRule::default()
        }
    }

    fn req(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: "ns".into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    #[test]
    fn resource_rules_match_as_upstream() {
        let r = rule(&[""], &["pods", "pods/log"], &["get", "list"]);
        assert!(r.allows(&req("get", "", "pods", "", "a")));
        assert!(r.allows(&req("get", "", "pods", "log", "a")));
        assert!(!r.allows(&req("get", "", "pods", "exec", "a")));
        assert!(!r.allows(&req("delete", "", "pods", "", "a")));
        assert!(!r.allows(&req("get", "apps", "pods", "", "a")));
        let any_sub = rule(&["*"], &["pods/*"], &["*"]);
        assert!(any_sub.allows(&req("create", "", "pods", "exec", "a")));
        assert!(!any_sub.allows(&req("create", "", "pods", "", "a")));
        let star_scale = rule(&["apps"], &["*/scale"], &["update"]);
        assert!(star_scale.allows(&req("update", "apps", "deployments", "scale", "d")));
        let mut named = rule(&[""], &["configmaps"], &["get"]);
        named.resource_names = vec!["one".into()];
        assert!(named.allows(&req("get", "", "configmaps", "", "one")));
        assert!(!named.allows(&req("get", "", "configmaps", "", "two")));
        assert!(!named.allows(&req("get", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_rules_match_prefixes() {
        let r = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/apis/*".into(), "/version".into()],
            ..PolicyRule::default()
        };
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Attributes::default()
        };
        assert!(r.allows(&path("/apis/apps/v1")) && r.allows(&path("/version")));
        assert!(!r.allows(&path("/version/x")) && !r.allows(&path("/metrics")));
        // A resource rule never allows a path.
        assert!(!rule(&["*"], &["*"], &["*"]).allows(&path("/metrics")));
    }

    #[test]
    fn coverage_refuses_escalation() {
        let owner = vec![rule(&[""], &["pods", "configmaps"], &["get", "list"])];
        assert!(uncovered(&owner, &[rule(&[""], &["pods"], &["get"])]).is_empty());
        let more = uncovered(&owner, &[rule(&[""], &["pods", "secrets"], &["get"])]);
        assert_eq!(more, vec![rule(&[""], &["secrets"], &["get"])]);
        // A wildcard is covered by a wildcard only.
        assert_eq!(uncovered(&owner, &[rule(&[""], &["*"], &["get"])]).len(), 1);
        assert!(
            uncovered(
                &[rule(&["*"], &["*"], &["*"])],
                &[rule(&[""], &["*"], &["*"])]
            )
            .is_empty()
        );
        let pods_any = vec![rule(&[""], &["pods/*"], &["create"])];
        assert!(uncovered(&pods_any, &[rule(&[""], &["pods/exec"], &["create"])]).is_empty());
        assert_eq!(
            uncovered(&pods_any, &[rule(&[""], &["pods"], &["create"])]).len(),
            1
        );
    }
}
