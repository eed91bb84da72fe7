//! Resource vectors: what a pod requests and what a node can allocate, as
//! upstream's scheduler computes them (init containers, sidecars, overhead),
//! and what a ResourceQuota counts of a pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::cached_pod::{CachedContainer, CachedPod};
use crate::quantity::{parse_milli, parse_value};

/// CPU assumed for a container without a CPU request when scoring (upstream's
/// `DefaultMilliCPURequest`), so that such pods still spread.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory assumed for a container without a memory request when scoring.
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource: CPU in millicores, memory and ephemeral storage
/// in bytes, and any extended resources (`example.com/gpu`) in units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Extended and hugepage resources by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a `ResourceList` (requests, limits, capacity or allocatable).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        // The API server validated these; a bad one counts as zero, as it cannot be met anyway.
        match name {
            "cpu" => self.milli_cpu = parse_milli(q).unwrap_or(0),
            "memory" => self.memory = parse_value(q).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = parse_value(q).unwrap_or(0),
            "pods" => {}
            other => {
                self.scalar
                    .insert(other.to_owned(), parse_value(q).unwrap_or(0));
            }
        }
    }

    /// Adds `other` to this.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Takes `other` from this.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Raises each resource to at least `other`'s amount.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// The amount of a resource by its API name.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }
}

fn container_requests(c: &CachedContainer) -> Resources {
    Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// Whether an init container is a sidecar (`restartPolicy: Always`), which keeps
/// running beside the app containers.
fn is_sidecar(c: &CachedContainer) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A pod's effective request, as upstream's `PodRequests`: the larger of the
/// app containers (plus sidecars) and each init container in turn (plus the
/// sidecars started before it), plus the pod's overhead.
pub fn pod_requests(pod: &CachedPod) -> Resources {
    pod_requests_with(pod, container_requests)
}

/// A pod's effective limit, as upstream's `PodLimits` (what quotas count for
/// `limits.*`).
pub fn pod_limits(pod: &CachedPod) -> Resources {
    pod_requests_with(pod, |c| {
        Resources::from_list(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
    })
}

/// A pod's request for scoring: containers without a CPU or memory request
/// count the upstream defaults, so that empty pods still spread.
pub fn pod_requests_non_zero(pod: &CachedPod) -> Resources {
    pod_requests_with(pod, |c| {
        let mut r = container_requests(c);
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let has = |name: &str| requests.is_some_and(|m| m.contains_key(name));
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY;
        }
        r
    })
}

fn pod_requests_with(
    pod: &CachedPod,
    per_container: impl Fn(&CachedContainer) -> Resources,
) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&per_container(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per_container(c);
        if is_sidecar(c) {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&r);
            init_max.max_with(&during);
        }
    }
    total.add(&sidecars);
    total.max_with(&init_max);
    total.add(&Resources::from_list(spec.overhead.as_ref()));
    total
}

/// What a node can give pods (`status.allocatable`, or `capacity` without it),
/// and how many pods it takes.
pub fn node_allocatable(node: &Node) -> (Resources, i64) {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    let pods = list
        .and_then(|l| l.get("pods"))
        .and_then(|q| parse_value(&q.0).ok())
        .unwrap_or(110);
    (Resources::from_list(list), pods)
}

/// Whether a quota resource counts in millicores (the CPU ones).
pub fn quota_counts_milli(name: &str) -> bool {
    matches!(name, "cpu" | "requests.cpu" | "limits.cpu")
}

/// Reads a quota amount (`hard` or `used`) in the unit its resource counts
/// in; `None` when the text is not a quantity.
pub fn parse_quota_amount(name: &str, text: &str) -> Option<i64> {
    if quota_counts_milli(name) {
        parse_milli(text).ok()
    } else {
        parse_value(text).ok()
    }
}

/// A quota amount in canonical text: `3`, `1500m`, `2`, `512Mi`, `1Gi`.
pub fn format_quota_amount(name: &str, amount: i64) -> String {
    if quota_counts_milli(name) {
        return if amount % 1000 == 0 {
            (amount / 1000).to_string()
        } else {
            format!("{amount}m")
        };
    }
    if matches!(
        name,
        "memory"
            | "requests.memory"
            | "limits.memory"
            | "ephemeral-storage"
            | "requests.ephemeral-storage"
            | "limits.ephemeral-storage"
            | "requests.storage"
    ) || name.ends_with(CLASS_STORAGE)
    {
        for (suffix, unit) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if amount != 0 && amount % unit == 0 {
                return format!("{}{suffix}", amount / unit);
            }
        }
    }
    amount.to_string()
}

/// What one pod counts against the quota resource `name`, as upstream's pod
/// evaluator: `pods` (and `count/pods`) is one; `cpu`, `memory`,
/// `ephemeral-storage` and their `requests.`/`limits.` forms are the pod's
/// effective request or limit; `requests.<extended resource>` its request.
/// `None` for a resource pods do not count towards.
pub fn pod_quota_usage(pod: &CachedPod, name: &str) -> Option<i64> {
    let (kind, resource) = match name {
        "pods" | "count/pods" => return Some(1),
        "cpu" | "memory" | "ephemeral-storage" => ("requests", name),
        // Claims, not pods, count towards storage.
        "requests.storage" => return None,
        other => other.split_once('.')?,
    };
    match kind {
        "requests" => Some(pod_requests(pod).get(resource)),
        "limits" if matches!(resource, "cpu" | "memory" | "ephemeral-storage") => {
            Some(pod_limits(pod).get(resource))
        }
        _ => None,
    }
}

/// The suffix of a per-class storage quota resource
/// (`<class>.storageclass.storage.k8s.io/requests.storage`).
const CLASS_STORAGE: &str = ".storageclass.storage.k8s.io/requests.storage";
/// The infix of per-class claim quota resources.
const CLASS_INFIX: &str = ".storageclass.storage.k8s.io/";

/// What one claim counts against the quota resource `name`, as upstream's
/// claim evaluator: `requests.storage` its storage request, and
/// `<class>.storageclass.storage.k8s.io/requests.storage` and
/// `/persistentvolumeclaims` the same (or one) for claims of that class.
/// `None` for what claims do not count towards (the plain claim count goes
/// by [`quota_counted_kind`]).
pub fn claim_quota_usage(claim: &PersistentVolumeClaim, name: &str) -> Option<i64> {
    let storage = || {
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| parse_value(&q.0).ok())
            .unwrap_or(0)
    };
    if name == "requests.storage" {
        return Some(storage());
    }
    let (class, resource) = name.split_once(CLASS_INFIX)?;
    let own = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| {
            claim
                .metadata
                .annotations
                .as_ref()?
                .get("volume.beta.kubernetes.io/storage-class")
                .map(String::as_str)
        })
        .unwrap_or("");
    if own != class {
        return None;
    }
    match resource {
        "requests.storage" => Some(storage()),
        "persistentvolumeclaims" => Some(1),
        _ => None,
    }
}

/// Whether claims count towards the quota resource `name` by what they
/// request or their class (not the plain claim count).
pub fn is_claim_quota_resource(name: &str) -> bool {
    name == "requests.storage"
        || name
            .split_once(CLASS_INFIX)
            .is_some_and(|(_, r)| matches!(r, "requests.storage" | "persistentvolumeclaims"))
}

/// Whether pods count towards the quota resource `name`.
pub fn is_pod_quota_resource(name: &str) -> bool {
    pod_quota_usage(&CachedPod::default(), name).is_some()
}

/// The kind a quota resource counts objects of: its group, version (empty
/// for a group's preferred one) and plural. The legacy names (`services`,
/// `configmaps`, ...), `services.loadbalancers` and `services.nodeports`
/// count core kinds; `count/<plural>` a core kind, `count/<plural>.<group>`
/// a kind of that group.
pub fn quota_counted_kind(name: &str) -> Option<(String, String, String)> {
    let core = |plural: &str| Some((String::new(), "v1".into(), plural.into()));
    match name {
        "services"
        | "configmaps"
        | "secrets"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "resourcequotas" => core(name),
        "services.loadbalancers" | "services.nodeports" => core("services"),
        other => {
            let rest = other.strip_prefix("count/")?;
            match rest.split_once('.') {
                None => core(rest),
                Some((plural, group)) => Some((group.into(), String::new(), plural.into())),
            }
        }
    }
}

/// The containers (init containers included) that set no `kind`
/// (`requests` or `limits`) for `resource`: a quota on that resource needs
/// every container to say, as upstream's pod evaluator insists.
pub fn containers_missing(pod: &CachedPod, kind: &str, resource: &str) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| {
            let r = c.resources.as_ref();
            let list = match kind {
                "requests" => r.and_then(|r| r.requests.as_ref()),
                _ => r.and_then(|r| r.limits.as_ref()),
            };
            !list.is_some_and(|l| l.contains_key(resource))
        })
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> CachedPod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn init_containers_sidecars_and_overhead() {
        let p = pod(serde_json::json!({
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}}
                ],
                "initContainers": [
                    {"name": "big", "resources": {"requests": {"cpu": "1", "memory": "32Mi"}}},
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}}
                ],
                "overhead": {"cpu": "10m"}
            }
        }));
        let r = pod_requests(&p);
        // max(100m + 200m + 50m sidecar, 1000m init) + 10m overhead.
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 64 * 1024 * 1024);
        assert_eq!(r.get("example.com/gpu"), 1);
        let nz = pod_requests_non_zero(&pod(
            serde_json::json!({"spec": {"containers": [{"name": "a"}]}}),
        ));
        assert_eq!(
            (nz.milli_cpu, nz.memory),
            (DEFAULT_MILLI_CPU, DEFAULT_MEMORY)
        );
    }

    #[test]
    fn quota_amounts_parse_and_print_in_their_units() {
        assert_eq!(format_quota_amount("requests.cpu", 1500), "1500m");
        assert_eq!(format_quota_amount("cpu", 2000), "2");
        assert_eq!(format_quota_amount("limits.memory", 512 << 20), "512Mi");
        assert_eq!(format_quota_amount("memory", 1 << 30), "1Gi");
        assert_eq!(format_quota_amount("memory", 1000), "1000");
        assert_eq!(format_quota_amount("pods", 3), "3");
        assert_eq!(format_quota_amount("memory", 0), "0");
        assert_eq!(parse_quota_amount("limits.cpu", "1"), Some(1000));
        assert_eq!(parse_quota_amount("pods", "10"), Some(10));
        assert_eq!(parse_quota_amount("pods", "ten"), None);
    }

    #[test]
    fn a_pod_counts_its_requests_limits_and_itself() {
        let p = pod(serde_json::json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                        "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "example.com/gpu": "2"}}}
        ]}}));
        assert_eq!(pod_quota_usage(&p, "pods"), Some(1));
        assert_eq!(pod_quota_usage(&p, "cpu"), Some(500));
        assert_eq!(pod_quota_usage(&p, "requests.cpu"), Some(500));
        assert_eq!(pod_quota_usage(&p, "limits.cpu"), Some(1000));
        assert_eq!(pod_quota_usage(&p, "requests.memory"), Some(64 << 20));
        assert_eq!(pod_quota_usage(&p, "requests.example.com/gpu"), Some(2));
        assert_eq!(pod_quota_usage(&p, "configmaps"), None);
        assert_eq!(pod_quota_usage(&p, "count/configmaps"), None);
        assert_eq!(
            containers_missing(&p, "limits", "cpu"),
            vec!["b".to_owned()]
        );
        assert!(containers_missing(&p, "requests", "cpu").is_empty());
    }

    #[test]
    fn object_count_names_map_to_kinds() {
        assert_eq!(
            quota_counted_kind("count/deployments.apps"),
            Some(("apps".into(), String::new(), "deployments".into()))
        );
        assert_eq!(
            quota_counted_kind("configmaps"),
            Some((String::new(), "v1".into(), "configmaps".into()))
        );
        assert_eq!(quota_counted_kind("requests.nvidia.com/gpu"), None);
        assert!(is_pod_quota_resource("requests.nvidia.com/gpu"));
        assert!(is_pod_quota_resource("limits.memory"));
        assert!(!is_pod_quota_resource("configmaps"));
    }

    #[test]
    fn claims_count_their_storage_by_class() {
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data"},
            "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}}},
        }))
        .expect("claim");
        assert_eq!(claim_quota_usage(&claim, "requests.storage"), Some(2 << 30));
        let fast = "fast.storageclass.storage.k8s.io/requests.storage";
        assert_eq!(claim_quota_usage(&claim, fast), Some(2 << 30));
        assert_eq!(
            claim_quota_usage(
                &claim,
                "fast.storageclass.storage.k8s.io/persistentvolumeclaims"
            ),
            Some(1)
        );
        assert_eq!(
            claim_quota_usage(&claim, "slow.storageclass.storage.k8s.io/requests.storage"),
            None
        );
        assert_eq!(claim_quota_usage(&claim, "pods"), None);
        assert!(
            is_claim_quota_resource(fast) && !is_claim_quota_resource("persistentvolumeclaims")
        );
        assert_eq!(format_quota_amount(fast, 3 << 30), "3Gi");
    }
}
