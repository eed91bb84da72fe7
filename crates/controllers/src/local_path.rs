//! The `kybern.dev/local-path` provisioner: for a claim of a class naming
//! it, a PersistentVolume in a directory on the node the scheduler chose
//! (`volume.kubernetes.io/selected-node`), pinned there by node affinity;
//! once the claim is gone and the reclaim policy is `Delete`, the directory
//! (removed by the node's agent, reached through `nodes/proxy`) and the
//! volume. To the volume controller it is an external provisioner: it acts
//! on claims that name it in `volume.kubernetes.io/storage-provisioner`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::events::{EventRecorder, NORMAL, WARNING, reference_to};
use crate::informer::{Change, Informer, next_change};
use crate::persistent_volume::VolumeKey as Key;
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers};
use kybern_scheduler::volume_match::{
    PROVISIONED_BY, SELECTED_NODE, STORAGE_PROVISIONER, annotation, claim_class,
};

/// The provisioner's name, as a StorageClass names it.
pub const PROVISIONER: &str = "kybern.dev/local-path";
/// On a volume: the node whose disk holds it.
const NODE_ANNOTATION: &str = "kybern.dev/local-path-node";
/// On a Node: the directory its agent keeps local-path volumes in.
const ROOT_ANNOTATION: &str = "kybern.dev/local-path-root";
/// How soon a claim is tried again when its node cannot take it yet.
const RETRY: Duration = Duration::from_secs(10);

struct LocalPathProvisioner {
    client: kube::Client,
    volumes: Arc<Informer<PersistentVolume>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    classes: Arc<Informer<StorageClass>>,
    nodes: Arc<Informer<Node>>,
    queue: Arc<WorkQueue<Key>>,
    recorder: EventRecorder,
}

/// Runs the provisioner until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let ctl = Arc::new(LocalPathProvisioner {
        recorder: EventRecorder::new(client.clone(), PROVISIONER),
        client,
        volumes: informers.persistent_volumes.clone(),
        claims: informers.persistent_volume_claims.clone(),
        classes: informers.storage_classes.clone(),
        nodes: informers.nodes.clone(),
        queue: Arc::default(),
    });
    let (mut volumes, mut claims) = (ctl.volumes.subscribe(), ctl.claims.subscribe());
    tokio::join!(
        ctl.volumes.synced(),
        ctl.claims.synced(),
        ctl.classes.synced(),
        ctl.nodes.synced()
    );
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    c = next_change(&mut volumes) => match c {
                        Some(Change::Resync) => ctl.resync(),
                        Some(Change::Added(v) | Change::Modified(v) | Change::Deleted(v)) => {
                            ctl.queue.add(Key::Volume(v.metadata.name.clone().unwrap_or_default()));
                        }
                        None => return,
                    },
                    c = next_change(&mut claims) => match c {
                        Some(Change::Resync) => ctl.resync(),
                        Some(Change::Added(c) | Change::Modified(c) | Change::Deleted(c)) => {
                            ctl.queue.add(Key::Claim(ObjectKey::of(c.as_ref())));
                        }
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("local-path-provisioner", ctl.queue.clone(), 1, move |key| {
            let ctl = ctl.clone();
            async move {
                match key {
                    Key::Claim(k) => ctl.sync_claim(&k).await,
                    Key::Volume(n) => ctl.sync_volume(&n).await,
                }
            }
        })
    };
    tokio::join!(events, sync);
}

/// The directory of volume `volume` for `claim`: named so that a look at
/// the node's disk tells whose it is.
fn directory(volume: &str, claim: &PersistentVolumeClaim) -> String {
    format!(
        "{volume}_{}_{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The volume provisioned for `claim` in `root` on `node` of `class`.
fn volume_for(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &Node,
    root: &str,
) -> Result<PersistentVolume, ControllerError> {
    let uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let hostname = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/hostname"))
        .cloned()
        .unwrap_or_else(|| node_name.clone());
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned();
    let path = format!("{}/{}", root.trim_end_matches('/'), directory(&name, claim));
    let volume = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {
            PROVISIONED_BY: PROVISIONER, NODE_ANNOTATION: node_name}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes,
            "volumeMode": "Filesystem",
            "storageClassName": class.metadata.name,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
            "mountOptions": class.mount_options,
            "hostPath": {"path": path, "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace, "name": claim.metadata.name,
                "uid": uid, "resourceVersion": claim.metadata.resource_version},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]}]}]}},
        },
    });
    serde_json::from_value(volume).map_err(|e| ControllerError::Invalid(e.to_string()))
}

impl LocalPathProvisioner {
    fn resync(&self) {
        for v in self.volumes.state() {
            self.queue
                .add(Key::Volume(v.metadata.name.clone().unwrap_or_default()));
        }
        for c in self.claims.state() {
            self.queue.add(Key::Claim(ObjectKey::of(c.as_ref())));
        }
    }

    fn failed(&self, claim: &PersistentVolumeClaim, message: String) {
        self.recorder
            .post(reference_to(claim), WARNING, "ProvisioningFailed", message);
    }

    async fn sync_claim(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(claim) = self.claims.get(key.namespace.as_deref(), &key.name) else {
            return Ok(None);
        };
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        let ours = annotation(&claim.metadata, STORAGE_PROVISIONER) == Some(PROVISIONER);
        if !unbound || !ours || claim.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(class) = self
            .classes
            .get(None, claim_class(&claim))
            .filter(|c| c.provisioner == PROVISIONER)
        else {
            return Ok(None);
        };
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        if self.volumes.get(None, &format!("pvc-{uid}")).is_some() {
            return Ok(None);
        }
        let Some(node_name) = annotation(&claim.metadata, SELECTED_NODE) else {
            self.failed(&claim, "a local-path volume is made on the node of its claim's first consumer: its class needs volumeBindingMode WaitForFirstConsumer".into());
            return Ok(None);
        };
        if claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block") {
            self.failed(
                &claim,
                "local-path volumes are Filesystem volumes only".into(),
            );
            return Ok(None);
        }
        let Some(node) = self.nodes.get(None, node_name) else {
            self.failed(&claim, format!("node {node_name:?} not found"));
            return Ok(Some(RETRY));
        };
        let Some(root) = annotation(&node.metadata, ROOT_ANNOTATION) else {
            self.failed(
                &claim,
                format!("node {node_name:?} offers no local-path volumes (its agent publishes no {ROOT_ANNOTATION})"),
            );
            return Ok(Some(RETRY));
        };
        let volume = volume_for(&claim, &class, &node, root)?;
        let name = volume.metadata.name.clone().unwrap_or_default();
        self.recorder.post(
            reference_to(claim.as_ref()),
            NORMAL,
            "Provisioning",
            format!(
                "External provisioner is provisioning volume for claim \"{}/{}\"",
                key.namespace.as_deref().unwrap_or_default(),
                key.name
            ),
        );
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &volume).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                self.failed(&claim, format!("creating volume {name}: {e}"));
                return Err(e.into());
            }
        }
        self.recorder.post(
            reference_to(claim.as_ref()),
            NORMAL,
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {name}"),
        );
        Ok(None)
    }

    /// A volume of ours whose claim is gone (the volume controller has
    /// released it) and whose policy is `Delete`: its directory, then it.
    async fn sync_volume(&self, name: &str) -> ReconcileResult<ControllerError> {
        let Some(volume) = self.volumes.get(None, name) else {
            return Ok(None);
        };
        let spec = volume.spec.as_ref();
        let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete =
            spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
        if annotation(&volume.metadata, PROVISIONED_BY) != Some(PROVISIONER)
            || !released
            || !delete
            || volume.metadata.deletion_timestamp.is_some()
        {
            return Ok(None);
        }
        let dir = spec
            .and_then(|s| s.host_path.as_ref())
            .and_then(|h| h.path.rsplit('/').next().map(str::to_owned))
            .unwrap_or_default();
        let node = annotation(&volume.metadata, NODE_ANNOTATION).unwrap_or_default();
        // With its node gone, so is the disk: only the object is left.
        if !node.is_empty()
            && !dir.is_empty()
            && self.nodes.get(None, node).is_some()
            && let Err(e) = self.remove_directory(node, &dir).await
        {
            self.recorder.post(
                reference_to(volume.as_ref()),
                WARNING,
                "VolumeFailedDelete",
                format!("removing {dir} on node {node}: {e}"),
            );
            return Err(e);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the agent of `node` to remove volume directory `dir`.
    async fn remove_directory(&self, node: &str, dir: &str) -> Result<(), ControllerError> {
        let path = format!("/api/v1/nodes/{node}/proxy/localPath/{dir}");
        let request = http::Request::delete(path)
            .body(Vec::new())
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.client.request_text(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_is_made_for_its_claim_on_its_node() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "apps", "uid": "u1", "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                "resources": {"requests": {"storage": "2Gi"}}}}))
        .expect("claim");
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "local-path"}, "provisioner": PROVISIONER,
            "reclaimPolicy": "Retain"}))
        .expect("class");
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "host-1"}}}))
        .expect("node");
        let v = volume_for(&claim, &class, &node, "/var/lib/kybern/local-path/").expect("pv");
        let v = serde_json::to_value(&v).expect("json");
        assert_eq!(v["metadata"]["name"], "pvc-u1");
        assert_eq!(v["metadata"]["annotations"][PROVISIONED_BY], PROVISIONER);
        assert_eq!(v["metadata"]["annotations"][NODE_ANNOTATION], "n1");
        let spec = &v["spec"];
        assert_eq!(
            spec["hostPath"],
            json!({"path": "/var/lib/kybern/local-path/pvc-u1_apps_data", "type": "DirectoryOrCreate"})
        );
        assert_eq!(spec["capacity"]["storage"], "2Gi");
        assert_eq!(spec["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(spec["claimRef"]["uid"], "u1");
        assert_eq!(
            spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
            json!(["host-1"])
        );
    }
}
