//! The Deployment controller: one ReplicaSet per pod template, rolled from the
//! old to the new by the RollingUpdate or Recreate strategy, with revisions,
//! proportional scaling, pause, history limits and rollout conditions.

pub mod hash;
mod rollout;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::labels::Selector;
use serde_json::json;

use hash::{DESIRED_REPLICAS, MAX_REPLICAS, equal_ignoring_hash, revision_of, spec_replicas};
pub use hash::{POD_TEMPLATE_HASH, REVISION, template_hash};

use crate::events::{EventRecorder, NORMAL, reference_to};
use crate::informer::{Change, Informer, next_change};
use crate::pods::{controller_of, controller_ref};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers, labels_match};

/// The controller's shared state.
struct DeploymentController {
    client: kube::Client,
    deployments: Arc<Informer<Deployment>>,
    sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<CachedPod>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
}

/// The reason of the Events a Deployment gets as its sets are scaled.
const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// Runs the Deployment controller with `workers` concurrent syncs.
pub async fn run(client: kube::Client, informers: &Informers, workers: usize) {
    let ctl = Arc::new(DeploymentController {
        recorder: EventRecorder::new(client.clone(), "deployment-controller"),
        client,
        deployments: informers.deployments.clone(),
        sets: informers.replica_sets.clone(),
        pods: informers.pods.clone(),
        queue: Arc::default(),
    });
    let mut deployment_changes = ctl.deployments.subscribe();
    let mut set_changes = ctl.sets.subscribe();
    let mut pod_changes = ctl.pods.subscribe();
    ctl.deployments.synced().await;
    ctl.sets.synced().await;
    ctl.pods.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    change = next_change(&mut deployment_changes) => match change {
                        Some(Change::Added(d) | Change::Modified(d) | Change::Deleted(d)) => {
                            ctl.queue.add(ObjectKey::of(d.as_ref()));
                        }
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    change = next_change(&mut set_changes) => match change {
                        Some(Change::Added(rs) | Change::Modified(rs) | Change::Deleted(rs)) => ctl.set_changed(&rs),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    change = next_change(&mut pod_changes) => match change {
                        // Recreate waits for the old pods to be gone.
                        Some(Change::Deleted(pod)) => ctl.pod_deleted(&pod),
                        Some(_) => {}
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("deployment", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

impl DeploymentController {
    fn resync(&self) {
        for d in self.deployments.state() {
            self.queue.add(ObjectKey::of(d.as_ref()));
        }
    }

    fn set_changed(&self, rs: &ReplicaSet) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(owner) = controller_of(&rs.metadata) {
            if owner.kind == "Deployment" {
                self.queue.add(ObjectKey::namespaced(ns, &owner.name));
            }
            return;
        }
        for d in self.deployments.in_namespace(ns) {
            if selector_of(&d).is_some_and(|s| labels_match(&s, rs.metadata.labels.as_ref())) {
                self.queue.add(ObjectKey::of(d.as_ref()));
            }
        }
    }

    fn pod_deleted(&self, pod: &CachedPod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let Some(owner) = controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet") else {
            return;
        };
        if let Some(rs) = self.sets.get(Some(ns), &owner.name)
            && let Some(d) = controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")
        {
            self.queue.add(ObjectKey::namespaced(ns, &d.name));
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(d) = self.deployments.get(key.namespace.as_deref(), &key.name) else {
            return Ok(None);
        };
        let mut d = (*d).clone();
        status::default_spec(&mut d);
        let sets = self.owned_sets(&d).await?;
        let mut rollout = Rollout::new(self, d, sets);
        if rollout.d.metadata.deletion_timestamp.is_some() {
            return rollout.sync_status().await;
        }
        let paused = rollout
            .d
            .spec
            .as_ref()
            .and_then(|s| s.paused)
            .unwrap_or(false);
        if paused || rollout.is_scaling_event() {
            return rollout.scale_only().await;
        }
        let recreate = rollout
            .d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.type_.as_deref())
            == Some("Recreate");
        if recreate {
            rollout.recreate().await
        } else {
            rollout.rolling_update().await
        }
    }

    /// The ReplicaSets this Deployment controls, after adopting orphans its
    /// selector matches and releasing those it no longer matches.
    async fn owned_sets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>, ControllerError> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let selector = selector_of(d);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let mut owned = Vec::new();
        for rs in self.sets.in_namespace(ns) {
            let matches = selector
                .as_ref()
                .is_some_and(|s| labels_match(s, rs.metadata.labels.as_ref()));
            let name = rs.metadata.name.as_deref().unwrap_or_default();
            match controller_of(&rs.metadata) {
                Some(o) if o.uid == uid => {
                    if matches {
                        owned.push((*rs).clone());
                    } else {
                        let refs: Vec<_> = rs
                            .metadata
                            .owner_references
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|r| r.uid != uid)
                            .collect();
                        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.metadata.resource_version}});
                        ignore_not_found(
                            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                                .await,
                        )?;
                    }
                }
                None if matches && d.metadata.deletion_timestamp.is_none() => {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(controller_ref(d));
                    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.metadata.resource_version}});
                    owned.push(
                        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?,
                    );
                }
                _ => {}
            }
        }
        Ok(owned)
    }
}

/// One sync of one Deployment: its ReplicaSets as the sync changes them.
pub(crate) struct Rollout<'a> {
    ctl: &'a DeploymentController,
    d: Deployment,
    api: Api<ReplicaSet>,
    new: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
    /// Set when this sync created the new ReplicaSet.
    created_new: bool,
}

impl<'a> Rollout<'a> {
    fn new(ctl: &'a DeploymentController, d: Deployment, sets: Vec<ReplicaSet>) -> Self {
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut new = None;
        let mut old = Vec::new();
        // The oldest set with the current template is the new one, as upstream.
        let mut sets = sets;
        sets.sort_by(|a, b| {
            created(a)
                .cmp(&created(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        for rs in sets {
            let same = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignoring_hash(t, &template));
            if same && new.is_none() {
                new = Some(rs);
            } else {
                old.push(rs);
            }
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        Rollout {
            api: Api::namespaced(ctl.client.clone(), &ns),
            ctl,
            d,
            new,
            old,
            created_new: false,
        }
    }

    fn replicas(&self) -> i32 {
        self.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    /// Every set, the new one first.
    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.new.iter().chain(self.old.iter())
    }

    /// Makes sure the new ReplicaSet exists (when `create`) and carries the
    /// next revision; records that revision on the Deployment.
    async fn ensure_new(&mut self, create: bool) -> Result<(), ControllerError> {
        let max_old = self.old.iter().map(revision_of).max().unwrap_or(0);
        let revision = (max_old + 1).to_string();
        if let Some(rs) = &self.new {
            if revision_of(rs) <= max_old {
                let name = rs.metadata.name.clone().unwrap_or_default();
                let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
                self.new = Some(
                    self.api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?,
                );
            }
        } else if create {
            self.create_new(&revision).await?;
        } else {
            return Ok(());
        }
        let revision = self.new.as_ref().map(revision_of).unwrap_or(0).to_string();
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned();
        if current.as_deref() != Some(revision.as_str()) {
            let api: Api<Deployment> = Api::namespaced(self.ctl.client.clone(), self.ns());
            let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
            self.d.metadata = api
                .patch(self.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?
                .metadata;
        }
        Ok(())
    }

    async fn create_new(&mut self, revision: &str) -> Result<(), ControllerError> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut annotations: BTreeMap<String, String> = self
            .d
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| {
                k != REVISION && k != "kubectl.kubernetes.io/last-applied-configuration"
            })
            .collect();
        annotations.insert(REVISION.into(), revision.to_owned());
        let replicas = self.new_replicas(0);
        annotations.insert(DESIRED_REPLICAS.into(), self.replicas().to_string());
        annotations.insert(
            MAX_REPLICAS.into(),
            (self.replicas() + self.max_surge()).to_string(),
        );
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.name())),
                namespace: self.d.metadata.namespace.clone(),
                labels: meta.labels.clone(),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    let name = created.metadata.name.as_deref().unwrap_or_default();
                    let message = format!("Scaled up replica set {name} from 0 to {replicas}");
                    self.scaled_event(message);
                }
                self.new = Some(created);
                self.created_new = true;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already, and the cache had not caught up: use it.
                let name = rs.metadata.name.as_deref().unwrap_or_default();
                let found = self.api.get_opt(name).await?;
                let uid = self.d.metadata.uid.as_deref().unwrap_or_default();
                if let Some(found) = found
                    && controller_of(&found.metadata).is_some_and(|o| o.uid == uid)
                    && found
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| equal_ignoring_hash(t, &spec.template))
                {
                    self.new = Some(found);
                    return Ok(());
                }
                // A set of that name with another template: hash again with
                // one more collision, as upstream does.
                let api: Api<Deployment> = Api::namespaced(self.ctl.client.clone(), self.ns());
                let count = collisions.unwrap_or(0).saturating_add(1);
                let patch = json!({"status": {"collisionCount": count}});
                api.patch_status(self.name(), &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Err(ControllerError::Invalid(format!(
                    "ReplicaSet {}-{hash} exists with another template; collisionCount is now {count}",
                    self.name()
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Scales a set (the new one when `new`, else old set `index`) to `to`,
    /// stamping the annotations proportional scaling reads.
    async fn scale(&mut self, which: Which, to: i32) -> Result<bool, ControllerError> {
        let desired = self.replicas().to_string();
        let max = (self.replicas() + self.max_surge()).to_string();
        let rs = match which {
            Which::New => self.new.as_mut(),
            Which::Old(i) => self.old.get_mut(i),
        };
        let Some(rs) = rs else { return Ok(false) };
        let annotations = rs.metadata.annotations.clone().unwrap_or_default();
        if spec_replicas(rs) == to
            && annotations.get(DESIRED_REPLICAS) == Some(&desired)
            && annotations.get(MAX_REPLICAS) == Some(&max)
        {
            return Ok(false);
        }
        let from = spec_replicas(rs);
        let name = rs.metadata.name.clone().unwrap_or_default();
        // With the resourceVersion the decision was made on, as upstream's
        // update: a set the informer showed stale (say, before this
        // controller's own last scale) is a 409 and a fresh sync, not a
        // second scale computed from old numbers.
        let patch = json!({
            "metadata": {
                "annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max},
                "resourceVersion": rs.metadata.resource_version,
            },
            "spec": {"replicas": to},
        });
        *rs = self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if from != to {
            tracing::info!(deployment = %self.name(), replicaset = %name, from, to, "scaled replica set");
            let way = if from < to { "up" } else { "down" };
            self.scaled_event(format!(
                "Scaled {way} replica set {name} from {from} to {to}"
            ));
        }
        Ok(from != to)
    }

    /// Tells the Deployment's readers that one of its sets was scaled.
    fn scaled_event(&self, message: String) {
        let object = reference_to(&self.d);
        self.ctl
            .recorder
            .post(object, NORMAL, SCALING_REPLICA_SET, message);
    }

    fn name(&self) -> &str {
        self.d.metadata.name.as_deref().unwrap_or_default()
    }

    fn ns(&self) -> &str {
        self.d.metadata.namespace.as_deref().unwrap_or_default()
    }
}

/// Which ReplicaSet of a rollout.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Which {
    /// The set with the current template.
    New,
    /// An old set, by position in the rollout's list.
    Old(usize),
}

fn created(rs: &ReplicaSet) -> Option<k8s_openapi::jiff::Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// The Deployment's selector; `None` for a malformed or empty one.
fn selector_of(d: &Deployment) -> Option<Selector> {
    let sel = serde_json::to_value(&d.spec.as_ref()?.selector).ok()?;
    let s = Selector::from_label_selector(&sel).ok()?;
    (!s.is_empty()).then_some(s)
}

fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<(), ControllerError> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
