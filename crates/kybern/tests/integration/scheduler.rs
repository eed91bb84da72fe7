//! The scheduler inside `kybern server`, driven through the API with kube-rs:
//! each plugin's effect on where pods go, the `FailedScheduling` message and
//! `PodScheduled` condition, requeue when a node is added, scheduling gates.

use crate::common;
use std::time::{Duration, Instant};

use crate::common::cluster::{add_node, add_pod, failure_of, node_of, stays_pending};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_taints_events_conditions_and_requeue() {
    let server = common::Server::start();
    let client = server.client().await;
    add_node(&client, "small", "2", json!({})).await;
    add_node(
        &client,
        "gpu",
        "8",
        json!({"spec": {"taints": [
        {"key": "gpu", "value": "true", "effect": "NoSchedule"}]}}),
    )
    .await;

    add_pod(&client, "fits", "1", json!({})).await;
    assert_eq!(node_of(&client, "fits").await, "small");
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get("fits")
        .await
        .expect("get");
    let scheduled = pod
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled condition");
    assert_eq!(scheduled.status, "True");

    // Too big for `small` (1 of 2 CPUs left), and `gpu` is tainted.
    add_pod(&client, "big", "3", json!({})).await;
    assert_eq!(
        failure_of(&client, "big").await,
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {gpu: true}. \
         preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
         1 Preemption is not helpful for scheduling."
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pod = Api::<Pod>::namespaced(client.clone(), "default")
            .get("big")
            .await
            .expect("get");
        let cond = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled");
        if let Some(c) = cond {
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref()),
                ("False", Some("Unschedulable"))
            );
            break;
        }
        assert!(Instant::now() < deadline, "no PodScheduled=False condition");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A node that fits arrives: the unschedulable pod is tried again.
    add_node(&client, "large", "4", json!({})).await;
    assert_eq!(node_of(&client, "big").await, "large");

    // A toleration opens the tainted node; LeastAllocated prefers its 8 free CPUs.
    add_pod(
        &client,
        "tolerant",
        "1",
        json!({"spec": {"tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}),
    )
    .await;
    assert_eq!(node_of(&client, "tolerant").await, "gpu");

    // Extended resources.
    add_node(
        &client,
        "accel",
        "1",
        json!({"status": {"allocatable": {"example.com/fpga": "1"}}}),
    )
    .await;
    add_pod(
        &client,
        "fpga",
        "100m",
        json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": "100m", "example.com/fpga": "1"},
                      "limits": {"example.com/fpga": "1"}}}]}}),
    )
    .await;
    assert_eq!(node_of(&client, "fpga").await, "accel");

    let scheduled: Vec<Event> = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields("involvedObject.name=fits"))
        .await
        .expect("events")
        .items;
    let e = scheduled
        .iter()
        .find(|e| e.reason.as_deref() == Some("Scheduled"))
        .expect("Scheduled event");
    assert_eq!(
        e.message.as_deref(),
        Some("Successfully assigned default/fits to small")
    );
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("default-scheduler")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_affinity_cordons_ports_and_gates() {
    let server = common::Server::start();
    let client = server.client().await;
    add_node(
        &client,
        "a1",
        "4",
        json!({"metadata": {"labels": {"zone": "a", "disk": "ssd"}}}),
    )
    .await;
    add_node(
        &client,
        "b1",
        "4",
        json!({"metadata": {"labels": {"zone": "b"}}}),
    )
    .await;
    add_node(
        &client,
        "c1",
        "4",
        json!({"metadata": {"labels": {"zone": "c"}},
        "spec": {"unschedulable": true}}),
    )
    .await;

    add_pod(
        &client,
        "ssd",
        "100m",
        json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
    )
    .await;
    assert_eq!(node_of(&client, "ssd").await, "a1");

    add_pod(
        &client,
        "in-b",
        "100m",
        json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b", "c"]}]}]}}}}}),
    )
    .await;
    // c1 is cordoned.
    assert_eq!(node_of(&client, "in-b").await, "b1");

    add_pod(
        &client,
        "prefers-c",
        "100m",
        json!({"spec": {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference":
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}}}),
    )
    .await;
    assert_eq!(node_of(&client, "prefers-c").await, "a1");

    add_pod(
        &client,
        "nowhere",
        "100m",
        json!({"spec": {"nodeSelector": {"zone": "z"}}}),
    )
    .await;
    assert_eq!(
        failure_of(&client, "nowhere").await,
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );

    // Host ports: the second pod wanting 8080 goes to the other schedulable node.
    let port = json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
    add_pod(&client, "port-1", "100m", port.clone()).await;
    add_pod(&client, "port-2", "100m", port.clone()).await;
    let (p1, p2) = (
        node_of(&client, "port-1").await,
        node_of(&client, "port-2").await,
    );
    assert_ne!(p1, p2);
    add_pod(&client, "port-3", "100m", port).await;
    assert!(
        failure_of(&client, "port-3")
            .await
            .contains("2 node(s) didn't have free ports for the requested pod ports"),
    );

    // Scheduling gates hold a pod until they are removed.
    add_pod(
        &client,
        "gated",
        "100m",
        json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}]}}),
    )
    .await;
    stays_pending(&client, "gated").await;
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch(
            "gated",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedulingGates": null}})),
        )
        .await
        .expect("lift the gate");
    node_of(&client, "gated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_affinity_anti_affinity_and_topology_spread() {
    let server = common::Server::start();
    let client = server.client().await;
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        add_node(
            &client,
            name,
            "4",
            json!({"metadata": {"labels": {"zone": zone}}}),
        )
        .await;
    }
    // One web pod per host.
    let anti = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": "web"}}}]}}}});
    let mut hosts = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        add_pod(&client, &name, "100m", anti.clone()).await;
        hosts.push(node_of(&client, &name).await);
    }
    hosts.sort();
    assert_eq!(hosts, vec!["a1", "a2", "b1"]);
    add_pod(&client, "web-3", "100m", anti).await;
    assert_eq!(
        failure_of(&client, "web-3").await,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );

    // A cache pod that must share a zone with db pods.
    add_pod(
        &client,
        "db",
        "100m",
        json!({"metadata": {"labels": {"app": "db"}},
        "spec": {"nodeSelector": {"zone": "b"}}}),
    )
    .await;
    assert_eq!(node_of(&client, "db").await, "b1");
    add_pod(
        &client,
        "cache",
        "100m",
        json!({"spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone",
            "labelSelector": {"matchLabels": {"app": "db"}}}]}}}}),
    )
    .await;
    assert_eq!(node_of(&client, "cache").await, "b1");
    // An existing pod's anti-affinity keeps newcomers away from its zone.
    add_pod(
        &client,
        "loner",
        "100m",
        json!({"metadata": {"labels": {"app": "loner"}},
        "spec": {"nodeSelector": {"zone": "a"}, "affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone",
            "labelSelector": {"matchLabels": {"app": "noisy"}}}]}}}}),
    )
    .await;
    node_of(&client, "loner").await;
    add_pod(
        &client,
        "noisy",
        "100m",
        json!({"metadata": {"labels": {"app": "noisy"}}}),
    )
    .await;
    assert_eq!(node_of(&client, "noisy").await, "b1");

    // Spread: zone a holds 3 pods of these (a1, a2) and b holds 3; maxSkew 1 over
    // zones with DoNotSchedule alternates zones.
    let spread = json!({"metadata": {"labels": {"app": "spread"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"app": "spread"}}}]}});
    let mut zones = Vec::new();
    for i in 0..4 {
        let name = format!("spread-{i}");
        add_pod(&client, &name, "100m", spread.clone()).await;
        let node = node_of(&client, &name).await;
        zones.push(if node.starts_with('a') { "a" } else { "b" });
    }
    for pair in zones.chunks(2) {
        assert_ne!(pair[0], pair[1], "zones {zones:?} are not spread");
    }
    // A constraint on a key no node has cannot be met.
    add_pod(
        &client,
        "unspreadable",
        "100m",
        json!({"metadata": {"labels": {"app": "u"}},
        "spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "rack",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "u"}}}]}}),
    )
    .await;
    assert_eq!(
        failure_of(&client, "unspreadable").await,
        "0/3 nodes are available: 3 node(s) didn't match pod topology spread constraints (missing required label). \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}
