//! The resource registry: every resource the server serves, with its group,
//! version, kind, plural, scope, names and subresources, looked up by URL.

mod builtin;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use builtin::builtin_resources;

/// Whether objects live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/api/v1/namespaces/{ns}/pods/{name}`
    Namespaced,
    /// `/api/v1/nodes/{name}`
    Cluster,
}

/// One served resource (one group/version/plural).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for core.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Plural resource name, e.g. `configmaps`.
    pub plural: String,
    /// Singular name, e.g. `configmap`.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// Short names, e.g. `cm`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Subresources, e.g. `status`, `scale`.
    pub subresources: Vec<String>,
    /// The version objects are stored in (all versions of a resource share storage).
    pub storage_version: String,
    /// What a CRD says about this version of a custom resource; `None` for built-ins.
    pub custom: Option<Arc<CustomVersion>>,
}

/// The parts of a CRD version the server applies to its objects.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CustomVersion {
    /// `schema.openAPIV3Schema`, if given.
    pub schema: Option<serde_json::Value>,
    /// `additionalPrinterColumns`.
    pub printer_columns: Vec<serde_json::Value>,
    /// `subresources.scale`: specReplicasPath, statusReplicasPath, labelSelectorPath.
    pub scale: Option<serde_json::Value>,
    /// Whether the schema declares CEL validation rules anywhere (found once
    /// here, so that writes of kinds without rules skip the rules' walk).
    pub has_rules: bool,
    /// Whether the CRD is being deleted: its objects are going, and no new
    /// one may be created.
    pub terminating: bool,
}

/// Resource metrics: computed from the node agents on request, never stored.
pub const METRICS_GROUP: &str = "metrics.k8s.io";
/// Reviews (`TokenReview`, `SubjectAccessReview`, ...): answered on create, never stored.
pub const REVIEW_GROUPS: [&str; 2] = ["authentication.k8s.io", "authorization.k8s.io"];

impl ResourceInfo {
    /// Whether the resource is computed on request (resource metrics,
    /// reviews) rather than stored: never watched, listed from the store or
    /// collected by the garbage collector.
    pub fn computed(&self) -> bool {
        self.custom.is_none() && (self.group == METRICS_GROUP || self.review())
    }

    /// Whether the resource is a review: created, answered, and forgotten.
    pub fn review(&self) -> bool {
        self.custom.is_none() && REVIEW_GROUPS.contains(&self.group.as_str())
    }

    /// The verbs discovery lists for the resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.review() {
            &["create"]
        } else if self.computed() {
            &["get", "list"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix of this resource: `/registry/<group>/<plural>/`.
    /// Core resources use `core` as their group, so no two resources share a prefix.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group.as_str()
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Whether a watch cache serves the resource's lists and watches. Not
    /// Events, as upstream (`DefaultWatchCacheSizes` gives them none): they
    /// are the most numerous objects, each written about once and rarely
    /// watched, so holding them all in memory buys little. Their lists and
    /// watches read the store.
    pub fn watch_cached(&self) -> bool {
        let events =
            self.plural == "events" && (self.group.is_empty() || self.group == "events.k8s.io");
        self.custom.is_some() || !events
    }

    /// Whether the resource has this subresource.
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }

    /// True for namespaced resources.
    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }
}

/// Resources by plural, by version, by group: nested, so that a lookup (a
/// few per request) borrows the URL's parts instead of copying them.
type ResourceTable = BTreeMap<String, BTreeMap<String, BTreeMap<String, Arc<ResourceInfo>>>>;

/// All served resources, keyed by (group, version, plural). Custom resources are
/// added and removed at run time, so the table sits behind a lock.
#[derive(Debug, Default)]
pub struct Registry {
    resources: RwLock<ResourceTable>,
}

impl Registry {
    /// A registry holding the built-in resources.
    pub fn with_builtins() -> Self {
        let registry = Registry::default();
        for r in builtin_resources() {
            registry.insert(r);
        }
        registry
    }

    /// Adds or replaces a resource.
    pub fn insert(&self, info: ResourceInfo) {
        if let Ok(mut map) = self.resources.write() {
            map.entry(info.group.clone())
                .or_default()
                .entry(info.version.clone())
                .or_default()
                .insert(info.plural.clone(), Arc::new(info));
        }
    }

    /// Removes every version of a resource.
    pub fn remove(&self, group: &str, plural: &str) {
        if let Ok(mut map) = self.resources.write()
            && let Some(versions) = map.get_mut(group)
        {
            for plurals in versions.values_mut() {
                plurals.remove(plural);
            }
            versions.retain(|_, plurals| !plurals.is_empty());
            if versions.is_empty() {
                map.remove(group);
            }
        }
    }

    /// Looks a resource up by its URL parts.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        let map = self.resources.read().ok()?;
        map.get(group)?.get(version)?.get(plural).cloned()
    }

    /// Every served resource, ordered by group, version and plural.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.resources
            .read()
            .map(|m| {
                m.values()
                    .flat_map(BTreeMap::values)
                    .flat_map(BTreeMap::values)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The versions served for a group, newest preferred first.
    pub fn group_versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = self
            .all()
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.version.clone())
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        versions.dedup();
        versions
    }

    /// Every group other than core, in a stable order.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .all()
            .iter()
            .filter(|r| !r.group.is_empty())
            .map(|r| r.group.clone())
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }
}

/// Upstream's version ordering: GA > beta > alpha, then by number.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (level, major, num.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_found_by_url() {
        let r = Registry::with_builtins();
        let cm = r.get("", "v1", "configmaps").expect("configmaps");
        assert_eq!(
            (cm.kind.as_str(), cm.scope),
            ("ConfigMap", Scope::Namespaced)
        );
        assert_eq!(cm.key_prefix(), "/registry/core/configmaps/");
        let d = r.get("apps", "v1", "deployments").expect("deployments");
        assert!(d.has_subresource("scale") && d.has_subresource("status"));
        assert_eq!(d.api_version(), "apps/v1");
        assert!(r.get("", "v1", "nosuch").is_none());
        assert_eq!(r.group_versions("autoscaling"), vec!["v2", "v1"]);
    }

    #[test]
    fn custom_resources_come_and_go_with_every_version() {
        let r = Registry::with_builtins();
        let before = r.all().len();
        let base = (*r.get("", "v1", "configmaps").expect("configmaps")).clone();
        let custom = |version: &str, plural: &str| ResourceInfo {
            group: "example.com".into(),
            version: version.into(),
            plural: plural.into(),
            ..base.clone()
        };
        for (v, p) in [("v1", "widgets"), ("v2", "widgets"), ("v1", "gadgets")] {
            r.insert(custom(v, p));
        }
        assert_eq!(r.all().len(), before + 3);
        assert!(r.get("example.com", "v2", "widgets").is_some());
        r.remove("example.com", "widgets");
        assert!(r.get("example.com", "v1", "widgets").is_none());
        assert!(r.get("example.com", "v2", "widgets").is_none());
        assert!(r.get("example.com", "v1", "gadgets").is_some());
        assert_eq!(r.group_versions("example.com"), vec!["v1"]);
        r.remove("example.com", "gadgets");
        assert!(r.group_versions("example.com").is_empty());
        assert_eq!(r.all().len(), before);
        // Still ordered by group, version and plural.
        let keys: Vec<_> = r
            .all()
            .iter()
            .map(|i| (i.group.clone(), i.version.clone(), i.plural.clone()))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn events_alone_are_served_without_a_watch_cache() {
        let r = Registry::with_builtins();
        let cached = |g: &str, p: &str| r.get(g, "v1", p).expect(p).watch_cached();
        assert!(!cached("", "events"));
        assert!(!cached("events.k8s.io", "events"));
        assert!(cached("", "pods") && cached("", "configmaps"));
        let mut custom = (*r.get("", "v1", "events").expect("events")).clone();
        custom.group = "example.com".into();
        custom.custom = Some(Arc::default());
        assert!(custom.watch_cached());
    }

    #[test]
    fn version_order() {
        let mut v = vec!["v1beta1", "v1", "v2alpha1", "v2", "v1beta2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v2alpha1"]);
    }
}
