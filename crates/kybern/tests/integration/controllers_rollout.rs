//! A Deployment rollout watched step by step: every ReplicaSet change keeps
//! the sets' replicas within `replicas + maxSurge` and every Deployment
//! status keeps `replicas - maxUnavailable` available; then kubectl's
//! `rollout pause|resume|history` and `delete namespace`.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::common;
use crate::common::wait_for;

const REPLICAS: i32 = 4;
const SURGE: i32 = 1;
const UNAVAILABLE: i32 = 1;

/// Whether the Deployment's status says its latest template is fully out.
fn rolled_out(d: &Deployment) -> bool {
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(REPLICAS)
        && s.replicas == Some(REPLICAS)
        && s.available_replicas == Some(REPLICAS)
}

/// What the watches saw during one rollout.
#[derive(Default, Debug)]
struct Observed {
    /// The most replicas the sets asked for at once.
    most_wanted: i32,
    /// The fewest pods the Deployment reported available.
    fewest_available: i32,
    /// How many distinct states of the sets' replicas were seen: a
    /// rollout in steps passes through several.
    steps: usize,
}

/// Watches the Deployment `web` and its sets in `ns` until it has rolled
/// out a template of generation `generation` or later.
async fn watch_rollout(client: &kube::Client, ns: &str, generation: i64) -> Observed {
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let set_config = watcher::Config::default().labels("app=web");
    let mut set_events = watcher::watcher(sets, set_config).boxed();
    let mut deployment_events = watcher::watcher(deployments, watcher::Config::default()).boxed();
    let mut wanted: BTreeMap<String, i32> = BTreeMap::new();
    let mut states = std::collections::BTreeSet::new();
    let mut seen = Observed {
        fewest_available: REPLICAS,
        ..Observed::default()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        tokio::select! {
            e = set_events.next() => {
                let sets = match e {
                    Some(Ok(Event::Apply(rs) | Event::InitApply(rs))) => vec![rs],
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("replica set watch: {e}"),
                    None => panic!("replica set watch ended"),
                };
                for rs in sets {
                    let replicas = rs.spec.and_then(|s| s.replicas).unwrap_or(0);
                    wanted.insert(rs.metadata.name.unwrap_or_default(), replicas);
                }
                states.insert(wanted.clone());
                seen.most_wanted = seen.most_wanted.max(wanted.values().sum());
            }
            e = deployment_events.next() => {
                let d = match e {
                    Some(Ok(Event::Apply(d) | Event::InitApply(d))) => d,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("deployment watch: {e}"),
                    None => panic!("deployment watch ended"),
                };
                if let Some(s) = &d.status {
                    seen.fewest_available =
                        seen.fewest_available.min(s.available_replicas.unwrap_or(0));
                }
                if d.metadata.generation >= Some(generation) && rolled_out(&d) {
                    seen.steps = states.len();
                    return seen;
                }
            }
            () = tokio::time::sleep_until(deadline) => panic!("no rollout within 60 s: {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_stays_within_its_bounds_and_kubectl_steers_it() {
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "2", "--heartbeat-seconds", "1"]);
    let client = server.client().await;
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&["create", "namespace", "roll"]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "roll");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": SURGE, "maxUnavailable": UNAVAILABLE}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": "registry.local/web:1"}]}},
        },
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    wait_for("the first rollout", async || {
        rolled_out(&deployments.get("web").await.ok()?).then_some(())
    })
    .await;

    // Paused, a new template makes no new set and says so.
    k.ok(&["rollout", "pause", "deployment/web", "-n", "roll"]);
    k.ok(&[
        "set",
        "image",
        "deployment/web",
        "c=registry.local/web:2",
        "-n",
        "roll",
    ]);
    let paused = wait_for("the Deployment reported paused", async || {
        let d = deployments.get("web").await.ok()?;
        let s = d.status.as_ref()?;
        let progressing = s
            .conditions
            .as_deref()?
            .iter()
            .find(|c| c.type_ == "Progressing")?;
        (s.observed_generation == d.metadata.generation
            && progressing.reason.as_deref() == Some("DeploymentPaused"))
        .then_some(d)
    })
    .await;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "roll");
    let listed = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("sets");
    assert_eq!(listed.items.len(), 1, "a paused Deployment made a set");

    // Resumed: the rollout runs, watched from here on.
    let generation = paused.metadata.generation.expect("generation");
    let watching = tokio::spawn({
        let client = client.clone();
        async move { watch_rollout(&client, "roll", generation).await }
    });
    // Both watches have listed before the rollout starts.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    k.ok(&["rollout", "resume", "deployment/web", "-n", "roll"]);
    let seen = watching.await.expect("watch");
    assert!(
        seen.most_wanted <= REPLICAS + SURGE,
        "the sets asked for {} pods at once: {seen:?}",
        seen.most_wanted
    );
    assert!(
        seen.fewest_available >= REPLICAS - UNAVAILABLE,
        "only {} pods were available at one point: {seen:?}",
        seen.fewest_available
    );
    assert!(seen.steps > 3, "the rollout did not go in steps: {seen:?}");
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "roll",
        "--timeout=60s",
    ]);
    let history = k.ok(&["rollout", "history", "deployment/web", "-n", "roll"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // kubectl waits until the namespace and all in it are gone.
    k.ok(&["delete", "namespace", "roll", "--timeout=60s"]);
    let err = k.fails(&["get", "namespace", "roll"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    let left = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(left.items.is_empty(), "{:?}", left.items);
}
