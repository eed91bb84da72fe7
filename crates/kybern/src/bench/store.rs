//! `kybern bench store`: the sqlite backend, the etcd backend and raw etcd, measured
//! with the same workloads in the same run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use kybern_store::etcd_process::EtcdProcess;
use kybern_store::{EtcdOptions, EtcdStore, SqliteOptions, SqliteStore, Store};

use super::stats::{Samples, ms};
use super::target::{BenchTarget, RawEtcd};

/// Arguments of `kybern bench store`.
#[derive(clap::Args, Debug)]
pub struct StoreBenchArgs {
    /// Sequential creates for the single-writer latency figure.
    #[arg(long, default_value_t = 2_000)]
    latency_ops: usize,
    /// Creates per concurrency level for the throughput figures.
    #[arg(long, default_value_t = 20_000)]
    throughput_ops: usize,
    /// Keys in the range read.
    #[arg(long, default_value_t = 10_000)]
    range_keys: usize,
    /// Writes observed by the watchers.
    #[arg(long, default_value_t = 200)]
    watch_events: usize,
    /// Watcher counts to measure delivery latency with.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    watchers: Vec<usize>,
    /// Use this etcd instead of starting one from /usr/bin/etcd.
    #[arg(long)]
    etcd_endpoint: Option<String>,
    /// Skip the etcd backend and the raw etcd baseline.
    #[arg(long)]
    sqlite_only: bool,
}

/// One target's figures.
#[derive(Debug, Default)]
struct Report {
    create_p50: Duration,
    create_p99: Duration,
    throughput: Vec<(usize, f64)>,
    range: Duration,
    range_keys: usize,
    watch: Vec<(usize, Duration, Duration)>,
}

const VALUE_BYTES: usize = 1024;

pub async fn run(args: StoreBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("kybern-bench-").tempdir()?;
    let mut reports: Vec<(&str, Report)> = Vec::new();

    let mut options = SqliteOptions::new(dir.path().join("bench.db"));
    options.compaction = None;
    let sqlite: Arc<dyn Store> = SqliteStore::open(options)?;
    eprintln!("bench store: sqlite backend ({})", dir.path().display());
    reports.push(("sqlite", measure(&sqlite, &args).await?));
    drop(sqlite);

    if !args.sqlite_only {
        let (_etcd, endpoint) = match &args.etcd_endpoint {
            Some(endpoint) => (None, endpoint.clone()),
            None => {
                let etcd = EtcdProcess::start().context("starting etcd for the baseline")?;
                let endpoint = etcd.endpoint.clone();
                (Some(etcd), endpoint)
            }
        };
        eprintln!("bench store: raw etcd baseline ({endpoint})");
        let raw = RawEtcd(etcd_client::Client::connect([endpoint.as_str()], None).await?);
        reports.push(("raw etcd", measure_prefixed(&raw, &args, "/raw").await?));
        eprintln!("bench store: etcd backend ({endpoint})");
        let backend: Arc<dyn Store> =
            Arc::new(EtcdStore::connect(EtcdOptions::new(vec![endpoint])).await?);
        reports.push((
            "etcd backend",
            measure_prefixed(&backend, &args, "/backend").await?,
        ));
    }
    print(&reports, &args);
    Ok(())
}

async fn measure<T: BenchTarget + 'static>(
    target: &T,
    args: &StoreBenchArgs,
) -> anyhow::Result<Report> {
    measure_prefixed(target, args, "/bench").await
}

async fn measure_prefixed<T: BenchTarget + 'static>(
    target: &T,
    args: &StoreBenchArgs,
    root: &str,
) -> anyhow::Result<Report> {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let mut report = Report::default();

    // Single-writer create latency.
    let mut lat = Samples::with_capacity(args.latency_ops);
    for i in 0..args.latency_ops {
        let t = Instant::now();
        target
            .create(&format!("{root}/latency/{i:08}"), value.clone())
            .await?;
        lat.push(t.elapsed());
    }
    report.create_p50 = lat.percentile(50.0);
    report.create_p99 = lat.percentile(99.0);

    // Throughput at 1, 16 and 64 concurrent writers.
    for writers in [1usize, 16, 64] {
        let ops = if writers == 1 {
            args.throughput_ops.min(args.latency_ops * 2)
        } else {
            args.throughput_ops
        };
        report.throughput.push((
            writers,
            throughput(target, root, writers, ops, &value).await?,
        ));
    }

    // A range of `range_keys` keys.
    let prefix = format!("{root}/range/");
    fill(target, &prefix, args.range_keys, &value).await?;
    let mut ranges = Samples::default();
    for _ in 0..5 {
        let t = Instant::now();
        let n = target.range(&prefix).await?;
        ranges.push(t.elapsed());
        anyhow::ensure!(
            n == args.range_keys,
            "range returned {n} keys, expected {}",
            args.range_keys
        );
        report.range_keys = n;
    }
    report.range = ranges.percentile(50.0);

    // Watch delivery latency.
    for &watchers in &args.watchers {
        let (p50, p99) = watch_latency(
            target,
            &format!("{root}/watch{watchers}/"),
            watchers,
            args.watch_events,
            &value,
        )
        .await?;
        report.watch.push((watchers, p50, p99));
    }
    Ok(report)
}

async fn throughput<T: BenchTarget + 'static>(
    target: &T,
    root: &str,
    writers: usize,
    ops: usize,
    value: &Bytes,
) -> anyhow::Result<f64> {
    let per_writer = ops.div_ceil(writers);
    let start = Instant::now();
    let results = futures::future::join_all((0..writers).map(|w| {
        let value = value.clone();
        async move {
            for i in 0..per_writer {
                target
                    .create(&format!("{root}/tp{writers}/{w}/{i:08}"), value.clone())
                    .await?;
            }
            anyhow::Ok(())
        }
    }))
    .await;
    for r in results {
        r?;
    }
    Ok((per_writer * writers) as f64 / start.elapsed().as_secs_f64())
}

async fn fill<T: BenchTarget + 'static>(
    target: &T,
    prefix: &str,
    n: usize,
    value: &Bytes,
) -> anyhow::Result<()> {
    let writers = 32;
    let results = futures::future::join_all((0..writers).map(|w| {
        let value = value.clone();
        async move {
            for i in (w..n).step_by(writers) {
                target
                    .create(&format!("{prefix}{i:08}"), value.clone())
                    .await?;
            }
            anyhow::Ok(())
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Starts `watchers` watches on `prefix`, makes `events` paced writes, and
/// measures from just before each write to each watcher's receipt of it.
async fn watch_latency<T: BenchTarget + 'static>(
    target: &T,
    prefix: &str,
    watchers: usize,
    events: usize,
    value: &Bytes,
) -> anyhow::Result<(Duration, Duration)> {
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let mut stream = target.watch(prefix).await?;
        tasks.push(tokio::spawn(async move {
            let mut received = Vec::with_capacity(events);
            while received.len() < events {
                match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                    Ok(Some(Ok(rev))) => received.push((rev, Instant::now())),
                    _ => break,
                }
            }
            received
        }));
    }
    // Pace the writes so that the figure is delivery latency, not queueing.
    let pace = Duration::from_micros(2_000 + 10 * watchers as u64);
    let mut sent = HashMap::with_capacity(events);
    for i in 0..events {
        let t0 = Instant::now();
        let rev = target
            .create(&format!("{prefix}{i:08}"), value.clone())
            .await?;
        sent.insert(rev, t0);
        tokio::time::sleep(pace.saturating_sub(t0.elapsed())).await;
    }
    let mut seen = Vec::with_capacity(watchers);
    for task in tasks {
        seen.push(task.await?);
    }
    let mut all = super::stats::deliveries(seen, &sent, watchers * events)?;
    Ok((all.percentile(50.0), all.percentile(99.0)))
}

fn print(reports: &[(&str, Report)], args: &StoreBenchArgs) {
    println!();
    println!(
        "kybern bench store: {VALUE_BYTES}-byte values, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("{:<36}", "figure");
    for (name, _) in reports {
        print!("{name:>16}");
    }
    println!();
    let row = |label: String, cell: &dyn Fn(&Report) -> String| {
        print!("{label:<36}");
        for (_, r) in reports {
            print!("{:>16}", cell(r));
        }
        println!();
    };
    row("create latency p50 (ms)".into(), &|r| ms(r.create_p50));
    row("create latency p99 (ms)".into(), &|r| ms(r.create_p99));
    for (i, (writers, _)) in reports[0].1.throughput.iter().enumerate() {
        row(format!("creates/s, {writers} writers"), &|r| {
            format!("{:.0}", r.throughput[i].1)
        });
    }
    row(format!("range of {} keys (ms)", args.range_keys), &|r| {
        ms(r.range)
    });
    for (i, (watchers, _, _)) in reports[0].1.watch.iter().enumerate() {
        row(
            format!("watch delivery p50, {watchers} watchers (ms)"),
            &|r| ms(r.watch[i].1),
        );
        row(
            format!("watch delivery p99, {watchers} watchers (ms)"),
            &|r| ms(r.watch[i].2),
        );
    }
    if let (Some(raw), Some(backend)) = (
        reports.iter().find(|(n, _)| *n == "raw etcd"),
        reports.iter().find(|(n, _)| *n == "etcd backend"),
    ) {
        println!();
        println!("etcd backend / raw etcd (time ratios; 1.00 = no overhead):");
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        println!(
            "  create p50 {:.2}  p99 {:.2}",
            ratio(backend.1.create_p50, raw.1.create_p50),
            ratio(backend.1.create_p99, raw.1.create_p99)
        );
        for (i, (w, tp)) in raw.1.throughput.iter().enumerate() {
            println!(
                "  throughput {w} writers {:.2}",
                tp / backend.1.throughput[i].1.max(1e-9)
            );
        }
        println!("  range {:.2}", ratio(backend.1.range, raw.1.range));
        for (i, (w, p50, p99)) in raw.1.watch.iter().enumerate() {
            println!(
                "  watch {w} watchers p50 {:.2} p99 {:.2}",
                ratio(backend.1.watch[i].1, *p50),
                ratio(backend.1.watch[i].2, *p99)
            );
        }
    }
}
