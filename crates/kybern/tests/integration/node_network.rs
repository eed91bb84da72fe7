//! The pod network's masquerade (as root): traffic from a pod to a network
//! beyond the node leaves with the node's address, through the agent's one
//! chain for the pod CIDR, and the chain holds no per-pod rules.

use std::process::{Command, Stdio};

use crate::common::node::NodeCluster;
use crate::common::pods::{create, delete_and_wait, log_of, wait_status};
use serde_json::json;

/// A network namespace beyond the node, reached through a veth pair with
/// `10.203.N.1/30` on the node's side and `10.203.N.2/30` on its own,
/// where busybox httpd answers with the address it sees a request from.
struct FarNetwork {
    /// The `N` of its addresses.
    octet: u16,
    netns: String,
    veth: String,
    httpd: Option<std::process::Child>,
    _root: tempfile::TempDir,
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run a command");
    assert!(status.success(), "{args:?} failed");
}

impl FarNetwork {
    /// Names from `port` (unique per test), addresses from `port % 250`.
    fn start(port: u16) -> Self {
        let n = port % 250;
        let (netns, veth) = (format!("kbt-far-{port}"), format!("kbf{port}"));
        let root = tempfile::tempdir().expect("tempdir");
        let cgi = root.path().join("cgi-bin");
        std::fs::create_dir_all(&cgi).expect("cgi-bin");
        let script = cgi.join("addr");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"from=$REMOTE_ADDR\"\n",
        )
        .expect("cgi script");
        run(&["chmod", "755", &script.to_string_lossy()]);
        let mut far = FarNetwork {
            octet: n,
            netns: netns.clone(),
            veth: veth.clone(),
            httpd: None,
            _root: root,
        };
        let (near, away) = (format!("10.203.{n}.1/30"), format!("10.203.{n}.2/30"));
        run(&["ip", "netns", "add", &netns]);
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "far0",
        ]);
        run(&["ip", "link", "set", "far0", "netns", &netns]);
        run(&["ip", "addr", "add", &near, "dev", &veth]);
        run(&["ip", "link", "set", &veth, "up"]);
        let inside = ["ip", "netns", "exec", &netns];
        run(&[&inside[..], &["ip", "addr", "add", &away, "dev", "far0"]].concat());
        run(&[&inside[..], &["ip", "link", "set", "far0", "up"]].concat());
        run(&[&inside[..], &["ip", "link", "set", "lo", "up"]].concat());
        let gateway = format!("10.203.{n}.1");
        run(&[
            &inside[..],
            &["ip", "route", "add", "default", "via", &gateway],
        ]
        .concat());
        let httpd = Command::new("ip")
            .args([
                "netns", "exec", &netns, "busybox", "httpd", "-f", "-p", "9000", "-h",
            ])
            .arg(far._root.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("busybox httpd");
        far.httpd = Some(httpd);
        far
    }
}

impl Drop for FarNetwork {
    fn drop(&mut self) {
        if let Some(mut httpd) = self.httpd.take() {
            let _ = httpd.kill();
            let _ = httpd.wait();
        }
        // Deleting the namespace takes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn pod_traffic_leaving_the_pod_network_is_masqueraded_by_one_node_rule() {
    let cluster = NodeCluster::start_masquerading();
    let client = cluster.client().await;
    crate::common::node::wait_node_ready(&client, &cluster.node).await;
    let far = FarNetwork::start(cluster.port);
    let n = far.octet;
    let url = format!("http://10.203.{n}.2:9000/cgi-bin/addr");
    let api = create(&client, json!({
        "metadata": {"name": "egress"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", format!("until wget -qO- {url}; do sleep 0.2; done; sleep 3600")]}]}
    })).await;
    let status = wait_status(&api, "egress", "the pod to run", |s| {
        s["phase"] == "Running"
    })
    .await;
    let pod_ip = status["podIP"].as_str().expect("pod IP").to_owned();
    assert!(pod_ip.starts_with(&cluster.pod_prefix), "{pod_ip}");
    let uid = api
        .get("egress")
        .await
        .expect("get")
        .metadata
        .uid
        .expect("uid");
    let seen = crate::common::wait_for("the far side's answer", async || {
        let log = log_of(&cluster, &uid, "main", 0);
        log.lines()
            .find_map(|l| l.split("from=").nth(1).map(|a| a.trim().to_owned()))
            // httpd listens on IPv6 too and writes IPv4 peers mapped.
            .map(|a| {
                a.trim_start_matches("[::ffff:")
                    .trim_end_matches(']')
                    .to_owned()
            })
    })
    .await;
    // The node's address on the far link, not the pod's own.
    assert_eq!(seen, format!("10.203.{n}.1"), "pod IP {pod_ip}");

    let chain = cluster.masquerade_chain();
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", &chain])
        .output()
        .expect("iptables -S");
    let rules = String::from_utf8_lossy(&out.stdout).into_owned();
    let cidr = format!("{}0/24", cluster.pod_prefix);
    assert!(
        rules.contains(&format!("! -s {cidr} -j RETURN"))
            && rules.contains(&format!("-d {cidr} -j RETURN"))
            && rules.contains("-j MASQUERADE"),
        "{rules}"
    );
    // No chain of the bridge plugin's own per-pod masquerade.
    let nat = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .expect("iptables -S");
    let nat = String::from_utf8_lossy(&nat.stdout).into_owned();
    assert!(
        !nat.lines().any(|l| l.contains(&pod_ip)),
        "a rule names the pod: {nat}"
    );
    delete_and_wait(&api, "egress").await;
    drop(far);
}
