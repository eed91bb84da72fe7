//! `kybern bench api`: the API server (a `kybern server` child process over
//! TLS, driven by kube-rs) against the same sqlite store driven directly, in the
//! same run. The server runs in its own process so that its RSS is its own.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kybern_store::{SqliteOptions, SqliteStore, Store};

use super::server_process::{create_ns, rss_bytes, start_server, status_bytes};
use super::stats::{Samples, ms};

/// Arguments of `kybern bench api`.
#[derive(clap::Args, Debug)]
pub struct ApiBenchArgs {
    /// Sequential requests for the latency figures.
    #[arg(long, default_value_t = 2_000)]
    latency_ops: usize,
    /// Creates for the 64-client throughput figure.
    #[arg(long, default_value_t = 10_000)]
    throughput_ops: usize,
    /// 1 KiB ConfigMaps listed from the watch cache.
    #[arg(long, default_value_t = 100_000)]
    list_objects: usize,
    /// Concurrent watchers that must all see each update.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Updates observed by the watchers.
    #[arg(long, default_value_t = 20)]
    watch_updates: usize,
    /// How the watchers read their streams; each is measured in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "h2,http1")]
    watch_clients: Vec<super::watchers::WatchClient>,
}

fn config_map(name: &str, payload: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::core::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("payload".to_owned(), payload.to_owned())].into()),
        ..Default::default()
    }
}

pub async fn run(args: ApiBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("kybern-bench-api-")
        .tempdir()?;
    let payload = "x".repeat(1000);

    eprintln!("bench api: raw store");
    // Baseline: the raw store, its own file.
    let mut raw_opts = SqliteOptions::new(dir.path().join("raw.db"));
    raw_opts.compaction = None;
    let raw = SqliteStore::open(raw_opts)?;
    let value = Bytes::from(serde_json::to_vec(&config_map("x", &payload))?);
    let mut raw_create = Samples::with_capacity(args.latency_ops);
    for i in 0..args.latency_ops {
        let t = Instant::now();
        raw.create(
            &format!("/registry/core/configmaps/bench/l{i}"),
            value.clone(),
        )
        .await?;
        raw_create.push(t.elapsed());
    }
    let mut raw_get = Samples::with_capacity(args.latency_ops);
    for i in 0..args.latency_ops {
        let t = Instant::now();
        raw.get(&format!("/registry/core/configmaps/bench/l{i}"), 0)
            .await?;
        raw_get.push(t.elapsed());
    }
    let raw_tp = {
        let start = Instant::now();
        let per = args.throughput_ops / 64;
        let tasks: Vec<_> = (0..64)
            .map(|w| {
                let (raw, value) = (raw.clone(), value.clone());
                tokio::spawn(async move {
                    for i in 0..per {
                        raw.create(
                            &format!("/registry/core/configmaps/tp/{w}-{i}"),
                            value.clone(),
                        )
                        .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        (per * 64) as f64 / start.elapsed().as_secs_f64()
    };
    // The raw range baseline: as many keys as the API list, in their own prefix.
    for i in 0..args.list_objects {
        raw.create(
            &format!("/registry/core/configmaps/list/o{i:06}"),
            value.clone(),
        )
        .await?;
    }
    let mut list_raw = Samples::default();
    let mut raw_bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = raw
            .range(kybern_store::RangeRequest::prefix(
                "/registry/core/configmaps/list/",
            ))
            .await?;
        list_raw.push(t.elapsed());
        raw_bytes = r.kvs.iter().map(|kv| kv.value.len()).sum::<usize>();
    }
    drop(raw);

    eprintln!("bench api: API server: create and get");
    // The API server alone, as upstream benchmarks it: in-process
    // controllers would watch every ConfigMap written (the garbage
    // collector, the root CA publisher) and take CPU from it.
    let (server, client) = start_server(
        dir.path(),
        &["--disable-scheduler", "--disable-controllers"],
    )
    .await
    .context("starting the API server")?;
    let pid = server.child.id();
    for ns in ["bench", "tp", "list"] {
        create_ns(&client, ns).await?;
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");
    let mut api_create = Samples::with_capacity(args.latency_ops);
    for i in 0..args.latency_ops {
        let cm = config_map(&format!("l{i}"), &payload);
        let t = Instant::now();
        api.create(&PostParams::default(), &cm).await?;
        api_create.push(t.elapsed());
    }
    let mut api_get = Samples::with_capacity(args.latency_ops);
    for i in 0..args.latency_ops {
        let t = Instant::now();
        api.get(&format!("l{i}")).await?;
        api_get.push(t.elapsed());
    }
    // Gets paced at 1,000 requests per second from 8 clients.
    let paced = {
        let mut tasks = Vec::new();
        for c in 0..8 {
            let api = api.clone();
            let n = args.latency_ops.min(3_000) / 8;
            tasks.push(tokio::spawn(async move {
                let mut s = Samples::with_capacity(n);
                let mut tick = tokio::time::interval(Duration::from_millis(8));
                for i in 0..n {
                    tick.tick().await;
                    let t = Instant::now();
                    api.get(&format!("l{}", (i * 8 + c) % n.max(1))).await?;
                    s.push(t.elapsed());
                }
                anyhow::Ok(s)
            }));
        }
        let mut all = Samples::default();
        for t in tasks {
            for d in t.await??.into_sorted() {
                all.push(d);
            }
        }
        all
    };
    let api_tp = {
        let start = Instant::now();
        let per = args.throughput_ops / 64;
        let tasks: Vec<_> = (0..64)
            .map(|w| {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), "tp");
                let payload = payload.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        api.create(
                            &PostParams::default(),
                            &config_map(&format!("{w}-{i}"), &payload),
                        )
                        .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        (per * 64) as f64 / start.elapsed().as_secs_f64()
    };
    // The same creates as client-go sends them: 64 streams on one HTTP/2
    // connection, from a client that neither encodes nor decodes typed objects.
    create_ns(&client, "tp-h2").await?;
    let h2 = super::raw_client::connect(server.port, &dir.path().join("server/pki")).await?;
    let h2_tp =
        super::raw_client::creates(&h2, "tp-h2", 64, args.throughput_ops / 64, &payload).await?;
    drop(h2);

    eprintln!("bench api: list");
    // A large list from the watch cache, beside a raw range of the same keys.
    let list_api: Api<ConfigMap> = Api::namespaced(client.clone(), "list");
    let rss_before = rss_bytes(pid);
    let fill: Vec<_> = (0..32)
        .map(|w| {
            let (api, payload, n) = (list_api.clone(), payload.clone(), args.list_objects);
            tokio::spawn(async move {
                for i in (w..n).step_by(32) {
                    api.create(
                        &PostParams::default(),
                        &config_map(&format!("o{i:06}"), &payload),
                    )
                    .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in fill {
        t.await??;
    }
    let rss_filled = rss_bytes(pid);
    let mut list_cache = Samples::default();
    // The objects as the server holds them (with the metadata it adds): the list's size.
    let mut listed_bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        // The whole body, as bytes: the server's time, not the client's decoding.
        let request = http::Request::get("/api/v1/namespaces/list/configmaps?resourceVersion=0")
            .body(Vec::new())?;
        let body = client.request_text(request).await?;
        listed_bytes = body.len();
        // Only the bench's objects carry `payload`: the namespace also holds the
        // root CA publisher's `kube-root-ca.crt`.
        let n = body.matches("\"payload\":").count();
        list_cache.push(t.elapsed());
        anyhow::ensure!(
            n == args.list_objects || list_cache.len() < 5,
            "cache list returned {n} of {}",
            args.list_objects
        );
    }
    let rss_after = rss_bytes(pid);
    let (anon_after, file_after) = (status_bytes(pid, "RssAnon:"), status_bytes(pid, "RssFile:"));

    let mut watches = Vec::new();
    for (i, mode) in args.watch_clients.iter().enumerate() {
        eprintln!("bench api: {} watchers ({mode:?})", args.watchers);
        let ns = format!("watch-{i}");
        create_ns(&client, &ns).await?;
        let (samples, rss) = super::watchers::run(
            &client,
            &ns,
            args.watchers,
            args.watch_updates,
            *mode,
            (server.port, &dir.path().join("server/pki")),
            || rss_bytes(pid),
        )
        .await?;
        watches.push((*mode, samples, rss));
    }

    println!();
    println!(
        "kybern bench api: 1 KiB ConfigMaps, sqlite store, TLS, kube-rs client, \
         API server without in-process controllers, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<46}{:>14}{:>14}{:>10}",
        "figure", "API server", "raw store", "ratio"
    );
    let row = |label: &str, api: String, raw: String, ratio: String| {
        println!("{label:<46}{api:>14}{raw:>14}{ratio:>10}")
    };
    let r =
        |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64().max(1e-9));
    row(
        "create p50 (ms), 1 client",
        ms(api_create.percentile(50.0)),
        ms(raw_create.percentile(50.0)),
        r(api_create.percentile(50.0), raw_create.percentile(50.0)),
    );
    row(
        "create p99 (ms), 1 client",
        ms(api_create.percentile(99.0)),
        ms(raw_create.percentile(99.0)),
        r(api_create.percentile(99.0), raw_create.percentile(99.0)),
    );
    row(
        "get p50 (ms), 1 client",
        ms(api_get.percentile(50.0)),
        ms(raw_get.percentile(50.0)),
        r(api_get.percentile(50.0), raw_get.percentile(50.0)),
    );
    row(
        "get p99 (ms), 1 client",
        ms(api_get.percentile(99.0)),
        ms(raw_get.percentile(99.0)),
        r(api_get.percentile(99.0), raw_get.percentile(99.0)),
    );
    let mut paced = paced;
    row(
        "get p99 (ms) at 1,000 req/s",
        ms(paced.percentile(99.0)),
        "-".into(),
        "-".into(),
    );
    for (label, tp) in [
        ("creates/s, 64 clients, kube-rs", api_tp),
        ("creates/s, 64 clients, HTTP/2 streams", h2_tp),
    ] {
        row(
            label,
            format!("{tp:.0}"),
            format!("{raw_tp:.0}"),
            format!("{:.0}%", 100.0 * tp / raw_tp),
        );
    }
    row(
        &format!("list {} objects, rv=0 (ms)", args.list_objects),
        ms(list_cache.percentile(50.0)),
        ms(list_raw.percentile(50.0)),
        r(list_cache.percentile(50.0), list_raw.percentile(50.0)),
    );
    for (mode, samples, _) in &mut watches {
        for p in [50.0, 99.0] {
            row(
                &format!(
                    "pod watch p{p} (ms), {} watchers, {}",
                    args.watchers,
                    mode.label()
                ),
                ms(samples.percentile(p)),
                "-".into(),
                "-".into(),
            );
        }
    }
    let grew = rss_after.saturating_sub(rss_before);
    println!(
        "server RSS before the fill {:.1} MiB, after it {:.1} MiB, after the lists {:.1} MiB",
        rss_before as f64 / 1048576.0,
        rss_filled as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "server RSS {:.1} MiB holding {} objects: {:.1} MiB as served ({:.2}x RSS), {:.1} MiB as written by the client ({:.2}x RSS); grew {:.1} MiB in the fill and lists",
        mib(rss_after),
        args.list_objects,
        mib(listed_bytes as u64),
        rss_after as f64 / (listed_bytes as f64).max(1.0),
        mib(raw_bytes as u64),
        rss_after as f64 / (raw_bytes as f64).max(1.0),
        mib(grew),
    );
    println!(
        "  of which anonymous {:.1} MiB, file-backed (sqlite pages) {:.1} MiB",
        anon_after as f64 / 1048576.0,
        file_after as f64 / 1048576.0
    );
    for (mode, _, rss) in &watches {
        println!(
            "server RSS with {} watchers open ({}): {:.1} MiB",
            args.watchers,
            mode.label(),
            *rss as f64 / 1048576.0
        );
    }
    drop(server);
    Ok(())
}
