//! Defaults of PersistentVolumes and PersistentVolumeClaims, as upstream's
//! `SetDefaults_PersistentVolume` and `SetDefaults_PersistentVolumeClaim`.

use serde_json::{Map, Value, json};

use super::{child, default};

/// A volume is kept when released and mounts a filesystem; it starts
/// `Pending` until the volume controller looks at it.
pub(super) fn persistent_volume(root: &mut Map<String, Value>) {
    if let Some(spec) = child(root, "spec") {
        default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(root, "status") {
        default(status, "phase", json!("Pending"));
    }
}

/// A claim mounts a filesystem and starts `Pending` until it is bound.
pub(super) fn claim(root: &mut Map<String, Value>) {
    if let Some(spec) = child(root, "spec") {
        default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(root, "status") {
        default(status, "phase", json!("Pending"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_claims_start_pending_on_filesystems() {
        let mut pv = json!({"spec": {"capacity": {"storage": "1Gi"}}});
        persistent_volume(pv.as_object_mut().expect("object"));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["status"]["phase"], "Pending");
        let mut pvc = json!({"spec": {"volumeMode": "Block"}, "status": {"phase": "Bound"}});
        claim(pvc.as_object_mut().expect("object"));
        assert_eq!(pvc["spec"]["volumeMode"], "Block");
        assert_eq!(pvc["status"]["phase"], "Bound");
    }
}
