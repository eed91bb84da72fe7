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

/// The lowest OOM score adjustment this process can hand to containers.
static OOM_SCORE_FLOOR: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Lowering an OOM score adjustment below one's own takes
/// `CAP_SYS_RESOURCE`; without it (some sandboxes and containers drop it)
/// runc would fail to start every Guaranteed pod, so the floor is then the
/// agent's own adjustment. From `/proc/self/status` and
/// `/proc/self/oom_score_adj`.
pub fn oom_score_floor(status: &str, own_adj: &str) -> i32 {
    const CAP_SYS_RESOURCE: u32 = 24;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if effective & (1 << CAP_SYS_RESOURCE) != 0 {
        -1000
    } else {
        own_adj.trim().parse().unwrap_or(0)
    }
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
    /// without the per-request scaling of Burstable pods), no lower than
    /// this node can set.
    pub fn oom_score_adj(self) -> i32 {
        let wanted = match self {
            QosClass::Guaranteed => -997,
            QosClass::Burstable => 500,
            QosClass::BestEffort => 1000,
        };
        wanted.max(*OOM_SCORE_FLOOR.get_or_init(|| {
            oom_score_floor(
                &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
                &std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default(),
            )
        }))
    }
}

/// What the pod's own cgroup is held to, as the kubelet sets it: CPU shares
/// from the pod's CPU request (2 for a BestEffort pod), and a CFS quota and
/// a memory limit only when every container declares that limit. The
/// pod's value is what it needs at its peak: its app containers and
/// sidecars together, or its largest other init container, if more; and
/// its RuntimeClass overhead on top.
pub fn pod_limits(pod: &Pod, qos: QosClass, pids: Option<i64>) -> crate::host::PodLimits {
    let spec = pod.spec.as_ref();
    let quantity = |c: &Container, kind: &str, name: &str| -> Option<String> {
        let r = c.resources.as_ref()?;
        let map = if kind == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref().or(r.limits.as_ref())
        }?;
        let q = map.get(name).or_else(|| {
            // A request defaults to the limit.
            (kind == "requests").then(|| r.limits.as_ref()?.get(name))?
        })?;
        Some(q.0.clone())
    };
    let overhead =
        |name: &str| -> Option<String> { Some(spec?.overhead.as_ref()?.get(name)?.0.clone()) };
    // The peak of a per-container amount, or None if a container lacks it.
    let peak = |amount: &dyn Fn(&Container) -> Option<i64>| -> Option<i64> {
        let app = spec.into_iter().flat_map(|s| s.containers.iter());
        let init: Vec<&Container> = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .collect();
        let (sidecars, others): (Vec<&Container>, Vec<&Container>) =
            init.into_iter().partition(|c| super::status::is_sidecar(c));
        let mut running = 0i64;
        for c in app.chain(sidecars) {
            running = running.saturating_add(amount(c)?);
        }
        let mut most = running;
        for c in others {
            most = most.max(amount(c)?);
        }
        Some(most)
    };
    let cpu = |kind: &'static str| {
        move |c: &Container| {
            quantity(c, kind, "cpu")
                .and_then(|q| millis(&q))
                .and_then(|m| i64::try_from(m).ok())
        }
    };
    let plus_overhead = |v: i64, name: &str, parse: &dyn Fn(&str) -> Option<i64>| {
        v.saturating_add(overhead(name).and_then(|q| parse(&q)).unwrap_or(0))
    };
    let as_millis = |q: &str| millis(q).and_then(|m| i64::try_from(m).ok());
    let cpu_request = peak(&|c: &Container| Some(cpu("requests")(c).unwrap_or(0)))
        .map(|m| plus_overhead(m, "cpu", &as_millis))
        .unwrap_or(0);
    let cpu_shares = match qos {
        QosClass::BestEffort => 2,
        _ => u64::try_from(cpu_request * 1024 / 1000).unwrap_or(0).max(2),
    };
    let cpu_quota = peak(&cpu("limits"))
        .filter(|m| *m > 0)
        .map(|m| plus_overhead(m, "cpu", &as_millis) * 100);
    let memory = peak(&|c: &Container| quantity(c, "limits", "memory").and_then(|q| bytes(&q)))
        .map(|b| plus_overhead(b, "memory", &bytes));
    crate::host::PodLimits {
        cpu_shares: Some(cpu_shares),
        cpu_quota,
        memory,
        pids,
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

    #[test]
    fn the_oom_score_floor_follows_cap_sys_resource() {
        assert_eq!(oom_score_floor("CapEff:\t000001ffffffffff\n", "0\n"), -1000);
        assert_eq!(oom_score_floor("CapEff:\t000001fffeffffff\n", "0\n"), 0);
        assert_eq!(oom_score_floor("CapEff:\t0000000000000000\n", "-500"), -500);
    }

    #[test]
    fn the_pod_cgroup_gets_the_peak_of_its_containers() {
        let two = |second: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"uid": "u"}, "spec": {
                "initContainers": [{"name": "setup",
                    "resources": {"limits": {"cpu": "2", "memory": "200Mi"}}}],
                "containers": [
                    {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                    {"name": "b", "resources": second}],
                "overhead": {"memory": "10Mi"}}}))
            .expect("test setup")
        };
        let all = two(serde_json::json!({"limits": {"cpu": "250m", "memory": "32Mi"}}));
        let l = pod_limits(&all, QosClass::of(&all), Some(16));
        // The init container's 2 CPUs and 200Mi exceed the app's 750m and 96Mi.
        assert_eq!(l.cpu_quota, Some(200_000));
        assert_eq!(l.memory, Some((200 << 20) + (10 << 20)));
        assert_eq!(l.cpu_shares, Some(2048));
        assert_eq!(l.pids, Some(16));
        let partial = two(serde_json::json!({"requests": {"cpu": "100m"}}));
        let l = pod_limits(&partial, QosClass::of(&partial), None);
        assert_eq!((l.cpu_quota, l.memory), (None, None));
        assert_eq!(l.cpu_shares, Some(2048));
        let none = pod(serde_json::json!({}));
        assert_eq!(
            pod_limits(&none, QosClass::BestEffort, None).cpu_shares,
            Some(2)
        );
    }
}
