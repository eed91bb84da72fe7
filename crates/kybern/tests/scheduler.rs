//! The scheduler inside `kybern server`, driven through the API with kube-rs:
//! each plugin's effect on where pods go, the `FailedScheduling` message and
//! `PodScheduled` condition, requeue when a node is added, scheduling gates,
//! and two profiles side by side.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn add_node(client: &kube::Client, name: &str, cpu: &str, extra: Value) {
    let mut node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
    });
    json_patch::merge(&mut node, &extra);
    let node: Node = serde_json::from_value(node).expect("node");
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

async fn add_pod(client: &kube::Client, name: &str, cpu: &str, extra: Value) {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu}}}]}
    });
    json_patch::merge(&mut pod, &extra);
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// Waits until the pod is bound and returns its node.
async fn node_of(client: &kube::Client, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pod = pods.get(name).await.expect("get pod");
        if let Some(n) = pod.spec.and_then(|s| s.node_name) {
            return n;
        }
        assert!(Instant::now() < deadline, "pod {name} was not scheduled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the pod's `FailedScheduling` Event and returns its message.
async fn failure_of(client: &kube::Client, name: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .expect("events");
        if let Some(e) = list
            .items
            .iter()
            .rev()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
        {
            return e.message.clone().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no FailedScheduling event for {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the pod stays unbound for a moment.
async fn stays_pending(client: &kube::Client, name: &str) {
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .expect("get");
    assert_eq!(pod.spec.and_then(|s| s.node_name), None, "{name} was bound");
}

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
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {gpu: true}."
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
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."
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
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
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
        "0/3 nodes are available: 3 node(s) didn't match pod topology spread constraints (missing required label)."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_profiles_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  plugins:
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 1}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
"#,
    )
    .expect("write config");
    let server =
        common::Server::start_with(&["--scheduler-config", config.to_str().expect("utf-8 path")]);
    let client = server.client().await;
    add_node(&client, "n1", "4", json!({})).await;
    add_node(&client, "n2", "4", json!({})).await;

    // The default profile spreads (LeastAllocated)...
    add_pod(&client, "spread-1", "1", json!({})).await;
    let first = node_of(&client, "spread-1").await;
    add_pod(&client, "spread-2", "1", json!({})).await;
    assert_ne!(node_of(&client, "spread-2").await, first);
    // ...the bin packer fills the fuller node first (MostAllocated).
    add_pod(
        &client,
        "pack-0",
        "2",
        json!({"spec": {"schedulerName": "bin-packer"}}),
    )
    .await;
    let packed = node_of(&client, "pack-0").await;
    add_pod(
        &client,
        "pack-1",
        "500m",
        json!({"spec": {"schedulerName": "bin-packer"}}),
    )
    .await;
    assert_eq!(node_of(&client, "pack-1").await, packed);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let from = events
        .list(&ListParams::default().fields("involvedObject.name=pack-1"))
        .await
        .expect("events")
        .items
        .into_iter()
        .find_map(|e| e.source.and_then(|s| s.component));
    assert_eq!(from.as_deref(), Some("bin-packer"));
    // A pod for a scheduler nobody runs stays pending.
    add_pod(
        &client,
        "other",
        "100m",
        json!({"spec": {"schedulerName": "someone-else"}}),
    )
    .await;
    stays_pending(&client, "other").await;
}
