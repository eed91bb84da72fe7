//! `kybern bench scheduler`: the scheduler end to end through a `kybern
//! server` child process, with simulated nodes, in the shapes of upstream's
//! scheduler_perf (SchedulingBasic, pod anti-affinity, topology spreading,
//! preemption),
//! and the simulator's own figures (nodes Ready, pods Running, pods gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::Request;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::events::send_unread;
use serde_json::json;

use super::server_process::{create_ns, rss_bytes, start_server};
use super::stats::{Samples, ms};
use crate::sim::{Sim, SimArgs};

/// Arguments of `kybern bench scheduler`.
#[derive(clap::Args, Debug)]
pub struct SchedulerBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Pods scheduled before measuring.
    #[arg(long, default_value_t = 1_000)]
    initial_pods: usize,
    /// Pods measured (the affinity and spreading workloads use a tenth, as upstream's do).
    #[arg(long, default_value_t = 10_000)]
    measured_pods: usize,
    /// Workloads to run, each on a fresh server.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "basic,anti-affinity,topology-spread,preemption,simulator"
    )]
    workloads: Vec<Workload>,
}

/// A benchmark workload.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// SchedulingBasic: plain pods with requests.
    Basic,
    /// Pods with required anti-affinity to each other per host.
    AntiAffinity,
    /// Pods spread over zones with maxSkew 1.
    TopologySpread,
    /// Every node full of low-priority pods; each measured pod has a higher
    /// priority and must preempt one.
    Preemption,
    /// The simulator: nodes Ready, pods Running, pods deleted.
    Simulator,
}

/// When each pod was created and when it was seen bound or running.
#[derive(Default)]
struct Timeline {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

/// The PriorityClass the preemption workload's measured pods use.
const HIGH_PRIORITY: &str = "bench-high";

fn pod(name: &str, workload: Workload) -> anyhow::Result<Vec<u8>> {
    let mut pod = json!({
        "metadata": {"name": name, "labels": {"color": "green"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
    });
    match workload {
        Workload::Preemption => {
            // One fills a 1-CPU node; measured pods take the victims' place.
            pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("900m");
            pod["spec"]["terminationGracePeriodSeconds"] = json!(1);
            if name.starts_with("m-") {
                pod["spec"]["priorityClassName"] = json!(HIGH_PRIORITY);
            }
        }
        Workload::AntiAffinity => {
            pod["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"color": "green"}}}]}});
        }
        Workload::TopologySpread => {
            pod["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"color": "green"}}}]);
        }
        Workload::Basic | Workload::Simulator => {}
    }
    Ok(serde_json::to_vec(&pod)?)
}

/// Follows the namespace's pods, noting when each is bound and running. It
/// decodes them as the control plane's caches do, without `managedFields`,
/// so that the measuring costs the shared CPU less.
fn follow(
    client: &kube::Client,
    ns: &str,
    timeline: Arc<Mutex<Timeline>>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<CachedPod> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = events.next().await {
            let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
                continue;
            };
            let now = Instant::now();
            let name = p.metadata.name.clone().unwrap_or_default();
            let Ok(mut t) = timeline.lock() else { return };
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                t.bound.entry(name.clone()).or_insert(now);
            }
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                t.running.entry(name).or_insert(now);
            }
        }
    })
}

/// Creates `count` pods named `prefix-N` from 64 concurrent clients. Like
/// the simulated kubelets, the creator does not decode the pods the server
/// answers with (managedFields and all): on two shared cores that decoding
/// took CPU from the server being measured, and the time a create takes is
/// the same whether its answer is read or not.
async fn create_pods(
    client: &kube::Client,
    ns: &str,
    prefix: &str,
    count: usize,
    workload: Workload,
    timeline: &Arc<Mutex<Timeline>>,
) -> anyhow::Result<()> {
    let pods = Request::new(format!("/api/v1/namespaces/{ns}/pods"));
    futures::stream::iter(0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let pods = &pods;
            async move {
                let body = pod(&name, workload)?;
                let started = Instant::now();
                send_unread(client, pods.create(&PostParams::default(), body))
                    .await
                    .with_context(|| format!("creating {name}"))?;
                if let Ok(mut t) = timeline.lock() {
                    t.created.insert(name, started);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Waits until `count` pods named `prefix-*` are in the set `pick` selects.
async fn wait_all(
    timeline: &Arc<Mutex<Timeline>>,
    prefix: &str,
    count: usize,
    pick: fn(&Timeline) -> &HashMap<String, Instant>,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let done = timeline
            .lock()
            .map(|t| pick(&t).keys().filter(|k| k.starts_with(prefix)).count())
            .unwrap_or(0);
        if done >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {count} pods {prefix}-* got there in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `scheduler_scheduling_algorithm_duration_seconds` sum and count from `/metrics`.
/// The scheduler's time so far, from its metrics.
#[derive(Clone, Copy, Default)]
struct SchedulerTime {
    /// Seconds in the scheduling algorithm (filter and score), and attempts.
    algorithm: (f64, f64),
    /// Seconds in PostFilter (preemption), and calls.
    post_filter: (f64, f64),
}

async fn scheduler_time(client: &kube::Client) -> anyhow::Result<SchedulerTime> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let read = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let post_filter = "scheduler_framework_extension_point_duration_seconds";
    Ok(SchedulerTime {
        algorithm: (
            read("scheduler_scheduling_algorithm_duration_seconds_sum"),
            read("scheduler_scheduling_algorithm_duration_seconds_count"),
        ),
        post_filter: (
            read(&format!(
                "{post_filter}_sum{{extension_point=\"PostFilter\"}}"
            )),
            read(&format!(
                "{post_filter}_count{{extension_point=\"PostFilter\"}}"
            )),
        ),
    })
}

fn sim_args(nodes: usize, workload: Workload) -> SimArgs {
    SimArgs {
        kubeconfig: Default::default(),
        nodes,
        name_prefix: "sim".into(),
        cpu: if workload == Workload::Preemption {
            "1".into()
        } else {
            "4".into()
        },
        memory: "32Gi".into(),
        pods: 110,
        labels: Vec::new(),
        taints: Vec::new(),
        job_seconds: Duration::from_secs(5),
        heartbeat_seconds: Duration::from_secs(10),
        fail_nodes: Vec::new(),
        zones: 3,
    }
}

/// Figures of one workload.
struct Figures {
    workload: Workload,
    lines: Vec<(String, String)>,
}

async fn run_one(args: &SchedulerBenchArgs, workload: Workload) -> anyhow::Result<Figures> {
    let dir = tempfile::Builder::new()
        .prefix("kybern-bench-sched-")
        .tempdir()?;
    let (server, client) = start_server(dir.path(), &[]).await?;
    let ns = "bench";
    create_ns(&client, ns).await?;
    let sim = Arc::new(Sim::new(client.clone(), sim_args(args.nodes, workload)));
    let started = Instant::now();
    sim.register().await?;
    let nodes_ready = started.elapsed();
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let follower = follow(&client, ns, timeline.clone());
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut lines = Vec::new();
    let limit = Duration::from_secs(600);
    if workload == Workload::Simulator {
        let runner = tokio::spawn(crate::sim::run_nodes(sim.clone()));
        let t = Instant::now();
        create_pods(&client, ns, "p", args.measured_pods, workload, &timeline).await?;
        wait_all(&timeline, "p", args.measured_pods, |t| &t.running, limit).await?;
        let running = t.elapsed();
        let rss = rss_bytes(server.child.id());
        let t = Instant::now();
        api.delete_collection(
            &DeleteParams::default().grace_period(1),
            &ListParams::default(),
        )
        .await?;
        let deadline = Instant::now() + limit;
        loop {
            let left = api.list_metadata(&ListParams::default().limit(1)).await?;
            if left.items.is_empty() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "pods were not removed in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gone = t.elapsed();
        runner.abort();
        lines.push((
            format!("{} nodes Ready (s)", args.nodes),
            format!("{:.1}", nodes_ready.as_secs_f64()),
        ));
        lines.push((
            format!("{} pods created and Running (s)", args.measured_pods),
            format!("{:.1}", running.as_secs_f64()),
        ));
        lines.push((
            format!(
                "{} pods deleted and gone, 1 s grace (s)",
                args.measured_pods
            ),
            format!("{:.1}", gone.as_secs_f64()),
        ));
        lines.push((
            "control-plane RSS with the pods running (MiB)".into(),
            format!("{:.0}", rss as f64 / 1048576.0),
        ));
    } else {
        let measured = if workload == Workload::Basic {
            args.measured_pods
        } else {
            (args.measured_pods / 10).max(1)
        };
        let initial = match workload {
            Workload::Basic => args.initial_pods,
            // Every node full, so that each measured pod must preempt.
            Workload::Preemption => args.nodes,
            _ => args.initial_pods.min(measured),
        };
        // Victims must go away after their grace period, as a kubelet's would.
        let runner = (workload == Workload::Preemption)
            .then(|| tokio::spawn(crate::sim::run_nodes(sim.clone())));
        if workload == Workload::Preemption {
            let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": HIGH_PRIORITY}, "value": 1000});
            let api: Api<k8s_openapi::api::scheduling::v1::PriorityClass> =
                Api::all(client.clone());
            api.create(&PostParams::default(), &serde_json::from_value(class)?)
                .await?;
        }
        create_pods(&client, ns, "init", initial, workload, &timeline).await?;
        wait_all(&timeline, "init", initial, |t| &t.bound, limit).await?;
        let time0 = scheduler_time(&client).await?;
        let t = Instant::now();
        create_pods(&client, ns, "m", measured, workload, &timeline).await?;
        let created_in = t.elapsed();
        wait_all(&timeline, "m", measured, |t| &t.bound, limit).await?;
        let took = t.elapsed();
        let time1 = scheduler_time(&client).await?;
        let mut latency = Samples::with_capacity(measured);
        if let Ok(t) = timeline.lock() {
            for (name, at) in t.bound.iter().filter(|(k, _)| k.starts_with("m-")) {
                if let Some(c) = t.created.get(name) {
                    latency.push(at.saturating_duration_since(*c));
                }
            }
        }
        lines.push((
            format!("{measured} pods on {} nodes: pods/s", args.nodes),
            format!("{:.0}", measured as f64 / took.as_secs_f64()),
        ));
        lines.push((
            "baseline: pod creates/s meanwhile (the ceiling)".into(),
            format!("{:.0}", measured as f64 / created_in.as_secs_f64()),
        ));
        lines.push((
            "scheduling latency p50 (ms), create to bound".into(),
            ms(latency.percentile(50.0)),
        ));
        lines.push((
            "scheduling latency p99 (ms), create to bound".into(),
            ms(latency.percentile(99.0)),
        ));
        let algorithm = time1.algorithm.0 - time0.algorithm.0;
        let attempts = time1.algorithm.1 - time0.algorithm.1;
        lines.push((
            "algorithm time per attempt (ms)".into(),
            format!("{:.3}", 1000.0 * algorithm / attempts.max(1.0)),
        ));
        let post_filter = time1.post_filter.0 - time0.post_filter.0;
        let calls = time1.post_filter.1 - time0.post_filter.1;
        if calls > 0.0 {
            lines.push((
                format!("preemption (PostFilter) per call (ms), {calls:.0} calls"),
                format!("{:.3}", 1000.0 * post_filter / calls),
            ));
        }
        lines.push((
            format!(
                "algorithm{} per measured pod (ms), {attempts:.0} attempts",
                if calls > 0.0 { " + preemption" } else { "" }
            ),
            format!(
                "{:.3}",
                1000.0 * (algorithm + post_filter) / measured as f64
            ),
        ));
        lines.push((
            format!("{} nodes registered (s)", args.nodes),
            format!("{:.1}", nodes_ready.as_secs_f64()),
        ));
        if let Some(r) = runner {
            r.abort();
        }
    }
    follower.abort();
    Ok(Figures { workload, lines })
}

pub async fn run(args: SchedulerBenchArgs) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for w in &args.workloads {
        eprintln!("bench scheduler: {w:?}");
        all.push(run_one(&args, *w).await?);
    }
    println!();
    println!(
        "kybern bench scheduler: kybern server (API server + scheduler) and simulated nodes, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for f in all {
        println!("{:?}", f.workload);
        for (label, value) in f.lines {
            println!("  {label:<56}{value:>12}");
        }
    }
    Ok(())
}
