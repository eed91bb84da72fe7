//! The scheduler's `VolumeBinding` and `ImageLocality` plugins through the
//! API: bound volumes' node affinity, missing and unbound claims with
//! upstream's messages, requeue when a claim or node appears, free volumes
//! reserved for claims that wait for their first consumer, the handshake
//! with an external provisioner for claims that find none, and nodes that
//! already hold a pod's large image preferred.

use crate::common;
use crate::common::cluster::{add_node, add_pod, failure_of, node_of, stays_pending};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

async fn add_volume(client: &kube::Client, name: &str, zone: &str) {
    add_volume_of(client, name, zone, "manual").await;
}

async fn add_volume_of(client: &kube::Client, name: &str, zone: &str, class: &str) {
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "hostPath": {"path": "/tmp/data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}]}]}}}
    }))
    .expect("pv");
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
}

/// A claim, bound to `volume` (as the volume controller marks it) or unbound.
async fn add_claim(client: &kube::Client, name: &str, volume: Option<&str>) {
    add_claim_of(client, name, volume, "manual").await;
}

async fn add_claim_of(client: &kube::Client, name: &str, volume: Option<&str>, class: &str) {
    let mut claim = json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": "1Gi"}}}
    });
    if let Some(v) = volume {
        claim["spec"]["volumeName"] = json!(v);
        claim["metadata"]["annotations"] = json!({"pv.kubernetes.io/bind-completed": "yes"});
    }
    let claim: PersistentVolumeClaim = serde_json::from_value(claim).expect("claim");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
}

fn zone(z: &str) -> Value {
    json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}})
}

fn with_claim(claim: &str) -> Value {
    json!({"spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_binding_follows_bound_volumes_and_waits_for_claims() {
    let server = common::Server::start();
    let client = server.client().await;
    add_node(&client, "node-a", "4", zone("a")).await;
    add_node(&client, "node-b", "4", zone("b")).await;
    // Each watch delivers in order: `uses-b` being bound proves the scheduler
    // has seen every volume and claim created before pv-b and data-b.
    add_volume(&client, "pv-c", "c").await;
    add_volume(&client, "pv-b", "b").await;
    add_claim(&client, "unbound", None).await;
    add_claim(&client, "data-c", Some("pv-c")).await;
    add_claim(&client, "data-b", Some("pv-b")).await;

    add_pod(&client, "uses-b", "100m", with_claim("data-b")).await;
    assert_eq!(node_of(&client, "uses-b").await, "node-b");

    // A claim that does not exist: a pre-filter failure, worded as upstream.
    add_pod(&client, "needs-later", "100m", with_claim("later")).await;
    assert_eq!(
        failure_of(&client, "needs-later").await,
        "0/2 nodes are available: persistentvolumeclaim \"later\" not found. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    // An unbound claim of a class that binds immediately.
    add_pod(&client, "needs-unbound", "100m", with_claim("unbound")).await;
    assert_eq!(
        failure_of(&client, "needs-unbound").await,
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    // A volume in a zone no node is in.
    add_pod(&client, "uses-c", "100m", with_claim("data-c")).await;
    assert_eq!(
        failure_of(&client, "uses-c").await,
        "0/2 nodes are available: 2 node(s) had volume node affinity conflict. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );

    // The claim appears: the waiting pod is retried and follows its volume.
    add_claim(&client, "later", Some("pv-b")).await;
    assert_eq!(node_of(&client, "needs-later").await, "node-b");
    // A node in zone c joins: the pod using pv-c goes there.
    add_node(&client, "node-c", "4", zone("c")).await;
    assert_eq!(node_of(&client, "uses-c").await, "node-c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_claims_get_a_free_volume_on_the_chosen_node() {
    // With the controllers: the pod is bound once the volume controller
    // has bound the claim to the volume the scheduler reserved.
    let server = common::Server::start_cluster(&[]);
    let client = server.client().await;
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer"}))
    .expect("class");
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("create class");
    add_node(&client, "node-a", "4", zone("a")).await;
    add_node(&client, "node-b", "4", zone("b")).await;
    add_volume_of(&client, "local-b", "b", "local").await;
    add_claim_of(&client, "cache", None, "local").await;
    add_claim_of(&client, "more", None, "local").await;
    // The only free volume is in zone b: the pod goes there, and the
    // volume is reserved for its claim before the pod is bound.
    add_pod(&client, "consumer", "100m", with_claim("cache")).await;
    assert_eq!(node_of(&client, "consumer").await, "node-b");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let reserved = volumes.get("local-b").await.expect("pv");
    let reference = reserved.spec.and_then(|s| s.claim_ref).expect("claimRef");
    assert_eq!(reference.name.as_deref(), Some("cache"));
    let annotations = reserved.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("pv.kubernetes.io/bound-by-controller")
            .map(String::as_str),
        Some("yes")
    );
    // Another claim finds no volume left on any node.
    add_pod(&client, "starved", "100m", with_claim("more")).await;
    assert_eq!(
        failure_of(&client, "starved").await,
        "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    // A volume for it appears in zone a: it is retried and goes there.
    add_volume_of(&client, "local-a", "a", "local").await;
    assert_eq!(node_of(&client, "starved").await, "node-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_locality_prefers_nodes_holding_the_image() {
    let server = common::Server::start();
    let client = server.client().await;
    let images = json!({"status": {"images": [
        {"names": ["registry.example/big:1.0"], "sizeBytes": 900_000_000_i64}]}});
    // Three identical nodes but for the image one of them holds.
    add_node(&client, "plain-1", "4", json!({})).await;
    add_node(&client, "holder", "4", images).await;
    add_node(&client, "plain-2", "4", json!({})).await;
    // The scheduler watches nodes and pods separately: a pod pinned to the
    // holder being bound proves the holder (and its images) has been seen.
    let pinned = json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "holder"}}});
    add_pod(&client, "probe", "100m", pinned).await;
    assert_eq!(node_of(&client, "probe").await, "holder");
    for i in 0..3 {
        let name = format!("big-{i}");
        let image = json!({"spec": {"containers": [{"name": "c",
            "image": "registry.example/big:1.0", "resources": {"requests": {"cpu": "100m"}}}]}});
        add_pod(&client, &name, "100m", image).await;
        // Each lands on the holder: its image score outweighs the slight
        // preference for emptier nodes.
        assert_eq!(node_of(&client, &name).await, "holder", "pod {name}");
    }
}

/// The claim's annotation `key`, once it has one.
async fn annotation_of(claims: &Api<PersistentVolumeClaim>, name: &str, key: &str) -> String {
    common::wait_for(&format!("{name} annotated {key}"), async || {
        let claim = claims.get(name).await.ok()?;
        claim.metadata.annotations?.get(key).cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_claims_of_a_provisioning_class_wait_for_their_provisioner() {
    let server = common::Server::start_cluster(&[]);
    let client = server.client().await;
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "ext"}, "provisioner": "example.com/ext",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [{"matchLabelExpressions": [
            {"key": "topology.kubernetes.io/zone", "values": ["b"]}]}]}))
    .expect("class");
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("create class");
    add_node(&client, "node-a", "4", zone("a")).await;
    add_node(&client, "node-b", "4", zone("b")).await;
    add_claim_of(&client, "fresh", None, "ext").await;
    add_pod(&client, "writer", "100m", with_claim("fresh")).await;

    // No volume exists: the class may provision in zone b only, so the
    // scheduler names node-b on the claim, and the volume controller names
    // the provisioner for it to act on.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let node = annotation_of(&claims, "fresh", "volume.kubernetes.io/selected-node").await;
    assert_eq!(node, "node-b");
    for key in [
        "volume.kubernetes.io/storage-provisioner",
        "volume.beta.kubernetes.io/storage-provisioner",
    ] {
        assert_eq!(
            annotation_of(&claims, "fresh", key).await,
            "example.com/ext"
        );
    }
    common::wait_for_event(
        &client,
        "default",
        ("PersistentVolumeClaim", "fresh"),
        "ExternalProvisioning",
        "the external provisioner 'example.com/ext'",
    )
    .await;
    // The pod is bound only once its claim is.
    stays_pending(&client, "writer").await;

    // The provisioner (this test) gives up: it takes the node off the claim,
    // the scheduler's wait fails and it tries again.
    let mut claim = claims.get("fresh").await.expect("claim");
    if let Some(a) = claim.metadata.annotations.as_mut() {
        a.remove("volume.kubernetes.io/selected-node");
    }
    claims
        .replace("fresh", &PostParams::default(), &claim)
        .await
        .expect("drop selected node");
    // (The pod may have failed before, had the scheduler seen it before
    // its claim; this is the failure of the wait.)
    common::wait_for_event(
        &client,
        "default",
        ("Pod", "writer"),
        "FailedScheduling",
        "running PreBind plugin \"VolumeBinding\": \
         binding volumes: provisioning failed for PVC \"fresh\"",
    )
    .await;
    assert_eq!(
        annotation_of(&claims, "fresh", "volume.kubernetes.io/selected-node").await,
        "node-b"
    );

    // Now it provisions: a volume made for the claim, on the node.
    let uid = claims
        .get("fresh")
        .await
        .expect("claim")
        .metadata
        .uid
        .expect("uid");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": format!("pvc-{uid}"),
            "annotations": {"pv.kubernetes.io/provisioned-by": "example.com/ext"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "ext", "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": "/tmp/provisioned"},
            "claimRef": {"namespace": "default", "name": "fresh", "uid": uid},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}]}}}
    }))
    .expect("pv");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    volumes
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    assert_eq!(node_of(&client, "writer").await, "node-b");
    let bound = claims.get("fresh").await.expect("claim");
    assert_eq!(
        bound.spec.and_then(|s| s.volume_name),
        Some(format!("pvc-{uid}"))
    );
    assert_eq!(bound.status.and_then(|s| s.phase).as_deref(), Some("Bound"));

    // Its claim gone, a provisioned volume waits Released for its
    // provisioner to delete it, instead of failing as a hand-made one does.
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default")
        .delete(
            "writer",
            &kube::api::DeleteParams::default().grace_period(0),
        )
        .await
        .expect("delete pod");
    claims
        .delete("fresh", &kube::api::DeleteParams::default())
        .await
        .expect("delete claim");
    let name = format!("pvc-{uid}");
    common::wait_for("volume released", async || {
        let v = volumes.get(&name).await.ok()?;
        let phase = v.status?.phase?;
        (phase == "Released").then_some(())
    })
    .await;
    stays_released(&volumes, &name).await;
}

/// The volume stays Released rather than moving on to Failed.
async fn stays_released(volumes: &Api<PersistentVolume>, name: &str) {
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let v = volumes.get(name).await.expect("pv");
    assert_eq!(v.status.and_then(|s| s.phase).as_deref(), Some("Released"));
}
