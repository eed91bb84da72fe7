//! What a Service selects: its pods that have an address, each with the ports
//! the Service's target ports resolve to on it, and its readiness — shared by
//! the EndpointSlice and Endpoints controllers.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::labels::Selector;

use crate::labels_match;
use crate::pods::is_ready;

/// One Service port as resolved on one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolvedPort {
    /// The Service port's name.
    pub name: Option<String>,
    /// The container port the target port names or numbers.
    pub port: i32,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The Service port's appProtocol.
    pub app_protocol: Option<String>,
}

/// A pod a Service selects.
#[derive(Clone, Debug)]
pub struct SelectedPod {
    /// The pod.
    pub pod: Arc<CachedPod>,
    /// Its first IP.
    pub ip: String,
    /// Ready, and not terminating.
    pub ready: bool,
    /// Ready (terminating or not).
    pub serving: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Every Service port that resolves on this pod.
    pub ports: Vec<ResolvedPort>,
}

/// The Service's selector, when it has a non-empty one (a Service without
/// one has its endpoints managed by its user).
pub fn selector_of(svc: &Service) -> Option<Selector> {
    let map = svc.spec.as_ref()?.selector.as_ref()?;
    if map.is_empty() {
        return None;
    }
    let value = serde_json::json!({ "matchLabels": map });
    Selector::from_label_selector(&value).ok()
}

/// Resolves a target port on a pod: a number as it is, a name through the
/// containers' named ports (absent when no container has it).
fn resolve(
    target: Option<&IntOrString>,
    port: i32,
    protocol: &str,
    pod: &CachedPod,
) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.as_deref().unwrap_or_default())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The pods `svc` selects among `pods` (its namespace's), with addresses,
/// not finished; terminating pods are included and marked.
pub fn selected_pods(
    svc: &Service,
    selector: &Selector,
    pods: &[Arc<CachedPod>],
) -> Vec<SelectedPod> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for pod in pods {
        if !labels_match(selector, pod.metadata.labels.as_ref()) {
            continue;
        }
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = publish_not_ready || is_ready(pod);
        let ports = svc_ports
            .iter()
            .filter_map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let port = resolve(p.target_port.as_ref(), p.port, &protocol, pod)?;
                Some(ResolvedPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol,
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        out.push(SelectedPod {
            pod: pod.clone(),
            ip,
            ready: serving && (!terminating || publish_not_ready),
            serving,
            terminating,
            ports,
        });
    }
    out.sort_by(|a, b| {
        a.ip.cmp(&b.ip)
            .then_with(|| a.pod.metadata.name.cmp(&b.pod.metadata.name))
    });
    out
}

/// Selected pods grouped by the ports they resolve to.
pub fn by_ports(pods: Vec<SelectedPod>) -> BTreeMap<Vec<ResolvedPort>, Vec<SelectedPod>> {
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<SelectedPod>> = BTreeMap::new();
    for p in pods {
        let mut ports = p.ports.clone();
        ports.sort();
        groups.entry(ports).or_default().push(p);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_target_ports_resolve_per_pod_and_unready_pods_are_marked() {
        let svc: Service = serde_json::from_value(json!({"spec": {"selector": {"app": "a"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}))
        .expect("svc");
        let pod = |name: &str, port: i32, ready: &str| -> Arc<CachedPod> {
            Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": port}]}]},
                "status": {"phase": "Running", "podIP": format!("10.0.0.{port}"),
                           "conditions": [{"type": "Ready", "status": ready}]}}))
            .expect("pod"))
        };
        let other: Arc<CachedPod> = Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "o", "labels": {"app": "b"}},
                "status": {"podIP": "10.0.0.9"}}))
            .expect("pod"),
        );
        let sel = selector_of(&svc).expect("selector");
        let got = selected_pods(
            &svc,
            &sel,
            &[pod("p1", 8080, "True"), pod("p2", 9090, "False"), other],
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ports[0].port, 8080);
        assert!(got[0].ready);
        assert_eq!(got[1].ports[0].port, 9090);
        assert!(!got[1].ready && !got[1].serving);
        assert_eq!(by_ports(got).len(), 2);
    }
}
