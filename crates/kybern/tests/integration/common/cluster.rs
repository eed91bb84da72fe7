//! Cluster fixtures for scheduler tests: nodes and pods from JSON, and waits
//! for a pod's node or its `FailedScheduling` message.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

pub async fn add_node(client: &kube::Client, name: &str, cpu: &str, extra: Value) {
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

pub async fn add_pod(client: &kube::Client, name: &str, cpu: &str, extra: Value) {
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
pub async fn node_of(client: &kube::Client, name: &str) -> String {
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
pub async fn failure_of(client: &kube::Client, name: &str) -> String {
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
pub async fn stays_pending(client: &kube::Client, name: &str) {
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .expect("get");
    assert_eq!(pod.spec.and_then(|s| s.node_name), None, "{name} was bound");
}
