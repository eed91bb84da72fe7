//! The admission plugins of the create path through the real server, kube-rs
//! and kubectl: LimitRanger fills in and bounds container resources,
//! ResourceQuota refuses what would overshoot a quota (racing creates
//! included) with upstream's messages, DefaultTolerationSeconds and
//! DefaultStorageClass fill in their defaults.

use crate::common;
use crate::common::cli::Cli;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.local/x:1", "resources": resources}]},
    }))
    .expect("pod")
}

/// The message of a refused create, which must be a 403 Forbidden.
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
            s.message
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_container_resources() {
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    kubectl.ok(&["create", "namespace", "team"]);
    kubectl.ok_stdin(
        &["apply", "-n", "team", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
            "spec": {"limits": [
              {"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
               "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}},
              {"type": "Pod", "max": {"memory": "256Mi"}}]}}"#,
    );
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client, "team");
    let post = PostParams::default();
    let created = pods
        .create(&post, &pod("plain", json!({})))
        .await
        .expect("a pod without resources is admitted");
    let r = created.spec.expect("spec").containers[0]
        .resources
        .clone()
        .expect("resources");
    let text = |l: Option<&std::collections::BTreeMap<String, _>>, k: &str| {
        l.and_then(|m| m.get(k))
            .map(|q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| q.0.clone())
    };
    assert_eq!(text(r.requests.as_ref(), "cpu").as_deref(), Some("100m"));
    assert_eq!(
        text(r.requests.as_ref(), "memory").as_deref(),
        Some("128Mi")
    );
    assert_eq!(text(r.limits.as_ref(), "cpu").as_deref(), Some("500m"));
    let annotations = created.metadata.annotations.expect("annotations");
    assert_eq!(
        annotations["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    assert_eq!(
        created.status.and_then(|s| s.qos_class).as_deref(),
        Some("Burstable"),
        "the QoS class follows the filled-in resources"
    );

    // Over a container's max, and over the pod's total, each with
    // upstream's words; kubectl prints them.
    let big = pods
        .create(&post, &pod("big", json!({"limits": {"cpu": "2"}})))
        .await;
    assert_eq!(
        forbidden(big),
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
    let err = kubectl.fails(&[
        "run", "-n", "team", "greedy", "--image=registry.local/x:1",
        "--overrides", r#"{"spec": {"containers": [{"name": "greedy", "image": "registry.local/x:1", "resources": {"limits": {"memory": "512Mi"}}}]}}"#,
    ]);
    assert!(
        err.contains("pods \"greedy\" is forbidden: maximum memory usage per Pod is 256Mi, but limit is 512Mi"),
        "{err}"
    );
    let names: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["plain"], "refused pods are not stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_what_would_overshoot_them() {
    // Without the controller manager, the test gives the quota its status
    // itself, so that only admission moves `used`.
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    kubectl.ok(&["create", "namespace", "team"]);
    let client = server.client().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "team");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    let post = PostParams::default();
    let hard = json!({"pods": "3", "limits.memory": "1Gi", "count/configmaps": "2"});
    let quota: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"hard": hard}}))
            .expect("quota");
    quotas.create(&post, &quota).await.expect("quota");
    // Until the quota has a status, what it counts is refused.
    let early = pods
        .create(&post, &pod("early", json!({"limits": {"memory": "64Mi"}})))
        .await;
    assert_eq!(
        forbidden(early),
        "pods \"early\" is forbidden: status unknown for quota: q, resources: limits.memory,pods"
    );
    let status = json!({"status": {"hard": hard,
        "used": {"pods": "0", "limits.memory": "0", "count/configmaps": "0"}}});
    quotas
        .patch_status("q", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("status");

    // Every container must say what a quota counts.
    let bare = pods.create(&post, &pod("bare", json!({}))).await;
    assert_eq!(
        forbidden(bare),
        "pods \"bare\" is forbidden: failed quota: q: must specify limits.memory for: c"
    );
    // Racing creates cannot overshoot: of eight, exactly three fit.
    let attempts = (0..8).map(|i| {
        let pods = pods.clone();
        async move {
            pods.create(
                &PostParams::default(),
                &pod(&format!("p{i}"), json!({"limits": {"memory": "128Mi"}})),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 3, "{results:?}");
    for r in results.into_iter().filter(|r| r.is_err()) {
        let msg = forbidden(r);
        assert!(
            msg.ends_with("exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"),
            "{msg}"
        );
    }
    let used = quotas
        .get("q")
        .await
        .expect("quota")
        .status
        .and_then(|s| s.used);
    let used = used.expect("used");
    assert_eq!(used["pods"].0, "3");
    assert_eq!(used["limits.memory"].0, "384Mi");

    // Objects counted by kind; a dry run is checked and not charged.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm")
    };
    kubectl.ok(&[
        "create",
        "configmap",
        "-n",
        "team",
        "dry",
        "--dry-run=server",
    ]);
    cms.create(&post, &cm("one"))
        .await
        .expect("the first map fits");
    cms.create(&post, &cm("two"))
        .await
        .expect("the second map fits");
    let err = kubectl.fails(&["create", "configmap", "-n", "team", "three"]);
    assert!(
        err.contains(
            "configmaps \"three\" is forbidden: exceeded quota: q, requested: count/configmaps=1, \
             used: count/configmaps=2, limited: count/configmaps=2"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_tolerate_quiet_nodes_and_claims_get_the_default_class() {
    let server = common::Server::start();
    let client = server.client().await;
    let post = PostParams::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods.create(&post, &pod("p", json!({}))).await.expect("pod");
    let tolerations: Vec<(String, Option<i64>)> = p
        .spec
        .and_then(|s| s.tolerations)
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.toleration_seconds))
        .collect();
    assert_eq!(
        tolerations,
        [
            ("node.kubernetes.io/not-ready".to_owned(), Some(300)),
            ("node.kubernetes.io/unreachable".to_owned(), Some(300)),
        ]
    );

    let kubectl = Cli::kubectl(&server);
    kubectl.ok_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "example.com/fast"}"#,
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let claim = |name: &str, class: Option<&str>| -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("claim")
    };
    let class_of = |c: PersistentVolumeClaim| c.spec.and_then(|s| s.storage_class_name);
    let defaulted = claims
        .create(&post, &claim("data", None))
        .await
        .expect("claim");
    assert_eq!(class_of(defaulted).as_deref(), Some("fast"));
    let none = claims
        .create(&post, &claim("static", Some("")))
        .await
        .expect("claim");
    assert_eq!(
        class_of(none).as_deref(),
        Some(""),
        "an explicit empty class stays"
    );
}
