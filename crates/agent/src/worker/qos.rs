//! A pod's QoS class (Guaranteed, Burstable, BestEffort) and where its
//! cgroup sits in the `kubepods` hierarchy, as the kubelet places them.

use k8s_openapi::api::core::v1::{Container, Pod};
use kybern_apimachinery::quantity::{parse_milli, parse_value};

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has equal CPU and memory requests and limits.
    Guaranteed,
    /// Some request or limit, but not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

/// Thousandths of a CPU in a quantity.
pub fn millis(q: &str) -> Option<u64> {
    parse_milli(q).ok().and_then(|m| u64::try_from(m).ok())
}

/// Bytes in a quantity.
pub fn bytes(q: &str) -> Option<i64> {
    parse_value(q).ok().filter(|b| *b > 0)
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    })
}

impl QosClass {
    /// The class of `pod`, by upstream's rules (`GetPodQOS`).
    pub fn of(pod: &Pod) -> QosClass {
        let mut any = false;
        let mut guaranteed = true;
        for c in all_containers(pod) {
            let r = c.resources.as_ref();
            let requests = r.and_then(|r| r.requests.as_ref());
            let limits = r.and_then(|r| r.limits.as_ref());
            for name in ["cpu", "memory"] {
                let req = requests
                    .and_then(|m| m.get(name))
                    .and_then(|q| parse_milli(&q.0).ok());
                let lim = limits
                    .and_then(|m| m.get(name))
                    .and_then(|q| parse_milli(&q.0).ok());
                if req.is_some_and(|v| v != 0) || lim.is_some_and(|v| v != 0) {
                    any = true;
                }
                // A limit without a request defaults the request to the limit.
                match (req.or(lim), lim) {
                    (Some(r), Some(l)) if r == l => {}
                    _ => guaranteed = false,
                }
            }
        }
        match (any, guaranteed) {
            (false, _) => QosClass::BestEffort,
            (true, true) => QosClass::Guaranteed,
            (true, false) => QosClass::Burstable,
        }
    }

    /// The name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The OOM score adjustment of its containers (the kubelet's policy,
    /// without the per-request scaling of Burstable pods).
    pub fn oom_score_adj(self) -> i32 {
        match self {
            QosClass::Guaranteed => -997,
            QosClass::Burstable => 500,
            QosClass::BestEffort => 1000,
        }
    }
}

/// The pod's cgroup: `/kubepods/pod<uid>` for Guaranteed pods, else under
/// the class's own subtree.
pub fn cgroup_parent(pod: &Pod, qos: QosClass) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or("unknown");
    match qos {
        QosClass::Guaranteed => format!("/kubepods/pod{uid}"),
        QosClass::Burstable => format!("/kubepods/burstable/pod{uid}"),
        QosClass::BestEffort => format!("/kubepods/besteffort/pod{uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"uid": "u1"},
            "spec": {"containers": [{"name": "a", "resources": resources}]}}))
        .expect("test setup")
    }

    #[test]
    fn classes_follow_requests_and_limits() {
        assert_eq!(
            QosClass::of(&pod(serde_json::json!({}))),
            QosClass::BestEffort
        );
        let g = pod(serde_json::json!({"limits": {"cpu": "1", "memory": "64Mi"}}));
        assert_eq!(QosClass::of(&g), QosClass::Guaranteed);
        assert_eq!(cgroup_parent(&g, QosClass::of(&g)), "/kubepods/podu1");
        let b = pod(serde_json::json!({"requests": {"cpu": "100m"}}));
        assert_eq!(QosClass::of(&b), QosClass::Burstable);
        assert_eq!(
            cgroup_parent(&b, QosClass::Burstable),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(millis("250m"), Some(250));
        assert_eq!(bytes("64Mi"), Some(64 << 20));
    }
}
