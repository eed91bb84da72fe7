//! Starts `kybern up` (a server with a real node agent) as root for the node
//! tests: its own bridge and pod CIDR, a busybox image built from Debian's
//! busybox-static, and a sweep on drop that leaves no container, mount,
//! cgroup, veth or bridge behind even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::free_port;

/// A single-node cluster run by `kybern up`.
pub struct NodeCluster {
    child: Option<Child>,
    /// The data directory (the agent's is `agent/` under it).
    pub dir: tempfile::TempDir,
    /// The API port.
    pub port: u16,
    /// The pod network's bridge.
    pub bridge: String,
    /// The pod CIDR's prefix (`10.201.N.`).
    pub pod_prefix: String,
    /// The node's name.
    pub node: String,
    /// More arguments for `kybern up`.
    extra_args: Vec<String>,
    /// Whether the agent masquerades the pod network (a chain in the
    /// host's nat table, removed on drop); off unless a test asks.
    masquerade: bool,
}

/// The busybox image archive, built once per test binary.
pub fn busybox_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-image");
        std::fs::create_dir_all(&dir).expect("image dir");
        let out = dir.join("busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-image");
        let status = Command::new("bash")
            .arg(script)
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/busybox-image");
        assert!(status.success(), "building the busybox image failed");
        out
    })
}

/// Waits until the Node `name` reports `Ready=True`.
pub async fn wait_node_ready(client: &kube::Client, name: &str) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    super::wait_for("the node to be Ready", async || {
        let node = nodes.get_opt(name).await.ok()??;
        let ready = node
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
}

impl NodeCluster {
    /// Starts a cluster whose node holds the busybox image.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a cluster whose node holds the busybox image and pulls with
    /// `registries` (a `registries.yaml`), if given.
    pub fn start_with(registries: Option<&str>) -> Self {
        Self::start_configured(registries, &[])
    }

    /// Starts a cluster as [`NodeCluster::start_with`], passing `extra_args`
    /// to `kybern up`.
    pub fn start_configured(registries: Option<&str>, extra_args: &[&str]) -> Self {
        Self::start_full(registries, extra_args, false)
    }

    /// Starts a cluster whose agent masquerades its pod network.
    pub fn start_masquerading() -> Self {
        Self::start_full(None, &[], true)
    }

    fn start_full(registries: Option<&str>, extra_args: &[&str], masquerade: bool) -> Self {
        assert!(
            nix_is_root(),
            "the node agent tests run real containers and need root"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let out = Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args(["image", "import", "--name", "busybox", "--data-dir"])
            .arg(dir.path().join("agent"))
            .arg(busybox_image())
            .output()
            .expect("kybern image import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(yaml) = registries {
            std::fs::write(dir.path().join("registries.yaml"), yaml).expect("registries.yaml");
        }
        let bridge = format!("kbt{port}");
        let pod_prefix = format!("10.201.{}.", port % 250);
        let node = format!("node-{port}");
        let mut cluster = NodeCluster {
            child: None,
            dir,
            port,
            bridge,
            pod_prefix,
            node,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            masquerade,
        };
        cluster.spawn();
        cluster
    }

    /// (Re)starts the `kybern up` process on the same data directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kybern"));
        cmd.args(["up", "--listen", &format!("127.0.0.1:{}", self.port)]);
        let registries = self.dir.path().join("registries.yaml");
        if registries.exists() {
            cmd.arg("--registries").arg(registries);
        }
        let child = cmd
            .args(["--node-name", &self.node, "--node-ip", "127.0.0.1"])
            .args(["--bridge", &self.bridge])
            .args((!self.masquerade).then_some("--no-ip-masq"))
            .args(["--pod-cidr", &format!("{}0/24", self.pod_prefix)])
            .args(["--agent-port", &free_port().to_string()])
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .env("KYBERN_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kybern up");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.kubeconfig().exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kybern up did not start: {}", self.log());
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What `kybern up` logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The agent's runc state directory.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.path().join("agent/runc")
    }

    /// IDs of the containers runc runs for this node.
    pub fn runc_containers(&self) -> Vec<String> {
        runc_list(&self.runc_root())
    }

    /// The runc state directories: the default handler's, then those of
    /// other RuntimeClass handlers (`agent/runtimes/<handler>`).
    pub fn runc_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.runc_root()];
        if let Ok(dirs) = std::fs::read_dir(self.dir.path().join("agent/runtimes")) {
            roots.extend(dirs.flatten().map(|d| d.path()));
        }
        roots
    }
}

/// The containers runc knows under `root`.
pub fn runc_list(root: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

impl NodeCluster {
    /// Mounts under the data directory.
    pub fn mounts(&self) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .map(str::to_owned)
            .collect()
    }

    /// Interfaces attached to the pod bridge (one veth per pod).
    pub fn bridge_ports(&self) -> usize {
        std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A client certificate and key for `user` in `groups` from the
    /// cluster CA.
    pub fn user_certificate(&self, user: &str, groups: &[&str]) -> (PathBuf, PathBuf) {
        super::user_certificate(self.dir.path(), user, groups)
    }

    /// A kube-rs client as the admin.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Keep the log of a failed test where CI can find it.
            let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.log", self.node));
            let _ = std::fs::copy(self.dir.path().join("up.log"), &keep);
            eprintln!("kybern up log kept in {}", keep.display());
            super::print_tail("kybern up", &self.log());
        }
        // Whatever a failed test left: containers, mounts, cgroups, bridge.
        for root in self.runc_roots() {
            for id in runc_list(&root) {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", &id])
                    .status();
            }
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        self.remove_pod_cgroups();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        if self.masquerade {
            self.remove_masquerade_chain();
        }
    }
}

impl NodeCluster {
    /// Removes the cgroups of every pod the agent kept a directory for: a
    /// test that ends with pods running leaves them once the agent is gone.
    fn remove_pod_cgroups(&self) {
        use kybern_agent::host::{LinuxHost, NodeHost};
        let Ok(pods) = std::fs::read_dir(self.dir.path().join("agent/pods")) else {
            return;
        };
        let host = LinuxHost::default();
        for uid in pods
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
        {
            for parent in ["/kubepods", "/kubepods/burstable", "/kubepods/besteffort"] {
                if let Err(e) = host.remove_cgroup(&format!("{parent}/pod{uid}")) {
                    eprintln!("leftover cgroup of pod {uid}: {e}");
                }
            }
        }
    }

    /// The agent's masquerade chain in the nat table.
    pub fn masquerade_chain(&self) -> String {
        kybern_agent::network::masquerade_chain(&self.bridge)
    }

    /// Removes the masquerade chain and every jump to it.
    fn remove_masquerade_chain(&self) {
        let chain = self.masquerade_chain();
        let iptables = |args: &[&str]| {
            Command::new("iptables")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        while iptables(&kybern_agent::network::masquerade_jump("-D", &chain)) {}
        iptables(&["-w", "-t", "nat", "-F", &chain]);
        iptables(&["-w", "-t", "nat", "-X", &chain]);
    }
}
