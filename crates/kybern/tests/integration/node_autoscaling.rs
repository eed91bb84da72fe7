//! The HorizontalPodAutoscaler on a `kybern up` node (as root, real runc):
//! busy pods' CPU use, read through `metrics.k8s.io`, scales a Deployment up
//! within the HPA's bounds and upstream's scale-up limit, and a higher
//! target scales it back down once the stabilization window has passed.

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::{wait_for, wait_for_event};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn an_autoscaler_follows_the_pods_cpu_use() {
    let cluster = NodeCluster::start_configured(
        None,
        &[
            "--horizontal-pod-autoscaler-sync-period=2s",
            "--horizontal-pod-autoscaler-downscale-stabilization=6s",
        ],
    );
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    // Each pod spins within a 50m quota against a 20m request: about 250%.
    let spin: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "spin"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "spin"}},
            "template": {"metadata": {"labels": {"app": "spin"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "spin", "image": "busybox",
                    "command": ["sh", "-c", "while :; do :; done"],
                    "resources": {"requests": {"cpu": "20m"}, "limits": {"cpu": "50m"}}}]}}},
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &spin)
        .await
        .expect("deployment");
    kubectl.ok(&[
        "autoscale",
        "deployment/spin",
        "--cpu=50%",
        "--min=1",
        "--max=3",
    ]);
    let replicas = |d: Deployment| d.spec.and_then(|s| s.replicas);
    // One pod at ~250% of its request wants 5; the maximum holds it at 3.
    wait_for("the deployment scaled up to the maximum", async || {
        (replicas(deployments.get("spin").await.ok()?) == Some(3)).then_some(())
    })
    .await;
    let up = wait_for_event(
        &client,
        "default",
        ("HorizontalPodAutoscaler", "spin"),
        "SuccessfulRescale",
        "New size: 3; reason: cpu resource utilization (percentage of request) above target",
    )
    .await;
    assert_eq!(up.type_.as_deref(), Some("Normal"));
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let hpa = hpas.get("spin").await.expect("hpa");
    let status = hpa.status.expect("status");
    let measured = status.current_metrics.as_deref().unwrap_or_default()[0]
        .resource
        .as_ref()
        .and_then(|r| r.current.average_utilization)
        .expect("a measured utilization");
    assert!(
        measured > 50,
        "the pods use more than the target: {measured}%"
    );
    let active = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "ScalingActive")
        .expect("ScalingActive");
    assert_eq!(
        (active.status.as_str(), active.reason.as_deref()),
        ("True", Some("ValidMetricFound"))
    );
    let row = kubectl.ok(&["get", "hpa", "spin", "--no-headers"]);
    assert!(
        row.contains("Deployment/spin") && row.contains("/50%"),
        "{row}"
    );
    // A target far above their use scales the pods back to the minimum
    // once the 6 s stabilization window holds no higher recommendation.
    let patch = json!({"spec": {"metrics": [{"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 2000}}}]}});
    hpas.patch("spin", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("raise the target");
    wait_for("the deployment scaled back down", async || {
        (replicas(deployments.get("spin").await.ok()?) == Some(1)).then_some(())
    })
    .await;
    wait_for_event(
        &client,
        "default",
        ("HorizontalPodAutoscaler", "spin"),
        "SuccessfulRescale",
        "New size: 1; reason: All metrics below target",
    )
    .await;
    // The same object through autoscaling/v1: the CPU target as v1 holds it.
    let v1 = kubectl.ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/spin",
    ]);
    let v1: serde_json::Value = serde_json::from_str(&v1).expect("v1 json");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 2000);
    assert!(v1["spec"].get("metrics").is_none(), "{v1}");
    deployments
        .delete("spin", &DeleteParams::default())
        .await
        .expect("delete");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_for("the pods to be gone", async || {
        let left = pods
            .list(&ListParams::default().labels("app=spin"))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}
