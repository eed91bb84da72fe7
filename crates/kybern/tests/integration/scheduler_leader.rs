//! Two `kybern scheduler` processes against one API server: one leads
//! through the `kube-system/kube-scheduler` Lease and schedules; when it dies,
//! the other takes the Lease over and schedules.

use crate::common;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::cluster::{add_node, add_pod, node_of};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

struct Candidate(Child);

impl Drop for Candidate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn candidate(server: &common::Server) -> Candidate {
    Candidate(
        Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args(["scheduler", "--kubeconfig"])
            .arg(server.kubeconfig())
            .args([
                "--leader-elect-lease-duration",
                "2",
                "--leader-elect-renew-deadline",
                "1.5",
                "--leader-elect-retry-period",
                "0.3",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kybern scheduler"),
    )
}

async fn holder(leases: &Api<Lease>) -> Option<(String, i32)> {
    let spec = leases.get_opt("kube-scheduler").await.ok()??.spec?;
    Some((spec.holder_identity?, spec.lease_transitions.unwrap_or(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_leads_and_another_takes_over() {
    let server = common::Server::start_with(&["--disable-scheduler"]);
    let client = server.client().await;
    let mut a = Some(candidate(&server));
    let mut b = Some(candidate(&server));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (first, _) = loop {
        if let Some(h) = holder(&leases).await {
            break h;
        }
        assert!(Instant::now() < deadline, "nobody took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    add_node(&client, "n1", "4", json!({})).await;
    add_pod(&client, "before", "100m", json!({})).await;
    assert_eq!(node_of(&client, "before").await, "n1");

    // Kill the leader (its identity ends with its pid).
    let pid_of = |c: &Option<Candidate>| c.as_ref().map_or(0, |c| c.0.id());
    if first.ends_with(&format!("scheduler-{}", pid_of(&a))) {
        a.take();
    } else {
        assert!(
            first.ends_with(&format!("scheduler-{}", pid_of(&b))),
            "holder {first}"
        );
        b.take();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((h, transitions)) = holder(&leases).await
            && h != first
        {
            assert!(transitions >= 1, "a takeover counts as a transition");
            break;
        }
        assert!(Instant::now() < deadline, "the lease was not taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    add_pod(&client, "after", "100m", json!({})).await;
    assert_eq!(node_of(&client, "after").await, "n1");
    drop((a, b));
}
