//! Volumes backed by something other than the pod directory (as root, real
//! runc): a PersistentVolumeClaim bound to a hostPath PersistentVolume
//! (read-write and read-only), an in-memory emptyDir held to its sizeLimit,
//! a claim that is not bound yet keeping its pod waiting, and the eviction
//! of pods that outgrow a disk emptyDir's sizeLimit or a container's
//! ephemeral-storage limit.

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

#[tokio::test]
async fn pods_over_their_local_storage_limits_are_evicted() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    // Each writes 4 MiB past a 1 MiB limit: one into its disk emptyDir,
    // one into its own writable layer. A third stays within its limits.
    let fill = |path: &str| format!("dd if=/dev/zero of={path} bs=1024 count=4096 && sleep 3600");
    let api = create(
        &client,
        json!({
        "metadata": {"name": "scratchy"},
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [
            {"name": "c", "image": "busybox", "command": ["sh", "-c", fill("/scratch/fill")],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}]}}),
    )
    .await;
    create(
        &client,
        json!({
        "metadata": {"name": "layered"},
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [
            {"name": "writer", "image": "busybox", "command": ["sh", "-c", fill("/fill")],
             "resources": {"limits": {"ephemeral-storage": "1Mi"}}}]}}),
    )
    .await;
    create(&client, json!({
        "metadata": {"name": "modest"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": "busybox", "command": ["sh", "-c", "echo small > /scratch/f; sleep 3600"],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
             "resources": {"limits": {"ephemeral-storage": "64Mi"}}}],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}]}})).await;
    let cases = [
        (
            "scratchy",
            "c",
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ",
        ),
        (
            "layered",
            "writer",
            "Container writer exceeded its local ephemeral storage limit \"1Mi\". ",
        ),
    ];
    for (pod, c, message) in cases {
        let s = wait_status(&api, pod, "the pod to be evicted", |s| {
            s["phase"] == "Failed"
        })
        .await;
        assert_eq!(s["reason"], "Evicted", "{s}");
        assert_eq!(s["message"], message, "{s}");
        // Killed at once, not after its 30 s grace period, and not restarted.
        assert_eq!(
            container(&s, c)["state"]["terminated"]["exitCode"],
            137,
            "{s}"
        );
        let disruption = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget"))
            .unwrap_or_else(|| panic!("no DisruptionTarget condition: {s}"));
        assert_eq!(disruption["reason"], "TerminationByKubelet");
        let events = kubectl.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=Evicted"),
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        assert_eq!(events.trim(), message.trim(), "{pod}");
    }
    let modest = wait_status(&api, "modest", "the modest pod to run", |s| {
        s["phase"] == "Running"
    })
    .await;
    assert!(modest.get("reason").is_none(), "{modest}");
    // Its sandbox is gone: only the modest pod's container runs.
    let running = cluster.runc_containers();
    assert_eq!(running.len(), 1, "{running:?}");
    for pod in ["scratchy", "layered", "modest"] {
        delete_and_wait(&api, pod).await;
    }
}
