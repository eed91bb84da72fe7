//! What controllers read from pods and owner references: activity, readiness,
//! availability, the controlling owner, and the ranking of pods to delete.

use std::cmp::Ordering;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kybern_apimachinery::cached_pod::CachedPod;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controlling owner reference to `owner`, blocking its foreground deletion.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Neither finished nor being deleted.
pub fn is_active(pod: &CachedPod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's `Ready` condition is true.
pub fn is_ready(pod: &CachedPod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod last became Ready, if it is Ready.
fn ready_since(pod: &CachedPod) -> Option<Timestamp> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        cond.last_transition_time
            .as_ref()
            .map_or(Timestamp::MIN, |t| t.0),
    )
}

/// Ready for at least `min_ready_seconds`; when not yet, how long until it is.
pub fn availability(pod: &CachedPod, min_ready_seconds: i32) -> Result<(), Option<Duration>> {
    let since = ready_since(pod).ok_or(None)?;
    if min_ready_seconds <= 0 {
        return Ok(());
    }
    let needed = Duration::from_secs(u64::try_from(min_ready_seconds).unwrap_or(0));
    let ready_for = Duration::try_from(Timestamp::now().duration_since(since)).unwrap_or_default();
    if ready_for >= needed {
        Ok(())
    } else {
        Err(Some(needed - ready_for))
    }
}

fn restarts(pod: &CachedPod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

fn phase_rank(pod: &CachedPod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    }
}

/// Upstream's order of pods to delete first: unscheduled before scheduled,
/// pending before unknown before running, not ready before ready, more
/// restarts before fewer, newer before older.
pub fn deletion_order(a: &CachedPod, b: &CachedPod) -> Ordering {
    let scheduled = |p: &CachedPod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let created = |p: &CachedPod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b).cmp(&created(a))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> CachedPod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn unscheduled_and_not_ready_pods_go_first() {
        let running_ready = pod(json!({"spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
        let running = pod(
            json!({"spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Running"}}),
        );
        let pending = pod(json!({"spec": {"containers": []}, "status": {"phase": "Pending"}}));
        let mut pods = [running_ready.clone(), running.clone(), pending.clone()];
        pods.sort_by(deletion_order);
        assert_eq!(pods[0], pending);
        assert_eq!(pods[1], running);
        assert_eq!(pods[2], running_ready);
    }

    #[test]
    fn finished_and_terminating_pods_are_not_active() {
        assert!(is_active(&pod(json!({"status": {"phase": "Running"}}))));
        assert!(!is_active(&pod(json!({"status": {"phase": "Succeeded"}}))));
        assert!(!is_active(&pod(
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        )));
    }
}
