//! The eviction, finalize, binding and ephemeralcontainers subresources
//! through kube-rs: budgets refuse evictions they cannot afford, a
//! terminating namespace goes when its `spec.finalizers` are cleared,
//! refusing new content meanwhile, a pod is bound once, ephemeral
//! containers are added under upstream's rules, and the node proxy is
//! authorized as `nodes/proxy` (its agent side is in `node_local_path`).

use crate::common;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_respects_disruption_budgets() {
    let server = common::Server::start();
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .expect("running");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .expect("pdb");
    pdbs.create(&PostParams::default(), &pdb)
        .await
        .expect("create pdb");
    let set_allowed = |n: i32| {
        let pdbs = pdbs.clone();
        async move {
            pdbs.patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"disruptionsAllowed": n, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}})),
            )
            .await
            .expect("pdb status");
        }
    };
    set_allowed(0).await;
    match pods.evict("web-1", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(
                (s.code, s.reason.as_str()),
                (429, "TooManyRequests"),
                "{}",
                s.message
            );
            assert!(s.message.contains("disruption budget"), "{}", s.message);
        }
        other => panic!("eviction should be refused, got {other:?}"),
    }
    assert!(
        pods.get("web-1").await.is_ok(),
        "a refused eviction deletes nothing"
    );
    set_allowed(1).await;
    pods.evict("web-1", &EvictParams::default())
        .await
        .expect("evict");
    assert!(pods.get_opt("web-1").await.expect("get").is_none());
    let spent = pdbs.get("web").await.expect("pdb");
    assert_eq!(spent.status.map(|s| s.disruptions_allowed), Some(0));
    // An eviction of a pod that does not exist is a 404.
    assert!(
        matches!(pods.evict("nope", &EvictParams::default()).await, Err(kube::Error::Api(s)) if s.code == 404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_goes_when_finalize_clears_it() {
    let server = common::Server::start();
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create");
    // Content written while the namespace is open (and the namespaces cache
    // that write checks against is warm).
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "cm-"}})).expect("cm");
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create in an open namespace");
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete");
    // Terminating, and an unrelated update does not remove it.
    namespaces
        .patch(
            "doomed",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("label");
    let terminating = namespaces.get("doomed").await.expect("still there");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    // New content is refused once the server has seen the deletion (its
    // namespace cache follows the store's watch, as upstream's informer does).
    let mut refused = None;
    for _ in 0..50 {
        match config_maps.create(&PostParams::default(), &cm).await {
            Err(kube::Error::Api(e)) => {
                refused = Some(e);
                break;
            }
            Err(other) => panic!("create: {other}"),
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let refused = refused.expect("creates into a terminating namespace are refused");
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert!(
        refused.message.contains("because it is being terminated"),
        "{}",
        refused.message
    );
    // Only the finalize subresource clears them: a write to the namespace
    // itself leaves its spec alone, as upstream.
    namespaces
        .patch(
            "doomed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"finalizers": []}})),
        )
        .await
        .expect("patch");
    let kept = namespaces.get("doomed").await.expect("get");
    assert_eq!(
        kept.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_owned()])
    );
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "doomed"}, "spec": {"finalizers": []}}))
    .expect("body");
    let request = http::Request::put("/api/v1/namespaces/doomed/finalize")
        .header("Content-Type", "application/json")
        .body(body)
        .expect("request");
    let _: serde_json::Value = client.request(request).await.expect("finalize");
    assert!(
        namespaces.get_opt("doomed").await.expect("get").is_none(),
        "cleared namespace is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_assigns_a_pod_once() {
    use k8s_openapi::api::core::v1::Pod;
    // No scheduler: finding no node, it would mark the pod unschedulable
    // just after the test's binding, racing the assertions.
    let server = common::Server::start_with(&["--disable-scheduler"]);
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let bind = |node: &str| {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}});
        http::Request::post("/api/v1/namespaces/default/pods/p/binding")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).expect("json"))
            .expect("request")
    };
    client
        .request_text(bind("node-1"))
        .await
        .expect("first binding");
    let bound = pods.get("p").await.expect("get");
    assert_eq!(
        bound.spec.and_then(|s| s.node_name).as_deref(),
        Some("node-1")
    );
    let scheduled = bound.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        scheduled
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    match client.request_text(bind("node-2")).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("a second binding must conflict, got {other:?}"),
    }
}

/// The status code, reason and causes' fields of a failed write.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("the write should have been refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_containers_come_only_through_their_subresource() {
    let server = common::Server::start_with(&["--disable-scheduler"]);
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"containers": [{"name": "web", "image": "busybox"}]}
    }))
    .expect("pod");
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let generation = created.metadata.generation.expect("generation");
    let add = |containers: serde_json::Value| {
        let pods = pods.clone();
        async move {
            pods.patch_subresource(
                "ephemeralcontainers",
                "app",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"ephemeralContainers": containers}})),
            )
            .await
        }
    };
    let debugger = json!({"name": "debugger", "image": "busybox", "targetContainerName": "web",
        "stdin": true, "tty": true});
    let added = add(json!([debugger])).await.expect("add a debug container");
    let spec = serde_json::to_value(added.spec.expect("spec")).expect("json");
    let ec = &spec["ephemeralContainers"][0];
    assert_eq!(
        (
            &ec["name"],
            &ec["targetContainerName"],
            &ec["terminationMessagePolicy"]
        ),
        (&json!("debugger"), &json!("web"), &json!("File")),
        "{spec}"
    );
    assert_eq!(added.metadata.generation, Some(generation + 1));
    // The write changed nothing but the ephemeral containers.
    let through_sub = add(
        json!([{"name": "debugger", "image": "busybox", "targetContainerName": "web",
        "stdin": true, "tty": true}, {"name": "second", "image": "busybox"}]),
    )
    .await
    .expect("add a second one");
    assert_eq!(
        through_sub.spec.as_ref().map(|s| s.containers.len()),
        Some(1)
    );
    // Existing ones stay as they are.
    let (code, reason, message) = refusal(
        add(
            json!([{"name": "debugger", "image": "busybox:2", "targetContainerName": "web",
            "stdin": true, "tty": true}]),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(message.contains("may not be changed"), "{message}");
    // Upstream's rules for a new one: a unique name, a target that exists,
    // nothing that would make it part of the pod's service.
    for (bad, field) in [
        (
            json!({"name": "web", "image": "busybox"}),
            "name: Duplicate value",
        ),
        (
            json!({"name": "t", "image": "busybox", "targetContainerName": "nope"}),
            "targetContainerName: Not found",
        ),
        (
            json!({"name": "p", "image": "busybox", "ports": [{"containerPort": 80}]}),
            "ports: Forbidden: cannot be set for an Ephemeral Container",
        ),
    ] {
        let (code, _, message) = refusal(add(json!([bad])).await);
        assert_eq!(code, 422, "{message}");
        assert!(message.contains(field), "{field} not in {message}");
    }
    // The pod itself may not take them.
    let mut current = serde_json::to_value(pods.get("app").await.expect("get")).expect("json");
    current["spec"]["ephemeralContainers"]
        .as_array_mut()
        .expect("ephemeral containers")
        .push(json!({"name": "sneaky", "image": "busybox"}));
    let replaced: Pod = serde_json::from_value(current).expect("pod");
    let (code, _, message) = refusal(pods.replace("app", &PostParams::default(), &replaced).await);
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("pod updates may not change fields"),
        "{message}"
    );
    let mut fresh = pod.clone();
    fresh.metadata.name = Some("fresh".into());
    fresh.spec.as_mut().expect("spec").ephemeral_containers = Some(vec![
        serde_json::from_value(json!({"name": "d", "image": "busybox"})).expect("ec"),
    ]);
    let (code, _, message) = refusal(pods.create(&PostParams::default(), &fresh).await);
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("cannot be set on create"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_proxy_is_authorized_and_needs_an_agent() {
    let server = common::Server::start();
    let client = server.client().await;
    let kubectl = crate::common::cli::Cli::kubectl(&server);
    crate::common::cluster::add_node(&client, "n1", "4", json!({})).await;
    // Listed in discovery with upstream's kind and verbs.
    let core: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", "/api/v1"])).expect("discovery");
    let proxy = core["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "nodes/proxy"))
        .cloned()
        .expect("nodes/proxy listed");
    assert_eq!(proxy["kind"], "NodeProxyOptions");
    assert_eq!(
        proxy["verbs"],
        json!(["create", "delete", "get", "patch", "update"])
    );
    // A node that publishes no agent endpoint cannot be reached.
    let err = kubectl.fails(&["get", "--raw", "/api/v1/nodes/n1/proxy/stats/summary"]);
    assert!(
        err.contains("(ServiceUnavailable)") && err.contains("node n1 publishes no agent endpoint"),
        "{err}"
    );
    let err = kubectl.fails(&["get", "--raw", "/api/v1/nodes/nope/proxy/stats/summary"]);
    assert!(err.contains("(NotFound)"), "{err}");
    // An account without `nodes/proxy` is refused before any agent is asked.
    kubectl.ok(&["create", "serviceaccount", "viewer"]);
    let token = kubectl.ok(&["create", "token", "viewer"]);
    let viewer = common::client_with_token(&server.kubeconfig(), token.trim()).await;
    let request = http::Request::delete("/api/v1/nodes/n1/proxy/localPath/pvc-x")
        .body(Vec::new())
        .expect("request");
    match viewer.request_text(request).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains(
                    "cannot delete resource \"nodes/proxy\" in API group \"\" at the cluster scope"
                ),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
}
