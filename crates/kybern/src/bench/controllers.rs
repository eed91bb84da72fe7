//! `kybern bench controllers`: a set of Deployments created, rolled out to
//! Running, updated and deleted on simulated nodes through a `kybern server`
//! child process (API server, scheduler and controllers), timed, with the
//! control plane's RSS; and, in the same run, the baseline of the same
//! number of bare pods created directly and deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::server_process::{create_ns, rss_bytes, start_server, status_bytes};
use crate::sim::{Sim, SimArgs};

/// Arguments of `kybern bench controllers`.
#[derive(clap::Args, Debug)]
pub struct ControllerBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Pods in all.
    #[arg(long, default_value_t = 20_000)]
    pods: usize,
    /// Deployments the pods are spread over.
    #[arg(long, default_value_t = 20)]
    deployments: usize,
    /// Extra `kybern server` arguments (e.g. `--server-arg=--disable-controllers`).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Seconds to wait for each phase before giving up.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

const NS: &str = "bench";

fn sim_args(nodes: usize, pods: usize) -> SimArgs {
    // Room for the surge of a rolling update beside every running pod.
    let per_node = u32::try_from((pods * 3 / 2).div_ceil(nodes.max(1)))
        .unwrap_or(u32::MAX)
        .max(110);
    SimArgs {
        kubeconfig: Default::default(),
        nodes,
        name_prefix: "sim".into(),
        cpu: "64".into(),
        memory: "256Gi".into(),
        pods: per_node,
        labels: Vec::new(),
        taints: Vec::new(),
        job_seconds: Duration::from_secs(5),
        heartbeat_seconds: Duration::from_secs(10),
        fail_nodes: Vec::new(),
        zones: 3,
    }
}

/// Samples the server's RSS every 250 ms; keeps the peak.
fn watch_rss(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    let task = tokio::spawn(async move {
        loop {
            p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (peak, task)
}

fn deployment(name: &str, replicas: usize, image: &str) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": image,
                        "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]},
            },
        },
    }))?)
}

/// Waits until every Deployment reports all its replicas updated and
/// available for the current generation.
async fn rolled_out(api: &Api<Deployment>, total: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let list = api.list(&ListParams::default()).await?;
        let done = list.items.iter().all(|d| {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            d.status.as_ref().is_some_and(|s| {
                s.observed_generation >= d.metadata.generation
                    && s.updated_replicas == Some(want)
                    && s.available_replicas == Some(want)
                    && s.replicas == Some(want)
            })
        });
        let sum: i32 = list
            .items
            .iter()
            .filter_map(|d| d.status.as_ref()?.available_replicas)
            .sum();
        if done && usize::try_from(sum).unwrap_or(0) == total {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not rolled out in {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until no pod is left in the namespace.
async fn pods_gone(pods: &Api<Pod>, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if pods
            .list_metadata(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "pods not gone in {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `total` pods exist and every one runs. Asks the watch cache
/// (`resourceVersion=0`) only for the first pod that does not, so that polling
/// neither lists (and the bench process decodes) every pod each round nor
/// reads the store page by page.
async fn pods_running(pods: &Api<Pod>, total: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let waiting = pods
            .list_metadata(
                &ListParams::default()
                    .match_any()
                    .fields("status.phase!=Running")
                    .limit(1),
            )
            .await?;
        if waiting.items.is_empty() {
            let all = pods
                .list_metadata(&ListParams::default().match_any().limit(1))
                .await?;
            let count = all.metadata.remaining_item_count.unwrap_or(0)
                + i64::try_from(all.items.len()).unwrap_or(0);
            if usize::try_from(count).unwrap_or(0) >= total {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all {total} pods running in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ControllerBenchArgs) -> anyhow::Result<()> {
    let limit = Duration::from_secs(args.timeout);
    let dir = tempfile::Builder::new()
        .prefix("kybern-bench-ctl-")
        .tempdir()?;
    let extra: Vec<&str> = args.server_arg.iter().map(String::as_str).collect();
    let (server, client) = start_server(dir.path(), &extra).await?;
    let pid = server.child.id();
    create_ns(&client, NS).await?;
    let sim = Arc::new(Sim::new(client.clone(), sim_args(args.nodes, args.pods)));
    sim.register().await?;
    let runner = tokio::spawn(crate::sim::run_nodes(sim.clone()));
    let idle_rss = rss_bytes(pid);
    let (peak, sampler) = watch_rss(pid);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Baseline: the same number of bare pods, created directly.
    eprintln!("bench controllers: baseline, {} bare pods", args.pods);
    let t = Instant::now();
    let template: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "bare-", "labels": {"app": "bare"}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "registry.local/bare:1",
                "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]},
    }))?;
    let post = PostParams::default();
    let results: Vec<_> = futures::stream::iter(0..args.pods)
        .map(|_| pods.create(&post, &template))
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r.context("creating a bare pod")?;
    }
    pods_running(&pods, args.pods, limit).await?;
    let bare_running = t.elapsed();
    let bare_rss = rss_bytes(pid);
    let t = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    pods_gone(&pods, limit).await?;
    let bare_gone = t.elapsed();

    // Deployments: created, rolled out, updated, deleted.
    eprintln!(
        "bench controllers: {} Deployments, {} pods",
        args.deployments, args.pods
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let per = args.pods / args.deployments.max(1);
    let total = per * args.deployments.max(1);
    let t = Instant::now();
    for i in 0..args.deployments.max(1) {
        let d = deployment(&format!("d{i}"), per, "registry.local/app:1")?;
        deployments.create(&post, &d).await?;
    }
    rolled_out(&deployments, total, limit).await?;
    let created = t.elapsed();
    let steady_rss = rss_bytes(pid);
    // Anonymous memory is the process's own; file-backed pages are the
    // store's mapped database, which the kernel may drop at will.
    let steady_split = (status_bytes(pid, "RssAnon:"), status_bytes(pid, "RssFile:"));
    let t = Instant::now();
    for i in 0..args.deployments.max(1) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "registry.local/app:2"}]}}}});
        deployments
            .patch(
                &format!("d{i}"),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await?;
    }
    rolled_out(&deployments, total, limit).await?;
    let updated = t.elapsed();
    let t = Instant::now();
    deployments
        .delete_collection(&DeleteParams::background(), &ListParams::default())
        .await?;
    pods_gone(&pods, limit).await?;
    let deleted = t.elapsed();
    sampler.abort();
    runner.abort();

    let mib = |b: u64| format!("{:.0}", b as f64 / 1048576.0);
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    println!();
    println!(
        "kybern bench controllers: {} simulated nodes, {total} pods in {} Deployments (sqlite store)",
        args.nodes, args.deployments
    );
    for (label, value) in [
        (
            format!("baseline: {total} bare pods created and Running (s)"),
            secs(bare_running),
        ),
        (
            format!("baseline: {total} bare pods deleted and gone (s)"),
            secs(bare_gone),
        ),
        (
            format!("{total} pods created and rolled out through Deployments (s)"),
            secs(created),
        ),
        (
            "template updated and rolled out again (s)".into(),
            secs(updated),
        ),
        (
            "Deployments deleted and every pod gone (s)".into(),
            secs(deleted),
        ),
        (
            "control-plane RSS idle, nodes registered (MiB)".into(),
            mib(idle_rss),
        ),
        (
            "control-plane RSS with the bare pods running (MiB)".into(),
            mib(bare_rss),
        ),
        (
            "control-plane RSS with the pods running (MiB)".into(),
            mib(steady_rss),
        ),
        (
            "  of which anonymous / file-backed (MiB)".into(),
            format!("{} / {}", mib(steady_split.0), mib(steady_split.1)),
        ),
        (
            "control-plane RSS peak (MiB)".into(),
            mib(peak.load(Ordering::Relaxed)),
        ),
    ] {
        println!("  {label:<64}{value:>10}");
    }
    Ok(())
}
