//! `kybern bench pods`: pod startup latency through the whole system (create
//! → every container running, seen through a watch) beside raw `runc run` of
//! the same image's bundle, and the agent's memory and CPU with many pods.
//! Needs root, runc and the CNI plugins, like the agent itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kybern_agent::host::{LinuxHost, NodeHost};
use kybern_agent::images::ImageStore;
use kybern_agent::runtime::bundle::{ContainerPlan, LinuxNamespaceType, spec};

use super::server_process::{create_ns, start_server, status_bytes};
use super::stats::{Samples, machine_busy_seconds, ms};

/// Arguments of `kybern bench pods`.
#[derive(clap::Args, Debug)]
pub struct PodBenchArgs {
    /// Pods started one at a time.
    #[arg(long, default_value_t = 20)]
    serial: usize,
    /// Pods started at once.
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
    /// Pods kept running while the agent's RSS and CPU are read.
    #[arg(long, default_value_t = 100)]
    resident: usize,
    /// An OCI image archive of busybox (default: built with scripts/busybox-image).
    #[arg(long)]
    image: Option<PathBuf>,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// Copy the server's and the agent's logs into this directory at the end.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

const NS: &str = "bench";
const BRIDGE: &str = "kbbench0";
/// The bench node's pod network; masqueraded as a node's is by default.
const POD_CIDR: &str = "10.202.0.0/24";

fn image_archive(args: &PodBenchArgs, dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.image {
        return Ok(p.clone());
    }
    let out = dir.join("busybox.tar");
    let status = std::process::Command::new("bash")
        .arg("scripts/busybox-image")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running scripts/busybox-image (run from the repository, or pass --image)")?;
    anyhow::ensure!(status.success(), "scripts/busybox-image failed");
    Ok(out)
}

/// Raw runc: the image's layers under an overlay, a config.json from the
/// same generator the agent uses, `runc run --detach` timed to its return.
struct RawRunc {
    runc: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    layers: Vec<PathBuf>,
    host: LinuxHost,
}

impl RawRunc {
    async fn run_one(&self, id: &str) -> anyhow::Result<Duration> {
        let dir = self.dir.join(id);
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        let plan = ContainerPlan {
            args: vec!["sleep".into(), "3600".into()],
            env: vec!["PATH=/bin".into()],
            namespaces: vec![
                (LinuxNamespaceType::Network, None),
                (LinuxNamespaceType::Ipc, None),
                (LinuxNamespaceType::Uts, None),
            ],
            cgroup_path: format!("/kybern-bench/{id}"),
            cpu_shares: Some(2),
            ..Default::default()
        };
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec(&plan)?)?,
        )?;
        // The detached container inherits runc's stdio: a file, not a pipe
        // that would stay open as long as the container runs.
        let errors = std::fs::File::create(dir.join("runc.err"))?;
        let started = Instant::now();
        self.host.mount_overlay(
            &self.layers,
            &dir.join("upper"),
            &dir.join("work"),
            &bundle.join("rootfs"),
        )?;
        let out = tokio::process::Command::new(&self.runc)
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(errors)
            .status()
            .await?;
        let took = started.elapsed();
        anyhow::ensure!(
            out.success(),
            "runc run: {}",
            std::fs::read_to_string(dir.join("runc.err")).unwrap_or_default()
        );
        Ok(took)
    }

    async fn remove(&self, id: &str) -> anyhow::Result<()> {
        tokio::process::Command::new(&self.runc)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", id])
            .output()
            .await?;
        self.host
            .unmount(&self.dir.join(id).join("bundle/rootfs"))?;
        self.host.remove_cgroup(&format!("/kybern-bench/{id}"))?;
        std::fs::remove_dir_all(self.dir.join(id))?;
        Ok(())
    }

    /// Starts `n` containers; their latencies and the machine's CPU
    /// seconds per container.
    async fn batch(&self, prefix: &str, n: usize, at_once: bool) -> anyhow::Result<(Samples, f64)> {
        let mut samples = Samples::with_capacity(n);
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let busy = machine_busy_seconds();
        if at_once {
            let results = futures::future::join_all(ids.iter().map(|id| self.run_one(id))).await;
            for r in results {
                samples.push(r?);
            }
        } else {
            for id in &ids {
                samples.push(self.run_one(id).await?);
            }
        }
        let cpu = (machine_busy_seconds() - busy) / n.max(1) as f64;
        for id in &ids {
            self.remove(id).await?;
        }
        Ok((samples, cpu))
    }
}

/// When each pod was first seen with every container running.
type Running = Arc<Mutex<HashMap<String, Instant>>>;

fn all_running(pod: &Pod) -> bool {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    let want = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    statuses.is_some_and(|c| {
        c.len() == want
            && c.iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
}

fn watch_running(client: &kube::Client) -> (Running, tokio::task::JoinHandle<()>) {
    let running: Running = Default::default();
    let seen = running.clone();
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            let pods: Vec<Pod> = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            for pod in pods {
                if all_running(&pod)
                    && let (Some(name), Ok(mut seen)) = (pod.metadata.name.clone(), seen.lock())
                {
                    seen.entry(name).or_insert_with(Instant::now);
                }
            }
        }
    });
    (running, task)
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}))?)
}

async fn wait_running(running: &Running, names: &[String], limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let done = running
            .lock()
            .map(|r| names.iter().all(|n| r.contains_key(n)))
            .unwrap_or(false);
        if done {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pods did not all start within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes every bench pod and waits until the agent has removed their
/// containers too (a grace period of 0 removes the object at once, and the
/// agent cleans up after it).
async fn delete_all(pods: &Api<Pod>, runc: &Path, runc_root: &Path) -> anyhow::Result<()> {
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = tokio::process::Command::new(runc)
            .arg("--root")
            .arg(runc_root)
            .args(["list", "-q"])
            .output()
            .await?;
        // runc list fails when a container's state goes while it reads it.
        let containers = String::from_utf8_lossy(&out.stdout).lines().count();
        // The agent is done with a pod when its directory is gone.
        let pod_dirs = std::fs::read_dir(runc_root.with_file_name("pods")).map_or(0, |d| d.count());
        if out.status.success()
            && containers == 0
            && pod_dirs == 0
            && pods.list(&ListParams::default()).await?.items.is_empty()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "pods were not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates `names` (one at a time, or all at once) and returns each one's
/// create → running latency, and the machine's CPU seconds per pod.
async fn start_pods(
    pods: &Api<Pod>,
    running: &Running,
    names: &[String],
    at_once: bool,
) -> anyhow::Result<(Samples, f64)> {
    let mut samples = Samples::with_capacity(names.len());
    let mut created = HashMap::new();
    let busy = machine_busy_seconds();
    if at_once {
        let t0 = Instant::now();
        let posts = names.iter().map(|n| async move {
            pods.create(&PostParams::default(), &pod(n)?).await?;
            anyhow::Ok(())
        });
        for r in futures::future::join_all(posts).await {
            r?;
        }
        for n in names {
            created.insert(n.clone(), t0);
        }
        wait_running(running, names, Duration::from_secs(300)).await?;
    } else {
        for n in names {
            created.insert(n.clone(), Instant::now());
            pods.create(&PostParams::default(), &pod(n)?).await?;
            wait_running(running, std::slice::from_ref(n), Duration::from_secs(60)).await?;
        }
    }
    let cpu = (machine_busy_seconds() - busy) / names.len().max(1) as f64;
    let seen = running
        .lock()
        .map_err(|_| anyhow::anyhow!("watch state poisoned"))?;
    for n in names {
        if let (Some(t0), Some(t1)) = (created.get(n), seen.get(n)) {
            samples.push(t1.saturating_duration_since(*t0));
        }
    }
    Ok((samples, cpu))
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs the benchmark.
pub async fn run(args: PodBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("kybern-bench-pods-")
        .tempdir()?;
    let archive = image_archive(&args, dir.path())?;
    let agent_dir = dir.path().join("agent");
    let store = ImageStore::open(&agent_dir.join("images"))?;
    kybern_agent::images::import_archive(&store, &archive, Some("busybox"))?;
    let image = store
        .resolve("busybox")?
        .context("the imported image has no name busybox")?;

    println!("== raw runc run --detach of the same image (overlayfs, new namespaces)");
    let raw = RawRunc {
        runc: args.runc.clone(),
        root: dir.path().join("raw-runc"),
        dir: dir.path().join("raw"),
        layers: image.layers.clone(),
        host: LinuxHost::default(),
    };
    let (mut raw_serial, raw_serial_cpu) = raw.batch("serial", args.serial, false).await?;
    let (mut raw_burst, raw_burst_cpu) = raw.batch("burst", args.concurrent, true).await?;
    LinuxHost::default().remove_cgroup("/kybern-bench")?;

    println!("== kybern: server + agent processes, pods watched until running");
    let (_server, client) = start_server(dir.path(), &[]).await?;
    let kubeconfig = dir.path().join("server/admin.kubeconfig");
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let mut agent = std::process::Command::new(std::env::current_exe()?)
        .args([
            "agent",
            "--node-name",
            "bench-node",
            "--node-ip",
            "127.0.0.1",
        ])
        .args(["--bridge", BRIDGE, "--pod-cidr", POD_CIDR])
        .args(["--agent-port", &agent_port.to_string()])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--data-dir")
        .arg(&agent_dir)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?;
    let agent_pid = agent.id();
    let result = measure(&client, &args, agent_pid, &agent_dir).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let cleanup = delete_all(&pods, &args.runc, &agent_dir.join("runc")).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    let unmasked = kybern_agent::network::remove_masquerade(BRIDGE, POD_CIDR).await;
    if let Some(keep) = &args.keep_logs {
        std::fs::create_dir_all(keep)?;
        for log in ["agent.log", "server.log"] {
            std::fs::copy(dir.path().join(log), keep.join(log))?;
        }
    }
    cleanup?;
    unmasked?;
    let ((mut serial, serial_cpu), (mut burst, burst_cpu), rss, cpu) = result?;

    println!();
    println!(
        "pod startup, create → all containers running (p50 / p99 ms), beside raw runc of the same bundle;"
    );
    println!("CPU is the whole machine's busy time while they start, per pod");
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "", "p50", "p99", "CPU ms/pod"
    );
    let row = |label: &str, (s, cpu): (&mut Samples, f64)| {
        println!(
            "{label:<34} {:>10} {:>10} {:>12.1}",
            ms(s.percentile(50.0)),
            ms(s.percentile(99.0)),
            cpu * 1000.0
        );
    };
    row(
        &format!("raw runc, 1 at a time (n={})", args.serial),
        (&mut raw_serial, raw_serial_cpu),
    );
    row(
        &format!("kybern pod, 1 at a time (n={})", args.serial),
        (&mut serial, serial_cpu),
    );
    row(
        &format!("raw runc, {} at once", args.concurrent),
        (&mut raw_burst, raw_burst_cpu),
    );
    row(
        &format!("kybern pods, {} at once", args.concurrent),
        (&mut burst, burst_cpu),
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "ratio kybern / raw runc at p50: {:.1}× (1 at a time), {:.1}× ({} at once)",
        ratio(serial.percentile(50.0), raw_serial.percentile(50.0)),
        ratio(burst.percentile(50.0), raw_burst.percentile(50.0)),
        args.concurrent
    );
    println!(
        "agent with {} pods running: RSS {:.1} MiB, CPU {:.1}% of one core (10 s idle window)",
        args.resident,
        rss as f64 / (1 << 20) as f64,
        cpu * 100.0
    );
    Ok(())
}

async fn measure(
    client: &kube::Client,
    args: &PodBenchArgs,
    agent_pid: u32,
    agent_dir: &Path,
) -> anyhow::Result<((Samples, f64), (Samples, f64), u64, f64)> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.get_opt("bench-node").await?.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the agent did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create_ns(client, NS).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let (running, watch) = watch_running(client);
    let names = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    };
    let serial = start_pods(&pods, &running, &names("serial", args.serial), false).await?;
    delete_all(&pods, &args.runc, &agent_dir.join("runc")).await?;
    let burst = start_pods(&pods, &running, &names("burst", args.concurrent), true).await?;
    delete_all(&pods, &args.runc, &agent_dir.join("runc")).await?;
    start_pods(&pods, &running, &names("resident", args.resident), true).await?;
    // Let the startup settle, then read a quiet window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = cpu_seconds(agent_pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = (cpu_seconds(agent_pid) - cpu0) / t0.elapsed().as_secs_f64();
    let rss = status_bytes(agent_pid, "VmRSS:");
    watch.abort();
    Ok((serial, burst, rss, cpu))
}
