//! What the control plane's pod caches keep of a pod: the fields the
//! scheduler and the controllers read, without the rest.
//!
//! A decoded `Pod` is large in memory: its types hold every optional field
//! inline (one `Volume` is 3 KiB before any of its content, one `Container`
//! 2 KiB), so a pod of 2.8 KB of JSON takes 18 KB as a `Pod`. The scheduler
//! and the controller manager each cache every pod of the cluster, so at
//! 20,000 pods what they never read costs hundreds of megabytes. Trimming
//! cached objects is what upstream's informers do with `managedFields`; this
//! goes further for pods, and only for caches that never write a pod back
//! whole (a trimmed pod must not be PUT: its volumes would be lost).

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

/// Drops from `pod` what no control-plane cache reads, and the spare
/// capacity of the lists it keeps.
///
/// Dropped: `managedFields`; volumes other than claims and generic ephemeral
/// volumes (config maps, secrets, projected tokens, downward API, emptyDir,
/// host paths: the node agent reads those, from its own watch); and of each
/// container what only the node agent runs it with: command, args, working
/// directory, environment, mounts, probes, lifecycle hooks, security context
/// and termination-message settings. Kept: metadata (owner references
/// shrunk to fit), scheduling fields,
/// container names, images, ports, resources and restart policies, and the
/// whole status.
pub fn slim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    // serde leaves a one-owner list room for four (416 bytes for 104).
    shrink(&mut pod.metadata.owner_references);
    if let Some(spec) = pod.spec.as_mut() {
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(is_claim);
            volumes.shrink_to_fit();
            if volumes.is_empty() {
                spec.volumes = None;
            }
        }
        spec.containers.iter_mut().for_each(slim_container);
        spec.containers.shrink_to_fit();
        if let Some(init) = spec.init_containers.as_mut() {
            init.iter_mut().for_each(slim_container);
            init.shrink_to_fit();
        }
        if let Some(ephemeral) = spec.ephemeral_containers.as_mut() {
            for c in ephemeral.iter_mut() {
                c.command = None;
                c.args = None;
                c.env = None;
                c.env_from = None;
                c.volume_mounts = None;
            }
            ephemeral.shrink_to_fit();
        }
        shrink(&mut spec.tolerations);
        shrink(&mut spec.readiness_gates);
    }
    if let Some(status) = pod.status.as_mut() {
        shrink(&mut status.conditions);
        shrink(&mut status.container_statuses);
        shrink(&mut status.init_container_statuses);
        shrink(&mut status.pod_ips);
        shrink(&mut status.host_ips);
    }
}

/// A volume whose source is a claim: the scheduler's volume binding and
/// restrictions read these on every pod, and so may the controllers.
fn is_claim(v: &Volume) -> bool {
    v.persistent_volume_claim.is_some() || v.ephemeral.is_some()
}

fn slim_container(c: &mut Container) {
    c.command = None;
    c.args = None;
    c.working_dir = None;
    c.env = None;
    c.env_from = None;
    c.volume_mounts = None;
    c.volume_devices = None;
    c.liveness_probe = None;
    c.readiness_probe = None;
    c.startup_probe = None;
    c.lifecycle = None;
    c.security_context = None;
    c.termination_message_path = None;
    c.termination_message_policy = None;
    shrink(&mut c.ports);
}

fn shrink<T>(list: &mut Option<Vec<T>>) {
    if let Some(l) = list.as_mut() {
        l.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
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
                    "restartCount": 2}]},
        }))
        .expect("pod")
    }

    #[test]
    fn keeps_what_schedulers_and_controllers_read() {
        let mut p = pod();
        slim(&mut p);
        assert_eq!(p.metadata.managed_fields, None);
        assert_eq!(p.metadata.labels, pod().metadata.labels);
        assert_eq!(p.metadata.annotations, pod().metadata.annotations);
        let owners = p.metadata.owner_references.as_ref().expect("owners");
        assert_eq!(Some(owners), pod().metadata.owner_references.as_ref());
        assert_eq!(owners.capacity(), 1);
        let spec = p.spec.as_ref().expect("spec");
        let names: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["data", "scratch"]);
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!(c.ports, pod().spec.expect("spec").containers[0].ports);
        assert_eq!(
            c.resources,
            pod().spec.expect("spec").containers[0].resources
        );
        assert!(c.command.is_none() && c.env.is_none() && c.volume_mounts.is_none());
        assert!(c.readiness_probe.is_none());
        let init = &spec.init_containers.as_ref().expect("init")[0];
        assert_eq!(init.restart_policy.as_deref(), Some("Always"));
        assert!(init.resources.is_some() && init.args.is_none());
        let original = pod().spec.expect("spec");
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
        assert_eq!(p.status, pod().status);
    }

    #[test]
    fn a_pod_without_kept_volumes_has_none() {
        let mut p = pod();
        if let Some(v) = p.spec.as_mut().and_then(|s| s.volumes.as_mut()) {
            v.retain(|v| v.config_map.is_some());
        }
        slim(&mut p);
        assert_eq!(p.spec.expect("spec").volumes, None);
    }
}
