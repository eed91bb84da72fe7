//! The ResourceQuota and HorizontalPodAutoscaler controllers inside `kybern
//! server`: quota usage follows pods and objects, scoped quotas count and
//! refuse only the pods their scopes cover, updates that grow a claim or open
//! a node port are charged; an autoscaler keeps its target
//! within bounds and says that resource metrics are unavailable.

use crate::common;
use crate::common::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Service,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
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
    scoped_quotas_cover_only_their_pods(&client).await;
    claims_are_held_to_storage_limits_and_quotas(&client).await;
}

/// LimitRange `PersistentVolumeClaim` bounds and storage quotas, overall
/// and per storage class.
async fn claims_are_held_to_storage_limits_and_quotas(client: &kube::Client) {
    let post = PostParams::default();
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "storage"}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&post, &ns)
        .await
        .expect("ns");
    // Classes whose claims may grow (PersistentVolumeClaimResize).
    for name in ["slow", "fast"] {
        let class: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": "kubernetes.io/no-provisioner",
            "allowVolumeExpansion": true}))
        .expect("class");
        Api::<k8s_openapi::api::storage::v1::StorageClass>::all(client.clone())
            .create(&post, &class)
            .await
            .expect("class");
    }
    let range: LimitRange = serde_json::from_value(json!({"metadata": {"name": "claims"},
        "spec": {"limits": [{"type": "PersistentVolumeClaim",
            "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}}))
    .expect("range");
    Api::<LimitRange>::namespaced(client.clone(), "storage")
        .create(&post, &range)
        .await
        .expect("limit range");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "storage");
    let quota: ResourceQuota = serde_json::from_value(json!({"metadata": {"name": "storage"},
        "spec": {"hard": {"requests.storage": "3Gi",
            "fast.storageclass.storage.k8s.io/persistentvolumeclaims": "1"}}}))
    .expect("quota");
    quotas.create(&post, &quota).await.expect("quota");
    wait_for("storage quota status", async || {
        quotas.get("storage").await.ok()?.status?.used.map(|_| ())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "storage");
    let claim = |name: &str, class: &str, size: &str| -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}}}}))
        .expect("claim")
    };
    let refused = async |c: PersistentVolumeClaim| -> String {
        claims
            .create(&post, &c)
            .await
            .expect_err("refused")
            .to_string()
    };
    let err = refused(claim("tiny", "slow", "500Mi")).await;
    assert!(
        err.contains("persistentvolumeclaims \"tiny\" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"),
        "{err}"
    );
    let err = refused(claim("huge", "slow", "5Gi")).await;
    assert!(
        err.contains("maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
        "{err}"
    );
    claims
        .create(&post, &claim("a", "fast", "2Gi"))
        .await
        .expect("a");
    let err = refused(claim("b", "slow", "2Gi")).await;
    assert!(
        err.contains("exceeded quota: storage, requested: requests.storage=2Gi, used: requests.storage=2Gi, limited: requests.storage=3Gi"),
        "{err}"
    );
    let err = refused(claim("c", "fast", "1Gi")).await;
    assert!(
        err.contains("exceeded quota: storage, requested: fast.storageclass.storage.k8s.io/persistentvolumeclaims=1"),
        "{err}"
    );
    claims
        .create(&post, &claim("d", "slow", "1Gi"))
        .await
        .expect("d");
    let used = |q: &ResourceQuota, k: &str| -> Option<String> {
        Some(q.status.as_ref()?.used.as_ref()?.get(k)?.0.clone())
    };
    wait_for("storage usage", async || {
        let q = quotas.get("storage").await.ok()?;
        (used(&q, "requests.storage").as_deref() == Some("3Gi")
            && used(
                &q,
                "fast.storageclass.storage.k8s.io/persistentvolumeclaims",
            )
            .as_deref()
                == Some("1"))
        .then_some(())
    })
    .await;
    // Only a bound claim grows (validation and PersistentVolumeClaimResize
    // refuse it otherwise).
    let err = claims
        .patch(
            "d",
            &merge(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .expect_err("a pending claim grown")
        .to_string();
    assert!(err.contains("spec is immutable after creation"), "{err}");
    // Bind these two as the volume controller would.
    for name in ["a", "d"] {
        let bound = json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        claims
            .patch_status(name, &merge(), &Patch::Merge(bound))
            .await
            .expect("bound");
    }
    // Growing a claim is charged like creating one; shrinking (down to
    // more than its capacity) is free.
    let grow = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
    let err = claims
        .patch("d", &merge(), &Patch::Merge(grow("2Gi")))
        .await
        .expect_err("growth past the quota")
        .to_string();
    assert!(
        err.contains("persistentvolumeclaims \"d\" is forbidden: exceeded quota: storage, requested: requests.storage=1Gi, used: requests.storage=3Gi, limited: requests.storage=3Gi"),
        "{err}"
    );
    claims
        .patch("a", &merge(), &Patch::Merge(grow("1500Mi")))
        .await
        .expect("shrinking");
    services_are_charged_when_they_open_node_ports(client).await;
}

fn merge() -> PatchParams {
    PatchParams::default()
}

/// A Service turned into a NodePort on update takes a `services.nodeports`
/// unit, and is refused when none is left (upstream charges updates too).
async fn services_are_charged_when_they_open_node_ports(client: &kube::Client) {
    let post = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "storage");
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "ports"}, "spec": {"hard": {"services.nodeports": "1"}}}),
    )
    .expect("quota");
    quotas.create(&post, &quota).await.expect("quota");
    wait_for("ports quota status", async || {
        quotas.get("ports").await.ok()?.status?.used.map(|_| ())
    })
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), "storage");
    for name in ["one", "two"] {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"ports": [{"port": 80}]}}))
        .expect("service");
        services.create(&post, &svc).await.expect("service");
    }
    let open = Patch::Merge(json!({"spec": {"type": "NodePort"}}));
    services
        .patch("one", &merge(), &open)
        .await
        .expect("the first node port fits");
    let err = services
        .patch("two", &merge(), &open)
        .await
        .expect_err("no node port left")
        .to_string();
    assert!(
        err.contains("services \"two\" is forbidden: exceeded quota: ports, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1"),
        "{err}"
    );
    let two = services.get("two").await.expect("two");
    assert_eq!(
        two.spec.and_then(|s| s.type_).as_deref(),
        Some("ClusterIP"),
        "a refused update changes nothing"
    );
}

/// BestEffort and PriorityClass scopes: each quota counts, and refuses, only
/// the pods its scopes cover.
async fn scoped_quotas_cover_only_their_pods(client: &kube::Client) {
    let post = PostParams::default();
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "scoped"}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&post, &ns)
        .await
        .expect("ns");
    let class: PriorityClass =
        serde_json::from_value(json!({"metadata": {"name": "high"}, "value": 1000}))
            .expect("class");
    Api::<PriorityClass>::all(client.clone())
        .create(&post, &class)
        .await
        .expect("priority class");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "scoped");
    for q in [
        json!({"metadata": {"name": "be"},
            "spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}}),
        json!({"metadata": {"name": "high"},
            "spec": {"hard": {"pods": "1", "requests.cpu": "1"}, "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}}),
    ] {
        let q: ResourceQuota = serde_json::from_value(q).expect("quota");
        quotas.create(&post, &q).await.expect("quota");
    }
    for name in ["be", "high"] {
        wait_for("scoped quota status", async || {
            quotas.get(name).await.ok()?.status?.used.map(|_| ())
        })
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "scoped");
    let pod = |name: &str, extra: serde_json::Value| -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "registry.local/x:1"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
    };
    let sized = json!({"containers": [{"name": "c", "image": "registry.local/x:1",
        "resources": {"requests": {"cpu": "600m"}}}]});
    pods.create(&post, &pod("be1", json!({})))
        .await
        .expect("be1");
    let err = pods
        .create(&post, &pod("be2", json!({})))
        .await
        .expect_err("a second best-effort pod is over the quota");
    assert!(
        err.to_string()
            .contains("exceeded quota: be, requested: pods=1, used: pods=1, limited: pods=1"),
        "{err}"
    );
    // Neither quota covers a sized pod without the class.
    pods.create(&post, &pod("sized", sized.clone()))
        .await
        .expect("sized");
    let mut high = sized.clone();
    high["priorityClassName"] = json!("high");
    pods.create(&post, &pod("h1", high.clone()))
        .await
        .expect("h1");
    let err = pods
        .create(&post, &pod("h2", high))
        .await
        .expect_err("a second high pod is over the quota");
    assert!(err.to_string().contains("exceeded quota: high"), "{err}");
    let used = |q: &ResourceQuota, k: &str| -> Option<String> {
        Some(q.status.as_ref()?.used.as_ref()?.get(k)?.0.clone())
    };
    wait_for("scoped usage", async || {
        let be = quotas.get("be").await.ok()?;
        let high = quotas.get("high").await.ok()?;
        (used(&be, "pods").as_deref() == Some("1")
            && used(&high, "pods").as_deref() == Some("1")
            && used(&high, "requests.cpu").as_deref() == Some("600m"))
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
    let ev = |reason, message| {
        common::wait_for_event(
            &client,
            "default",
            ("HorizontalPodAutoscaler", "web"),
            reason,
            message,
        )
    };
    let rescaled = ev(
        "SuccessfulRescale",
        "New size: 2; reason: Current number of replicas below Spec.MinReplicas",
    )
    .await;
    assert_eq!(
        rescaled.source.and_then(|s| s.component).as_deref(),
        Some("horizontal-pod-autoscaler")
    );
    // No node serves metrics: upstream's words for an empty metrics list.
    let warning = ev(
        "FailedGetResourceMetric",
        "failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API",
    )
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    ev(
        "FailedComputeMetricsReplicas",
        "invalid metrics (1 invalid out of 1)",
    )
    .await;
    let row = k.ok(&["get", "hpa", "web", "--no-headers"]);
    assert!(
        row.contains("Deployment/web") && row.contains("cpu: <unknown>/80%"),
        "{row}"
    );
}
