//! A Job's conditions: when its outcome is known (`SuccessCriteriaMet`,
//! `FailureTarget`), when it is concluded (`Complete`, `Failed`) and whether
//! it is `Suspended`, with upstream's reasons and messages.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// How a Job will end, once known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Enough pods succeeded, for `reason`.
    Success {
        /// `CompletionsReached` or `SuccessPolicy`.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The Job failed, for `reason` (upstream's condition reason).
    Failure {
        /// `BackoffLimitExceeded`, `DeadlineExceeded` or `PodFailurePolicy`.
        reason: String,
        /// The condition's message.
        message: String,
    },
}

const COMPLETIONS_REACHED: &str = "Reached expected number of succeeded pods";

fn find<'a>(st: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    st.conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == kind)
}

/// Whether `job` has a true condition of type `kind`.
pub fn condition_true(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| find(s, kind))
        .is_some_and(|c| c.status == "True")
}

/// Whether the Job has concluded (`Complete` or `Failed`).
pub fn finished(job: &Job) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

/// When the Job concluded.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let st = job.status.as_ref()?;
    ["Complete", "Failed"]
        .iter()
        .filter_map(|k| find(st, k))
        .filter(|c| c.status == "True")
        .find_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Sets a condition, keeping its transition time when the status is the same.
pub fn set_condition(
    st: &mut JobStatus,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = st.conditions.get_or_insert_with(Vec::new);
    let fresh = JobCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) if c.status == status => {}
        Some(c) => *c = fresh,
        None => conditions.push(fresh),
    }
}

/// Keeps `Suspended` and `startTime` in step with `spec.suspend`.
pub fn suspension(st: &mut JobStatus, suspended: bool, now: Timestamp) {
    let was = find(st, "Suspended").is_some_and(|c| c.status == "True");
    if suspended {
        if !was {
            set_condition(
                st,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
            // A resumed Job's deadline counts from its resumption.
            st.start_time = None;
        }
        return;
    }
    if was {
        set_condition(st, "Suspended", "False", "JobResumed", "Job resumed", now);
        st.start_time = Some(Time(now));
    }
    if st.start_time.is_none() {
        st.start_time = Some(Time(now));
    }
}

/// The outcome already recorded in the status, if any.
fn recorded(st: &JobStatus) -> Option<Target> {
    if let Some(c) = find(st, "FailureTarget").filter(|c| c.status == "True") {
        return Some(Target::Failure {
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    find(st, "SuccessCriteriaMet")
        .filter(|c| c.status == "True")
        .map(|c| Target::Success {
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
}

/// Decides (and records in a condition) how the Job ends, if that is known;
/// sets `requeue` to when an active deadline will pass.
pub fn target(
    job: &Job,
    st: &mut JobStatus,
    fail_job: Option<String>,
    active: usize,
    now: Timestamp,
    requeue: &mut Option<Duration>,
) -> Option<Target> {
    if let Some(t) = recorded(st) {
        return Some(t);
    }
    let spec = job.spec.clone().unwrap_or_default();
    let uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
    let failed = i64::from(st.failed.unwrap_or(0))
        + i64::try_from(uncounted.failed.as_ref().map_or(0, Vec::len)).unwrap_or(i64::MAX);
    let succeeded = i64::from(st.succeeded.unwrap_or(0))
        + i64::try_from(uncounted.succeeded.as_ref().map_or(0, Vec::len)).unwrap_or(i64::MAX);
    let failure = |reason: &str, message: &str| Target::Failure {
        reason: reason.into(),
        message: message.into(),
    };
    let mut found = fail_job.map(|m| failure("PodFailurePolicy", &m));
    if found.is_none() && failed > i64::from(spec.backoff_limit.unwrap_or(6)) {
        found = Some(failure(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    }
    if found.is_none()
        && spec.suspend != Some(true)
        && let (Some(limit), Some(start)) = (spec.active_deadline_seconds, &st.start_time)
    {
        let limit = Duration::from_secs(u64::try_from(limit.max(0)).unwrap_or(0));
        let ran = Duration::try_from(now.duration_since(start.0)).unwrap_or_default();
        if ran >= limit {
            found = Some(failure(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        } else {
            *requeue = Some(limit - ran);
        }
    }
    if found.is_none() {
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completed =
            super::pods::parse_indexes(st.completed_indexes.as_deref().unwrap_or_default());
        let done = match spec.completions {
            Some(c) if indexed => {
                i64::try_from(completed.len()).unwrap_or(i64::MAX) >= i64::from(c)
            }
            Some(c) => succeeded >= i64::from(c),
            None => succeeded > 0 && active == 0,
        };
        // As upstream, a met success policy is the reason even when the
        // completions are reached at the same time.
        if let Some(rule) = indexed
            .then(|| success_policy_rule(&spec, &completed))
            .flatten()
        {
            found = Some(Target::Success {
                reason: "SuccessPolicy".into(),
                message: format!("Matched rules at index {rule}"),
            });
        } else if done {
            found = Some(Target::Success {
                reason: "CompletionsReached".into(),
                message: COMPLETIONS_REACHED.into(),
            });
        }
    }
    match &found {
        Some(Target::Success { reason, message }) => {
            set_condition(st, "SuccessCriteriaMet", "True", reason, message, now)
        }
        Some(Target::Failure { reason, message }) => {
            set_condition(st, "FailureTarget", "True", reason, message, now)
        }
        None => {}
    }
    found
}

/// The position of the first rule of an Indexed Job's `successPolicy` that
/// its completed indexes meet: all of the rule's indexes (within the
/// completions), or `succeededCount` of them, or of all indexes when the
/// rule names none. Rules are tried in order, as upstream tries them.
pub fn success_policy_rule(spec: &JobSpec, completed: &BTreeSet<i32>) -> Option<usize> {
    // Nothing is met before an index succeeds, whatever the counts say.
    let policy = spec
        .success_policy
        .as_ref()
        .filter(|_| !completed.is_empty())?;
    let completions = spec.completions.unwrap_or(0);
    let at_least = |n: i32, have: usize| usize::try_from(n).is_ok_and(|n| have >= n);
    policy
        .rules
        .iter()
        .position(|rule| match &rule.succeeded_indexes {
            Some(text) => {
                let required: BTreeSet<i32> = super::pods::parse_indexes(text)
                    .into_iter()
                    .filter(|i| (0..completions).contains(i))
                    .collect();
                let matched = required.intersection(completed).count();
                !required.is_empty()
                    && (matched == required.len()
                        || rule.succeeded_count.is_some_and(|n| at_least(n, matched)))
            }
            None => rule
                .succeeded_count
                .is_some_and(|n| at_least(n, completed.len())),
        })
}

/// Once no pod runs and every finished pod is counted, adds the concluding
/// condition (and, on success, `completionTime`).
pub fn conclude(st: &mut JobStatus, target: &Target, drained: bool, now: Timestamp) {
    if !drained {
        return;
    }
    match target {
        Target::Success { reason, message } => {
            set_condition(st, "Complete", "True", reason, message, now);
            st.completion_time.get_or_insert(Time(now));
        }
        Target::Failure { reason, message } => {
            set_condition(st, "Failed", "True", reason, message, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(completions: i32, rules: serde_json::Value) -> JobSpec {
        serde_json::from_value(json!({"template": {}, "completionMode": "Indexed",
            "completions": completions, "successPolicy": {"rules": rules}}))
        .expect("spec")
    }

    #[test]
    fn success_policy_rules_are_met_in_order() {
        let done = |text: &str| super::super::pods::parse_indexes(text);
        let spec = policy(
            6,
            json!([{"succeededIndexes": "5"}, {"succeededIndexes": "0,2"}]),
        );
        assert_eq!(success_policy_rule(&spec, &done("0")), None);
        assert_eq!(success_policy_rule(&spec, &done("0-2")), Some(1));
        assert_eq!(success_policy_rule(&spec, &done("0-5")), Some(0));
        // The example of upstream's API docs: of "1-4", only 1 and 3 count.
        let spec = policy(6, json!([{"succeededIndexes": "1-4", "succeededCount": 3}]));
        assert_eq!(success_policy_rule(&spec, &done("1,3,5")), None);
        assert_eq!(success_policy_rule(&spec, &done("1,3-4")), Some(0));
        let spec = policy(6, json!([{"succeededCount": 0}]));
        assert_eq!(success_policy_rule(&spec, &done("")), None);
        assert_eq!(success_policy_rule(&spec, &done("3")), Some(0));
        let spec = policy(6, json!([{"succeededCount": 2}]));
        assert_eq!(success_policy_rule(&spec, &done("4")), None);
        assert_eq!(success_policy_rule(&spec, &done("4-5")), Some(0));
        // Indexes beyond the completions count for nothing.
        let spec = policy(3, json!([{"succeededIndexes": "7"}]));
        assert_eq!(success_policy_rule(&spec, &done("0-2")), None);
    }

    #[test]
    fn a_met_success_policy_is_recorded_as_the_reason() {
        let j = job(
            json!({"spec": {"template": {}, "completionMode": "Indexed", "completions": 4,
            "successPolicy": {"rules": [{"succeededIndexes": "0"}]}},
            "status": {"completedIndexes": "0"}}),
        );
        let mut st = j.status.clone().unwrap_or_default();
        let t = target(&j, &mut st, None, 3, Timestamp::now(), &mut None).expect("target");
        let expected = Target::Success {
            reason: "SuccessPolicy".into(),
            message: "Matched rules at index 0".into(),
        };
        assert_eq!(t, expected);
        assert_eq!(
            find(&st, "SuccessCriteriaMet").and_then(|c| c.reason.as_deref()),
            Some("SuccessPolicy")
        );
        conclude(&mut st, &t, true, Timestamp::now());
        let complete = find(&st, "Complete").expect("Complete");
        assert_eq!(
            complete.message.as_deref(),
            Some("Matched rules at index 0")
        );
    }

    fn job(v: serde_json::Value) -> Job {
        serde_json::from_value(v).expect("job")
    }

    #[test]
    fn failures_beyond_the_backoff_limit_fail_the_job() {
        let j = job(json!({"spec": {"template": {}, "backoffLimit": 1, "completions": 3}}));
        let mut st = JobStatus {
            failed: Some(2),
            ..Default::default()
        };
        let t = target(&j, &mut st, None, 0, Timestamp::now(), &mut None);
        assert!(
            matches!(&t, Some(Target::Failure { reason, .. }) if reason == "BackoffLimitExceeded")
        );
        assert!(find(&st, "FailureTarget").is_some());
        conclude(&mut st, &t.expect("target"), true, Timestamp::now());
        assert_eq!(find(&st, "Failed").map(|c| c.status.as_str()), Some("True"));
        assert!(st.completion_time.is_none(), "only success completes");
    }

    #[test]
    fn enough_successes_complete_the_job_once_drained() {
        let j = job(json!({"spec": {"template": {}, "completions": 2}}));
        let mut st = JobStatus {
            succeeded: Some(2),
            ..Default::default()
        };
        let t = target(&j, &mut st, None, 1, Timestamp::now(), &mut None).expect("target");
        assert!(matches!(&t, Target::Success { reason, .. } if reason == "CompletionsReached"));
        conclude(&mut st, &t, false, Timestamp::now());
        assert!(find(&st, "Complete").is_none(), "a pod still runs");
        conclude(&mut st, &t, true, Timestamp::now());
        assert!(st.completion_time.is_some());
    }

    #[test]
    fn a_running_deadline_asks_to_be_looked_at_again() {
        let j = job(json!({"spec": {"template": {}, "activeDeadlineSeconds": 60}}));
        let mut st = JobStatus::default();
        suspension(&mut st, false, Timestamp::now());
        let mut requeue = None;
        assert_eq!(
            target(&j, &mut st, None, 1, Timestamp::now(), &mut requeue),
            None
        );
        assert!(requeue.is_some_and(|d| d <= Duration::from_secs(60)));
    }
}
