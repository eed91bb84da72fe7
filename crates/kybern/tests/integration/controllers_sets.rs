//! The DaemonSet, StatefulSet and ReplicationController controllers inside
//! `kybern server`, with the scheduler and simulated nodes, driven through
//! kube-rs and kubectl: daemons follow nodes and taints and roll back with
//! `kubectl rollout undo`; stateful pods come up in order with stable names,
//! roll from the highest ordinal down to the partition, scale down in
//! reverse, and get their claims; replication controllers keep their count.

use crate::common;
use crate::common::wait_for;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// `(pod name, node, image)` of the live pods with `app=<app>`, sorted.
async fn pods_of(api: &Api<Pod>, app: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let spec = p.spec.unwrap_or_default();
            (
                p.metadata.name.unwrap_or_default(),
                spec.node_name.unwrap_or_default(),
                spec.containers[0].image.clone().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets_follow_nodes_and_taints_and_roll_back() {
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "3"]);
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    wait_for("three nodes", async || {
        (nodes.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await;
    nodes
        .patch(
            "sim-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})),
        )
        .await
        .expect("taint");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": "registry.local/agent:1"}]}}},
    }))
    .expect("ds");
    sets.create(&PostParams::default(), &ds)
        .await
        .expect("create");
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let placed = pods_of(&pods, "agent").await;
    let mut on: Vec<&str> = placed.iter().map(|p| p.1.as_str()).collect();
    on.sort();
    assert_eq!(on, ["sim-0", "sim-1"], "{placed:?}");
    let st = sets
        .get("agent")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(
        (
            st.desired_number_scheduled,
            st.number_ready,
            st.number_available
        ),
        (2, 2, Some(2))
    );
    // A cordon does not move daemons; lifting the taint adds one.
    k.ok(&["cordon", "sim-0"]);
    nodes
        .patch(
            "sim-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .expect("untaint");
    wait_for("a daemon on every node", async || {
        let p = pods_of(&pods, "agent").await;
        let mut on: Vec<String> = p.iter().map(|p| p.1.clone()).collect();
        on.sort();
        (on == ["sim-0", "sim-1", "sim-2"]).then_some(())
    })
    .await;

    // A new template rolls over every node; undo brings the old one back.
    k.ok(&["set", "image", "ds/agent", "c=registry.local/agent:2"]);
    k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    wait_for("every daemon at :2", async || {
        let p = pods_of(&pods, "agent").await;
        (p.len() == 3 && p.iter().all(|p| p.2.ends_with(":2"))).then_some(())
    })
    .await;
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let revs = revisions
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("revisions");
    assert_eq!(revs.items.len(), 2);
    let history = k.ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    k.ok(&["rollout", "undo", "ds/agent"]);
    wait_for("every daemon back at :1", async || {
        let p = pods_of(&pods, "agent").await;
        (p.len() == 3 && p.iter().all(|p| p.2.ends_with(":1"))).then_some(())
    })
    .await;
    for (reason, message) in [
        ("SuccessfulCreate", "Created pod: agent-"),
        ("SuccessfulDelete", "Deleted pod: agent-"),
    ] {
        let event =
            common::wait_for_event(&client, "default", ("DaemonSet", "agent"), reason, message)
                .await;
        assert_eq!(
            event.source.and_then(|s| s.component).as_deref(),
            Some("daemonset-controller")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sets_start_in_order_roll_by_partition_and_claim_volumes() {
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "2"]);
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"serviceName": "web", "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": "registry.local/web:1"}]}}},
    }))
    .expect("sts");
    sets.create(&PostParams::default(), &sts)
        .await
        .expect("create");
    // Ordered: a pod appears only after its predecessors are Ready.
    let mut order: Vec<String> = Vec::new();
    wait_for("three ready pods", async || {
        let st = sets.get("web").await.ok()?.status?;
        for (name, _, _) in pods_of(&pods, "web").await {
            if !order.contains(&name) {
                order.push(name);
            }
        }
        (st.ready_replicas == Some(3)).then_some(())
    })
    .await;
    assert_eq!(order, ["web-0", "web-1", "web-2"]);
    let p = pods.get("web-1").await.expect("web-1");
    let spec = p.spec.expect("spec");
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("web-1"), Some("web"))
    );

    // A partition of 1 updates web-2 and web-1, leaving web-0.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
            "template": {"spec": {"containers": [{"name": "c", "image": "registry.local/web:2"}]}}}})),
    )
    .await
    .expect("update");
    let images = wait_for("web-1 and web-2 updated", async || {
        let p = pods_of(&pods, "web").await;
        let images: Vec<String> = p.iter().map(|p| p.2.clone()).collect();
        let ready = sets.get("web").await.ok()?.status?.ready_replicas == Some(3);
        (ready && images[1].ends_with(":2") && images[2].ends_with(":2")).then_some(images)
    })
    .await;
    assert!(images[0].ends_with(":1"), "{images:?}");
    let st = sets.get("web").await.expect("get").status.expect("status");
    assert_ne!(st.current_revision, st.update_revision);
    assert_eq!(st.updated_replicas, Some(2));
    // Partition 0 finishes it, and kubectl sees the rollout done.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .expect("partition");
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    let st = sets.get("web").await.expect("get").status.expect("status");
    assert_eq!(st.current_revision, st.update_revision);

    // Scaled down: the highest ordinals go.
    k.ok(&["scale", "sts/web", "--replicas=1"]);
    wait_for("only web-0 left", async || {
        let p = pods_of(&pods, "web").await;
        let names: Vec<String> = p.into_iter().map(|p| p.0).collect();
        (names == ["web-0"]).then_some(())
    })
    .await;
    let ev = |object, reason, message| {
        common::wait_for_event(&client, "default", object, reason, message)
    };
    let made = ev(
        ("StatefulSet", "web"),
        "SuccessfulCreate",
        "create Pod web-0 in StatefulSet web successful",
    )
    .await;
    assert_eq!(
        made.source.and_then(|s| s.component).as_deref(),
        Some("statefulset-controller")
    );
    ev(
        ("StatefulSet", "web"),
        "SuccessfulDelete",
        "delete Pod web-2 in StatefulSet web successful",
    )
    .await;

    // Claims from templates, named <claim>-<set>-<ordinal>, owned by the set
    // when the retention policy deletes them with it.
    let db: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 2, "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "registry.local/db:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
    }))
    .expect("db");
    sets.create(&PostParams::default(), &db)
        .await
        .expect("create db");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let found = wait_for("two claims and two pods", async || {
        let c = claims
            .list(&ListParams::default().labels("app=db"))
            .await
            .ok()?
            .items;
        let p = pods_of(&pods, "db").await;
        (c.len() == 2 && p.len() == 2).then_some(c)
    })
    .await;
    let mut names: Vec<String> = found
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["data-db-0", "data-db-1"]);
    assert_eq!(
        found[0].metadata.owner_references.as_ref().expect("owner")[0].kind,
        "StatefulSet"
    );
    let p = pods.get("db-1").await.expect("db-1");
    let volume = &p.spec.expect("spec").volumes.expect("volumes")[0];
    assert_eq!(
        volume
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("data-db-1")
    );
    ev(
        ("StatefulSet", "db"),
        "SuccessfulCreate",
        "create Claim data-db-1 Pod db-1 in StatefulSet db success",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controllers_keep_their_replicas() {
    use k8s_openapi::api::core::v1::ReplicationController;
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "1"]);
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {"replicas": 2, "selector": {"app": "legacy"},
            "template": {"metadata": {"labels": {"app": "legacy"}},
                "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": "registry.local/legacy:1"}]}}},
    }))
    .expect("rc");
    rcs.create(&PostParams::default(), &rc)
        .await
        .expect("create");
    wait_for("two ready replicas", async || {
        let st = rcs.get("legacy").await.ok()?.status?;
        (st.ready_replicas == Some(2) && st.observed_generation == Some(1)).then_some(())
    })
    .await;
    let list = pods
        .list(&ListParams::default().labels("app=legacy"))
        .await
        .expect("list");
    let owner = &list.items[0]
        .metadata
        .owner_references
        .as_ref()
        .expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ReplicationController", Some(true))
    );
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&["scale", "rc/legacy", "--replicas=3"]);
    wait_for("three pods", async || {
        (pods_of(&pods, "legacy").await.len() == 3).then_some(())
    })
    .await;
    // A deleted pod is replaced.
    let victim = pods_of(&pods, "legacy").await[0].0.clone();
    pods.delete(&victim, &Default::default())
        .await
        .expect("delete");
    wait_for("a replacement", async || {
        let p = pods_of(&pods, "legacy").await;
        (p.len() == 3 && p.iter().all(|p| p.0 != victim)).then_some(())
    })
    .await;
    let made = common::wait_for_event(
        &client,
        "default",
        ("ReplicationController", "legacy"),
        "SuccessfulCreate",
        "Created pod: legacy-",
    )
    .await;
    assert_eq!(
        made.source.and_then(|s| s.component).as_deref(),
        Some("replication-controller")
    );
}
