//! `kubectl debug` on a `kybern up` node (as root, real runc): the agent
//! starts the ephemeral container in the running pod, in the PID namespace
//! of the container it targets, kubectl attaches to it, and its status and
//! log are the pod's; `hostPID` pods see the host's processes, and
//! `kubectl debug node/…` reaches the host.

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, delete_and_wait, wait_status};
use serde_json::{Value, json};

/// One ephemeral container's status out of a pod status.
fn ephemeral<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["ephemeralContainerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn kubectl_debug_runs_a_container_beside_its_target() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let api = create(
        &client,
        json!({
        "metadata": {"name": "app"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "web", "image": "busybox", "command": ["sleep", "3600"]}]}}),
    )
    .await;
    wait_status(&api, "app", "the app to run", |s| {
        container(s, "web")["state"]["running"].is_object()
    })
    .await;
    // kubectl waits for the container to run, then attaches: what it
    // reads from its input reaches the container, the container's output
    // comes back, and the target's `sleep` is among the processes it sees.
    let out = kubectl.run_with_stdin(
        &[
            "debug",
            "app",
            "-i",
            "--image=busybox",
            "--image-pull-policy=Never",
            "--container=debugger",
            "--target=web",
            "--",
            "sh",
            "-c",
            "read line; echo got $line; ps",
        ],
        Some("hello\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("got hello"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("sleep 3600"),
        "the target's processes are not visible: {stdout}"
    );
    let status = wait_status(&api, "app", "the debugger to end", |s| {
        ephemeral(s, "debugger")["state"]["terminated"].is_object()
    })
    .await;
    let debugger = ephemeral(&status, "debugger");
    assert_eq!(debugger["state"]["terminated"]["exitCode"], 0, "{status}");
    assert_eq!(debugger["restartCount"], 0);
    // It is never restarted, and the pod runs on, ready, as before.
    assert_eq!(status["phase"], "Running");
    assert!(container(&status, "web")["ready"] == true, "{status}");
    let logs = kubectl.ok(&["logs", "app", "-c", "debugger"]);
    assert!(logs.contains("got hello"), "{logs}");
    // Without a target it has a PID namespace of its own.
    kubectl.ok(&[
        "debug",
        "app",
        "--image=busybox",
        "--image-pull-policy=Never",
        "--container=alone",
        "--",
        "sh",
        "-c",
        "echo pid $$; ps",
    ]);
    wait_status(&api, "app", "the second debugger to end", |s| {
        ephemeral(s, "alone")["state"]["terminated"].is_object()
    })
    .await;
    let logs = kubectl.ok(&["logs", "app", "-c", "alone"]);
    assert!(logs.contains("pid 1"), "{logs}");
    assert!(!logs.contains("sleep 3600"), "{logs}");
    delete_and_wait(&api, "app").await;
}

#[tokio::test]
async fn a_host_pid_pod_sees_the_hosts_processes() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let api = create(
        &client,
        json!({
        "metadata": {"name": "hostpid"},
        "spec": {"hostPID": true, "restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox", "command": ["sh", "-c", "echo pid $$"]}]}}),
    )
    .await;
    wait_status(&api, "hostpid", "the pod to finish", |s| {
        s["phase"] == "Succeeded"
    })
    .await;
    let logs = kubectl.ok(&["logs", "hostpid"]);
    let pid: u32 = logs
        .trim()
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {logs:?}"));
    // Its shell is a host process: its PID is the host's, not 1.
    assert!(pid > 1, "{logs}");
    delete_and_wait(&api, "hostpid").await;

    // `kubectl debug node/…` makes such a pod on the node (host PID,
    // network and IPC namespaces, the host's root at /host): it reads the
    // host's PID 1 and its files.
    let out = kubectl.ok(&[
        "debug",
        &format!("node/{}", cluster.node),
        "--image=busybox",
        "--image-pull-policy=Never",
        "--",
        "sh",
        "-c",
        "cat /proc/1/comm /host/etc/hostname",
    ]);
    let pod = out
        .split_whitespace()
        .find(|w| w.starts_with("node-debugger-"))
        .unwrap_or_else(|| panic!("no debugging pod named in {out:?}"))
        .to_owned();
    wait_status(&api, &pod, "the node debugger to finish", |s| {
        s["phase"] == "Succeeded"
    })
    .await;
    let host = |path: &str| std::fs::read_to_string(path).expect("host file");
    assert_eq!(
        kubectl.ok(&["logs", &pod]),
        format!("{}{}", host("/proc/1/comm"), host("/etc/hostname"))
    );
    delete_and_wait(&api, &pod).await;
}
