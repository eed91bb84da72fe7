//! Volumes backed by something other than the pod directory (as root, real
//! runc): a PersistentVolumeClaim bound to a hostPath PersistentVolume
//! (read-write and read-only), an in-memory emptyDir held to its sizeLimit,
//! and a claim that is not bound yet keeping its pod waiting.

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, delete_and_wait, wait_status};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

async fn claim(client: &kube::Client, name: &str) -> PersistentVolumeClaim {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvc = serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Mi"}}}}))
    .expect("claim");
    claims
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create claim")
}

#[tokio::test]
async fn claims_and_memory_volumes_are_mounted_as_asked() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let disk = tempfile::tempdir().expect("the volume's directory");
    std::fs::write(disk.path().join("seed"), "seeded\n").expect("seed");

    // A claim bound (as a binder would) to a hostPath volume naming it.
    let pvc = claim(&client, "data").await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pv-data"},
        "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "",
                 "hostPath": {"path": disk.path().to_string_lossy()},
                 "claimRef": {"namespace": "default", "name": "data", "uid": pvc.metadata.uid}}}))
    .expect("pv");
    volumes
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeName": "pv-data"}, "metadata": {
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"}}})),
        )
        .await
        .expect("name the volume");
    claims
        .patch_status(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("bind");

    let api = create(&client, json!({
        "metadata": {"name": "claimer"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "frozen", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}},
                        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                 {"name": "frozen", "mountPath": "/frozen"},
                                 {"name": "mem", "mountPath": "/mem"}]}]}})).await;
    wait_status(&api, "claimer", "the container to run", |s| {
        container(s, "c")["state"]["running"].is_object()
    })
    .await;
    assert_eq!(
        kubectl.ok(&["exec", "claimer", "--", "cat", "/data/seed"]),
        "seeded\n"
    );
    kubectl.ok(&[
        "exec",
        "claimer",
        "--",
        "sh",
        "-c",
        "echo from-pod > /data/out",
    ]);
    assert_eq!(
        std::fs::read_to_string(disk.path().join("out")).expect("written through the claim"),
        "from-pod\n"
    );
    let touch = kubectl.run(&["exec", "claimer", "--", "touch", "/frozen/x"]);
    assert!(!touch.status.success(), "a readOnly claim was writable");
    assert!(!disk.path().join("x").exists());
    let mounts = kubectl.ok(&["exec", "claimer", "--", "grep", " /mem ", "/proc/mounts"]);
    assert!(mounts.starts_with("tmpfs /mem tmpfs"), "{mounts}");
    assert!(mounts.contains("size=1024k"), "{mounts}");
    let fill = kubectl.run(&[
        "exec",
        "claimer",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/mem/big",
        "bs=1k",
        "count=2048",
    ]);
    assert!(!fill.status.success(), "2 MiB fit in a 1 MiB emptyDir");

    // A claim nobody bound: the scheduler would hold the pod back, so it
    // is placed by hand; the agent then waits, saying why.
    claim(&client, "unbound").await;
    create(
        &client,
        json!({
        "metadata": {"name": "waiter"},
        "spec": {"terminationGracePeriodSeconds": 1, "nodeName": cluster.node,
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "unbound"}}],
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}),
    )
    .await;
    wait_status(&api, "waiter", "the unbound-claim error", |s| {
        container(s, "c")["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("PVC default/unbound has non-bound phase"))
    })
    .await;

    delete_and_wait(&api, "claimer").await;
    delete_and_wait(&api, "waiter").await;
    // The claim's data outlives the pod; the tmpfs does not.
    assert!(disk.path().join("out").exists());
    assert!(disk.path().join("seed").exists());
    assert!(cluster.mounts().is_empty(), "{:?}", cluster.mounts());
    assert!(cluster.runc_containers().is_empty());
}
