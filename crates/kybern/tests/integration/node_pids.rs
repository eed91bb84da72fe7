//! The pod's own cgroup, as root with real runc: the pod pids limit
//! (`--pod-max-pids`, the kubelet's podPidsLimit), which a pod cannot fork
//! past, and the pod-level CPU and memory limits from its containers'.

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

/// A v1 hierarchy's file of the pod cgroup `rel` (the test machine's kind).
fn v1_file(controller: &str, rel: &str, file: &str) -> String {
    let path = std::path::Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(rel)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_pod_cgroup_holds_the_sum_of_its_containers_limits() {
    if !std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("skipped: reads cgroup v1 files");
        return;
    }
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let limited = json!({"limits": {"cpu": "250m", "memory": "32Mi"}});
    let sleeper = |name: &str, resources: &serde_json::Value| {
        json!({"name": name, "image": "busybox", "command": ["sleep", "3600"],
            "resources": resources})
    };
    let api = create(
        &client,
        json!({"metadata": {"name": "capped"},
        "spec": {"terminationGracePeriodSeconds": 0,
            "containers": [sleeper("a", &limited), sleeper("b", &limited)]}}),
    )
    .await;
    create(
        &client,
        json!({"metadata": {"name": "open"},
        "spec": {"terminationGracePeriodSeconds": 0,
            "containers": [sleeper("a", &limited), sleeper("b", &json!({}))]}}),
    )
    .await;
    for name in ["capped", "open"] {
        wait_status(&api, name, "the containers to run", |s| {
            ["a", "b"]
                .iter()
                .all(|c| container(s, c)["state"]["running"].is_object())
        })
        .await;
    }
    let uid = |name: &str| {
        let api = api.clone();
        let name = name.to_owned();
        async move {
            api.get(&name)
                .await
                .expect("pod")
                .metadata
                .uid
                .expect("uid")
        }
    };
    // Guaranteed: the pod is held to both containers' limits together.
    let capped = format!("kubepods/pod{}", uid("capped").await);
    assert_eq!(
        v1_file("memory", &capped, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(v1_file("cpu", &capped, "cpu.cfs_quota_us"), "50000");
    assert_eq!(v1_file("cpu", &capped, "cpu.shares"), "512");
    // Burstable with a container without limits: only the shares.
    let open = format!("kubepods/burstable/pod{}", uid("open").await);
    assert_eq!(v1_file("cpu", &open, "cpu.cfs_quota_us"), "-1");
    assert!(
        v1_file("memory", &open, "memory.limit_in_bytes")
            .parse::<u64>()
            .expect("number")
            > 1 << 40
    );
    assert_eq!(v1_file("cpu", &open, "cpu.shares"), "256");
    for name in ["capped", "open"] {
        delete_and_wait(&api, name).await;
    }
}
