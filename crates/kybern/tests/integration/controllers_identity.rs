//! Least privilege for the controller manager, as upstream's
//! `--use-service-account-credentials`: its informers read as
//! `system:kube-controller-manager`, each controller writes as its own
//! ServiceAccount in `kube-system`, and each may do only what its
//! `system:controller:*` role says; and it names itself, in its requests
//! and in its work queues' metrics, which a standalone manager (and
//! scheduler) serves on `--metrics-bind-address`.

use crate::api_audit::{events, find};
use crate::api_rbac::can_i;
use crate::common;
use crate::common::cli::Cli;

const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [\"RequestReceived\"]
rules:
- level: Metadata
";

fn user_of(ev: &serde_json::Value) -> &str {
    ev["user"]["username"].as_str().unwrap_or_default()
}

#[test]
fn each_controller_acts_as_its_own_service_account() {
    let work = tempfile::tempdir().expect("tempdir");
    let policy = work.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let log = work.path().join("audit.log");
    let server = common::Server::start_cluster(&[
        "--disable-scheduler",
        "--audit-policy-file",
        &policy.to_string_lossy(),
        "--audit-log-path",
        &log.to_string_lossy(),
    ]);
    let kubectl = Cli::kubectl(&server);

    // A Deployment's ReplicaSet is made by the Deployment controller, the
    // ReplicaSet's pod by the ReplicaSet controller, each under its name.
    kubectl.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=1",
    ]);
    let made_set = find(&log, "replicaset create", |e| {
        e["verb"] == "create"
            && e["objectRef"]["resource"] == "replicasets"
            && e["stage"] == "ResponseComplete"
    });
    assert_eq!(
        user_of(&made_set),
        "system:serviceaccount:kube-system:deployment-controller"
    );
    assert_eq!(made_set["responseStatus"]["code"], 201);
    let groups = made_set["user"]["groups"].to_string();
    assert!(
        groups.contains("system:serviceaccounts:kube-system"),
        "{groups}"
    );
    let made_pod = find(&log, "pod create", |e| {
        e["verb"] == "create"
            && e["objectRef"]["resource"] == "pods"
            && e["stage"] == "ResponseComplete"
    });
    assert_eq!(
        user_of(&made_pod),
        "system:serviceaccount:kube-system:replicaset-controller"
    );
    assert_eq!(made_pod["responseStatus"]["code"], 201);
    // The manager names itself as upstream's does, and so manages the fields
    // it writes under that name rather than "unknown".
    let agent = made_pod["userAgent"].as_str().unwrap_or_default();
    assert!(
        agent.starts_with("kube-controller-manager/v1.35.0 (linux/"),
        "{agent}"
    );
    let managers = kubectl.ok(&[
        "get",
        "replicasets",
        "-o",
        "jsonpath={.items[*].metadata.managedFields[*].manager}",
    ]);
    assert!(
        managers
            .split_whitespace()
            .any(|m| m == "kube-controller-manager"),
        "{managers}"
    );
    // Each controller's work queue reports client-go's metrics under its
    // name: both controllers have taken and reconciled a key by now.
    let metrics = kubectl.ok(&["get", "--raw", "/metrics"]);
    let sample = |line: &str| -> f64 {
        common::metric_sample(&metrics, line).unwrap_or_else(|| panic!("no {line} in /metrics"))
    };
    for queue in ["deployment", "replicaset"] {
        let label = format!("{{name=\"{queue}\"}}");
        assert!(sample(&format!("workqueue_adds_total{label}")) >= 1.0);
        assert!(sample(&format!("workqueue_work_duration_seconds_count{label}")) >= 1.0);
        assert!(sample(&format!("workqueue_queue_duration_seconds_count{label}")) >= 1.0);
        assert!(sample(&format!("workqueue_depth{label}")) >= 0.0);
    }
    // The shared informers watch as the manager itself.
    let watch = find(&log, "informer watch", |e| {
        e["verb"] == "watch" && e["objectRef"]["resource"] == "replicasets"
    });
    assert_eq!(user_of(&watch), "system:kube-controller-manager");
    // No controller was refused anything on the way.
    let refused: Vec<String> = events(&log)
        .into_iter()
        .filter(|e| {
            e["responseStatus"]["code"] == 403
                && user_of(e).contains("system:serviceaccount:kube-system:")
        })
        .map(|e| e.to_string())
        .collect();
    assert!(refused.is_empty(), "{refused:?}");

    // The accounts exist, and their rights are upstream's.
    let accounts = kubectl.ok(&["get", "serviceaccounts", "-n", "kube-system", "-o", "name"]);
    for name in [
        "deployment-controller",
        "replicaset-controller",
        "namespace-controller",
        "generic-garbage-collector",
        "certificate-controller",
        "token-cleaner",
    ] {
        assert!(
            accounts.contains(&format!("serviceaccount/{name}")),
            "{name}: {accounts}"
        );
    }
    let sa = |name: &str| format!("--as=system:serviceaccount:kube-system:{name}");
    let deployments = sa("deployment-controller");
    assert!(can_i(&kubectl, &["create", "replicasets", &deployments]));
    assert!(can_i(
        &kubectl,
        &["update", "deployments/status", &deployments]
    ));
    assert!(!can_i(&kubectl, &["create", "pods", &deployments]));
    assert!(!can_i(&kubectl, &["get", "secrets", &deployments]));
    let replicas = sa("replicaset-controller");
    assert!(can_i(&kubectl, &["delete", "pods", &replicas]));
    assert!(!can_i(&kubectl, &["delete", "replicasets", &replicas]));
    let cleaner = sa("token-cleaner");
    assert!(can_i(
        &kubectl,
        &["delete", "secrets", "-n", "kube-system", &cleaner]
    ));
    assert!(!can_i(
        &kubectl,
        &["delete", "secrets", "-n", "default", &cleaner]
    ));
    let manager = "--as=system:kube-controller-manager";
    assert!(can_i(&kubectl, &["watch", "secrets", "-A", manager]));
    assert!(can_i(
        &kubectl,
        &[
            "create",
            "serviceaccounts/token",
            "-n",
            "kube-system",
            manager
        ]
    ));
    assert!(!can_i(&kubectl, &["delete", "pods", manager]));
    assert!(!can_i(
        &kubectl,
        &["create", "clusterrolebindings", manager]
    ));

    // A token of a controller's account is held to its role like any other.
    let token = kubectl.ok(&[
        "create",
        "token",
        "deployment-controller",
        "-n",
        "kube-system",
    ]);
    let as_deployments = Cli::kubectl_with_token(&server, token.trim());
    let denied = as_deployments.fails(&["get", "secrets", "-n", "kube-system"]);
    assert!(
        denied.contains("system:serviceaccount:kube-system:deployment-controller")
            && denied.contains("cannot list resource \"secrets\""),
        "{denied}"
    );
    as_deployments.ok(&["get", "replicasets"]);
}

/// A component process, killed when the test ends.
struct Component(std::process::Child);

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of `GET /metrics` on `port`, in plain HTTP.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_components_serve_their_metrics() {
    let server = common::Server::start_with(&["--disable-scheduler"]);
    let client = server.client().await;
    let (manager_port, scheduler_port) = (common::free_port(), common::free_port());
    let start = |args: &[&str], port: u16| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args(args)
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(["--leader-elect=false", "--metrics-bind-address"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start a component");
        Component(child)
    };
    let _manager = start(&["controller-manager"], manager_port);
    let _scheduler = start(&["scheduler"], scheduler_port);

    // Work for both: a Deployment's pod, made by the manager's controllers
    // and placed by the scheduler.
    common::cluster::add_node(&client, "n1", "4", serde_json::json!({})).await;
    let kubectl = Cli::kubectl(&server);
    kubectl.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=1",
    ]);
    let manager = common::wait_for("the manager's work queues counted", async || {
        let m = scrape(manager_port)?;
        let label = "{name=\"replicaset\"}";
        (common::metric_sample(&m, &format!("workqueue_adds_total{label}"))? >= 1.0).then_some(m)
    })
    .await;
    assert!(
        common::metric_sample(&manager, "workqueue_adds_total{name=\"deployment\"}")
            .is_some_and(|v| v >= 1.0),
        "{manager}"
    );
    let scheduler = common::wait_for("the scheduler's binding counted", async || {
        let m = scrape(scheduler_port)?;
        (common::metric_sample(&m, "scheduler_pods_bound_total")? >= 1.0).then_some(m)
    })
    .await;
    assert!(
        common::metric_sample(
            &scheduler,
            "scheduler_schedule_attempts_total{result=\"scheduled\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{scheduler}"
    );
    assert!(manager.ends_with("# EOF\n") && scheduler.ends_with("# EOF\n"));
}
