//! The scheduler's profiles and priorities through the API: two profiles side
//! by side, PriorityClass admission, and preemption (victims chosen with
//! disruption budgets respected, `nominatedNodeName`, `preemptionPolicy: Never`).

use crate::common;
use std::time::Duration;

use crate::common::cluster::{add_node, add_pod, failure_of, node_of, stays_pending};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

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
    // The Scheduled event is written after the binding: wait for it.
    let from = common::wait_for("pack-1's Scheduled event", async || {
        events
            .list(&ListParams::default().fields("involvedObject.name=pack-1"))
            .await
            .expect("events")
            .items
            .into_iter()
            .find_map(|e| e.source.and_then(|s| s.component))
    })
    .await;
    assert_eq!(from, "bin-packer");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_classes_and_preemption() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::scheduling::v1::PriorityClass;

    let server = common::Server::start();
    let client = server.client().await;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for (name, value) in [("low", 100), ("high", 1000)] {
        let pc: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))
                .expect("pc");
        classes
            .create(&PostParams::default(), &pc)
            .await
            .expect("class");
    }
    // The system classes exist from the start.
    let critical = classes
        .get("system-node-critical")
        .await
        .expect("system class");
    assert_eq!(critical.value, 2_000_001_000);

    // Admission resolves the class into spec.priority; an unknown class is refused.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bogus: Pod = serde_json::from_value(json!({"metadata": {"name": "bogus"},
        "spec": {"priorityClassName": "nope", "containers": [{"name": "c", "image": "x"}]}}))
    .expect("pod");
    match pods.create(&PostParams::default(), &bogus).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert!(
                e.message
                    .contains("no PriorityClass with name nope was found"),
                "{}",
                e.message
            );
        }
        other => panic!("an unknown class was accepted: {other:?}"),
    }

    add_node(&client, "n1", "2", json!({})).await;
    let low = |app: &str| {
        json!({"metadata": {"labels": {"app": app}},
            "spec": {"priorityClassName": "low", "terminationGracePeriodSeconds": 0}})
    };
    add_pod(&client, "guarded", "1", low("guarded")).await;
    add_pod(&client, "plain", "1", low("plain")).await;
    node_of(&client, "guarded").await;
    node_of(&client, "plain").await;
    let guarded = pods.get("guarded").await.expect("get");
    assert_eq!(guarded.spec.and_then(|s| s.priority), Some(100));

    // A budget over `guarded` (no disruptions allowed) makes `plain` the victim.
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "keep"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .expect("pdb");
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pdb)
        .await
        .expect("pdb");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A pod that never preempts only waits.
    add_pod(
        &client,
        "polite",
        "1",
        json!({"spec": {"priorityClassName": "high",
        "preemptionPolicy": "Never"}}),
    )
    .await;
    assert_eq!(
        failure_of(&client, "polite").await,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    pods.delete("polite", &DeleteParams::default())
        .await
        .expect("delete");

    add_pod(
        &client,
        "urgent",
        "1",
        json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    assert_eq!(node_of(&client, "urgent").await, "n1");
    assert!(
        pods.get_opt("plain").await.expect("get").is_none(),
        "the victim is gone"
    );
    assert!(
        pods.get_opt("guarded").await.expect("get").is_some(),
        "the budget kept guarded"
    );
    let urgent = pods.get("urgent").await.expect("get");
    assert_eq!(
        urgent.status.and_then(|s| s.nominated_node_name).as_deref(),
        Some("n1")
    );
    let preempted = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields("involvedObject.name=plain"))
        .await
        .expect("events")
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("Preempted"))
        .expect("Preempted event");
    assert!(
        preempted
            .message
            .as_deref()
            .unwrap_or("")
            .ends_with("on node n1"),
        "{:?}",
        preempted.message
    );

    // A low pod cannot preempt its peers.
    add_pod(&client, "late", "1", low("late")).await;
    assert_eq!(
        failure_of(&client, "late").await,
        "0/1 nodes are available: 1 Insufficient cpu. \
         preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
}
