//! The DaemonSet controller: one pod on every node the template fits
//! (nodeSelector, required node affinity, taints against the template's and
//! the default daemon tolerations), placed through the scheduler with a
//! node-name affinity as upstream; rolling updates by `maxUnavailable` or
//! `maxSurge`, or OnDelete; ControllerRevisions; `status`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_scheduler::plugins::matching::{compile_term, term_matches, untolerated};
use serde_json::json;

use crate::events::{EventRecorder, pod_created, pod_deleted};
use crate::expectations::Expectations;
use crate::history::{self, REVISION_LABEL};
use crate::informer::{Change, Informer, next_change};
use crate::pods::{availability, controller_ref, is_ready};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers, sooner};
use crate::{ControllerError, Informers};

struct DaemonSetController {
    client: kube::Client,
    sets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<CachedPod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    expectations: Expectations,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
}

/// Runs the DaemonSet controller.
pub async fn run(client: kube::Client, informers: &Informers, workers: usize) {
    let ctl = Arc::new(DaemonSetController {
        recorder: EventRecorder::new(client.clone(), "daemonset-controller"),
        client,
        sets: informers.daemon_sets.clone(),
        pods: informers.pods.clone(),
        nodes: informers.nodes.clone(),
        revisions: informers.controller_revisions.clone(),
        expectations: Expectations::default(),
        queue: Arc::default(),
    });
    let mut set_changes = ctl.sets.subscribe();
    let mut pod_changes = ctl.pods.subscribe();
    let mut node_changes = ctl.nodes.subscribe();
    ctl.sets.synced().await;
    ctl.pods.synced().await;
    ctl.nodes.synced().await;
    ctl.revisions.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    c = next_change(&mut set_changes) => match c {
                        Some(Change::Added(d) | Change::Modified(d) | Change::Deleted(d)) => ctl.queue.add(ObjectKey::of(d.as_ref())),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    c = next_change(&mut pod_changes) => match c {
                        Some(c) => ctl.pod_changed(c),
                        None => return,
                    },
                    // A node appearing, changing labels or taints, or going.
                    c = next_change(&mut node_changes) => match c {
                        Some(_) => ctl.resync(),
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("daemonset", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

/// Tolerations every daemon pod gets, as upstream's
/// `AddOrUpdateDaemonPodTolerations`.
fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// The template with the default daemon tolerations added.
fn daemon_template(ds: &DaemonSet) -> PodTemplateSpec {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    if let Some(spec) = template.spec.as_mut() {
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        for d in default_tolerations(spec.host_network == Some(true)) {
            if !tolerations
                .iter()
                .any(|t| t.key == d.key && t.effect == d.effect)
            {
                tolerations.push(d);
            }
        }
    }
    template
}

/// Whether a daemon pod from `template` should run on `node`.
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> bool {
    let Some(spec) = template.spec.as_ref() else {
        return false;
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        let any = req
            .node_selector_terms
            .iter()
            .any(|term| compile_term(term).is_some_and(|reqs| term_matches(&reqs, name, &labels)));
        if !any {
            return false;
        }
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]).is_none()
}

impl DaemonSetController {
    fn resync(&self) {
        for d in self.sets.state() {
            self.queue.add(ObjectKey::of(d.as_ref()));
        }
    }

    fn pod_changed(&self, change: Change<CachedPod>) {
        let (pod, added, deleted) = match change {
            Change::Added(p) => (p, true, false),
            Change::Modified(p) => (p, false, false),
            Change::Deleted(p) => (p, false, true),
            Change::Resync => return self.resync(),
        };
        if let Some(key) = self
            .expectations
            .pod_changed("DaemonSet", &pod, added, deleted)
        {
            self.queue.add(key);
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(ds) = self.sets.get(key.namespace.as_deref(), &key.name) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = ds.spec.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let revisions = history::owned(ds.as_ref(), self.revisions.in_namespace(key.ns()));
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let current = history::ensure(
            &self.client,
            ds.as_ref(),
            &spec.template,
            collisions,
            &revisions,
        )
        .await?;
        let hash = history::hash_of(&current);
        let template = daemon_template(&ds);
        let mut by_node: HashMap<String, Vec<Arc<CachedPod>>> = HashMap::new();
        for p in self.pods.controlled_by(&uid) {
            let node = placed_on(&p).unwrap_or_default();
            by_node.entry(node).or_default().push(p);
        }
        let nodes = self.nodes.state();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
        let mut creates: Vec<String> = Vec::new();
        let mut deletes: Vec<Arc<CachedPod>> = Vec::new();
        let mut requeue: Option<Duration> = None;
        let mut status = Census::default();
        // Old pods on nodes that should run one, for the rolling update.
        let mut old_available: Vec<(String, Arc<CachedPod>)> = Vec::new();
        let mut old_unavailable: Vec<Arc<CachedPod>> = Vec::new();
        let mut surging = 0usize;
        let updated = |p: &CachedPod| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                == Some(&hash)
        };
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let pods = by_node.remove(&name).unwrap_or_default();
            let live: Vec<&Arc<CachedPod>> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            if !should_run(&template, node) {
                if !live.is_empty() {
                    status.misscheduled += 1;
                }
                deletes.extend(live.into_iter().cloned());
                continue;
            }
            status.desired += 1;
            // Failed pods are replaced; deletion first.
            let (failed, running): (Vec<&Arc<CachedPod>>, Vec<&Arc<CachedPod>>) =
                live.into_iter().partition(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
                });
            deletes.extend(failed.into_iter().cloned());
            if running.is_empty() {
                if pods.iter().all(|p| p.metadata.deletion_timestamp.is_none()) {
                    creates.push(name);
                }
                continue;
            }
            status.scheduled += 1;
            let new: Vec<&&Arc<CachedPod>> = running.iter().filter(|p| updated(p)).collect();
            let old: Vec<&&Arc<CachedPod>> = running.iter().filter(|p| !updated(p)).collect();
            let mut available = |p: &CachedPod| available(p, min_ready, &mut requeue);
            if running.iter().any(|p| is_ready(p)) {
                status.ready += 1;
            }
            if running.iter().any(|p| available(p)) {
                status.available += 1;
            }
            if !new.is_empty() {
                status.updated += 1;
            }
            // One pod per node: surplus of a revision goes; an old pod goes
            // once its surged replacement is available.
            deletes.extend(new.iter().skip(1).map(|p| (**p).clone()));
            match (new.first(), old.first()) {
                (Some(n), Some(_)) if available(n) => {
                    deletes.extend(old.iter().map(|p| (**p).clone()));
                }
                (Some(_), Some(_)) => surging += 1,
                (None, Some(o)) => {
                    deletes.extend(old.iter().skip(1).map(|p| (**p).clone()));
                    if available(o) {
                        old_available.push((name, (**o).clone()));
                    } else {
                        old_unavailable.push((**o).clone());
                    }
                }
                _ => {}
            }
        }
        // Pods on nodes that are gone.
        for (_, pods) in by_node {
            deletes.extend(
                pods.into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none()),
            );
        }
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref() != Some("OnDelete") {
            let ru = strategy.rolling_update.clone().unwrap_or_default();
            let desired = status.desired;
            let max_surge = scaled(ru.max_surge.as_ref(), desired, 0, true);
            let max_unavailable = scaled(ru.max_unavailable.as_ref(), desired, 1, false);
            deletes.extend(old_unavailable);
            if max_surge == 0 {
                let unavailable = desired.saturating_sub(status.available);
                let room = max_unavailable.max(1).saturating_sub(unavailable);
                deletes.extend(old_available.into_iter().take(room).map(|(_, p)| p));
            } else {
                let room = max_surge.saturating_sub(surging);
                creates.extend(old_available.into_iter().take(room).map(|(n, _)| n));
            }
        }
        if self.expectations.satisfied(key) {
            self.apply(key, &ds, &template, &hash, &api, creates, deletes)
                .await?;
        }
        let in_use: HashSet<String> = self
            .pods
            .controlled_by(&uid)
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_LABEL).cloned())
            .collect();
        let current_name = current.metadata.name.clone().unwrap_or_default();
        history::trim(
            &self.client,
            &revisions,
            &current_name,
            &in_use,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        self.write_status(&ds, &status).await?;
        Ok(sooner(requeue, self.expectations.lapse_in(key)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        key: &ObjectKey,
        ds: &DaemonSet,
        template: &PodTemplateSpec,
        hash: &str,
        api: &Api<Pod>,
        creates: Vec<String>,
        deletes: Vec<Arc<CachedPod>>,
    ) -> Result<(), ControllerError> {
        let uid = |p: &CachedPod| p.metadata.uid.clone().unwrap_or_default();
        self.expectations
            .expect(key, creates.len(), deletes.iter().map(|p| uid(p)));
        let post = PostParams::default();
        let made: Vec<Pod> = creates
            .iter()
            .map(|node| daemon_pod(ds, template, hash, node))
            .collect();
        let results = futures::future::join_all(made.iter().map(|p| api.create(&post, p))).await;
        let mut first_err = None;
        for r in results {
            pod_created(&self.recorder, ds, &r);
            if let Err(e) = r {
                self.expectations.creation_observed(key);
                first_err.get_or_insert(e);
            }
        }
        let params = DeleteParams::default();
        let results = futures::future::join_all(
            deletes
                .iter()
                .map(|p| api.delete(p.metadata.name.as_deref().unwrap_or_default(), &params)),
        )
        .await;
        for (r, p) in results.into_iter().zip(&deletes) {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            pod_deleted(&self.recorder, ds, name, &r);
            if let Err(e) = r {
                self.expectations.deletion_observed(key, &uid(p));
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn write_status(&self, ds: &DaemonSet, c: &Census) -> Result<(), ControllerError> {
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let old = ds.status.clone().unwrap_or_default();
        let status = DaemonSetStatus {
            current_number_scheduled: count(c.scheduled),
            desired_number_scheduled: count(c.desired),
            number_misscheduled: count(c.misscheduled),
            number_ready: count(c.ready),
            number_available: Some(count(c.available)),
            number_unavailable: Some(count(c.desired.saturating_sub(c.available))),
            updated_number_scheduled: Some(count(c.updated)),
            observed_generation: ds.metadata.generation,
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
        };
        if ds.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut updated = ds.clone();
        updated.status = Some(status);
        crate::write_status(&self.client, &updated).await.map(drop)
    }
}

/// Whether the pod is available; if it will be, `requeue` is set to when.
fn available(p: &CachedPod, min_ready: i32, requeue: &mut Option<Duration>) -> bool {
    match availability(p, min_ready) {
        Ok(()) => true,
        Err(wait) => {
            if let Some(w) = wait {
                *requeue = Some(requeue.map_or(w, |r| r.min(w)));
            }
            false
        }
    }
}

/// Counts for `status`.
#[derive(Default)]
struct Census {
    desired: usize,
    scheduled: usize,
    misscheduled: usize,
    ready: usize,
    available: usize,
    updated: usize,
}

/// The node a daemon pod is on or meant for (bound, or its node-name affinity).
fn placed_on(p: &CachedPod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// A daemon pod for `node`: the template, the revision label, and a
/// required affinity to exactly that node (the scheduler binds it).
fn daemon_pod(ds: &DaemonSet, template: &PodTemplateSpec, hash: &str, node: &str) -> Pod {
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.name = None;
    meta.generate_name = Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or("ds")));
    meta.namespace = ds.metadata.namespace.clone();
    meta.owner_references = Some(vec![controller_ref(ds)]);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_LABEL.into(), hash.into());
    if let Some(g) = ds.metadata.generation {
        labels.insert("pod-template-generation".into(), g.to_string());
    }
    let mut spec = template.spec.clone().unwrap_or_default();
    let affinity = spec.affinity.get_or_insert_with(Default::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(Default::default);
    node_affinity.required_during_scheduling_ignored_during_execution =
        serde_json::from_value(json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}]}]}))
        .ok();
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

/// An int-or-percent of `of` (percentages round up for surge, down for
/// unavailable, as upstream), or `default` when unset.
fn scaled(v: Option<&IntOrString>, of: usize, default: usize, round_up: bool) -> usize {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => usize::try_from((*i).max(0)).unwrap_or(0),
        Some(IntOrString::String(s)) => {
            let pct: usize = s.trim_end_matches('%').trim().parse().unwrap_or(0);
            if round_up {
                (of * pct).div_ceil(100)
            } else {
                of * pct / 100
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    fn template(v: serde_json::Value) -> PodTemplateSpec {
        let ds: DaemonSet = serde_json::from_value(json!({"spec": {
            "selector": {}, "template": {"spec": v}}}))
        .expect("ds");
        daemon_template(&ds)
    }

    #[test]
    fn daemon_pods_go_where_selector_affinity_and_taints_allow() {
        let plain = template(json!({"containers": []}));
        let cordoned = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}));
        assert!(should_run(&plain, &cordoned), "daemons tolerate cordons");
        let dedicated = node(json!({"metadata": {"name": "b"}, "spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert!(!should_run(&plain, &dedicated));
        let picky = template(json!({"containers": [], "nodeSelector": {"disk": "ssd"}}));
        let ssd = node(json!({"metadata": {"name": "c", "labels": {"disk": "ssd"}}}));
        assert!(should_run(&picky, &ssd));
        assert!(!should_run(
            &picky,
            &node(json!({"metadata": {"name": "d"}}))
        ));
    }

    #[test]
    fn daemon_pods_are_pinned_by_affinity() {
        let ds: DaemonSet =
            serde_json::from_value(json!({"metadata": {"name": "agent", "uid": "u"},
            "spec": {"selector": {}, "template": {"spec": {"containers": []}}}}))
            .expect("ds");
        let p = daemon_pod(&ds, &daemon_template(&ds), "h1", "node-7");
        assert_eq!(placed_on(&CachedPod::from(&p)).as_deref(), Some("node-7"));
        assert_eq!(p.metadata.labels.expect("labels")[REVISION_LABEL], "h1");
        assert_eq!(
            scaled(Some(&IntOrString::String("10%".into())), 15, 1, false),
            1
        );
        assert_eq!(
            scaled(Some(&IntOrString::String("10%".into())), 15, 0, true),
            2
        );
    }
}
