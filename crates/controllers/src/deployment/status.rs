//! A Deployment's `status`: replica counts summed over its ReplicaSets, and
//! the `Available` and `Progressing` conditions `kubectl rollout status` reads,
//! including the progress deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Rollout;
use super::hash::{available_replicas, spec_replicas};
use crate::queue::ReconcileResult;
use crate::{ControllerError, now};

/// Fills what the API server's defaulting would, for objects written before it.
pub fn default_spec(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
}

impl Rollout<'_> {
    /// The rollout is done: every replica updated and available, nothing old left.
    pub(crate) fn complete(&self) -> bool {
        let s = self.computed_counts();
        let want = self.replicas();
        s.updated_replicas == Some(want)
            && s.replicas == Some(want)
            && s.available_replicas == Some(want)
            && s.observed_generation >= self.d.metadata.generation
    }

    fn computed_counts(&self) -> DeploymentStatus {
        let status_of =
            |rs: &k8s_openapi::api::apps::v1::ReplicaSet| rs.status.clone().unwrap_or_default();
        let replicas: i32 = self.all().map(|rs| status_of(rs).replicas).sum();
        let updated = self.new.as_ref().map_or(0, |rs| status_of(rs).replicas);
        let ready: i32 = self
            .all()
            .map(|rs| status_of(rs).ready_replicas.unwrap_or(0))
            .sum();
        let available: i32 = self.all().map(available_replicas).sum();
        let total: i32 = self.all().map(spec_replicas).sum();
        DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: self.d.status.as_ref().and_then(|s| s.collision_count),
            ..Default::default()
        }
    }

    /// Writes the status when it changed; returns when to check the progress
    /// deadline again.
    pub(crate) async fn sync_status(&mut self) -> ReconcileResult<ControllerError> {
        let mut status = self.computed_counts();
        let old = self.d.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let want = self.replicas();
        let (available, message) =
            if status.available_replicas.unwrap_or(0) >= want - self.max_unavailable() {
                (
                    ("True", "MinimumReplicasAvailable"),
                    "Deployment has minimum availability.",
                )
            } else {
                (
                    ("False", "MinimumReplicasUnavailable"),
                    "Deployment does not have minimum availability.",
                )
            };
        set_condition(
            &mut conditions,
            "Available",
            available.0,
            available.1,
            message,
        );
        let mut requeue = None;
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let new_name = self
            .new
            .as_ref()
            .and_then(|rs| rs.metadata.name.clone())
            .unwrap_or_default();
        let progressing = conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .cloned();
        let reason = progressing
            .as_ref()
            .and_then(|c| c.reason.clone())
            .unwrap_or_default();
        if paused {
            if reason != "DeploymentPaused" {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                );
            }
        } else if reason == "DeploymentPaused" {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
            );
        } else if self.created_new {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &format!("Created new replica set \"{new_name}\""),
            );
        } else if progressing.is_none() && self.new.is_some() {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "FoundNewReplicaSet",
                &format!("Found new replica set \"{new_name}\""),
            );
        } else {
            let done =
                status.replicas == status.updated_replicas && reason == "NewReplicaSetAvailable";
            let deadline = self
                .d
                .spec
                .as_ref()
                .and_then(|s| s.progress_deadline_seconds)
                .unwrap_or(600);
            status.observed_generation = self.d.metadata.generation;
            if !done {
                if self.complete() {
                    set_condition(
                        &mut conditions,
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    );
                } else if progressed(&old, &status) {
                    set_condition(
                        &mut conditions,
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        &format!("ReplicaSet \"{new_name}\" is progressing."),
                    );
                    // Progress pushes the deadline back even when the condition reads the same.
                    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == "Progressing") {
                        c.last_update_time = Some(now());
                    }
                } else if reason != "ProgressDeadlineExceeded" {
                    let since = progressing
                        .as_ref()
                        .and_then(|c| c.last_update_time.as_ref())
                        .map(|t| t.0);
                    if let Some(since) = since {
                        let limit = Duration::from_secs(u64::try_from(deadline).unwrap_or(600));
                        let waited = Duration::try_from(Timestamp::now().duration_since(since))
                            .unwrap_or_default();
                        if waited >= limit {
                            set_condition(
                                &mut conditions,
                                "Progressing",
                                "False",
                                "ProgressDeadlineExceeded",
                                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                            );
                        } else {
                            requeue = Some(limit - waited + Duration::from_secs(1));
                        }
                    }
                }
            }
        }
        status.conditions = Some(conditions);
        if self.d.status.as_ref() != Some(&status) {
            let api: Api<Deployment> = Api::namespaced(self.ctl.client.clone(), self.ns());
            let patch = json!({"status": status});
            match api
                .patch_status(self.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(requeue)
    }
}

/// Whether the rollout moved since the last status: more updated, ready or
/// available replicas, or fewer old ones.
fn progressed(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// Sets a condition; its transition time moves only when its status does.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let at = now();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
            {
                return;
            }
            if c.status != status {
                c.last_transition_time = Some(at.clone());
            }
            c.status = status.to_owned();
            c.reason = Some(reason.to_owned());
            c.message = Some(message.to_owned());
            c.last_update_time = Some(at);
        }
        None => conditions.push(DeploymentCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_transition_time: Some(at.clone()),
            last_update_time: Some(at),
        }),
    }
}
