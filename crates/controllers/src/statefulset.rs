//! The StatefulSet controller: pods with stable names (`<set>-<ordinal>`)
//! and hostnames, created in order and each only once its predecessors run
//! and are Ready (or all at once with `Parallel`), removed from the highest
//! ordinal down; PersistentVolumeClaims from `volumeClaimTemplates` with the
//! retention policy's owner references; rolling updates from the highest
//! ordinal down to the partition, one Ready pod at a time, or OnDelete;
//! ControllerRevisions; `status`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use kybern_apimachinery::cached_pod::CachedPod;

use crate::events::{
    EventRecorder, FAILED_CREATE, FAILED_DELETE, NORMAL, SUCCESSFUL_CREATE, SUCCESSFUL_DELETE,
    WARNING, error_text, reference_to,
};
use crate::history::{self, REVISION_LABEL};
use crate::informer::{Change, Informer, next_change};
use crate::pods::{availability, controller_of, controller_ref, is_ready};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers};

/// The label with a StatefulSet pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct StatefulSetController {
    client: kube::Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<CachedPod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
}

/// Runs the StatefulSet controller.
pub async fn run(client: kube::Client, informers: &Informers, workers: usize) {
    let ctl = Arc::new(StatefulSetController {
        recorder: EventRecorder::new(client.clone(), "statefulset-controller"),
        client,
        sets: informers.stateful_sets.clone(),
        pods: informers.pods.clone(),
        revisions: informers.controller_revisions.clone(),
        queue: Arc::default(),
    });
    let (mut set_changes, mut pod_changes) = (ctl.sets.subscribe(), ctl.pods.subscribe());
    ctl.sets.synced().await;
    ctl.pods.synced().await;
    ctl.revisions.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    c = next_change(&mut set_changes) => match c {
                        Some(Change::Added(s) | Change::Modified(s) | Change::Deleted(s)) => ctl.queue.add(ObjectKey::of(s.as_ref())),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    c = next_change(&mut pod_changes) => match c {
                        Some(Change::Added(p) | Change::Modified(p) | Change::Deleted(p)) => {
                            if let Some(o) = controller_of(&p.metadata).filter(|o| o.kind == "StatefulSet") {
                                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
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
        run_workers("statefulset", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

/// The ordinal in a pod's name `<set>-<ordinal>`.
fn ordinal_of(set: &str, pod: &CachedPod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn running_and_ready(p: &CachedPod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && is_ready(p)
        && p.metadata.deletion_timestamp.is_none()
}

fn revision_of(p: &CachedPod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// The template a revision holds.
fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

impl StatefulSetController {
    fn resync(&self) {
        for s in self.sets.state() {
            self.queue.add(ObjectKey::of(s.as_ref()));
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(sts) = self.sets.get(key.namespace.as_deref(), &key.name) else {
            return Ok(None);
        };
        if sts.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = sts.spec.clone().unwrap_or_default();
        let uid = sts.metadata.uid.clone().unwrap_or_default();
        let revisions = history::owned(sts.as_ref(), self.revisions.in_namespace(key.ns()));
        let collisions = sts.status.as_ref().and_then(|s| s.collision_count);
        let update_rev = history::ensure(
            &self.client,
            sts.as_ref(),
            &spec.template,
            collisions,
            &revisions,
        )
        .await?;
        let update_name = update_rev.metadata.name.clone().unwrap_or_default();
        let old = sts.status.clone().unwrap_or_default();
        let current_name = old
            .current_revision
            .clone()
            .filter(|c| {
                revisions
                    .iter()
                    .any(|r| r.metadata.name.as_deref() == Some(c.as_str()))
            })
            .unwrap_or_else(|| update_name.clone());
        let current_template = revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(current_name.as_str()))
            .and_then(|r| template_of(r))
            .unwrap_or_else(|| spec.template.clone());

        let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let end = start + replicas;
        let mut pods: BTreeMap<i32, Arc<CachedPod>> = BTreeMap::new();
        let mut condemned: Vec<(i32, Arc<CachedPod>)> = Vec::new();
        for p in self.pods.controlled_by(&uid) {
            match ordinal_of(&key.name, &p) {
                Some(o) if o >= start && o < end => {
                    pods.insert(o, p);
                }
                _ => condemned.push((ordinal_of(&key.name, &p).unwrap_or(i32::MAX), p)),
            }
        }
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
        let post = PostParams::default();

        // Create missing pods (and their claims) in ordinal order.
        for ordinal in start..end {
            match pods.get(&ordinal) {
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    if !parallel {
                        break;
                    }
                }
                Some(p) if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") => {
                    delete_pod(&self.recorder, &sts, &pod_api, p).await?;
                    if !parallel {
                        break;
                    }
                }
                Some(p) => {
                    if !parallel && !running_and_ready(p) {
                        break;
                    }
                }
                None => {
                    // Ordinals below the partition keep the current revision.
                    let (template, rev) = if rolling && ordinal >= partition.max(start) {
                        (&spec.template, &update_name)
                    } else {
                        (&current_template, &current_name)
                    };
                    self.ensure_claims(&sts, ordinal).await?;
                    let pod = stateful_pod(&sts, template, rev, ordinal);
                    let result = pod_api.create(&post, &pod).await;
                    let name = pod.metadata.name.as_deref().unwrap_or_default();
                    match result {
                        Ok(_) => pod_event(&self.recorder, &sts, "create", name, None),
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => {
                            pod_event(&self.recorder, &sts, "create", name, Some(&e));
                            return Err(e.into());
                        }
                    }
                    if !parallel {
                        break;
                    }
                }
            }
        }
        let all_ready = (start..end).all(|o| pods.get(&o).is_some_and(|p| running_and_ready(p)));

        // Remove condemned pods from the highest ordinal down.
        condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        for (_, p) in &condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    break;
                }
                continue;
            }
            if !parallel && !all_ready {
                break;
            }
            self.release_claims_on_scale_down(&sts, p).await?;
            delete_pod(&self.recorder, &sts, &pod_api, p).await?;
            if !parallel {
                break;
            }
        }

        // Roll: the highest ordinal not yet updated, once every pod is Ready.
        if rolling && condemned.is_empty() && all_ready {
            let stale = (partition.max(start)..end).rev().find_map(|o| {
                pods.get(&o)
                    .filter(|p| revision_of(p) != Some(&update_name))
            });
            if let Some(p) = stale {
                delete_pod(&self.recorder, &sts, &pod_api, p).await?;
            }
        }

        let in_use: HashSet<String> = pods
            .values()
            .filter_map(|p| revision_of(p).map(str::to_owned))
            .chain([current_name.clone()])
            .collect();
        history::trim(
            &self.client,
            &revisions,
            &update_name,
            &in_use,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        let requeue = self
            .write_status(&sts, &pods, &current_name, &update_name)
            .await?;
        Ok(requeue)
    }

    /// Creates the pod's claims that do not exist yet.
    async fn ensure_claims(&self, sts: &StatefulSet, ordinal: i32) -> Result<(), ControllerError> {
        let spec = sts.spec.clone().unwrap_or_default();
        let ns = sts.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let delete_with_set = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
        for template in spec.volume_claim_templates.iter().flatten() {
            let mut claim = template.clone();
            let name = claim_name(sts, template, ordinal);
            claim.metadata.name = Some(name);
            claim.metadata.namespace = Some(ns.into());
            claim.metadata.resource_version = None;
            claim.metadata.uid = None;
            let labels = claim.metadata.labels.get_or_insert_with(Default::default);
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            if delete_with_set {
                claim.metadata.owner_references = Some(vec![owner_ref(sts)]);
            }
            claim.status = None;
            let (claim_name, set) = (
                claim.metadata.name.clone().unwrap_or_default(),
                sts.metadata.name.as_deref().unwrap_or_default(),
            );
            let pod = format!("{set}-{ordinal}");
            let said = format!("create Claim {claim_name} Pod {pod} in StatefulSet {set}");
            let event = |type_, reason, message| {
                self.recorder
                    .post(reference_to(sts), type_, reason, message);
            };
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => event(NORMAL, SUCCESSFUL_CREATE, format!("{said} success")),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    let message = format!("{said} failed error: {}", error_text(&e));
                    event(WARNING, FAILED_CREATE, message);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// With `whenScaled: Delete`, a condemned pod's claims are handed to the
    /// pod, so the garbage collector removes them with it.
    async fn release_claims_on_scale_down(
        &self,
        sts: &StatefulSet,
        pod: &CachedPod,
    ) -> Result<(), ControllerError> {
        let spec = sts.spec.clone().unwrap_or_default();
        let when_scaled = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_scaled.as_deref());
        if when_scaled != Some("Delete") {
            return Ok(());
        }
        let Some(ordinal) = ordinal_of(sts.metadata.name.as_deref().unwrap_or_default(), pod)
        else {
            return Ok(());
        };
        let ns = sts.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pod_ref = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        };
        for template in spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(sts, template, ordinal);
            let patch = serde_json::json!({"metadata": {"ownerReferences": [pod_ref]}});
            match api
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn write_status(
        &self,
        sts: &StatefulSet,
        pods: &BTreeMap<i32, Arc<CachedPod>>,
        current: &str,
        update: &str,
    ) -> Result<Option<Duration>, ControllerError> {
        let spec = sts.spec.clone().unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let live: Vec<&Arc<CachedPod>> = pods
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut requeue: Option<Duration> = None;
        let mut available = 0;
        for p in &live {
            match availability(p, min_ready) {
                Ok(()) => available += 1,
                Err(Some(w)) => requeue = Some(requeue.map_or(w, |r| r.min(w))),
                Err(None) => {}
            }
        }
        let updated = live
            .iter()
            .filter(|p| revision_of(p) == Some(update))
            .count();
        let ready = live.iter().filter(|p| is_ready(p)).count();
        let replicas = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        // Every pod at the update revision and Ready: it becomes current.
        let done = updated == replicas && ready == replicas;
        let current = if done { update } else { current };
        let old = sts.status.clone().unwrap_or_default();
        let status = StatefulSetStatus {
            observed_generation: sts.metadata.generation,
            replicas: count(live.len()),
            ready_replicas: Some(count(ready)),
            available_replicas: Some(count(available)),
            current_replicas: Some(count(
                live.iter()
                    .filter(|p| revision_of(p) == Some(current))
                    .count(),
            )),
            updated_replicas: Some(count(updated)),
            current_revision: Some(current.to_owned()),
            update_revision: Some(update.to_owned()),
            collision_count: old.collision_count.or(Some(0)),
            conditions: old.conditions.clone(),
        };
        if sts.status.as_ref() != Some(&status) {
            let mut updated = sts.clone();
            updated.status = Some(status);
            crate::write_status(&self.client, &updated).await?;
        }
        Ok(requeue)
    }
}

fn claim_name(sts: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!(
        "{}-{}-{ordinal}",
        template.metadata.name.as_deref().unwrap_or_default(),
        sts.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A non-controlling owner reference to the set (for claims).
fn owner_ref(sts: &StatefulSet) -> OwnerReference {
    OwnerReference {
        controller: None,
        ..controller_ref(sts)
    }
}

/// Tells the set's readers that a pod was made or removed (`verb`), or why
/// not, in upstream's words.
fn pod_event(
    recorder: &EventRecorder,
    sts: &StatefulSet,
    verb: &str,
    pod: &str,
    error: Option<&kube::Error>,
) {
    let set = sts.metadata.name.as_deref().unwrap_or_default();
    let (type_, reason, outcome) = match (verb, error) {
        ("create", None) => (NORMAL, SUCCESSFUL_CREATE, "successful".to_owned()),
        ("create", Some(e)) => (
            WARNING,
            FAILED_CREATE,
            format!("failed error: {}", error_text(e)),
        ),
        (_, None) => (NORMAL, SUCCESSFUL_DELETE, "successful".to_owned()),
        (_, Some(e)) => (
            WARNING,
            FAILED_DELETE,
            format!("failed error: {}", error_text(e)),
        ),
    };
    let message = format!("{verb} Pod {pod} in StatefulSet {set} {outcome}");
    recorder.post(reference_to(sts), type_, reason, message);
}

async fn delete_pod(
    recorder: &EventRecorder,
    sts: &StatefulSet,
    api: &Api<Pod>,
    p: &CachedPod,
) -> Result<(), ControllerError> {
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: p.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let name = p.metadata.name.as_deref().unwrap_or_default();
    match api.delete(name, &params).await {
        Ok(_) => {
            pod_event(recorder, sts, "delete", name, None);
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => {
            pod_event(recorder, sts, "delete", name, Some(&e));
            Err(e.into())
        }
    }
}

/// The pod for `ordinal`: stable name and hostname, the governing Service
/// as subdomain, identity labels, and claims mounted by name.
fn stateful_pod(sts: &StatefulSet, template: &PodTemplateSpec, rev: &str, ordinal: i32) -> Pod {
    let set = sts.metadata.name.as_deref().unwrap_or_default();
    let name = format!("{set}-{ordinal}");
    let spec_ = sts.spec.clone().unwrap_or_default();
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.name = Some(name.clone());
    meta.generate_name = None;
    meta.namespace = sts.metadata.namespace.clone();
    meta.owner_references = Some(vec![controller_ref(sts)]);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_LABEL.into(), rev.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name);
    if !spec_.service_name.as_deref().unwrap_or_default().is_empty() {
        spec.subdomain = spec_.service_name.clone();
    }
    for claim in spec_.volume_claim_templates.iter().flatten() {
        let vol_name = claim.metadata.name.clone().unwrap_or_default();
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != vol_name);
        volumes.push(Volume {
            name: vol_name,
            persistent_volume_claim: Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(sts, claim, ordinal),
                    read_only: None,
                },
            ),
            ..Default::default()
        });
    }
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_get_stable_identities_and_their_claims() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "d", "uid": "u"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": []}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}}))
        .expect("sts");
        let template = sts.spec.as_ref().expect("spec").template.clone();
        let p = stateful_pod(&sts, &template, "db-abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("db-2"));
        assert_eq!(ordinal_of("db", &CachedPod::from(&p)), Some(2));
        let labels = p.metadata.labels.clone().expect("labels");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "db-abc");
        let spec = p.spec.expect("spec");
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("db-2"), Some("db"))
        );
        let claim = spec.volumes.expect("volumes")[0]
            .persistent_volume_claim
            .clone()
            .expect("claim");
        assert_eq!(claim.claim_name, "data-db-2");
        let other: CachedPod =
            serde_json::from_value(json!({"metadata": {"name": "db-extra"}})).expect("pod");
        assert_eq!(ordinal_of("db", &other), None);
    }
}
