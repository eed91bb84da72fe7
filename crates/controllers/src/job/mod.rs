//! The Job controller: runs a Job's pods until enough succeed (NonIndexed or
//! Indexed), or the Job fails by backoff limit, deadline or pod failure
//! policy; counts finished pods through the tracking finalizer so that no pod
//! is counted twice or lost; suspends and resumes; deletes finished Jobs
//! after `ttlSecondsAfterFinished`.

pub mod pods;
mod status;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kybern_apimachinery::cached_pod::CachedPod;
use serde_json::json;

use self::pods::{Outcome, finished_at, index_of, outcome, tracked};
use self::status::condition_true;
use crate::events::{EventRecorder, NORMAL, WARNING, pod_created, pod_deleted, reference_to};
use crate::expectations::Expectations;
use crate::informer::{Change, Informer, next_change};
use crate::own_writes::OwnWrites;
use crate::pods::{deletion_order, is_ready};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers, sooner};
use crate::{ControllerError, Informers};

/// Most pods created or deleted in one sync (upstream's burst).
const BURST: usize = 500;
/// The first delay before a failed pod is replaced; it doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay before a failed pod is replaced.
const BACKOFF_MAX: Duration = Duration::from_secs(360);

struct JobController {
    client: kube::Client,
    /// The TTL-after-finished controller's own identity, which deletes
    /// finished Jobs.
    ttl_client: kube::Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<CachedPod>>,
    expectations: Expectations,
    /// Status writes the Job informer has not shown yet: until it has, the
    /// counts it holds lag behind the pods already released.
    status_writes: OwnWrites,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
}

/// Runs the Job controller (and the TTL-after-finished controller's part)
/// with `workers` concurrent syncs.
pub async fn run(
    client: kube::Client,
    ttl_client: kube::Client,
    informers: &Informers,
    workers: usize,
) {
    let ctl = Arc::new(JobController {
        recorder: EventRecorder::new(client.clone(), "job-controller"),
        client,
        ttl_client,
        jobs: informers.jobs.clone(),
        pods: informers.pods.clone(),
        expectations: Expectations::default(),
        status_writes: OwnWrites::default(),
        queue: Arc::default(),
    });
    let (mut job_changes, mut pod_changes) = (ctl.jobs.subscribe(), ctl.pods.subscribe());
    ctl.jobs.synced().await;
    ctl.pods.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    change = next_change(&mut job_changes) => match change {
                        Some(Change::Deleted(j)) => {
                            let key = ObjectKey::of(j.as_ref());
                            ctl.expectations.forget(&key);
                            ctl.status_writes.forget(&key);
                            ctl.queue.add(key);
                        }
                        Some(Change::Added(j) | Change::Modified(j)) => ctl.queue.add(ObjectKey::of(j.as_ref())),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    change = next_change(&mut pod_changes) => match change {
                        Some(change) => ctl.pod_changed(change),
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("job", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

/// What a sync found among a Job's pods.
#[derive(Default)]
struct Census {
    /// Running or pending pods, not being deleted.
    active: Vec<Arc<CachedPod>>,
    /// Pods being deleted that have not reached a terminal phase.
    terminating: usize,
    /// Finished pods still holding the tracking finalizer, not yet recorded.
    unrecorded: Vec<(Arc<CachedPod>, Outcome)>,
    /// The latest failure among the pods still present.
    last_failure: Option<Timestamp>,
}

impl JobController {
    fn resync(&self) {
        for j in self.jobs.state() {
            self.queue.add(ObjectKey::of(j.as_ref()));
        }
    }

    fn pod_changed(&self, change: Change<CachedPod>) {
        let (pod, added, deleted) = match change {
            Change::Added(p) => (p, true, false),
            Change::Modified(p) => (p, false, false),
            Change::Deleted(p) => (p, false, true),
            Change::Resync => return self.resync(),
        };
        if let Some(key) = self.expectations.pod_changed("Job", &pod, added, deleted) {
            self.queue.add(key);
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(job) = self.jobs.get(key.namespace.as_deref(), &key.name) else {
            self.expectations.forget(key);
            self.status_writes.forget(key);
            return Ok(None);
        };
        if !self
            .status_writes
            .seen(key, job.metadata.resource_version.as_deref())
        {
            // The informer's event for the write queues the Job again.
            return Ok(None);
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
        let pods: Vec<Arc<CachedPod>> = self.pods.controlled_by(&uid);
        let finished = status::finished(&job);
        if finished || job.metadata.deletion_timestamp.is_some() {
            // Nothing more will be counted: let every pod go.
            let held: Vec<&Arc<CachedPod>> = pods.iter().filter(|p| tracked(p)).collect();
            untrack(&pods_api, held).await?;
            return match finished {
                true => self.expire(&job).await,
                false => Ok(None),
            };
        }
        let census = census(&job, &pods);
        let mut st = job.status.clone().unwrap_or_default();
        let by_uid: HashMap<&str, &Arc<CachedPod>> = pods
            .iter()
            .map(|p| (p.metadata.uid.as_deref().unwrap_or_default(), p))
            .collect();
        fold_counted(&mut st, &by_uid);
        let mut to_untrack: Vec<&Arc<CachedPod>> = Vec::new();
        let mut fail_job = None;
        record(&job, &mut st, &census, &mut to_untrack, &mut fail_job);
        let now = Timestamp::now();
        let spec = job.spec.clone().unwrap_or_default();
        let suspended = spec.suspend == Some(true);
        status::suspension(&mut st, suspended, now);
        let mut requeue: Option<Duration> = None;
        let target = status::target(
            &job,
            &mut st,
            fail_job,
            census.active.len(),
            now,
            &mut requeue,
        );
        // Pods to run: none once the outcome is known or while suspended.
        let mut manage_err = None;
        let satisfied = self.expectations.satisfied(key);
        if target.is_some() || suspended {
            if satisfied {
                // Pods stopped by a suspension are not failures; those
                // stopped because the Job finished keep their finalizer
                // and are counted, as upstream's deleteActivePods.
                let release = target.is_none();
                manage_err = self
                    .delete_pods(
                        key,
                        &job,
                        &pods_api,
                        census.active.iter().collect(),
                        release,
                    )
                    .await
                    .err();
            }
        } else if satisfied {
            match self.manage(key, &job, &st, &census, &pods_api, now).await {
                Ok(wait) => requeue = sooner(requeue, wait),
                Err(e) => manage_err = Some(e),
            }
        }
        let active_left = if target.is_some() || suspended {
            0
        } else {
            census.active.len()
        };
        st.active = Some(count(active_left));
        st.ready = Some(count(
            census
                .active
                .iter()
                .filter(|p| is_ready(p) && active_left > 0)
                .count(),
        ));
        st.terminating = Some(count(census.terminating));
        if let Some(t) = &target {
            let drained = census.active.is_empty()
                && st
                    .uncounted_terminated_pods
                    .as_ref()
                    .is_none_or(|u| u.succeeded.is_none() && u.failed.is_none());
            status::conclude(&mut st, t, drained, now);
        }
        if job.status.as_ref() != Some(&st) {
            let mut updated = (*job).clone();
            updated.status = Some(st);
            let written = crate::write_status(&self.client, &updated).await?;
            self.status_writes.wrote(key, written.as_deref());
            self.announce(&job, updated.status.as_ref());
        }
        // Recorded in status: now the pods may go.
        untrack(&pods_api, to_untrack).await?;
        match manage_err {
            Some(e) => Err(e),
            None => Ok(sooner(requeue, self.expectations.lapse_in(key))),
        }
    }

    /// Creates or deletes pods so that the right number (and, for an
    /// Indexed Job, the right indexes) run; returns how long a failure
    /// back-off still holds new pods back.
    async fn manage(
        &self,
        key: &ObjectKey,
        job: &Job,
        st: &JobStatus,
        census: &Census,
        api: &Api<Pod>,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let spec = job.spec.clone().unwrap_or_default();
        let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
        let uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
        let succeeded = st.succeeded.unwrap_or(0).max(0) as usize
            + uncounted.succeeded.as_ref().map_or(0, Vec::len);
        let failed =
            st.failed.unwrap_or(0).max(0) as usize + uncounted.failed.as_ref().map_or(0, Vec::len);
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions.map(|c| c.max(0) as usize);
        let active = &census.active;
        // New pods (with their indexes) and surplus pods.
        let mut wanted: Vec<Option<i32>> = Vec::new();
        let mut surplus: Vec<&Arc<CachedPod>> = Vec::new();
        if indexed {
            let total = completions.unwrap_or(0);
            let done = pods::parse_indexes(st.completed_indexes.as_deref().unwrap_or_default());
            let mut running: BTreeSet<i32> = BTreeSet::new();
            for p in active {
                match index_of(p) {
                    // A second pod for an index, or one for a finished or
                    // out-of-range index, is surplus.
                    Some(i) if (i as usize) < total && !done.contains(&i) && running.insert(i) => {}
                    _ => surplus.push(p),
                }
            }
            let room = parallelism.saturating_sub(running.len());
            wanted = (0..i32::try_from(total).unwrap_or(i32::MAX))
                .filter(|i| !done.contains(i) && !running.contains(i))
                .take(room)
                .map(Some)
                .collect();
            if running.len() > parallelism {
                let mut extra: Vec<&Arc<CachedPod>> = active
                    .iter()
                    .filter(|p| !surplus.iter().any(|s| Arc::ptr_eq(s, p)))
                    .collect();
                extra.sort_by(|a, b| deletion_order(a, b));
                surplus.extend(extra.into_iter().take(running.len() - parallelism));
            }
        } else {
            let want = match completions {
                Some(c) => parallelism.min(c.saturating_sub(succeeded)),
                // A work queue: once one pod succeeded, no new pods start.
                None if succeeded > 0 => parallelism.min(active.len()),
                None => parallelism,
            };
            if active.len() < want {
                wanted = vec![None; want - active.len()];
            } else {
                let mut victims: Vec<&Arc<CachedPod>> = active.iter().collect();
                victims.sort_by(|a, b| deletion_order(a, b));
                surplus = victims.into_iter().take(active.len() - want).collect();
            }
        }
        if !surplus.is_empty() {
            self.delete_pods(key, job, api, surplus, true).await?;
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        // Failed pods are replaced after an exponential back-off.
        if failed > 0
            && let Some(last) = census.last_failure
        {
            let exp = u32::try_from(failed - 1).unwrap_or(u32::MAX).min(6);
            let delay = (BACKOFF_BASE * 2u32.pow(exp)).min(BACKOFF_MAX);
            let since = Duration::try_from(now.duration_since(last)).unwrap_or_default();
            if since < delay {
                return Ok(Some(delay - since));
            }
        }
        wanted.truncate(BURST);
        self.expectations.expect(key, wanted.len(), []);
        let post = PostParams::default();
        let mut first_err = None;
        // Slow start, as upstream: 1, 2, 4, ... so a failing template costs one call.
        let mut batch = 1;
        let mut rest = wanted.as_slice();
        while !rest.is_empty() {
            let (now_batch, later) = rest.split_at(batch.min(rest.len()));
            let made: Vec<Pod> = now_batch
                .iter()
                .map(|i| pods::from_template(job, *i))
                .collect::<Result<_, _>>()?;
            let results =
                futures::future::join_all(made.iter().map(|p| api.create(&post, p))).await;
            for r in results {
                pod_created(&self.recorder, job, &r);
                if let Err(e) = r {
                    self.expectations.creation_observed(key);
                    first_err.get_or_insert(e);
                }
            }
            rest = later;
            if first_err.is_some() {
                for _ in rest {
                    self.expectations.creation_observed(key);
                }
                break;
            }
            batch *= 2;
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Tells the Job's readers what its new status says happened, as
    /// upstream's Events do: finished, failed (and why), suspended, resumed.
    fn announce(&self, job: &Job, new: Option<&JobStatus>) {
        let became = |kind: &str, status: &str| {
            let find = |st: Option<&JobStatus>| {
                st.and_then(|s| s.conditions.as_deref())
                    .unwrap_or_default()
                    .iter()
                    .find(|c| c.type_ == kind && c.status == status)
                    .cloned()
            };
            find(new).filter(|_| find(job.status.as_ref()).is_none())
        };
        let post = |type_, reason: String, message: &str| {
            let object = reference_to(job);
            self.recorder
                .post(object, type_, reason, message.to_owned());
        };
        if became("Complete", "True").is_some() {
            post(NORMAL, "Completed".into(), "Job completed");
        }
        if let Some(c) = became("Failed", "True") {
            let message = c.message.unwrap_or_default();
            post(WARNING, c.reason.unwrap_or_default(), &message);
        }
        if became("Suspended", "True").is_some() {
            post(NORMAL, "Suspended".into(), "Job suspended");
        }
        if became("Suspended", "False").is_some() {
            post(NORMAL, "Resumed".into(), "Job resumed");
        }
    }

    /// Deletes `victims`; with `release`, first takes their tracking
    /// finalizer off so they are not counted as failed (upstream's
    /// deleteJobPods, for surplus pods and a suspension).
    async fn delete_pods(
        &self,
        key: &ObjectKey,
        job: &Job,
        api: &Api<Pod>,
        victims: Vec<&Arc<CachedPod>>,
        release: bool,
    ) -> Result<(), ControllerError> {
        if victims.is_empty() {
            return Ok(());
        }
        if release {
            untrack(
                api,
                victims.iter().copied().filter(|p| tracked(p)).collect(),
            )
            .await?;
        }
        let uid = |p: &CachedPod| p.metadata.uid.clone().unwrap_or_default();
        self.expectations
            .expect(key, 0, victims.iter().map(|p| uid(p)));
        let params = DeleteParams::default();
        let results = futures::future::join_all(
            victims
                .iter()
                .map(|p| api.delete(p.metadata.name.as_deref().unwrap_or_default(), &params)),
        )
        .await;
        let mut first_err = None;
        for (r, pod) in results.into_iter().zip(&victims) {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            pod_deleted(&self.recorder, job, name, &r);
            match r {
                Ok(_) => {}
                Err(e) => {
                    self.expectations.deletion_observed(key, &uid(pod));
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Deletes a finished Job whose `ttlSecondsAfterFinished` passed, or
    /// says when to look again.
    async fn expire(&self, job: &Job) -> ReconcileResult<ControllerError> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        let Some(done_at) = status::finished_at(job) else {
            return Ok(None);
        };
        let ttl = Duration::from_secs(u64::try_from(ttl.max(0)).unwrap_or(0));
        let age = Duration::try_from(Timestamp::now().duration_since(done_at)).unwrap_or_default();
        if age < ttl {
            return Ok(Some(ttl - age));
        }
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.ttl_client.clone(), ns);
        // As upstream: foreground, and only the version that was judged.
        let params = DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: job.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        let name = job.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &params).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Sorts the Job's pods into active, terminating and finished-unrecorded.
fn census(job: &Job, pods: &[Arc<CachedPod>]) -> Census {
    let mut c = Census::default();
    let recorded: BTreeSet<&str> = job
        .status
        .as_ref()
        .and_then(|s| s.uncounted_terminated_pods.as_ref())
        .map(|u| {
            u.succeeded
                .iter()
                .chain(u.failed.iter())
                .flatten()
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    for p in pods {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminal = matches!(phase, Some("Succeeded" | "Failed"));
        if p.metadata.deletion_timestamp.is_some() && !terminal {
            c.terminating += 1;
        }
        match outcome(job, p) {
            None => c.active.push(p.clone()),
            Some(o) => {
                if o != Outcome::Succeeded {
                    c.last_failure = c.last_failure.max(finished_at(p));
                }
                let uid = p.metadata.uid.as_deref().unwrap_or_default();
                if tracked(p) && !recorded.contains(uid) {
                    c.unrecorded.push((p.clone(), o));
                }
            }
        }
    }
    c
}

/// Moves recorded pods whose finalizer is gone (or who are gone) from
/// `uncountedTerminatedPods` into the counters.
fn fold_counted(st: &mut JobStatus, by_uid: &HashMap<&str, &Arc<CachedPod>>) {
    let mut uncounted = st.uncounted_terminated_pods.take().unwrap_or_default();
    let settled = |uid: &String| by_uid.get(uid.as_str()).is_none_or(|p| !tracked(p));
    let fold = |list: &mut Option<Vec<String>>, counter: &mut Option<i32>| {
        let all = list.take().unwrap_or_default();
        let (done, left): (Vec<String>, Vec<String>) = all.into_iter().partition(settled);
        *counter = Some(counter.unwrap_or(0).saturating_add(count(done.len())));
        *list = (!left.is_empty()).then_some(left);
    };
    fold(&mut uncounted.succeeded, &mut st.succeeded);
    fold(&mut uncounted.failed, &mut st.failed);
    st.uncounted_terminated_pods = Some(uncounted);
}

/// Records newly finished pods in `uncountedTerminatedPods` (and an Indexed
/// Job's `completedIndexes`); collects pods to release afterwards.
fn record<'a>(
    job: &Job,
    st: &mut JobStatus,
    census: &'a Census,
    to_untrack: &mut Vec<&'a Arc<CachedPod>>,
    fail_job: &mut Option<String>,
) {
    let indexed = job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed");
    let total = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
    let mut done = pods::parse_indexes(st.completed_indexes.as_deref().unwrap_or_default());
    let uncounted = st
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    for (p, o) in &census.unrecorded {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        match o {
            Outcome::Succeeded => {
                uncounted.succeeded.get_or_insert_with(Vec::new).push(uid);
                if let Some(i) = index_of(p).filter(|i| indexed && *i >= 0 && *i < total) {
                    done.insert(i);
                }
            }
            Outcome::Failed => uncounted.failed.get_or_insert_with(Vec::new).push(uid),
            Outcome::FailJob(msg) => {
                uncounted.failed.get_or_insert_with(Vec::new).push(uid);
                fail_job.get_or_insert_with(|| msg.clone());
            }
            Outcome::Ignored => {}
        }
        to_untrack.push(p);
    }
    if indexed {
        st.completed_indexes = Some(pods::format_indexes(&done));
    }
}

/// Removes the tracking finalizer from pods whose fate is recorded.
async fn untrack(api: &Api<Pod>, pods: Vec<&Arc<CachedPod>>) -> Result<(), ControllerError> {
    let results = futures::future::join_all(pods.iter().map(|p| {
        let kept: Vec<&String> = p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != pods::TRACKING_FINALIZER)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": kept,
            "resourceVersion": p.metadata.resource_version,
        }});
        let name = p.metadata.name.clone().unwrap_or_default();
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    }))
    .await;
    for r in results {
        match r {
            Ok(_) => {}
            // Gone, or changed since seen: the next sync looks again.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whether a condition of `job` of type `kind` is true (for other
/// controllers: the CronJob controller reads `Complete` and `Failed`).
pub fn has_condition(job: &Job, kind: &str) -> bool {
    condition_true(job, kind)
}
