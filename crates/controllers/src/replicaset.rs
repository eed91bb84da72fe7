//! The ReplicaSet (and ReplicationController) controller: keeps
//! `spec.replicas` pods matching each set's selector, adopting orphans and releasing pods that stopped
//! matching, and reports what it sees in `status`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kybern_apimachinery::cached_pod::CachedPod;
use serde_json::json;

use crate::events::{EventRecorder, pod_created, pod_deleted};
use crate::expectations::Expectations;
use crate::informer::{Change, Informer, next_change};
use crate::pods::{
    availability, controller_of, controller_ref, deletion_order, is_active, is_ready,
};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers, sooner};
use crate::replicated::Replicated;
use crate::{ControllerError, Informers, labels_match};

/// Most pods created or deleted in one sync (upstream's burstReplicas).
const BURST_REPLICAS: usize = 500;

/// The controller's shared state, for one kind.
struct ReplicaSetController<K: Replicated> {
    client: kube::Client,
    sets: Arc<Informer<K>>,
    pods: Arc<Informer<CachedPod>>,
    expectations: Expectations,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
}

/// Runs the ReplicaSet controller with `workers` concurrent syncs.
pub async fn run(client: kube::Client, informers: &Informers, workers: usize) {
    run_kind(client, informers.replica_sets.clone(), informers, workers).await;
}

/// Runs the ReplicationController controller with `workers` concurrent syncs.
pub async fn run_replication_controllers(
    client: kube::Client,
    informers: &Informers,
    workers: usize,
) {
    run_kind(
        client,
        informers.replication_controllers.clone(),
        informers,
        workers,
    )
    .await;
}

async fn run_kind<K: Replicated>(
    client: kube::Client,
    sets: Arc<Informer<K>>,
    informers: &Informers,
    workers: usize,
) {
    let ctl = Arc::new(ReplicaSetController {
        recorder: EventRecorder::new(client.clone(), K::EVENT_SOURCE),
        client,
        sets,
        pods: informers.pods.clone(),
        expectations: Expectations::default(),
        queue: Arc::default(),
    });
    let (mut set_changes, mut pod_changes) = (ctl.sets.subscribe(), ctl.pods.subscribe());
    ctl.sets.synced().await;
    ctl.pods.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    change = next_change(&mut set_changes) => match change {
                        Some(Change::Deleted(rs)) => {
                            let key = ObjectKey::of(rs.as_ref());
                            ctl.expectations.forget(&key);
                            ctl.queue.add(key);
                        }
                        Some(Change::Added(rs) | Change::Modified(rs)) => ctl.queue.add(ObjectKey::of(rs.as_ref())),
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
        run_workers(K::KIND, ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

impl<K: Replicated> ReplicaSetController<K> {
    fn resync(&self) {
        for rs in self.sets.state() {
            self.queue.add(ObjectKey::of(rs.as_ref()));
        }
    }

    /// Queues the ReplicaSets a pod change concerns: its controller, or every
    /// set whose selector matches an orphan.
    fn pod_changed(&self, change: Change<CachedPod>) {
        let (pod, added, deleted) = match change {
            Change::Added(p) => (p, true, false),
            Change::Modified(p) => (p, false, false),
            Change::Deleted(p) => (p, false, true),
            Change::Resync => return self.resync(),
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        if controller_of(&pod.metadata).is_some() {
            if let Some(key) = self.expectations.pod_changed(K::KIND, &pod, added, deleted) {
                self.queue.add(key);
            }
            return;
        }
        if deleted {
            return;
        }
        for rs in self.sets.in_namespace(ns) {
            if rs
                .selector()
                .is_some_and(|s| labels_match(&s, pod.metadata.labels.as_ref()))
            {
                self.queue.add(ObjectKey::of(rs.as_ref()));
            }
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(rs) = self.sets.get(key.namespace.as_deref(), &key.name) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let selector = rs.selector();
        let uid = rs.meta().uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
        let mut owned = Vec::new();
        let candidates = self.pods.controlled_by(&uid);
        let orphans = self.pods.orphans_in(key.ns());
        for pod in candidates.into_iter().chain(orphans) {
            let matches = selector
                .as_ref()
                .is_some_and(|s| labels_match(s, pod.metadata.labels.as_ref()));
            match controller_of(&pod.metadata) {
                Some(owner) if owner.uid == uid => {
                    if matches {
                        owned.push(pod);
                    } else {
                        release(&api, &pod, &uid).await?;
                    }
                }
                Some(_) => {}
                None if matches && is_active(&pod) && rs.meta().deletion_timestamp.is_none() => {
                    adopt(&api, &pod, rs.as_ref()).await?;
                    owned.push(pod);
                }
                None => {}
            }
        }
        let active: Vec<Arc<CachedPod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
        let mut failure = None;
        if self.expectations.satisfied(key) && rs.meta().deletion_timestamp.is_none() {
            failure = self.manage_replicas(key, &rs, &api, &active).await.err();
        }
        let requeue = self
            .update_status(key, &rs, &owned, &active, failure.as_ref())
            .await?;
        match failure {
            Some(err) => Err(err),
            None => Ok(sooner(requeue, self.expectations.lapse_in(key))),
        }
    }

    /// Creates or deletes pods so that `replicas` are active.
    async fn manage_replicas(
        &self,
        key: &ObjectKey,
        rs: &K,
        api: &Api<Pod>,
        active: &[Arc<CachedPod>],
    ) -> Result<(), ControllerError> {
        let want = rs.replicas().max(0) as usize;
        if active.len() < want {
            let n = (want - active.len()).min(BURST_REPLICAS);
            self.expectations.expect(key, n, []);
            let pod = pod_from_template(rs)?;
            let post = PostParams::default();
            // Slow start, as upstream: 1, 2, 4, ... so a failing template costs one call.
            let mut created = 0;
            let mut batch = 1;
            while created < n {
                let size = batch.min(n - created);
                let results =
                    futures::future::join_all((0..size).map(|_| api.create(&post, &pod))).await;
                let mut first_err = None;
                for r in results {
                    pod_created(&self.recorder, rs, &r);
                    if let Err(e) = r {
                        self.expectations.creation_observed(key);
                        first_err.get_or_insert(e);
                    }
                }
                created += size;
                if let Some(e) = first_err {
                    for _ in created..n {
                        self.expectations.creation_observed(key);
                    }
                    return Err(e.into());
                }
                batch *= 2;
            }
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST_REPLICAS);
            let mut victims: Vec<&Arc<CachedPod>> = active.iter().collect();
            victims.sort_by(|a, b| deletion_order(a, b));
            victims.truncate(n);
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
                pod_deleted(&self.recorder, rs, name, &r);
                match r {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.expectations.deletion_observed(key, &uid(pod))
                    }
                    Err(e) => {
                        self.expectations.deletion_observed(key, &uid(pod));
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Writes `status` when it changed; returns when to look again for pods
    /// that will become available.
    async fn update_status(
        &self,
        key: &ObjectKey,
        rs: &K,
        owned: &[Arc<CachedPod>],
        active: &[Arc<CachedPod>],
        failure: Option<&ControllerError>,
    ) -> Result<Option<Duration>, ControllerError> {
        let min_ready = rs.min_ready_seconds();
        let template_labels = rs
            .template()
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default();
        let mut requeue: Option<Duration> = None;
        let mut available = 0;
        for pod in active {
            match availability(pod, min_ready) {
                Ok(()) => available += 1,
                Err(Some(wait)) => requeue = Some(requeue.map_or(wait, |r| r.min(wait))),
                Err(None) => {}
            }
        }
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let current = rs.replica_status();
        let old = current.clone().unwrap_or_default();
        let mut conditions: Vec<ReplicaSetCondition> = old
            .conditions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "ReplicaFailure")
            .collect();
        if let Some(err) = failure {
            let previous = old
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "ReplicaFailure")
                .cloned();
            let reason = if active_len_below(rs, active.len()) {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(err.to_string()),
                last_transition_time: previous
                    .and_then(|c| c.last_transition_time)
                    .or_else(|| Some(crate::now())),
            });
        }
        let status = ReplicaSetStatus {
            replicas: count(active.len()),
            fully_labeled_replicas: Some(count(
                active
                    .iter()
                    .filter(|p| {
                        let labels = p.metadata.labels.clone().unwrap_or_default();
                        template_labels
                            .iter()
                            .all(|(k, v)| labels.get(k) == Some(v))
                    })
                    .count(),
            )),
            ready_replicas: Some(count(active.iter().filter(|p| is_ready(p)).count())),
            available_replicas: Some(count(available)),
            terminating_replicas: old.terminating_replicas.map(|_| {
                count(
                    owned
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_some())
                        .count(),
                )
            }),
            observed_generation: rs.meta().generation,
            conditions: (!conditions.is_empty()).then_some(conditions),
        };
        if current.as_ref() != Some(&status) {
            let api: Api<K> = Api::namespaced(self.client.clone(), key.ns());
            let patch = json!({"status": status});
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
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

fn active_len_below<K: Replicated>(rs: &K, active: usize) -> bool {
    active < rs.replicas().max(0) as usize
}

/// A new pod from the set's template, owned by the set.
fn pod_from_template<K: Replicated>(rs: &K) -> Result<Pod, ControllerError> {
    let template = rs
        .template()
        .ok_or_else(|| ControllerError::Invalid("spec.template is required".into()))?;
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = None;
    meta.generate_name = Some(format!("{}-", rs.meta().name.as_deref().unwrap_or("pod")));
    meta.namespace = rs.meta().namespace.clone();
    meta.owner_references = Some(vec![controller_ref(rs)]);
    meta.resource_version = None;
    meta.uid = None;
    Ok(Pod {
        metadata: meta,
        spec: template.spec,
        status: None,
    })
}

/// Makes `rs` the controller of an orphan pod; a conflict means the pod
/// changed under us, and the next sync looks again.
async fn adopt<K: Replicated>(
    api: &Api<Pod>,
    pod: &CachedPod,
    rs: &K,
) -> Result<(), ControllerError> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(rs));
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version,
    }});
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Removes `uid`'s owner reference from a pod that no longer matches.
async fn release(api: &Api<Pod>, pod: &CachedPod, uid: &str) -> Result<(), ControllerError> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.uid != uid)
        .collect();
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version,
    }});
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
