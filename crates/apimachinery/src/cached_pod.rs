//! What the control plane's pod caches keep of a pod: `CachedPod`, the
//! fields the scheduler and the controllers read, in a type of their own.
//!
//! A decoded `Pod` is large in memory: k8s-openapi's structs hold every
//! optional field inline (a `Container` is 2,144 bytes before any of its
//! content, a `ContainerStatus` 752, a `Pod` 2,440), so a running pod of 3 KB
//! of JSON takes 31 KB as a `Pod`, and still 8 KB with everything the
//! control plane never reads set to `None`. The scheduler and the controller
//! manager cache every pod of the cluster, so at 20,000 pods that is the
//! largest part of the control plane's memory. `CachedPod` has the same field
//! names and types as `Pod` for what it keeps, so code reading a cached pod
//! reads it as it would a `Pod`; it decodes straight from a pod's JSON (a
//! watch or a list of pods as `Api<CachedPod>`), skipping the rest.
//!
//! A cached pod is never written back: it lacks what the node agent runs a
//! pod with. Writers patch or fetch the whole pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, ContainerState, ContainerStatus, EphemeralVolumeSource,
    PersistentVolumeClaimVolumeSource, Pod, PodCondition, PodIP, PodReadinessGate,
    PodSchedulingGate, PodSpec, PodStatus, ResourceRequirements, Toleration,
    TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};

/// A pod as the control plane caches it. `metadata` is whole but for
/// `managedFields`, which are skipped unread.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPod {
    /// The pod's metadata.
    #[serde(default, deserialize_with = "metadata_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// What the scheduler and the controllers read of `spec`.
    pub spec: Option<CachedPodSpec>,
    /// What the scheduler and the controllers read of `status`.
    pub status: Option<CachedPodStatus>,
}

/// The kept part of a `PodSpec`; each field is `PodSpec`'s of that name.
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodSpec {
    pub active_deadline_seconds: Option<i64>,
    pub affinity: Option<Affinity>,
    #[serde(default, deserialize_with = "shrunk_list")]
    pub containers: Vec<CachedContainer>,
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "shrunk")]
    pub init_containers: Option<Vec<CachedContainer>>,
    pub node_name: Option<String>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub overhead: Option<BTreeMap<String, Quantity>>,
    pub preemption_policy: Option<String>,
    pub priority: Option<i32>,
    pub priority_class_name: Option<String>,
    #[serde(default, deserialize_with = "shrunk")]
    pub readiness_gates: Option<Vec<PodReadinessGate>>,
    pub restart_policy: Option<String>,
    pub scheduler_name: Option<String>,
    #[serde(default, deserialize_with = "shrunk")]
    pub scheduling_gates: Option<Vec<PodSchedulingGate>>,
    pub subdomain: Option<String>,
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, deserialize_with = "shrunk")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, deserialize_with = "shrunk")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Only the volumes whose source is a claim (a `persistentVolumeClaim` or
    /// a generic `ephemeral` volume): volume binding reads these.
    #[serde(default, deserialize_with = "claims_only")]
    pub volumes: Option<Vec<CachedVolume>>,
}

/// The kept part of a `Container`: what scheduling and accounting read.
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainer {
    #[serde(default)]
    pub name: String,
    pub image: Option<String>,
    #[serde(default, deserialize_with = "shrunk")]
    pub ports: Option<Vec<ContainerPort>>,
    pub resources: Option<ResourceRequirements>,
    pub restart_policy: Option<String>,
}

/// A volume whose source is a claim.
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedVolume {
    #[serde(default)]
    pub name: String,
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    pub ephemeral: Option<EphemeralVolumeSource>,
}

/// The kept part of a `PodStatus`; each field is `PodStatus`'s of that name.
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    #[serde(default, deserialize_with = "shrunk")]
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(default, deserialize_with = "shrunk")]
    pub container_statuses: Option<Vec<CachedContainerStatus>>,
    #[serde(default, deserialize_with = "shrunk")]
    pub init_container_statuses: Option<Vec<CachedContainerStatus>>,
    pub nominated_node_name: Option<String>,
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    #[serde(default, deserialize_with = "shrunk")]
    pub pod_ips: Option<Vec<PodIP>>,
    /// When the agent first saw the pod (the autoscaler's CPU
    /// initialization period counts from it).
    pub start_time: Option<Time>,
}

/// The kept part of a `ContainerStatus`.
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    pub state: Option<ContainerState>,
}

fn claims_only<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<CachedVolume>>, D::Error> {
    let volumes: Option<Vec<CachedVolume>> = Option::deserialize(d)?;
    Ok(volumes
        .map(|v| {
            let mut claims: Vec<_> = v.into_iter().filter(CachedVolume::is_claim).collect();
            claims.shrink_to_fit();
            claims
        })
        .filter(|v| !v.is_empty()))
}

/// `ObjectMeta`'s fields but `managedFields`, which serde passes over
/// without building them: they are often the larger part of a pod's
/// metadata, and decoding them into entries (each a JSON tree) only to drop
/// them cost the control plane more than any other field of a watched pod.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnmanagedMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default, deserialize_with = "shrunk")]
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// Decodes an `ObjectMeta` without its `managedFields` (`None`), passing
/// over them unread: for caches that never read them.
pub fn metadata_without_managed_fields<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<ObjectMeta, D::Error> {
    let m = UnmanagedMeta::deserialize(d)?;
    Ok(ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: None,
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

/// A list without the spare room serde leaves when it grows one (a list of
/// five conditions has room for eight): cached pods live long.
fn shrunk<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut list: Option<Vec<T>> = Option::deserialize(d)?;
    if let Some(l) = list.as_mut() {
        l.shrink_to_fit();
    }
    Ok(list)
}

fn shrunk_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(shrunk(d)?.unwrap_or_default())
}

/// Drops from a cached object's metadata what no cache reads: its
/// `managedFields`, often the larger part of an object (upstream's informers
/// in kube-controller-manager drop them too), and the spare room of its owner
/// list (serde leaves a one-owner list room for four).
pub fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(owners) = meta.owner_references.as_mut() {
        owners.shrink_to_fit();
    }
}

impl CachedVolume {
    fn is_claim(&self) -> bool {
        self.persistent_volume_claim.is_some() || self.ephemeral.is_some()
    }
}

impl k8s_openapi::Resource for CachedPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for CachedPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The cached form of a whole pod: what decoding its JSON as a `CachedPod`
/// gives (a pod a controller built, read as its cache will hold it),
/// without `managedFields`.
impl From<&Pod> for CachedPod {
    fn from(pod: &Pod) -> Self {
        let mut metadata = pod.metadata.clone();
        trim_metadata(&mut metadata);
        CachedPod {
            metadata,
            spec: pod.spec.as_ref().map(CachedPodSpec::from),
            status: pod.status.as_ref().map(CachedPodStatus::from),
        }
    }
}

impl From<&PodSpec> for CachedPodSpec {
    fn from(s: &PodSpec) -> Self {
        let containers = |list: &[Container]| list.iter().map(CachedContainer::from).collect();
        CachedPodSpec {
            active_deadline_seconds: s.active_deadline_seconds,
            affinity: s.affinity.clone(),
            containers: containers(&s.containers),
            hostname: s.hostname.clone(),
            init_containers: s.init_containers.as_deref().map(containers),
            node_name: s.node_name.clone(),
            node_selector: s.node_selector.clone(),
            overhead: s.overhead.clone(),
            preemption_policy: s.preemption_policy.clone(),
            priority: s.priority,
            priority_class_name: s.priority_class_name.clone(),
            readiness_gates: s.readiness_gates.clone(),
            restart_policy: s.restart_policy.clone(),
            scheduler_name: s.scheduler_name.clone(),
            scheduling_gates: s.scheduling_gates.clone(),
            subdomain: s.subdomain.clone(),
            termination_grace_period_seconds: s.termination_grace_period_seconds,
            tolerations: s.tolerations.clone(),
            topology_spread_constraints: s.topology_spread_constraints.clone(),
            volumes: s
                .volumes
                .as_ref()
                .map(|v| {
                    v.iter()
                        .map(CachedVolume::from)
                        .filter(CachedVolume::is_claim)
                        .collect::<Vec<_>>()
                })
                .filter(|v| !v.is_empty()),
        }
    }
}

impl From<&Container> for CachedContainer {
    fn from(c: &Container) -> Self {
        CachedContainer {
            name: c.name.clone(),
            image: c.image.clone(),
            ports: c.ports.clone(),
            resources: c.resources.clone(),
            restart_policy: c.restart_policy.clone(),
        }
    }
}

impl From<&Volume> for CachedVolume {
    fn from(v: &Volume) -> Self {
        CachedVolume {
            name: v.name.clone(),
            persistent_volume_claim: v.persistent_volume_claim.clone(),
            ephemeral: v.ephemeral.clone(),
        }
    }
}

impl From<&PodStatus> for CachedPodStatus {
    fn from(s: &PodStatus) -> Self {
        let statuses =
            |list: &[ContainerStatus]| list.iter().map(CachedContainerStatus::from).collect();
        CachedPodStatus {
            conditions: s.conditions.clone(),
            container_statuses: s.container_statuses.as_deref().map(statuses),
            init_container_statuses: s.init_container_statuses.as_deref().map(statuses),
            nominated_node_name: s.nominated_node_name.clone(),
            phase: s.phase.clone(),
            pod_ip: s.pod_ip.clone(),
            pod_ips: s.pod_ips.clone(),
            start_time: s.start_time.clone(),
        }
    }
}

impl From<&ContainerStatus> for CachedContainerStatus {
    fn from(s: &ContainerStatus) -> Self {
        CachedContainerStatus {
            name: s.name.clone(),
            ready: s.ready,
            restart_count: s.restart_count,
            state: s.state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json()).expect("pod")
    }

    fn json() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "u", "controller": true}],
                "annotations": {"controller.kubernetes.io/pod-deletion-cost": "5"},
                "managedFields": [{"manager": "m", "operation": "Update"}]},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep"],
                    "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80, "hostPort": 8080, "name": "http"}],
                    "resources": {"requests": {"cpu": "10m"}},
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run"}],
                    "readinessProbe": {"exec": {"command": ["true"]}}}],
                "initContainers": [{"name": "side", "image": "busybox", "restartPolicy": "Always",
                    "resources": {"requests": {"memory": "1Mi"}}, "args": ["x"]}],
                "volumes": [
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "cfg", "configMap": {"name": "cfg"}}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "a"}}}]}},
                "hostname": "h", "subdomain": "s", "priority": 7},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": true,
                    "restartCount": 2, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
                "hostIP": "10.1.0.1", "podIPs": [{"ip": "10.0.0.1"}], "nominatedNodeName": "n2",
                "startTime": "2026-01-01T00:00:00Z"},
        })
    }

    #[test]
    fn keeps_what_schedulers_and_controllers_read() {
        let whole = pod();
        let p: CachedPod = serde_json::from_value(json()).expect("cached pod");
        // Everything of the metadata but its managedFields.
        let mut meta = whole.metadata.clone();
        assert!(meta.managed_fields.take().is_some());
        assert_eq!(p.metadata, meta);
        let spec = p.spec.as_ref().expect("spec");
        let names: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["data", "scratch"]);
        let original = whole.spec.as_ref().expect("spec");
        let c = &spec.containers[0];
        assert_eq!(
            (c.name.as_str(), c.image.as_deref()),
            ("c", Some("busybox"))
        );
        assert_eq!(c.ports, original.containers[0].ports);
        assert_eq!(c.resources, original.containers[0].resources);
        let init = &spec.init_containers.as_ref().expect("init")[0];
        assert_eq!(init.restart_policy.as_deref(), Some("Always"));
        assert!(init.resources.is_some());
        assert_eq!(spec.tolerations, original.tolerations);
        assert_eq!(spec.affinity, original.affinity);
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("h"), Some("s"))
        );
        assert_eq!(
            (spec.node_name.as_deref(), spec.priority),
            (Some("n1"), Some(7))
        );
        let status = p.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
        let cs = &status.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(
            (cs.name.as_str(), cs.ready, cs.restart_count),
            ("c", true, 2)
        );
        assert_eq!(status.conditions, whole.status.expect("status").conditions);
    }

    #[test]
    fn metadata_decodes_from_text_without_managed_fields() {
        let text = serde_json::to_string(&json()).expect("text");
        let p: CachedPod = serde_json::from_str(&text).expect("cached pod");
        assert_eq!(p.metadata.managed_fields, None);
        assert_eq!(p.metadata.name.as_deref(), Some("p"));
        let owners = p.metadata.owner_references.expect("owners");
        assert_eq!((owners.len(), owners[0].controller), (1, Some(true)));
        // Nulls are absent values, as for `ObjectMeta`.
        let p: CachedPod =
            serde_json::from_str(r#"{"metadata":{"name":"q","labels":null,"managedFields":null}}"#)
                .expect("cached pod");
        assert_eq!(
            (p.metadata.name.as_deref(), p.metadata.labels),
            (Some("q"), None)
        );
    }

    #[test]
    fn a_whole_pod_converts_to_what_its_json_decodes_to() {
        let decoded: CachedPod = serde_json::from_value(json()).expect("cached pod");
        assert_eq!(CachedPod::from(&pod()), decoded);
    }

    #[test]
    fn a_pod_without_claims_has_no_volumes() {
        let mut v = json();
        v["spec"]["volumes"] = serde_json::json!([{"name": "cfg", "configMap": {"name": "cfg"}}]);
        let decoded: CachedPod = serde_json::from_value(v.clone()).expect("cached pod");
        assert_eq!(decoded.spec.as_ref().expect("spec").volumes, None);
        let whole: Pod = serde_json::from_value(v).expect("pod");
        assert_eq!(CachedPod::from(&whole), decoded);
    }

    #[test]
    fn is_served_as_pods() {
        use k8s_openapi::Resource;
        assert_eq!(
            (
                CachedPod::KIND,
                CachedPod::API_VERSION,
                CachedPod::URL_PATH_SEGMENT
            ),
            ("Pod", "v1", "pods")
        );
    }
}
