//! The scheduler's view of the cluster: each node with the pods on it and what
//! they request, including pods assumed onto a node whose binding the API has
//! not yet shown, so that decisions made and not yet observed count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};
use kybern_apimachinery::cached_pod::CachedPod;

use crate::resources::{Resources, node_allocatable, pod_requests, pod_requests_non_zero};
use crate::topology::{LabelInterner, NodeLabelIds};

/// A host port a pod claims: protocol, host IP (`0.0.0.0` for all), port.
pub type HostPort = (String, String, i32);

/// A pod with what the scheduler reads from it often, computed once, and
/// shared: a cycle copies nodes with their pods (to add nominated pods, or
/// take victims away), and a copy must not cost a pod's strings and maps.
#[derive(Clone, Debug)]
pub struct PodInfo(Arc<PodFacts>);

impl std::ops::Deref for PodInfo {
    type Target = PodFacts;

    fn deref(&self) -> &PodFacts {
        &self.0
    }
}

/// What [`PodInfo`] holds.
#[derive(Clone, Debug)]
pub struct PodFacts {
    /// The pod as last observed (or assumed).
    pub pod: Arc<CachedPod>,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The effective request.
    pub requests: Resources,
    /// The request with upstream's defaults for containers that ask for nothing.
    pub non_zero: Resources,
    /// Host ports its containers claim.
    pub host_ports: Vec<HostPort>,
    /// `spec.priority` (0 without one).
    pub priority: i32,
    /// Required anti-affinity terms, compiled.
    pub required_anti: Vec<crate::plugins::inter_pod_affinity::Term>,
}

impl PodInfo {
    /// Computes the derived fields of a pod.
    pub fn new(pod: Arc<CachedPod>) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let host_ports = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = p.host_port.filter(|p| *p > 0)?;
                Some((
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                    port,
                ))
            })
            .collect();
        PodInfo(Arc::new(PodFacts {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            requests: pod_requests(&pod),
            non_zero: pod_requests_non_zero(&pod),
            host_ports,
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            required_anti: crate::plugins::inter_pod_affinity::compile_required_anti(
                &pod,
                meta.namespace.as_deref().unwrap_or_default(),
            ),
            pod,
        }))
    }

    /// Replaces the pod object, keeping what was derived from it.
    fn set_pod(&mut self, pod: Arc<CachedPod>) {
        Arc::make_mut(&mut self.0).pod = pod;
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One node and the pods on it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The node, once observed (pods may be seen on a node before it is).
    pub node: Option<Arc<Node>>,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels` (shared: a cycle copies a node to count nominated
    /// pods on it, and its labels, taints and images never change there).
    pub labels: Arc<BTreeMap<String, String>>,
    /// The same labels as ids of the cache's [`LabelInterner`], for
    /// topology domains.
    pub label_ids: NodeLabelIds,
    /// `spec.taints`.
    pub taints: Arc<[Taint]>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// What pods may use.
    pub allocatable: Resources,
    /// How many pods fit.
    pub allowed_pods: i64,
    /// Sum of the pods' requests.
    pub requested: Resources,
    /// Sum of the pods' requests with defaults, for scoring.
    pub non_zero_requested: Resources,
    /// The pods, bound or assumed.
    pub pods: Vec<PodInfo>,
    /// Images present, by name, with their size in bytes.
    pub images: Arc<HashMap<String, i64>>,
    /// Whether pods are nominated to this node: a cycle looks them up by
    /// name only then.
    nominated_here: bool,
}

impl NodeInfo {
    fn set_node(&mut self, node: Arc<Node>) {
        let (allocatable, allowed_pods) = node_allocatable(&node);
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = Arc::new(node.metadata.labels.clone().unwrap_or_default());
        let spec = node.spec.as_ref();
        self.taints = spec
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
            .into();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.allocatable = allocatable;
        self.allowed_pods = allowed_pods;
        self.images = Arc::new(
            node.status
                .as_ref()
                .and_then(|s| s.images.as_ref())
                .into_iter()
                .flatten()
                .flat_map(|i| {
                    let size = i.size_bytes.unwrap_or(0);
                    i.names.iter().flatten().map(move |n| (n.clone(), size))
                })
                .collect(),
        );
        self.node = Some(node);
    }

    /// Counts a pod on this node.
    pub(crate) fn add_pod(&mut self, pod: PodInfo) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero);
        self.pods.push(pod);
    }

    /// Uncounts a pod on this node, returning it.
    pub(crate) fn remove_pod(&mut self, uid: &str) -> Option<PodInfo> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero);
        Some(pod)
    }

    /// Whether a host port is free on this node for `(protocol, ip, port)`.
    pub fn port_free(&self, wanted: &HostPort) -> bool {
        let (proto, ip, port) = wanted;
        !self
            .pods
            .iter()
            .flat_map(|p| &p.host_ports)
            .any(|(p2, ip2, port2)| {
                port2 == port && p2 == proto && (ip2 == ip || ip2 == "0.0.0.0" || ip == "0.0.0.0")
            })
    }
}

/// Whether a pod occupies a node: bound, and not finished.
pub fn occupies_node(pod: &CachedPod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    bound && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Nodes and the pods placed on them.
///
/// Nodes live in a slab so that a scheduling cycle walks them by position,
/// without hashing a name per node.
#[derive(Debug, Default)]
pub struct ClusterCache {
    /// Every node known, including placeholders for pods seen on a node
    /// before the node itself; a vacant slot has no name.
    slots: Vec<NodeInfo>,
    /// Vacant slots, for reuse.
    vacant: Vec<usize>,
    /// The slot of each known node, by name.
    index: HashMap<String, usize>,
    /// The slots of the nodes that exist, in name order: what a cycle walks.
    existing: Vec<usize>,
    /// Where each placed pod is, by uid.
    placed: HashMap<String, String>,
    /// Pods assumed onto a node and not yet seen bound there.
    assumed: HashMap<String, String>,
    /// The slots holding placed pods with required anti-affinity terms (the
    /// only pods whose terms can bar a newcomer), with how many each holds:
    /// a cycle visits those pods without a lookup by name or uid.
    anti_affinity: HashMap<usize, usize>,
    /// How many existing nodes report each image.
    image_nodes: HashMap<String, usize>,
    /// Pods nominated to a node by preemption, waiting for their victims to
    /// leave: by node, and the node of each by uid.
    nominated: HashMap<String, Vec<PodInfo>>,
    nominated_node: HashMap<String, String>,
    /// Claims, volumes and storage classes, for volume binding.
    pub volumes: crate::volumes::VolumeCache,
    /// Ids for the existing nodes' label keys and values.
    label_table: LabelInterner,
    /// How many label keys and values the existing nodes carry in all.
    live_labels: usize,
    /// The slots holding at least one pod, in slot order: what a walk over
    /// placed pods visits, rather than every node.
    occupied: BTreeSet<usize>,
}

impl ClusterCache {
    /// The slot of a node, made (as a placeholder) if it is not known yet.
    fn slot_for(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let info = NodeInfo {
            name: name.to_owned(),
            nominated_here: self.nominated.contains_key(name),
            ..Default::default()
        };
        let i = match self.vacant.pop() {
            Some(i) => {
                self.slots[i] = info;
                i
            }
            None => {
                self.slots.push(info);
                self.slots.len() - 1
            }
        };
        self.index.insert(name.to_owned(), i);
        i
    }

    /// Frees a node's slot once it neither exists nor holds pods.
    fn release_if_empty(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.slots[i].node.is_none() && self.slots[i].pods.is_empty() {
            self.index.remove(name);
            self.slots[i] = NodeInfo::default();
            self.vacant.push(i);
        }
    }

    /// Adds or replaces a node. Returns whether anything scheduling reads
    /// changed (a heartbeat alone changes nothing).
    pub fn upsert_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let slot = self.slot_for(&name);
        let slots = &self.slots;
        if let Err(at) = self
            .existing
            .binary_search_by(|i| slots[*i].name.as_str().cmp(&name))
        {
            self.existing.insert(at, slot);
        }
        let info = &mut self.slots[slot];
        if info.node.is_some() {
            forget_images(&mut self.image_nodes, info);
            self.live_labels = self.live_labels.saturating_sub(2 * info.labels.len());
        }
        let before = info.node.is_some().then(|| {
            (
                info.labels.clone(),
                info.taints.clone(),
                info.unschedulable,
                info.allocatable.clone(),
                info.allowed_pods,
            )
        });
        info.set_node(node);
        // Heartbeats leave labels as they were: no interning then.
        if before.as_ref().is_none_or(|b| b.0 != info.labels) {
            info.label_ids = self.label_table.node_labels(&info.labels);
        }
        self.live_labels += 2 * info.labels.len();
        for image in info.images.keys() {
            *self.image_nodes.entry(image.clone()).or_default() += 1;
        }
        before
            != Some((
                info.labels.clone(),
                info.taints.clone(),
                info.unschedulable,
                info.allocatable.clone(),
                info.allowed_pods,
            ))
    }

    /// Removes a node; its pods stay counted until they go.
    pub fn remove_node(&mut self, name: &str) {
        let slots = &self.slots;
        if let Ok(at) = self
            .existing
            .binary_search_by(|i| slots[*i].name.as_str().cmp(name))
        {
            self.existing.remove(at);
        }
        if let Some(&i) = self.index.get(name) {
            if self.slots[i].node.is_some() {
                forget_images(&mut self.image_nodes, &self.slots[i]);
                self.live_labels = self
                    .live_labels
                    .saturating_sub(2 * self.slots[i].labels.len());
            }
            self.slots[i].node = None;
            // Pods left on a node that is gone bar no domain, as upstream's
            // snapshot holds only nodes that exist; nor can their ids go stale.
            self.slots[i].label_ids.clear();
            self.release_if_empty(name);
        }
        if self.label_table.is_bloated(self.live_labels) {
            self.rebuild_label_table();
        }
    }

    /// Gives the existing nodes' labels fresh ids, dropping those of nodes
    /// that are gone.
    fn rebuild_label_table(&mut self) {
        self.label_table = LabelInterner::default();
        for info in self.slots.iter_mut().filter(|n| n.node.is_some()) {
            info.label_ids = self.label_table.node_labels(&info.labels);
        }
    }

    /// Records an observed pod: placed if bound and running, removed otherwise.
    /// An observed binding confirms an assumption.
    pub fn upsert_pod(&mut self, pod: Arc<CachedPod>) {
        if occupies_node(&pod) && self.confirm(&pod) {
            return;
        }
        let info = PodInfo::new(pod);
        if occupies_node(&info.pod) {
            let node = info
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            self.assumed.remove(&info.uid);
            self.place(info, node);
        } else if !self.assumed.contains_key(&info.uid) {
            self.remove_pod(&info.uid);
        }
    }

    /// An observed binding where the pod was assumed: the assumption holds,
    /// so only the pod object changes (its spec, which the derived fields
    /// come from, is what was scheduled). Returns whether it was one.
    fn confirm(&mut self, pod: &Arc<CachedPod>) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if node.is_none() || self.assumed.get(uid).map(String::as_str) != node {
            return false;
        }
        let Some(slot) = node.and_then(|n| self.index.get(n)) else {
            return false;
        };
        let Some(info) = self.slots[*slot].pods.iter_mut().find(|p| p.uid == uid) else {
            return false;
        };
        // Labels may have changed meanwhile; other pods' terms select by them.
        let same_labels = pod
            .metadata
            .labels
            .as_ref()
            .map_or(info.labels.is_empty(), |l| *l == info.labels);
        if !same_labels {
            return false;
        }
        info.set_pod(pod.clone());
        self.assumed.remove(uid);
        true
    }

    fn place(&mut self, info: PodInfo, node: String) {
        self.remove_pod(&info.uid);
        let slot = self.slot_for(&node);
        if !info.required_anti.is_empty() {
            *self.anti_affinity.entry(slot).or_default() += 1;
        }
        self.placed.insert(info.uid.clone(), node);
        self.slots[slot].add_pod(info);
        self.occupied.insert(slot);
    }

    /// Forgets a pod (deleted, finished, or an assumption undone).
    pub fn remove_pod(&mut self, uid: &str) {
        self.assumed.remove(uid);
        let Some(node) = self.placed.remove(uid) else {
            return;
        };
        if let Some(&i) = self.index.get(&node) {
            let removed = self.slots[i].remove_pod(uid);
            if self.slots[i].pods.is_empty() {
                self.occupied.remove(&i);
            }
            if removed.is_some_and(|p| !p.required_anti.is_empty())
                && let std::collections::hash_map::Entry::Occupied(mut held) =
                    self.anti_affinity.entry(i)
            {
                *held.get_mut() -= 1;
                if *held.get() == 0 {
                    held.remove();
                }
            }
            self.release_if_empty(&node);
        }
    }

    /// Counts a pod on a node before its binding is observed.
    /// The assumed copy shares the pod as observed (its `nodeName` unset):
    /// where it is placed is what counts, and nothing reads the field.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        self.place(pod.clone(), node.to_owned());
        self.assumed.insert(pod.uid.clone(), node.to_owned());
    }

    /// Whether a pod is placed on a node (bound or assumed).
    pub fn has_pod(&self, uid: &str) -> bool {
        self.placed.contains_key(uid)
    }

    /// The uids of every placed pod.
    pub fn pod_uids(&self) -> Vec<String> {
        self.placed.keys().cloned().collect()
    }

    /// Whether a pod is assumed (its binding is in flight or not yet seen).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.assumed.contains_key(uid)
    }

    /// The nodes that exist, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.existing.iter().map(|i| &self.slots[*i])
    }

    /// The existing nodes holding pods, in no particular order.
    pub fn occupied_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.occupied
            .iter()
            .map(|i| &self.slots[*i])
            .filter(|n| n.node.is_some())
    }

    /// The ids of the existing nodes' label keys and values.
    pub fn label_table(&self) -> &LabelInterner {
        &self.label_table
    }

    /// The `n`th existing node in name order (`n < node_count()`).
    pub fn nth_node(&self, n: usize) -> Option<&NodeInfo> {
        self.existing.get(n).map(|i| &self.slots[*i])
    }

    /// Placed pods with required anti-affinity terms, with their nodes.
    pub fn anti_affinity_pods(&self) -> impl Iterator<Item = (&PodInfo, &NodeInfo)> {
        self.anti_affinity.keys().flat_map(move |&slot| {
            let n = &self.slots[slot];
            n.pods
                .iter()
                .filter(|p| !p.required_anti.is_empty())
                .map(move |p| (p, n))
        })
    }

    /// A node by name, if it exists.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index
            .get(name)
            .map(|i| &self.slots[*i])
            .filter(|n| n.node.is_some())
    }

    /// How many nodes exist.
    pub fn node_count(&self) -> usize {
        self.existing.len()
    }

    /// Records that preemption made room for a pod on a node.
    pub fn nominate(&mut self, pod: &PodInfo, node: &str) {
        self.clear_nomination(&pod.uid);
        self.nominated_node.insert(pod.uid.clone(), node.to_owned());
        self.nominated
            .entry(node.to_owned())
            .or_default()
            .push(pod.clone());
        if let Some(&i) = self.index.get(node) {
            self.slots[i].nominated_here = true;
        }
    }

    /// Forgets a pod's nomination (it was bound, deleted or nominated elsewhere).
    pub fn clear_nomination(&mut self, uid: &str) {
        let Some(node) = self.nominated_node.remove(uid) else {
            return;
        };
        if let Some(pods) = self.nominated.get_mut(&node) {
            pods.retain(|p| p.uid != uid);
            if pods.is_empty() {
                self.nominated.remove(&node);
                if let Some(&i) = self.index.get(&node) {
                    self.slots[i].nominated_here = false;
                }
            }
        }
    }

    /// The node a pod is nominated to, if any.
    pub fn nomination_of(&self, uid: &str) -> Option<&str> {
        self.nominated_node.get(uid).map(String::as_str)
    }

    /// The node as `pod` must see it: with the pods nominated to it that are
    /// at least as important as `pod` counted as if already there, so that
    /// room made by preemption is not taken by others (upstream runs filters
    /// with nominated pods the same way). `None` when there are none.
    pub fn with_nominated(&self, node: &NodeInfo, pod: &PodInfo) -> Option<NodeInfo> {
        // Called for every node a cycle examines: no hashing when none waits.
        if !node.nominated_here {
            return None;
        }
        let mut ahead = self
            .nominated
            .get(&node.name)?
            .iter()
            .filter(|p| p.uid != pod.uid && p.priority >= pod.priority)
            .peekable();
        ahead.peek()?;
        let mut view = node.clone();
        for p in ahead {
            view.add_pod(p.clone());
        }
        Some(view)
    }

    /// Whether any existing node reports its images.
    pub fn reports_images(&self) -> bool {
        !self.image_nodes.is_empty()
    }

    /// How many existing nodes report holding an image.
    pub fn nodes_with_image(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }
}

/// Uncounts a node's images.
fn forget_images(counts: &mut HashMap<String, usize>, node: &NodeInfo) {
    for image in node.images.keys() {
        if let Some(c) = counts.get_mut(image) {
            *c -= 1;
            if *c == 0 {
                counts.remove(image);
            }
        }
    }
}

#[cfg(test)]
mod tests;
