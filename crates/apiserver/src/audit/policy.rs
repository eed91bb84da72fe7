//! The audit policy (`audit.k8s.io/v1` `Policy`): which requests are
//! recorded, at which level, and at which stages, by upstream's first-match
//! rule semantics.

use serde::Deserialize;

use crate::auth::UserInfo;
use crate::authz::Attributes;

/// How much of a request is recorded, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    /// Not recorded.
    None,
    /// Who asked for what, and the response code.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, the request body and the response body.
    RequestResponse,
}

impl Level {
    /// The name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// A point in the life of a request at which an event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Stage {
    /// As soon as the request is received, before it is handled.
    RequestReceived,
    /// When the headers of a long-running response are sent.
    ResponseStarted,
    /// When the response is complete.
    ResponseComplete,
    /// When handling the request panicked.
    Panic,
}

impl Stage {
    /// The name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("audit policy: {0}")]
pub struct PolicyError(String);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// One rule of a policy.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    omit_managed_fields: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    kind: Option<String>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: bool,
}

/// A loaded audit policy.
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Vec<Stage>,
    omit_managed_fields: bool,
}

/// What the policy says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The level to record at.
    pub level: Level,
    /// Stages not to write.
    pub omit_stages: Vec<Stage>,
    /// Whether `metadata.managedFields` is left out of recorded bodies.
    pub omit_managed_fields: bool,
}

impl Policy {
    /// Parses a policy (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        if file.kind.as_deref() != Some("Policy") {
            return Err(PolicyError("kind must be Policy".into()));
        }
        if file.rules.is_empty() {
            return Err(PolicyError("a policy needs at least one rule".into()));
        }
        for (i, rule) in file.rules.iter().enumerate() {
            let resource_rule = !rule.resources.is_empty() || !rule.namespaces.is_empty();
            if resource_rule && !rule.non_resource_urls.is_empty() {
                return Err(PolicyError(format!(
                    "rules[{i}]: rules cannot apply to both regular resources and non-resource URLs"
                )));
            }
            for url in &rule.non_resource_urls {
                if !url.starts_with('/') && url != "*" {
                    return Err(PolicyError(format!(
                        "rules[{i}].nonResourceURLs: {url:?} must start with \"/\""
                    )));
                }
            }
        }
        Ok(Policy {
            rules: file.rules,
            omit_stages: file.omit_stages,
            omit_managed_fields: file.omit_managed_fields,
        })
    }

    /// The level of the first rule matching the request (`None` if none
    /// does), and the stages to omit.
    pub fn decide(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| r.matches(user, attrs)) else {
            return Decision {
                level: Level::None,
                omit_stages: Vec::new(),
                omit_managed_fields: self.omit_managed_fields,
            };
        };
        let mut omit_stages = self.omit_stages.clone();
        omit_stages.extend(rule.omit_stages.iter().copied());
        Decision {
            level: rule.level,
            omit_stages,
            omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
        }
    }
}

impl Rule {
    fn matches(&self, user: &UserInfo, a: &Attributes) -> bool {
        if !self.users.is_empty() && !self.users.contains(&user.name) {
            return false;
        }
        if !self.user_groups.is_empty() && !user.groups.iter().any(|g| self.user_groups.contains(g))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return a.resource_request && self.matches_resource(a);
        }
        if !self.non_resource_urls.is_empty() {
            return !a.resource_request && self.matches_path(&a.path);
        }
        true
    }

    fn matches_resource(&self, a: &Attributes) -> bool {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        self.resources.iter().any(|gr| {
            if gr.group != a.api_group {
                return false;
            }
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !gr.resource_names.contains(&a.name) {
                return false;
            }
            gr.resources.iter().any(|r| {
                r == &combined
                    || r == "*"
                    || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(&a.subresource))
                    || r.strip_suffix("/*") == Some(&a.resource)
            })
        })
    }

    fn matches_path(&self, path: &str) -> bool {
        self.non_resource_urls
            .iter()
            .any(|u| match u.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => u == path,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn resource(verb: &str, group: &str, resource: &str, sub: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: "x".into(),
            path: String::new(),
        }
    }

    fn path(p: &str) -> Attributes {
        Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Attributes::default()
        }
    }

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  userGroups: ["system:nodes"]
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "pods/log", "*/exec"]
- level: RequestResponse
  namespaces: ["audited"]
  omitStages: [ResponseStarted]
- level: Request
  verbs: ["create", "update", "patch"]
  resources:
  - group: "apps"
    resources: ["deployments/*"]
  - group: "batch"
- level: Metadata
"#;

    #[test]
    fn first_matching_rule_decides() {
        let p = Policy::parse(POLICY).expect("policy");
        let admin = user("admin", &["system:masters"]);
        let node = user("system:node:a", &["system:nodes"]);
        let level = |u: &UserInfo, a: &Attributes| p.decide(u, a).level;
        assert_eq!(
            level(&node, &resource("get", "", "secrets", "", "dev")),
            Level::None
        );
        assert_eq!(
            level(&admin, &resource("get", "", "secrets", "", "audited")),
            Level::Metadata
        );
        assert_eq!(
            level(&admin, &resource("get", "", "pods", "log", "dev")),
            Level::Metadata
        );
        assert_eq!(
            level(&admin, &resource("create", "", "pods", "exec", "dev")),
            Level::Metadata
        );
        let d = p.decide(&admin, &resource("get", "", "configmaps", "", "audited"));
        assert_eq!(d.level, Level::RequestResponse);
        assert_eq!(
            d.omit_stages,
            vec![Stage::RequestReceived, Stage::ResponseStarted]
        );
        assert_eq!(
            level(
                &admin,
                &resource("patch", "apps", "deployments", "scale", "dev")
            ),
            Level::Request
        );
        // `deployments/*` covers the resource itself too, as upstream's matcher.
        assert_eq!(
            level(&admin, &resource("patch", "apps", "deployments", "", "dev")),
            Level::Request
        );
        assert_eq!(
            level(&admin, &resource("get", "apps", "deployments", "", "dev")),
            Level::Metadata
        );
        assert_eq!(
            level(&admin, &resource("create", "batch", "jobs", "", "dev")),
            Level::Request
        );
        assert_eq!(
            level(&admin, &resource("delete", "batch", "jobs", "", "dev")),
            Level::Metadata
        );
        assert_eq!(level(&admin, &path("/healthz/ready")), Level::None);
        assert_eq!(level(&admin, &path("/version")), Level::None);
        assert_eq!(level(&admin, &path("/apis")), Level::Metadata);
    }

    #[test]
    fn resource_rules_never_match_paths_and_no_rule_means_none() {
        let p = Policy::parse(
            "kind: Policy\nrules:\n- level: Request\n  namespaces: [\"\"]\n- level: None\n  users: [bob]\n",
        )
        .expect("policy");
        let alice = user("alice", &[]);
        // "" names cluster-scoped resources.
        assert_eq!(
            p.decide(&alice, &resource("list", "", "nodes", "", ""))
                .level,
            Level::Request
        );
        assert_eq!(p.decide(&alice, &path("/api")).level, Level::None);
        assert_eq!(
            p.decide(&alice, &resource("list", "", "pods", "", "dev"))
                .level,
            Level::None
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        for bad in [
            "kind: Other\nrules:\n- level: None\n",
            "kind: Policy\nrules: []\n",
            "kind: Policy\nrules:\n- level: Loud\n",
            "kind: Policy\nrules:\n- level: None\n  verbz: [get]\n",
            "kind: Policy\nrules:\n- level: None\n  namespaces: [a]\n  nonResourceURLs: [/x]\n",
            "kind: Policy\nrules:\n- level: None\n  nonResourceURLs: [x]\n",
            "kind: Policy\nrules:\n- level: None\n  omitStages: [Sometime]\n",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }
}
