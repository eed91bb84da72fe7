//! The Job and CronJob controllers inside `kybern server`, with the
//! scheduler and simulated nodes whose Job pods end after a second: Jobs
//! complete (NonIndexed and Indexed), fail by backoff limit, pod failure
//! policy and deadline, end early by a success policy, suspend and resume,
//! expire after their TTL, and do not count pods they stop themselves as
//! failures; CronJobs start missed runs, keep their history, and `kubectl
//! create job --from` works.

use crate::common;
use std::collections::BTreeSet;

use crate::common::wait_for;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// A Job whose pods end with `exit_code` (through the sim's annotation).
fn job(name: &str, spec: Value, exit_code: i32) -> Job {
    let mut j = json!({
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": {"sim.kybern.dev/exit-code": exit_code.to_string()}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "main", "image": "registry.local/batch:1"}]},
            },
        },
    });
    json_patch::merge(&mut j["spec"], &spec);
    serde_json::from_value(j).expect("job")
}

fn condition(j: &Job, kind: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn concluded(api: &Api<Job>, name: &str, kind: &str) -> Job {
    wait_for(&format!("job {name} {kind}"), async || {
        let j = api.get(name).await.ok()?;
        condition(&j, kind).map(|_| j)
    })
    .await
}

/// A cluster with `nodes` simulated nodes whose Job pods end after
/// `seconds`, and the Jobs and pods of `default` in it.
async fn batch_cluster(
    nodes: &str,
    seconds: &str,
) -> (common::Server, common::sim::SimProcess, Api<Job>, Api<Pod>) {
    let server = common::Server::start_cluster(&[]);
    let sim = common::sim::start(&server, &["--nodes", nodes, "--job-seconds", seconds]);
    let client = server.client().await;
    let jobs = Api::namespaced(client.clone(), "default");
    let pods = Api::namespaced(client, "default");
    (server, sim, jobs, pods)
}

async fn pods_of(api: &Api<Pod>, job: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("list pods")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_suspend_and_expire() {
    let (server, _sim, jobs, pods) = batch_cluster("2", "1").await;
    let client = server.client().await;
    let post = PostParams::default();

    // Three completions, two at a time: never more than two run.
    jobs.create(
        &post,
        &job("count", json!({"completions": 3, "parallelism": 2}), 0),
    )
    .await
    .expect("create");
    let mut most_active = 0;
    let done = wait_for("job count complete", async || {
        let running = pods_of(&pods, "count")
            .await
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
            })
            .count();
        most_active = most_active.max(running);
        let j = jobs.get("count").await.ok()?;
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    assert!(most_active <= 2, "{most_active} pods ran at once");
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/count",
        "--timeout=30s",
    ]);
    let table = k.ok(&["get", "job", "count"]);
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );
    let st = done.status.clone().expect("status");
    assert_eq!(
        (st.succeeded, st.failed, st.active),
        (Some(3), Some(0), Some(0))
    );
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert!(condition(&done, "SuccessCriteriaMet").is_some());
    let labels = done.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("batch.kubernetes.io/job-name")
            .map(String::as_str),
        Some("count")
    );
    let finished = pods_of(&pods, "count").await;
    assert!(finished.len() >= 3);
    assert!(
        finished.iter().all(|p| p
            .metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .is_empty()),
        "counted pods are released"
    );
    let ev = |kind, name, reason, message| {
        common::wait_for_event(&client, "default", (kind, name), reason, message)
    };
    let created = ev("Job", "count", "SuccessfulCreate", "Created pod: count-").await;
    assert_eq!(
        created.source.and_then(|s| s.component).as_deref(),
        Some("job-controller")
    );
    ev("Job", "count", "Completed", "Job completed").await;

    // Indexed: one pod per index, and every index completed.
    jobs.create(
        &post,
        &job(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            0,
        ),
    )
    .await
    .expect("create");
    let done = concluded(&jobs, "idx", "Complete").await;
    assert_eq!(
        done.status.and_then(|s| s.completed_indexes).as_deref(),
        Some("0-2")
    );
    let indexes: BTreeSet<String> = pods_of(&pods, "idx")
        .await
        .iter()
        .filter_map(|p| {
            p.metadata
                .annotations
                .as_ref()?
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
        })
        .collect();
    assert_eq!(indexes, ["0", "1", "2"].map(String::from).into());

    // One failure beyond backoffLimit 0 fails the Job.
    jobs.create(&post, &job("flaky", json!({"backoffLimit": 0}), 1))
        .await
        .expect("create");
    let failed = concluded(&jobs, "flaky", "Failed").await;
    assert_eq!(
        condition(&failed, "Failed").map(|c| c.0).as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(failed.status.and_then(|s| s.failed), Some(1));
    let warning = ev(
        "Job",
        "flaky",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // A FailJob rule fails at the first matching exit code, whatever the limit.
    let policy = json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]}});
    jobs.create(&post, &job("fatal", policy, 42))
        .await
        .expect("create");
    let failed = concluded(&jobs, "fatal", "Failed").await;
    let (reason, message) = condition(&failed, "Failed").expect("failed");
    assert_eq!(reason, "PodFailurePolicy");
    assert!(message.contains("exit code 42"), "{message}");

    // A deadline shorter than the work fails the Job and stops its pods.
    jobs.create(
        &post,
        &job(
            "slow",
            json!({"completions": 50, "activeDeadlineSeconds": 2}),
            0,
        ),
    )
    .await
    .expect("create");
    let failed = concluded(&jobs, "slow", "Failed").await;
    assert_eq!(
        condition(&failed, "Failed").map(|c| c.0).as_deref(),
        Some("DeadlineExceeded")
    );

    // Suspended: no pods until resumed.
    jobs.create(&post, &job("later", json!({"suspend": true}), 0))
        .await
        .expect("create");
    let suspended = concluded(&jobs, "later", "Suspended").await;
    assert_eq!(suspended.status.and_then(|s| s.active), Some(0));
    assert!(pods_of(&pods, "later").await.is_empty());
    jobs.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    concluded(&jobs, "later", "Complete").await;
    ev("Job", "later", "Suspended", "Job suspended").await;
    ev("Job", "later", "Resumed", "Job resumed").await;

    // ttlSecondsAfterFinished: 0 removes the finished Job (and its pods).
    jobs.create(
        &post,
        &job("brief", json!({"ttlSecondsAfterFinished": 0}), 0),
    )
    .await
    .expect("create");
    wait_for("job brief deleted after finishing", async || {
        jobs.get_opt("brief").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_start_missed_runs_and_kubectl_creates_jobs_from_them() {
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "1", "--job-seconds", "1"]);
    let client = server.client().await;
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "*/5 * * * *",
            "timeZone": "Europe/Berlin",
            "successfulJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"run": "tick"}}, "spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "registry.local/batch:1"}]}}}},
        },
    }))
    .expect("cronjob");
    cron_jobs
        .create(&PostParams::default(), &cj)
        .await
        .expect("create");
    // As if the last run was an hour ago: the missed run starts at once.
    let hour_ago = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_hours(1))
        .expect("time");
    cron_jobs
        .patch_status(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}})),
        )
        .await
        .expect("status");
    let run = wait_for("a Job from the missed schedule", async || {
        let list = jobs
            .list(&ListParams::default().labels("run=tick"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    let name = run.metadata.name.clone().expect("name");
    let minute: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .expect("named by minute");
    assert_eq!(minute % 5, 0, "a */5 schedule runs on the fifth minutes");
    let annotations = run.metadata.annotations.clone().unwrap_or_default();
    let scheduled = &annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"];
    assert!(
        scheduled.ends_with("+01:00") || scheduled.ends_with("+02:00"),
        "Berlin time: {scheduled}"
    );
    assert_eq!(
        run.metadata.owner_references.expect("owner")[0].kind,
        "CronJob"
    );
    let st = wait_for("the run listed as active", async || {
        let st = cron_jobs.get("tick").await.ok()?.status?;
        st.active.is_some().then_some(st)
    })
    .await;
    assert!(st.last_schedule_time.expect("last").0 > hour_ago);

    // kubectl's manual run, from the CronJob's template.
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&["create", "job", "manual", "--from=cronjob/tick"]);
    let manual = jobs.get("manual").await.expect("manual");
    assert_eq!(
        manual
            .metadata
            .annotations
            .unwrap_or_default()
            .get("cronjob.kubernetes.io/instantiate")
            .map(String::as_str),
        Some("manual")
    );
    // Both finish; a history of one keeps only one of them (the one that
    // started later), and the CronJob records its last success.
    wait_for("one finished Job kept", async || {
        let names: Vec<String> = jobs
            .list(&ListParams::default().labels("run=tick"))
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        (names.len() == 1).then_some(())
    })
    .await;
    wait_for("lastSuccessfulTime", async || {
        let st = cron_jobs.get("tick").await.ok()?.status?;
        (st.last_successful_time.is_some() && st.active.is_none()).then_some(())
    })
    .await;
    // The CronJob's Events tell its runs' story.
    for (reason, message) in [
        ("SuccessfulCreate", format!("Created job {name}")),
        (
            "SawCompletedJob",
            format!("Saw completed job: {name}, condition: Complete"),
        ),
        ("SuccessfulDelete", "Deleted job ".to_owned()),
    ] {
        let event =
            common::wait_for_event(&client, "default", ("CronJob", "tick"), reason, &message).await;
        assert_eq!(
            event.source.and_then(|s| s.component).as_deref(),
            Some("cronjob-controller")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_jobs_end_early_when_their_success_policy_is_met() {
    let (_server, _sim, jobs, pods) = batch_cluster("2", "1").await;
    let post = PostParams::default();

    // One pod at a time, lowest index first: index 0 meets the second rule,
    // and the Job ends there with five indexes never run.
    let policy = json!({"rules": [{"succeededIndexes": "5"}, {"succeededIndexes": "0"}]});
    jobs.create(
        &post,
        &job(
            "early",
            json!({"completions": 6, "parallelism": 1, "completionMode": "Indexed", "successPolicy": policy}),
            0,
        ),
    )
    .await
    .expect("create");
    let done = concluded(&jobs, "early", "Complete").await;
    let matched = (
        "SuccessPolicy".to_owned(),
        "Matched rules at index 1".to_owned(),
    );
    assert_eq!(
        condition(&done, "SuccessCriteriaMet"),
        Some(matched.clone())
    );
    assert_eq!(condition(&done, "Complete"), Some(matched));
    assert_eq!(
        done.status
            .as_ref()
            .and_then(|s| s.completed_indexes.as_deref()),
        Some("0")
    );
    assert_eq!(pods_of(&pods, "early").await.len(), 1);

    // The policy may not change, and only Indexed Jobs may have one.
    let change = json!({"spec": {"successPolicy": {"rules": [{"succeededCount": 1}]}}});
    let err = jobs
        .patch("early", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect_err("successPolicy is immutable");
    assert!(
        err.to_string()
            .contains("spec.successPolicy: Invalid value"),
        "{err}"
    );
    let err = jobs
        .create(
            &post,
            &job(
                "plain",
                json!({"completions": 2, "successPolicy": {"rules": [{"succeededCount": 1}]}}),
                0,
            ),
        )
        .await
        .expect_err("a NonIndexed Job with a success policy");
    assert!(
        err.to_string().contains("requires indexed completion mode"),
        "{err}"
    );
}

/// Failed pods recorded for `name`, counted or not yet.
async fn failures(api: &Api<Job>, name: &str) -> usize {
    let st = api.get(name).await.expect("job").status.unwrap_or_default();
    let uncounted = st
        .uncounted_terminated_pods
        .and_then(|u| u.failed)
        .map_or(0, |f| f.len());
    usize::try_from(st.failed.unwrap_or(0)).unwrap_or(0) + uncounted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_stopped_by_lower_parallelism_or_suspension_are_not_failures() {
    // Pods run for ten minutes: only the controller stops them here.
    let (_server, _sim, jobs, pods) = batch_cluster("1", "600").await;
    jobs.create(
        &PostParams::default(),
        &job("wide", json!({"completions": 10, "parallelism": 3}), 0),
    )
    .await
    .expect("create");
    let running = async |want: usize| {
        wait_for(&format!("{want} pods of job wide running"), async || {
            let all = pods_of(&pods, "wide").await;
            let running = all
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (all.len() == want && running == want).then_some(())
        })
        .await
    };
    running(3).await;

    // Two of three pods become surplus: deleted, and not counted as failed.
    jobs.patch(
        "wide",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"parallelism": 1}})),
    )
    .await
    .expect("lower parallelism");
    running(1).await;
    assert_eq!(failures(&jobs, "wide").await, 0);

    // Suspending stops the last pod, which is not a failure either.
    jobs.patch(
        "wide",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .expect("suspend");
    concluded(&jobs, "wide", "Suspended").await;
    wait_for("job wide without pods", async || {
        pods_of(&pods, "wide").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(failures(&jobs, "wide").await, 0);
    let st = jobs.get("wide").await.expect("job").status.expect("status");
    assert_eq!((st.active, st.succeeded), (Some(0), Some(0)));
}
