//! What the Job controller reads from and writes into pods: the tracking
//! finalizer, completion indexes, the fate of a finished pod under the pod
//! failure policy, and new pods from the template.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::{Job, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::jiff::Timestamp;
use kybern_apimachinery::cached_pod::CachedPod;

use crate::ControllerError;
use crate::pods::controller_ref;

/// The finalizer that keeps a Job's pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) giving an Indexed Job's pod its index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// What a pod that stopped running means for its Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Succeeded,
    /// It failed, and counts toward `backoffLimit`.
    Failed,
    /// It failed, and a pod failure policy rule says to ignore it.
    Ignored,
    /// It failed, and a pod failure policy rule fails the whole Job.
    FailJob(String),
}

/// Whether the pod still carries the tracking finalizer (is uncounted).
pub fn tracked(pod: &CachedPod) -> bool {
    pod.metadata
        .finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|f| f == TRACKING_FINALIZER)
}

/// The pod's completion index, if it has a valid one.
pub fn index_of(pod: &CachedPod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

/// How the pod ended, or `None` while it runs. A pod deleted before it
/// succeeded counts as failed, as upstream's `TerminatingOrFailed`
/// replacement policy has it.
pub fn outcome(job: &Job, pod: &CachedPod) -> Option<Outcome> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    match phase {
        Some("Succeeded") => return Some(Outcome::Succeeded),
        Some("Failed") => {}
        _ if pod.metadata.deletion_timestamp.is_some() => {}
        _ => return None,
    }
    let rules = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
        .map(|p| p.rules.as_slice())
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(what) = rule_matches(rule, pod) {
            return Some(match rule.action.as_str() {
                "FailJob" => Outcome::FailJob(format!(
                    "{what} for pod {}/{} matching FailJob rule at index {i}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default(),
                )),
                "Ignore" => Outcome::Ignored,
                _ => Outcome::Failed,
            });
        }
    }
    Some(Outcome::Failed)
}

/// Describes how `rule` matches the failed pod, or `None` when it does not.
fn rule_matches(rule: &PodFailurePolicyRule, pod: &CachedPod) -> Option<String> {
    let status = pod.status.as_ref();
    if let Some(req) = &rule.on_exit_codes {
        let statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        for c in statuses {
            if req.container_name.as_ref().is_some_and(|n| n != &c.name) {
                continue;
            }
            let Some(code) = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            // Exit code 0 never matches, as upstream.
            let listed = req.values.contains(&code);
            let hit = match req.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if code != 0 && hit {
                return Some(format!("Container {} failed with exit code {code}", c.name));
            }
        }
        return None;
    }
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    for want in rule.on_pod_conditions.as_deref().unwrap_or_default() {
        let status = want.status.as_deref().unwrap_or("True");
        if conditions
            .iter()
            .any(|c| c.type_ == want.type_ && c.status == status)
        {
            return Some(format!("Pod has condition {}", want.type_));
        }
    }
    None
}

/// When the pod stopped: its last container's finish, else its deletion.
pub fn finished_at(pod: &CachedPod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
}

/// A new pod for the Job (with `index` for an Indexed Job), owned by it and
/// held by the tracking finalizer.
pub fn from_template(job: &Job, index: Option<i32>) -> Result<Pod, ControllerError> {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .ok_or_else(|| ControllerError::Invalid("spec.template is required".into()))?;
    let name = job.metadata.name.as_deref().unwrap_or("job");
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = None;
    meta.namespace = job.metadata.namespace.clone();
    meta.owner_references = Some(vec![controller_ref(job)]);
    meta.finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.into());
    let mut spec = template.spec.unwrap_or_default();
    match index {
        Some(i) => {
            meta.generate_name = Some(format!("{name}-{i}-"));
            meta.annotations
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            meta.labels
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value_from: Some(
                    serde_json::from_value(serde_json::json!({"fieldRef": {
                        "fieldPath": format!("metadata.labels['{COMPLETION_INDEX}']")}}))
                    .map_err(|e| ControllerError::Invalid(e.to_string()))?,
                ),
                value: None,
            };
            let containers = spec.containers.iter_mut();
            let inits = spec.init_containers.iter_mut().flatten();
            for c in containers.chain(inits) {
                c.env.get_or_insert_with(Vec::new).push(env.clone());
            }
        }
        None => meta.generate_name = Some(format!("{name}-")),
    }
    Ok(Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    })
}

/// Upstream's compact form of a set of indexes: `1,3-5,7`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// Reads [`format_indexes`]' form back; malformed parts are skipped.
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    // A hostile range cannot make us allocate without bound.
                    set.extend((a..=b).take(1_000_000));
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    set.insert(i);
                }
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(v: serde_json::Value) -> Job {
        serde_json::from_value(v).expect("job")
    }

    fn failed_pod(code: i32) -> CachedPod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "main", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code}}}]}}))
        .expect("pod")
    }

    #[test]
    fn indexes_round_trip_in_compact_form() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert_eq!(parse_indexes("x,3-,5"), [5].into_iter().collect());
    }

    #[test]
    fn the_pod_failure_policy_picks_the_first_matching_rule() {
        let j = job(
            json!({"spec": {"template": {}, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [2]}},
                {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [3]}},
            ]}}}),
        );
        assert_eq!(outcome(&j, &failed_pod(2)), Some(Outcome::Ignored));
        assert!(matches!(
            outcome(&j, &failed_pod(3)),
            Some(Outcome::FailJob(m)) if m.contains("exit code 3") && m.contains("index 1")
        ));
        assert_eq!(outcome(&j, &failed_pod(1)), Some(Outcome::Failed));
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let j = job(
            json!({"metadata": {"name": "w", "namespace": "d", "uid": "u"},
            "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}),
        );
        let p = from_template(&j, Some(3)).expect("pod");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("w-3-"));
        assert_eq!(index_of(&CachedPod::from(&p)), Some(3));
        assert!(tracked(&CachedPod::from(&p)));
        let spec = p.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("w-3"));
        assert_eq!(
            spec.containers[0].env.as_ref().expect("env")[0].name,
            "JOB_COMPLETION_INDEX"
        );
    }
}
