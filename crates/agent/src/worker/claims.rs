//! persistentVolumeClaim volumes: the claim must be Bound to a
//! PersistentVolume that names it back, and the volume must be one this
//! node can give without a storage driver (`hostPath` or `local`). The
//! pod's volume directory is then a symlink to that path, which the
//! containers' bind mounts follow.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;

use crate::AgentError;

/// The host path behind claim `claim` in `namespace` (with its `hostPath`
/// type, if any), checked as the kubelet checks it before it mounts a claim.
pub async fn claimed_path(
    client: &kube::Client,
    namespace: &str,
    claim: &str,
) -> Result<(PathBuf, Option<String>), AgentError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let Some(pvc) = claims.get_opt(claim).await? else {
        return Err(AgentError::Config(format!(
            "persistentvolumeclaim {claim:?} not found"
        )));
    };
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    check_claim(namespace, claim, &pvc, &phase, &volume)?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let Some(pv) = volumes.get_opt(&volume).await? else {
        return Err(AgentError::Config(format!(
            "persistentvolume {volume:?} not found"
        )));
    };
    volume_path(&pv, pvc.metadata.uid.as_deref().unwrap_or_default())
}

fn check_claim(
    namespace: &str,
    claim: &str,
    pvc: &PersistentVolumeClaim,
    phase: &str,
    volume: &str,
) -> Result<(), AgentError> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(AgentError::Config(format!(
            "can't start pod because PVC {namespace}/{claim} is being deleted"
        )));
    }
    if phase != "Bound" || volume.is_empty() {
        return Err(AgentError::Config(format!(
            "PVC {namespace}/{claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})"
        )));
    }
    Ok(())
}

/// The path of a bound volume (and its `hostPath` type), if it names the
/// claim with `claim_uid`.
fn volume_path(
    pv: &PersistentVolume,
    claim_uid: &str,
) -> Result<(PathBuf, Option<String>), AgentError> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let bound_to = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref())
        .unwrap_or_default();
    if bound_to != claim_uid {
        return Err(AgentError::Config(format!(
            "PV {name:?}: expected claimRef.UID {claim_uid:?}, found {bound_to:?}"
        )));
    }
    let spec = pv.spec.as_ref();
    if spec.and_then(|s| s.volume_mode.as_deref()) == Some("Block") {
        return Err(AgentError::Config(format!(
            "PV {name:?} is a block volume, which this node cannot attach"
        )));
    }
    let path = spec
        .and_then(|s| {
            s.host_path
                .as_ref()
                .map(|h| (h.path.clone(), h.type_.clone()))
        })
        .or_else(|| spec.and_then(|s| s.local.as_ref().map(|l| (l.path.clone(), None))));
    match path {
        Some((p, type_)) if p.starts_with('/') => Ok((PathBuf::from(p), type_)),
        _ => Err(AgentError::Config(format!(
            "PV {name:?}: only hostPath and local volumes can be mounted on this node"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(spec: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": spec})).expect("pv")
    }

    #[test]
    fn a_volume_must_name_the_claim_and_be_a_host_path() {
        let local = pv(json!({"local": {"path": "/srv/data"}, "claimRef": {"uid": "u1"}}));
        assert_eq!(
            volume_path(&local, "u1").expect("local"),
            (PathBuf::from("/srv/data"), None)
        );
        let made = pv(
            json!({"hostPath": {"path": "/srv/new", "type": "DirectoryOrCreate"},
            "claimRef": {"uid": "u1"}}),
        );
        assert_eq!(
            volume_path(&made, "u1").expect("hostPath").1.as_deref(),
            Some("DirectoryOrCreate")
        );
        assert!(volume_path(&local, "u2").is_err(), "bound to another claim");
        let nfs = pv(json!({"nfs": {"server": "s", "path": "/x"}, "claimRef": {"uid": "u1"}}));
        assert!(volume_path(&nfs, "u1").is_err());
        let block = pv(
            json!({"hostPath": {"path": "/dev/sdb"}, "volumeMode": "Block",
            "claimRef": {"uid": "u1"}}),
        );
        assert!(volume_path(&block, "u1").is_err());
    }

    #[test]
    fn a_claim_must_be_bound_and_alive() {
        let pvc: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("pvc");
        let err = check_claim("ns", "c", &pvc, "Pending", "").expect_err("pending");
        assert_eq!(
            err.to_string(),
            "PVC ns/c has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
        );
        assert!(check_claim("ns", "c", &pvc, "Bound", "pv1").is_ok());
    }
}
