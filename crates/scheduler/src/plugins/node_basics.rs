//! The small per-node filters: `NodeName`, `NodeUnschedulable`, `NodePorts`,
//! and the `SchedulingGates` pre-enqueue check.

use k8s_openapi::api::core::v1::Taint;

use super::matching::untolerated;
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{
    CycleState, FilterPlugin, Plugin, PreEnqueuePlugin, PreFilterPlugin, Status,
};

/// `NodeName`: a pod that names a node fits only there.
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name => {
                Status::unresolvable("node(s) didn't match the requested node name")
            }
            _ => Status::ok(),
        }
    }
}

/// `NodeUnschedulable`: cordoned nodes take only pods that tolerate the
/// `node.kubernetes.io/unschedulable` taint.
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::ok();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        if untolerated(std::slice::from_ref(&taint), tolerations, &["NoSchedule"]).is_some() {
            Status::unresolvable("node(s) were unschedulable")
        } else {
            Status::ok()
        }
    }
}

/// `NodePorts`: host ports must be free on the node.
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &ClusterCache) -> Status {
        if pod.host_ports.is_empty() {
            Status::skip()
        } else {
            Status::ok()
        }
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod.host_ports.iter().all(|p| node.port_free(p)) {
            Status::ok()
        } else {
            Status::unschedulable("node(s) didn't have free ports for the requested pod ports")
        }
    }
}

/// `SchedulingGates`: a pod with gates waits outside the active queue.
pub struct SchedulingGates;

impl Plugin for SchedulingGates {
    fn name(&self) -> &'static str {
        "SchedulingGates"
    }
}

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let gates: Vec<&str> = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .into_iter()
            .flatten()
            .map(|g| g.name.as_str())
            .collect();
        if gates.is_empty() {
            Status::ok()
        } else {
            Status::unresolvable(format!(
                "waiting for scheduling gates: [{}]",
                gates.join(" ")
            ))
        }
    }
}
