//! Node lifecycle, disruption budgets and pod garbage collection inside
//! `kybern server`, with the scheduler and simulated nodes: a node that stops
//! heartbeating turns Unknown, is tainted, and its pods are evicted after
//! their tolerationSeconds and recreated elsewhere; `kubectl cordon`, `drain`
//! (through evictions a PodDisruptionBudget paces) and `uncordon` work; pods
//! bound to a deleted node are collected.

use crate::common;
use crate::common::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn deployment(name: &str, replicas: i32, tolerations: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0, "tolerations": tolerations,
                         "containers": [{"name": "c", "image": "registry.local/web:1"}]},
            },
        },
    }))
    .expect("deployment")
}

/// Ready, not-terminating pods of `app`, by node.
async fn placement(api: &Api<Pod>, app: &str) -> Vec<String> {
    let list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list");
    let mut nodes: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    nodes.sort();
    nodes
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_and_its_pods_move_after_their_toleration() {
    let server = common::Server::start_cluster(&["--node-monitor-grace-period", "3"]);
    let _sim = common::sim::start(
        &server,
        &["--nodes", "2", "--heartbeat-seconds", "1", "--zones", "1"],
    );
    let client = server.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let tolerate = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 2}]);
    deployments
        .create(&PostParams::default(), &deployment("web", 4, tolerate))
        .await
        .expect("create");
    let before = wait_for("4 ready pods", async || {
        let p = placement(&pods, "web").await;
        (p.len() == 4).then_some(p)
    })
    .await;
    let victim = before[0].clone();
    let survivor = if victim == "sim-0" { "sim-1" } else { "sim-0" };

    // The sim stops heartbeating a node labelled so.
    nodes
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"sim.kybern.io/heartbeat": "stopped"}}})),
        )
        .await
        .expect("label");
    let silent = wait_for("the node Unknown and tainted", async || {
        let n = nodes.get(&victim).await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_deref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        let t = taint_keys(&n);
        (ready.status == "Unknown" && t.len() == 2).then_some((ready, t))
    })
    .await;
    assert_eq!(silent.0.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        silent.1,
        [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute"
        ]
    );
    // Evicted after two seconds' toleration, replaced on the live node.
    wait_for("every pod on the live node", async || {
        let p = placement(&pods, "web").await;
        (p.len() == 4 && p.iter().all(|n| n == survivor)).then_some(())
    })
    .await;
    // What happened is in the Events: the node's (which live in `default`,
    // a node having no namespace) and the evicted pods'.
    let ev = |object, reason, message| {
        common::wait_for_event(&client, "default", object, reason, message)
    };
    ev(
        ("Node", victim.as_str()),
        "RegisteredNode",
        "Registered Node",
    )
    .await;
    let not_ready = ev(
        ("Node", victim.as_str()),
        "NodeNotReady",
        &format!("Node {victim} status is now: NodeNotReady"),
    )
    .await;
    assert_eq!(
        not_ready.source.and_then(|s| s.component).as_deref(),
        Some("node-controller")
    );
    let evicted = wait_for("an evicted pod's Event", async || {
        let list = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "default")
            .list(&ListParams::default().fields("reason=TaintManagerEviction"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    assert!(
        evicted
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("Marking for deletion Pod default/web-")),
        "{evicted:?}"
    );
    assert_eq!(evicted.involved_object.kind.as_deref(), Some("Pod"));
    // And in the metrics, per zone: two nodes, one of them not Ready, and
    // the pods evicted from it.
    let k = common::cli::Cli::kubectl(&server);
    let metrics = k.ok(&["get", "--raw", "/metrics"]);
    let sample = |line: &str| -> f64 {
        common::metric_sample(&metrics, line).unwrap_or_else(|| panic!("no {line} in /metrics"))
    };
    assert_eq!(sample("node_collector_zone_size{zone=\":zone-0\"}"), 2.0);
    assert_eq!(
        sample("node_collector_unhealthy_nodes_in_zone{zone=\":zone-0\"}"),
        1.0
    );
    assert_eq!(sample("node_collector_zone_health{zone=\":zone-0\"}"), 50.0);
    assert!(sample("node_collector_evictions_total{zone=\":zone-0\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drains_a_node_within_its_disruption_budget() {
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "2"]);
    let client = server.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("web", 3, json!([])))
        .await
        .expect("create");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .expect("pdb");
    budgets
        .create(&PostParams::default(), &pdb)
        .await
        .expect("pdb");
    let st = wait_for("the budget allows one disruption", async || {
        let st = budgets.get("web").await.ok()?.status?;
        (st.current_healthy == 3).then_some(st)
    })
    .await;
    assert_eq!(
        (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
        (3, 2, 1)
    );
    let condition = &st.conditions.expect("conditions")[0];
    assert_eq!(
        (condition.type_.as_str(), condition.status.as_str()),
        ("DisruptionAllowed", "True")
    );
    let before = placement(&pods, "web").await;
    let target = before[0].clone();

    let k = common::cli::Cli::kubectl(&server);
    k.ok(&["cordon", &target]);
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("the cordon taint", async || {
        let n = nodes.get(&target).await.ok()?;
        taint_keys(&n)
            .contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_owned())
            .then_some(())
    })
    .await;
    // Each eviction waits for the budget: one pod down at a time.
    let out = k.ok(&["drain", &target, "--ignore-daemonsets", "--timeout=90s"]);
    assert!(out.contains("drained"), "{out}");
    let after = wait_for("three ready pods off the drained node", async || {
        let p = placement(&pods, "web").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    assert!(after.iter().all(|n| *n != target), "{after:?}");
    k.ok(&["uncordon", &target]);
    wait_for("the cordon taint gone", async || {
        let n = nodes.get(&target).await.ok()?;
        (taint_keys(&n).is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_deleted_node_are_collected() {
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let client = server.client().await;
    common::cluster::add_node(&client, "ghost", "4", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stranded"},
        "spec": {"nodeName": "ghost", "containers": [{"name": "c", "image": "registry.local/x:1"}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    Api::<Node>::all(client.clone())
        .delete("ghost", &DeleteParams::default())
        .await
        .expect("delete node");
    wait_for("the stranded pod collected", async || {
        pods.get_opt("stranded").await.ok()?.is_none().then_some(())
    })
    .await;
}
