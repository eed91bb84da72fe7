//! The ResourceQuota and HorizontalPodAutoscaler controllers inside `kybern
//! server`: quota usage follows pods and objects; an autoscaler keeps its
//! target within bounds and says that resource metrics are unavailable.

mod common;

use common::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota};
use kube::api::{Api, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_usage_follows_pods_and_objects() {
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let client = server.client().await;
    let post = PostParams::default();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&post, &ns)
        .await
        .expect("ns");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "team");
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi",
            "count/configmaps": "5", "count/deployments.apps": "3", "services": "4"}},
    }))
    .expect("quota");
    quotas.create(&post, &quota).await.expect("quota");
    // Admission refuses what a quota counts until the controller has
    // given it a status, as upstream does.
    wait_for("the quota's first status", async || {
        quotas.get("q").await.ok()?.status?.used.map(|_| ())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    for name in ["a", "b"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "registry.local/x:1",
                "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}}}]},
        }))
        .expect("pod");
        pods.create(&post, &pod).await.expect("pod");
    }
    let used = |q: &ResourceQuota, k: &str| -> Option<String> {
        Some(q.status.as_ref()?.used.as_ref()?.get(k)?.0.clone())
    };
    let q = wait_for("pod usage", async || {
        let q = quotas.get("q").await.ok()?;
        (used(&q, "pods").as_deref() == Some("2")).then_some(q)
    })
    .await;
    assert_eq!(used(&q, "requests.cpu").as_deref(), Some("500m"));
    assert_eq!(used(&q, "limits.memory").as_deref(), Some("512Mi"));
    assert_eq!(used(&q, "services").as_deref(), Some("0"));
    assert_eq!(
        q.status
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .map(|h| h.len()),
        Some(6)
    );
    // Objects counted by listing: the root CA map, then one more.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "extra"}})).expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), "team")
        .create(&post, &cm)
        .await
        .expect("cm");
    wait_for("two config maps counted", async || {
        let q = quotas.get("q").await.ok()?;
        (used(&q, "count/configmaps").as_deref() == Some("2")).then_some(())
    })
    .await;
    pods.delete("a", &Default::default()).await.expect("delete");
    wait_for("one pod left counted", async || {
        let q = quotas.get("q").await.ok()?;
        (used(&q, "pods").as_deref() == Some("1")
            && used(&q, "requests.cpu").as_deref() == Some("250m"))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscalers_keep_bounds_and_report_missing_metrics() {
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let client = server.client().await;
    let post = PostParams::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "registry.local/web:1",
                    "resources": {"requests": {"cpu": "100m"}}}]}}},
    }))
    .expect("deployment");
    deployments.create(&post, &d).await.expect("deployment");
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&[
        "autoscale",
        "deployment/web",
        "--min=2",
        "--max=5",
        "--cpu-percent=80",
    ]);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    // Below the minimum: scaled up without metrics.
    wait_for("the deployment scaled to the minimum", async || {
        let d = deployments.get("web").await.ok()?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    let st = wait_for("the metrics condition", async || {
        let st = hpas.get("web").await.ok()?.status?;
        let active = st
            .conditions
            .as_deref()?
            .iter()
            .find(|c| c.type_ == "ScalingActive")?
            .clone();
        (active.reason.as_deref() == Some("FailedGetResourceMetric")).then_some(st)
    })
    .await;
    assert_eq!(st.desired_replicas, 2);
    let able = st
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "AbleToScale")
        .map(|c| c.status.clone());
    assert_eq!(able.as_deref(), Some("True"));
    let described = k.ok(&["describe", "hpa", "web"]);
    assert!(described.contains("FailedGetResourceMetric"), "{described}");
}
