//! Resource vectors: what a pod requests and what a node can allocate, as
//! upstream's scheduler computes them (init containers, sidecars, overhead).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kybern_apimachinery::quantity::{parse_milli, parse_value};

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

fn container_requests(c: &Container) -> Resources {
    Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// Whether an init container is a sidecar (`restartPolicy: Always`), which keeps
/// running beside the app containers.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A pod's effective request, as upstream's `PodRequests`: the larger of the
/// app containers (plus sidecars) and each init container in turn (plus the
/// sidecars started before it), plus the pod's overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    pod_requests_with(pod, container_requests)
}

/// A pod's effective limit, as upstream's `PodLimits` (what quotas count for
/// `limits.*`).
pub fn pod_limits(pod: &Pod) -> Resources {
    pod_requests_with(pod, |c| {
        Resources::from_list(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
    })
}

/// A pod's request for scoring: containers without a CPU or memory request
/// count the upstream defaults, so that empty pods still spread.
pub fn pod_requests_non_zero(pod: &Pod) -> Resources {
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

fn pod_requests_with(pod: &Pod, per_container: impl Fn(&Container) -> Resources) -> Resources {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
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
}
