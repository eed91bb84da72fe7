//! RuntimeClasses (as root, real runc): a pod runs under its class's
//! handler (a second runc behind a wrapper that logs its calls), gets the
//! class's overhead and scheduling; a class whose handler the node lacks
//! keeps its pod waiting; a missing class is refused at admission.

use std::os::unix::fs::PermissionsExt;

use crate::common::cli::Cli;
use crate::common::node::{NodeCluster, runc_list};
use crate::common::pods::{container, create, delete_and_wait, wait_status};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
async fn pods_run_under_their_runtime_class_handler() {
    // The "alt" handler is runc behind a script that records its calls.
    let bin = tempfile::tempdir().expect("tempdir");
    let calls = bin.path().join("calls.log");
    let wrapper = bin.path().join("alt-runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec runc \"$@\"\n",
            calls.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let handler = format!("alt={}", wrapper.display());
    let cluster = NodeCluster::start_configured(None, &["--runtime-handler", &handler]);
    let client = cluster.client().await;

    let classes: Api<RuntimeClass> = Api::all(client.clone());
    for (name, handler) in [("alt", "alt"), ("elsewhere", "nope")] {
        let class = serde_json::from_value(json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": name}, "handler": handler,
            "overhead": {"podFixed": {"cpu": "10m", "memory": "8Mi"}},
            "scheduling": {"nodeSelector": {"kubernetes.io/os": "linux"}}}))
        .expect("class");
        classes
            .create(&PostParams::default(), &class)
            .await
            .expect("create class");
    }

    let api = create(
        &client,
        json!({
        "metadata": {"name": "alt-pod"},
        "spec": {"runtimeClassName": "alt", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}),
    )
    .await;
    let pod = api.get("alt-pod").await.expect("get");
    let spec = serde_json::to_value(pod.spec).expect("spec");
    assert_eq!(spec["overhead"], json!({"cpu": "10m", "memory": "8Mi"}));
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux");
    wait_status(&api, "alt-pod", "the container to run", |s| {
        container(s, "c")["state"]["running"].is_object()
    })
    .await;
    let alt_root = cluster.dir.path().join("agent/runtimes/alt");
    let alt = runc_list(&alt_root);
    assert_eq!(alt.len(), 1, "one container under the alt handler: {alt:?}");
    assert!(
        cluster.runc_containers().is_empty(),
        "nothing under runc's own root"
    );
    let logged = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        logged.contains(&alt[0]),
        "the wrapper ran the container: {logged}"
    );
    // exec goes through the pod's handler too.
    let kubectl = Cli::kubectl_for(&cluster);
    assert_eq!(
        kubectl
            .ok(&["exec", "alt-pod", "--", "echo", "inside"])
            .trim(),
        "inside"
    );
    assert!(
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" exec ")),
        "exec used the alt handler"
    );

    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(&cluster.node).await.expect("node");
    let handlers: Vec<String> = node
        .status
        .and_then(|s| s.runtime_handlers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| h.name)
        .collect();
    assert_eq!(handlers, ["alt", "runc"]);

    // A handler this node does not have: the pod waits, saying why.
    create(
        &client,
        json!({
        "metadata": {"name": "no-handler"},
        "spec": {"runtimeClassName": "elsewhere", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}),
    )
    .await;
    let waiting = wait_status(&api, "no-handler", "the sandbox error", |s| {
        container(s, "c")["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no runtime for \"nope\" is configured"))
    })
    .await;
    assert_eq!(waiting["phase"], "Pending");
    assert_eq!(
        container(&waiting, "c")["state"]["waiting"]["reason"],
        "ContainerCreating"
    );

    // A class that does not exist: refused at admission, as upstream.
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "no-class"},
        "spec": {"runtimeClassName": "absent",
                 "containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod");
    match api.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert_eq!(
                e.message,
                "pods \"no-class\" is forbidden: pod rejected: RuntimeClass \"absent\" not found"
            );
        }
        other => panic!("a pod with a missing RuntimeClass was not refused: {other:?}"),
    }

    delete_and_wait(&api, "alt-pod").await;
    delete_and_wait(&api, "no-handler").await;
    assert!(runc_list(&alt_root).is_empty());
}
