//! The disruption controller: each PodDisruptionBudget's status (expected,
//! healthy and desired pods, `disruptionsAllowed`, the `DisruptionAllowed`
//! condition), which the eviction subresource spends.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::labels::Selector;

use crate::informer::{Change, Informer, next_change};
use crate::pods::{controller_of, is_ready};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers, labels_match};

/// How long an evicted pod counts as disrupted while its deletion is not
/// yet seen (upstream's `DeletionTimeout`).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

struct DisruptionController {
    client: kube::Client,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<CachedPod>>,
    replica_sets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

/// Runs the disruption controller.
pub async fn run(client: kube::Client, informers: &Informers, workers: usize) {
    let ctl = Arc::new(DisruptionController {
        client,
        budgets: informers.disruption_budgets.clone(),
        pods: informers.pods.clone(),
        replica_sets: informers.replica_sets.clone(),
        deployments: informers.deployments.clone(),
        queue: Arc::default(),
    });
    let (mut pdb_changes, mut pod_changes) = (ctl.budgets.subscribe(), ctl.pods.subscribe());
    ctl.budgets.synced().await;
    ctl.pods.synced().await;
    ctl.replica_sets.synced().await;
    ctl.deployments.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    change = next_change(&mut pdb_changes) => match change {
                        Some(Change::Added(b) | Change::Modified(b) | Change::Deleted(b)) => ctl.queue.add(ObjectKey::of(b.as_ref())),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    change = next_change(&mut pod_changes) => match change {
                        Some(Change::Added(p) | Change::Modified(p) | Change::Deleted(p)) => ctl.pod_changed(&p),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("disruption", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

fn selector_of(pdb: &PodDisruptionBudget) -> Option<Selector> {
    let sel = serde_json::to_value(pdb.spec.as_ref()?.selector.as_ref()?).ok()?;
    Selector::from_label_selector(&sel).ok()
}

impl DisruptionController {
    fn resync(&self) {
        for b in self.budgets.state() {
            self.queue.add(ObjectKey::of(b.as_ref()));
        }
    }

    fn pod_changed(&self, pod: &CachedPod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        for b in self.budgets.in_namespace(ns) {
            if selector_of(&b).is_some_and(|s| labels_match(&s, pod.metadata.labels.as_ref())) {
                self.queue.add(ObjectKey::of(b.as_ref()));
            }
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(pdb) = self.budgets.get(key.namespace.as_deref(), &key.name) else {
            return Ok(None);
        };
        let spec = pdb.spec.clone().unwrap_or_default();
        let now = Timestamp::now();
        // In policy/v1 an empty selector matches every pod, a missing one none.
        let pods: Vec<Arc<CachedPod>> = match selector_of(&pdb) {
            None => Vec::new(),
            Some(sel) => self
                .pods
                .in_namespace(key.ns())
                .into_iter()
                .filter(|p| labels_match(&sel, p.metadata.labels.as_ref()))
                .collect(),
        };
        let old = pdb.status.clone().unwrap_or_default();
        // Evicted pods whose deletion is not seen yet stay disrupted.
        let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
        let mut recheck: Option<Duration> = None;
        for (name, at) in old.disrupted_pods.clone().unwrap_or_default() {
            let live = pods.iter().any(|p| {
                p.metadata.name.as_deref() == Some(name.as_str())
                    && p.metadata.deletion_timestamp.is_none()
            });
            let age = Duration::try_from(now.duration_since(at.0)).unwrap_or_default();
            if live && age < DELETION_TIMEOUT {
                let left = DELETION_TIMEOUT - age;
                recheck = Some(recheck.map_or(left, |r| r.min(left)));
                disrupted.insert(name, at);
            }
        }
        let healthy = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && is_ready(p)
                    && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default())
            })
            .count();
        let expected = self.expected_pods(&pdb, &pods);
        let desired = match (&spec.min_available, &spec.max_unavailable) {
            (Some(min), _) => scaled(min, expected),
            (None, Some(max)) => expected.saturating_sub(scaled(max, expected)),
            // Neither set: nothing is required to stay up.
            (None, None) => 0,
        };
        let allowed = healthy.saturating_sub(desired);
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let sufficient = allowed > 0;
        let condition = Condition {
            type_: "DisruptionAllowed".into(),
            status: if sufficient { "True" } else { "False" }.into(),
            reason: if sufficient {
                "SufficientPods"
            } else {
                "InsufficientPods"
            }
            .into(),
            message: String::new(),
            observed_generation: pdb.metadata.generation,
            last_transition_time: old
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "DisruptionAllowed" && (c.status == "True") == sufficient)
                .map_or(Time(now), |c| c.last_transition_time.clone()),
        };
        let status = PodDisruptionBudgetStatus {
            current_healthy: count(healthy),
            desired_healthy: count(desired),
            disruptions_allowed: count(allowed),
            expected_pods: count(expected),
            observed_generation: pdb.metadata.generation,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            conditions: Some(vec![condition]),
        };
        if pdb.status.as_ref() != Some(&status) {
            let mut updated = (*pdb).clone();
            updated.status = Some(status);
            crate::write_status(&self.client, &updated).await?;
        }
        Ok(recheck)
    }

    /// Pods the budget expects: with an integer `minAvailable`, the pods it
    /// selects; otherwise the scale of their controllers (a ReplicaSet's, or
    /// its Deployment's), with uncontrolled pods counted one each.
    fn expected_pods(&self, pdb: &PodDisruptionBudget, pods: &[Arc<CachedPod>]) -> usize {
        let spec = pdb.spec.as_ref();
        if let Some(IntOrString::Int(_)) = spec.and_then(|s| s.min_available.as_ref()) {
            return pods.len();
        }
        let ns = pdb.metadata.namespace.as_deref().unwrap_or_default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut total = 0usize;
        for p in pods {
            let Some(owner) = controller_of(&p.metadata) else {
                total += 1;
                continue;
            };
            if !seen.insert(owner.uid.clone()) {
                continue;
            }
            let scale = match owner.kind.as_str() {
                "ReplicaSet" => self.replica_sets.get(Some(ns), &owner.name).map(|rs| {
                    // A Deployment's ReplicaSet: the Deployment's scale.
                    let parent = controller_of(&rs.metadata)
                        .filter(|o| o.kind == "Deployment")
                        .and_then(|o| {
                            if !seen.insert(o.uid.clone()) {
                                return Some(0);
                            }
                            self.deployments
                                .get(Some(ns), &o.name)
                                .and_then(|d| d.spec.as_ref()?.replicas)
                        });
                    parent.or_else(|| rs.spec.as_ref()?.replicas).unwrap_or(1)
                }),
                _ => None,
            };
            total += scale.map_or(1, |s| usize::try_from(s.max(0)).unwrap_or(0));
        }
        total
    }
}

/// An int-or-percent of `of`, percentages rounded up, as upstream.
fn scaled(v: &IntOrString, of: usize) -> usize {
    match v {
        IntOrString::Int(i) => usize::try_from((*i).max(0)).unwrap_or(0),
        IntOrString::String(s) => {
            let pct: usize = s.trim_end_matches('%').trim().parse().unwrap_or(0);
            (of * pct).div_ceil(100)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::String("10%".into()), 5), 1);
        assert_eq!(scaled(&IntOrString::Int(2), 10), 2);
        assert_eq!(scaled(&IntOrString::String("junk".into()), 10), 0);
    }
}
