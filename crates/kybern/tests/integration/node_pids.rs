//! The pod pids limit (`--pod-max-pids`, the kubelet's podPidsLimit), as
//! root with real runc: the pod's cgroup carries it, and a pod cannot fork
//! past it.

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, delete_and_wait, wait_status};
use serde_json::json;

#[tokio::test]
async fn a_pod_cannot_fork_past_the_pod_pids_limit() {
    let cluster = NodeCluster::start_configured(None, &["--pod-max-pids", "16"]);
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let api = create(
        &client,
        json!({
        "metadata": {"name": "forker"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}),
    )
    .await;
    wait_status(&api, "forker", "the container to run", |s| {
        container(s, "c")["state"]["running"].is_object()
    })
    .await;
    let uid = api
        .get("forker")
        .await
        .expect("pod")
        .metadata
        .uid
        .expect("uid");
    let rel = format!("kubepods/besteffort/pod{uid}/pids.max");
    let v1 = std::path::Path::new("/sys/fs/cgroup/pids").join(&rel);
    let file = if v1.exists() {
        v1
    } else {
        std::path::Path::new("/sys/fs/cgroup").join(&rel)
    };
    assert_eq!(
        std::fs::read_to_string(&file).expect("pids.max").trim(),
        "16"
    );
    // 40 background processes do not fit in 16.
    let out = kubectl.run(&[
        "exec",
        "forker",
        "--",
        "sh",
        "-c",
        "for i in $(seq 40); do sleep 30 >/dev/null 2>&1 & done; echo spawned",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fork"), "no fork failure: {stderr}");
    delete_and_wait(&api, "forker").await;
    assert!(!file.exists(), "the pod cgroup outlived the pod");
}
