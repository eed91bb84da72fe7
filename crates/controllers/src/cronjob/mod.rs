//! The CronJob controller: creates a Job at each scheduled time (in the
//! CronJob's time zone) as `concurrencyPolicy` and `startingDeadlineSeconds`
//! allow, tracks active Jobs in `status`, and deletes finished Jobs beyond
//! the history limits.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kybern_apimachinery::cron::Schedule;

use crate::events::{
    EventRecorder, FAILED_CREATE, FAILED_DELETE, NORMAL, SUCCESSFUL_CREATE, SUCCESSFUL_DELETE,
    WARNING, error_text, reference_to,
};
use crate::informer::{Change, Informer, next_change};
use crate::job::has_condition;
use crate::pods::{controller_of, controller_ref};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers};

/// The annotation recording the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed start times beyond which upstream stops counting.
const TOO_MANY_MISSED: usize = 100;

struct CronJobController {
    client: kube::Client,
    cron_jobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
}

/// Runs the CronJob controller.
pub async fn run(client: kube::Client, informers: &Informers, workers: usize) {
    let ctl = Arc::new(CronJobController {
        recorder: EventRecorder::new(client.clone(), "cronjob-controller"),
        client,
        cron_jobs: informers.cron_jobs.clone(),
        jobs: informers.jobs.clone(),
        queue: Arc::default(),
    });
    let (mut cj_changes, mut job_changes) = (ctl.cron_jobs.subscribe(), ctl.jobs.subscribe());
    ctl.cron_jobs.synced().await;
    ctl.jobs.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    change = next_change(&mut cj_changes) => match change {
                        Some(Change::Added(c) | Change::Modified(c) | Change::Deleted(c)) => ctl.queue.add(ObjectKey::of(c.as_ref())),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    change = next_change(&mut job_changes) => match change {
                        Some(Change::Added(j) | Change::Modified(j) | Change::Deleted(j)) => {
                            if let Some(o) = controller_of(&j.metadata).filter(|o| o.kind == "CronJob") {
                                let ns = j.metadata.namespace.as_deref().unwrap_or_default();
                                ctl.queue.add(ObjectKey::namespaced(ns, &o.name));
                            }
                        }
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("cronjob", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

impl CronJobController {
    fn resync(&self) {
        for c in self.cron_jobs.state() {
            self.queue.add(ObjectKey::of(c.as_ref()));
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(cj) = self.cron_jobs.get(key.namespace.as_deref(), &key.name) else {
            return Ok(None);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = self.jobs.controlled_by(&uid);
        // Oldest first by start time, as upstream's byJobStartTime: Jobs not
        // started yet last, ties by name.
        jobs.sort_by(|a, b| {
            let start = |j: &Job| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0)
            };
            match (start(a), start(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let spec = cj.spec.clone().unwrap_or_default();
        let mut st = cj.status.clone().unwrap_or_default();
        let job_api: Api<Job> = Api::namespaced(self.client.clone(), key.ns());
        let finished = |j: &Job| has_condition(j, "Complete") || has_condition(j, "Failed");
        let mut active: Vec<ObjectReference> = jobs
            .iter()
            .filter(|j| !finished(j) && j.metadata.deletion_timestamp.is_none())
            .map(|j| job_ref(j))
            .collect();
        self.saw_completed(&cj, &jobs);
        if let Some(last) = jobs
            .iter()
            .filter(|j| has_condition(j, "Complete"))
            .filter_map(|j| j.status.as_ref()?.completion_time.clone())
            .max_by_key(|t| t.0)
        {
            st.last_successful_time = Some(last);
        }
        // Finished Jobs beyond the history limits go, oldest first.
        let mut first_err: Option<ControllerError> = None;
        for (done, limit) in [
            (true, spec.successful_jobs_history_limit.unwrap_or(3)),
            (false, spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let kind = if done { "Complete" } else { "Failed" };
            let of_kind: Vec<&Arc<Job>> = jobs
                .iter()
                .filter(|j| has_condition(j, kind) && j.metadata.deletion_timestamp.is_none())
                .collect();
            let surplus = of_kind
                .len()
                .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
            for j in of_kind.into_iter().take(surplus) {
                if let Err(e) = self.delete_job(&cj, &job_api, j).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        let tz = match spec.time_zone.as_deref() {
            None => TimeZone::UTC,
            Some(name) => match TimeZone::get(name) {
                Ok(tz) => tz,
                Err(e) => {
                    // Validation should have refused it; nothing to run.
                    tracing::warn!(cronjob = %key.name, error = %e, "unknown time zone");
                    return Ok(None);
                }
            },
        };
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(cronjob = %key.name, error = %e, "unparseable schedule");
                return Ok(None);
            }
        };
        let now = Timestamp::now();
        let since = st
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        // Only start times within the starting deadline may still run.
        let deadline = spec
            .starting_deadline_seconds
            .map(|s| Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)));
        let since = match deadline {
            Some(d) => since.max(now.checked_sub(d).unwrap_or(now)),
            None => since,
        };
        let (due, missed) = most_recent(&schedule, since, now, &tz);
        if missed > TOO_MANY_MISSED {
            tracing::warn!(cronjob = %key.name, missed, "too many missed start times");
            let message = format!(
                "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            );
            self.event(&cj, WARNING, "TooManyMissedTimes", message);
        }
        let next = schedule.next_after(now, &tz);
        if let Some(at) = due
            && spec.suspend != Some(true)
        {
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            let run = match policy {
                "Forbid" if !active.is_empty() => {
                    let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
                    self.event(&cj, NORMAL, "JobAlreadyActive", message.into());
                    false
                }
                "Replace" => {
                    for j in jobs.iter().filter(|j| !finished(j)) {
                        if let Err(e) = self.delete_job(&cj, &job_api, j).await {
                            first_err.get_or_insert(e);
                        }
                    }
                    active.clear();
                    true
                }
                _ => true,
            };
            if run {
                let job = job_for(&cj, at, &tz);
                match job_api.create(&PostParams::default(), &job).await {
                    Ok(created) => {
                        let name = created.metadata.name.as_deref().unwrap_or_default();
                        self.event(
                            &cj,
                            NORMAL,
                            SUCCESSFUL_CREATE,
                            format!("Created job {name}"),
                        );
                        active.push(job_ref(&created));
                    }
                    // Made by an earlier sync whose update we have not seen.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        let message = format!("Error creating job: {}", error_text(&e));
                        self.event(&cj, WARNING, FAILED_CREATE, message);
                        return Err(e.into());
                    }
                }
                st.last_schedule_time = Some(Time(at));
            }
            // Forbidden now, the run starts when the active Job ends (within
            // the starting deadline), as upstream.
        }
        active.sort_by(|a, b| a.name.cmp(&b.name));
        active.dedup_by(|a, b| a.uid == b.uid);
        st.active = (!active.is_empty()).then_some(active);
        if cj.status.as_ref() != Some(&st) {
            self.write_status(&cj, st).await?;
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // Look again just after the next start time.
        Ok(next.map(|n| {
            Duration::try_from(n.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100)
        }))
    }

    /// Reports the Jobs the status still lists as active that have finished.
    fn saw_completed(&self, cj: &CronJob, jobs: &[Arc<Job>]) {
        let listed = cj.status.as_ref().and_then(|s| s.active.as_deref());
        for r in listed.unwrap_or_default() {
            let Some(j) = jobs.iter().find(|j| j.metadata.uid == r.uid) else {
                continue;
            };
            let name = j.metadata.name.as_deref().unwrap_or_default();
            for kind in ["Complete", "Failed"] {
                if has_condition(j, kind) {
                    let message = format!("Saw completed job: {name}, condition: {kind}");
                    self.event(cj, NORMAL, "SawCompletedJob", message);
                }
            }
        }
    }

    /// Deletes a Job of `cj` (with its pods, in the background).
    async fn delete_job(
        &self,
        cj: &CronJob,
        api: &Api<Job>,
        j: &Job,
    ) -> Result<(), ControllerError> {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        let name = j.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &params).await {
            Ok(_) => {
                self.event(cj, NORMAL, SUCCESSFUL_DELETE, format!("Deleted job {name}"));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => {
                let message = format!("Deleted job: {}", error_text(&e));
                self.event(cj, WARNING, FAILED_DELETE, message);
                Err(e.into())
            }
        }
    }

    fn event(&self, cj: &CronJob, type_: &'static str, reason: &'static str, message: String) {
        self.recorder.post(reference_to(cj), type_, reason, message);
    }

    async fn write_status(&self, cj: &CronJob, st: CronJobStatus) -> Result<(), ControllerError> {
        let mut updated = cj.clone();
        updated.status = Some(st);
        crate::write_status(&self.client, &updated).await.map(drop)
    }
}

/// The latest start time in `(since, now]`, and how many there were.
fn most_recent(
    schedule: &Schedule,
    since: Timestamp,
    now: Timestamp,
    tz: &TimeZone,
) -> (Option<Timestamp>, usize) {
    let mut latest = None;
    let mut missed = 0;
    let mut t = since;
    while let Some(n) = schedule.next_after(t, tz).filter(|n| *n <= now) {
        latest = Some(n);
        missed += 1;
        t = n;
        if missed > TOO_MANY_MISSED {
            // Far behind: find the latest one from a window just before
            // now that grows until it holds one.
            let mut window = Duration::from_secs(60);
            loop {
                let from = now.checked_sub(window).unwrap_or(since).max(t);
                if let Some(n) = schedule.next_after(from, tz).filter(|n| *n <= now) {
                    let mut last = n;
                    while let Some(m) = schedule.next_after(last, tz).filter(|m| *m <= now) {
                        last = m;
                    }
                    return (Some(last), missed);
                }
                if from == t {
                    return (latest, missed);
                }
                window *= 2;
            }
        }
    }
    (latest, missed)
}

/// The Job a CronJob runs at `at`: named by the minute, as upstream, so that
/// two syncs cannot start the same run twice.
fn job_for(cj: &CronJob, at: Timestamp, tz: &TimeZone) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let template = spec.job_template;
    let meta = template.metadata.unwrap_or_default();
    let name = cj.metadata.name.as_deref().unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        at.to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", at.as_second().div_euclid(60))),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn the_most_recent_start_time_is_found_even_far_behind() {
        let every_minute = Schedule::parse("* * * * *").expect("parse");
        let (due, missed) = most_recent(
            &every_minute,
            at("2026-01-01T00:00:30Z"),
            at("2026-03-01T12:34:56Z"),
            &TimeZone::UTC,
        );
        assert_eq!(due, Some(at("2026-03-01T12:34:00Z")));
        assert!(missed > TOO_MANY_MISSED);
        let hourly = Schedule::parse("@hourly").expect("parse");
        assert_eq!(
            most_recent(
                &hourly,
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T02:30:00Z"),
                &TimeZone::UTC
            ),
            (Some(at("2026-01-01T02:00:00Z")), 2)
        );
        assert_eq!(
            most_recent(
                &hourly,
                at("2026-01-01T02:00:00Z"),
                at("2026-01-01T02:30:00Z"),
                &TimeZone::UTC
            ),
            (None, 0)
        );
    }

    #[test]
    fn jobs_are_named_by_their_minute() {
        let cj: CronJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "tick", "namespace": "d", "uid": "u"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"metadata": {"labels": {"a": "b"}},
                "spec": {"template": {}}}}}))
        .expect("cj");
        let j = job_for(&cj, at("2026-01-01T00:01:00Z"), &TimeZone::UTC);
        assert_eq!(j.metadata.name.as_deref(), Some("tick-29453761"));
        assert_eq!(
            j.metadata.annotations.expect("annotations")[SCHEDULED_TIMESTAMP],
            "2026-01-01T00:01:00+00:00"
        );
        assert_eq!(
            j.metadata.owner_references.expect("owner")[0].kind,
            "CronJob"
        );
    }
}
