//! gRPC and HTTPS probes of real containers (as root): readiness follows
//! endpoints that the test switches between healthy and unhealthy. The pod
//! uses the host's network, so its IP is the node's loopback address, where
//! the test serves both endpoints.

use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, delete_and_wait, status_of, wait_status};
use crate::common::probe_targets::ProbeTargets;
use serde_json::json;

#[tokio::test]
async fn grpc_and_https_probes_decide_readiness() {
    let targets = ProbeTargets::start().await;
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let api = create(&client, json!({
        "metadata": {"name": "remote-probed"},
        "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1, "containers": [
            {"name": "grpc", "image": "busybox", "command": ["sleep", "3600"],
             "readinessProbe": {"grpc": {"port": targets.grpc_port}, "periodSeconds": 1, "failureThreshold": 2}},
            {"name": "tls", "image": "busybox", "command": ["sleep", "3600"],
             "readinessProbe": {"httpGet": {"scheme": "HTTPS", "path": "/healthz", "port": targets.https_port},
                                "periodSeconds": 1, "failureThreshold": 2}}]}})).await;

    wait_status(&api, "remote-probed", "both containers to run", |s| {
        ["grpc", "tls"]
            .iter()
            .all(|c| container(s, c)["state"]["running"].is_object())
    })
    .await;
    // Several periods of NOT_SERVING and 503: neither may be ready.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let unhealthy = status_of(&api, "remote-probed").await;
    assert_eq!(container(&unhealthy, "grpc")["ready"], false, "{unhealthy}");
    assert_eq!(container(&unhealthy, "tls")["ready"], false, "{unhealthy}");

    targets.set_healthy(true);
    let ready = wait_status(&api, "remote-probed", "both to become ready", |s| {
        container(s, "grpc")["ready"] == true && container(s, "tls")["ready"] == true
    })
    .await;
    assert_eq!(container(&ready, "grpc")["restartCount"], 0);

    targets.set_healthy(false);
    wait_status(&api, "remote-probed", "both to turn unready", |s| {
        container(s, "grpc")["ready"] == false && container(s, "tls")["ready"] == false
    })
    .await;
    delete_and_wait(&api, "remote-probed").await;
    assert!(cluster.runc_containers().is_empty());
}
