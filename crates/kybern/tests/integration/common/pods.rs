//! Pods in a `kybern up` cluster: create, wait for a status, delete, read
//! a container's log file on the node.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::Value;

use super::node::NodeCluster;
use super::wait_for;

/// Creates a pod in `default` from JSON.
pub async fn create(client: &kube::Client, pod: Value) -> Api<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    api
}

/// The pod's status as JSON.
pub async fn status_of(api: &Api<Pod>, name: &str) -> Value {
    let pod = api.get(name).await.expect("get pod");
    serde_json::to_value(pod.status.unwrap_or_default()).expect("status")
}

/// Waits until `check` holds for the pod's status; returns the status.
pub async fn wait_status(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, async || {
        let s = status_of(api, name).await;
        check(&s).then_some(s)
    })
    .await
}

/// One container's status out of a pod status.
pub fn container<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Deletes the pod and waits until it is gone from the API.
pub async fn delete_and_wait(api: &Api<Pod>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(api, name).await;
}

/// Waits until the pod is gone from the API.
pub async fn wait_gone(api: &Api<Pod>, name: &str) {
    wait_for("the pod to be gone", async || {
        api.get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

/// The CRI log file of one run of a container, read on the node.
pub fn log_of(cluster: &NodeCluster, uid: &str, container: &str, attempt: u32) -> String {
    let path = cluster
        .dir
        .path()
        .join(format!("agent/pods/{uid}/logs/{container}/{attempt}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}
