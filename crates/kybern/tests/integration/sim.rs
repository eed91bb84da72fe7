//! `kybern sim` beside `kybern server`: simulated nodes register with Leases,
//! the scheduler places pods on them, and the simulator runs them (Running
//! with an IP), finishes Job pods, removes deleted pods after their grace
//! period, and stops heartbeating a node labelled to fail.

use crate::common;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_run_pods() {
    let server = common::Server::start();
    let client = server.client().await;
    let sim = common::sim::start(
        &server,
        &[
            "--nodes",
            "3",
            "--cpu",
            "4",
            "--labels",
            "zone=sim",
            "--job-seconds",
            "1",
            "--heartbeat-seconds",
            "1",
        ],
    );

    let nodes: Api<Node> = Api::all(client.clone());
    let sim_nodes = wait_for("3 ready nodes", async || {
        let list = nodes
            .list(&ListParams::default().labels("type=kybern-sim"))
            .await
            .ok()?;
        (list.items.len() == 3).then_some(list.items)
    })
    .await;
    for n in &sim_nodes {
        let cond = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .expect("Ready condition");
        assert_eq!(cond.status, "True");
        assert_eq!(
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("zone"))
                .map(String::as_str),
            Some("sim")
        );
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    wait_for("leases", async || {
        let l = leases.list(&ListParams::default()).await.ok()?;
        (l.items.len() == 3).then_some(())
    })
    .await;

    // A pod is scheduled onto a simulated node and runs there.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let running = wait_for("web running", async || {
        let p = pods.get("web").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let status = running.status.expect("status");
    assert!(
        status
            .pod_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.64.")),
        "{:?}",
        status.pod_ip
    );
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");

    // A Job's pod succeeds after --job-seconds.
    let job_pod: Pod = serde_json::from_value(json!({"metadata": {"name": "task",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j",
            "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("job pod");
    pods.create(&PostParams::default(), &job_pod)
        .await
        .expect("create");
    wait_for("task succeeded", async || {
        let p = pods.get("task").await.ok()?;
        (p.status?.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;

    // A deleted pod goes once its grace period ends.
    pods.delete("web", &DeleteParams::default().grace_period(1))
        .await
        .expect("delete");
    assert!(pods.get("web").await.is_ok(), "still terminating");
    wait_for("web removed", async || {
        pods.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;

    // A node labelled to fail stops renewing its Lease; the others go on.
    let victim = ready_name(&sim_nodes, 0);
    nodes
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"sim.kybern.io/heartbeat": "stopped"}}})),
        )
        .await
        .expect("label");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let renew = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.renew_time.clone())
            .map(|t| t.0)
    };
    let before_victim = renew(&leases.get(&victim).await.expect("lease"));
    let other = ready_name(&sim_nodes, 1);
    let before_other = renew(&leases.get(&other).await.expect("lease"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        renew(&leases.get(&victim).await.expect("lease")),
        before_victim
    );
    assert_ne!(
        renew(&leases.get(&other).await.expect("lease")),
        before_other
    );
    drop(sim);
}

fn ready_name(nodes: &[Node], i: usize) -> String {
    nodes[i].metadata.name.clone().expect("name")
}
