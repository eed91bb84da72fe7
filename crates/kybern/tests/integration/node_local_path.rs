//! Local-path volumes on a `kybern up` node (as root, real runc): a claim of
//! a `kybern.dev/local-path` class that waits for its first consumer gets a
//! volume provisioned in a directory on the node the pod was scheduled to;
//! the pod writes into it; once the pod and the claim are gone, the
//! provisioner has the agent remove the directory (through `nodes/proxy`)
//! and deletes the volume. The same node proxy serves `kubectl get --raw`.

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, delete_and_wait, wait_status};
use crate::common::wait_for;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn local_path_claims_get_a_directory_on_their_node_until_they_go() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "local-path"}, "provisioner": "kybern.dev/local-path",
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}))
    .expect("class");
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("create class");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "cache"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
            "resources": {"requests": {"storage": "1Mi"}}}}))
    .expect("claim");
    let uid = claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim")
        .metadata
        .uid
        .expect("uid");

    let api = create(
        &client,
        json!({
        "metadata": {"name": "writer"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}}],
            "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "echo kept > /cache/f && sleep 3600"],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}]}}),
    )
    .await;
    wait_status(&api, "writer", "the writer to run", |s| {
        container(s, "c")["state"]["running"].is_object()
    })
    .await;

    // The volume was made for the claim, in the agent's local-path
    // directory, pinned to the node, and the pod's write is there.
    let name = format!("pvc-{uid}");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes.get(&name).await.expect("the provisioned volume");
    let dir = cluster
        .dir
        .path()
        .join("agent/local-path")
        .join(format!("{name}_default_cache"));
    let spec = pv.spec.clone().expect("spec");
    assert_eq!(
        spec.host_path.map(|h| h.path),
        Some(dir.to_string_lossy().into_owned())
    );
    let term = serde_json::to_value(spec.node_affinity).expect("json");
    assert_eq!(
        term["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!([cluster.node])
    );
    let bound = claims.get("cache").await.expect("claim");
    assert_eq!(bound.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let written = wait_for("the pod's write", async || {
        std::fs::read_to_string(dir.join("f")).ok()
    })
    .await;
    assert_eq!(written, "kept\n");

    // The node proxy passes requests on to the agent.
    let summary: serde_json::Value = serde_json::from_str(&kubectl.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/stats/summary", cluster.node),
    ]))
    .expect("summary json");
    assert_eq!(summary["node"]["nodeName"], cluster.node.as_str());

    // Pod and claim gone: the directory and the volume go too.
    delete_and_wait(&api, "writer").await;
    claims
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete claim");
    wait_for("the volume deleted", async || {
        matches!(volumes.get_opt(&name).await, Ok(None)).then_some(())
    })
    .await;
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(cluster.mounts().is_empty(), "{:?}", cluster.mounts());
}
