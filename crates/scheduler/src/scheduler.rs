//! The scheduling loop: one task owns the cluster cache and the queue, applies
//! what the pod and node watches report, and schedules one pod at a time;
//! bindings run beside it, and their outcome comes back as another event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kybern_apimachinery::cached_pod::CachedPod;
use tokio::sync::{Semaphore, mpsc};

use crate::algorithm::{Decision, schedule_pod};
use crate::cache::{ClusterCache, PodInfo};
use crate::events::EventRecorder;
use crate::framework::Status;
use crate::metrics::SchedulerMetrics;
use crate::pod_feed::{PodEvent, PodFeed};
use crate::preemption;
use crate::profile::{DEFAULT_SCHEDULER_NAME, Profile};
use crate::queue::SchedulingQueue;
use crate::volumes::{VolumeEvent, VolumeKind, VolumeObject};

/// What reaches the loop.
enum Input {
    Pod(PodEvent),
    Node(Box<watcher::Event<Node>>),
    Pdb(Box<watcher::Event<PodDisruptionBudget>>),
    Volume(Box<VolumeEvent>),
    /// A binding finished: the pod, and the error if it failed.
    Bound(Box<PodInfo>, Option<String>),
}

/// The scheduler: its profiles, client and metrics. Clones share them.
#[derive(Clone)]
pub struct Scheduler {
    client: kube::Client,
    profiles: Vec<Arc<Profile>>,
    metrics: SchedulerMetrics,
    /// Bounds the API calls (bindings, events, status) in flight at once, so
    /// that a burst reuses pooled connections instead of opening thousands.
    in_flight: Arc<Semaphore>,
    /// Pods from a cache the process shares; `None`: the scheduler's own watch.
    pods: Option<PodFeed>,
}

/// API calls the scheduler may have in flight at once. Its client should keep
/// as many connections idle: over HTTP/1.1 each call in flight holds one, and
/// a pool that closes the extras after each burst opens (and TLS-handshakes)
/// them again on the next.
pub const MAX_IN_FLIGHT: usize = 64;

/// Watches every object of one kind and sends its events to the loop as
/// `wrap` makes them; watch errors are logged and the watcher retries.
fn follow<K>(
    client: &kube::Client,
    tx: &mpsc::UnboundedSender<Input>,
    wrap: fn(watcher::Event<K>) -> Input,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut events = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let tx = tx.clone();
    tokio::spawn(async move {
        while let Some(r) = events.next().await {
            match r {
                Ok(e) => {
                    if tx.send(wrap(e)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler watch failed; retrying"),
            }
        }
    });
}

/// The loop's state.
struct State {
    cache: ClusterCache,
    queue: SchedulingQueue,
    /// Uids seen in the current re-list of each watch, to drop what vanished.
    relist_pods: Option<HashSet<String>>,
    relist_nodes: Option<HashSet<String>>,
    /// Where to start looking for feasible nodes next (upstream rotates it).
    next_start: usize,
    /// Disruption budgets by namespace/name, which preemption respects.
    pdbs: BTreeMap<String, PodDisruptionBudget>,
}

impl Scheduler {
    /// A scheduler with the given profiles (one default profile when empty).
    pub fn new(client: kube::Client, profiles: Vec<Profile>, metrics: SchedulerMetrics) -> Self {
        let mut profiles: Vec<Arc<Profile>> = profiles.into_iter().map(Arc::new).collect();
        if profiles.is_empty() {
            profiles.push(Arc::new(Profile::default_named(DEFAULT_SCHEDULER_NAME)));
        }
        Scheduler {
            client,
            profiles,
            metrics,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            pods: None,
        }
    }

    /// Takes pods from `feed` instead of watching them itself.
    pub fn with_pod_feed(mut self, feed: PodFeed) -> Self {
        self.pods = Some(feed);
        self
    }

    fn profile_for(&self, pod: &CachedPod) -> Option<&Arc<Profile>> {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(DEFAULT_SCHEDULER_NAME);
        self.profiles.iter().find(|p| p.scheduler_name == name)
    }

    /// Runs until the watches end (they retry on errors, so in practice forever).
    pub async fn run(&self) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        match &self.pods {
            Some(feed) => {
                let (mut pods, pod_tx) = (feed(), tx.clone());
                tokio::spawn(async move {
                    while let Some(e) = pods.next().await {
                        if pod_tx.send(Input::Pod(e)).is_err() {
                            return;
                        }
                    }
                });
            }
            None => follow::<CachedPod>(&self.client, &tx, |e| {
                Input::Pod(crate::pod_feed::from_watch(e))
            }),
        }
        follow::<Node>(&self.client, &tx, |e| Input::Node(Box::new(e)));
        follow::<PodDisruptionBudget>(&self.client, &tx, |e| Input::Pdb(Box::new(e)));
        follow::<PersistentVolumeClaim>(&self.client, &tx, |e| {
            let e = VolumeEvent::from_watch(e, VolumeKind::Claim, VolumeObject::Claim);
            Input::Volume(Box::new(e))
        });
        follow::<PersistentVolume>(&self.client, &tx, |e| {
            let e = VolumeEvent::from_watch(e, VolumeKind::Volume, VolumeObject::Volume);
            Input::Volume(Box::new(e))
        });
        follow::<StorageClass>(&self.client, &tx, |e| {
            let e = VolumeEvent::from_watch(e, VolumeKind::Class, VolumeObject::Class);
            Input::Volume(Box::new(e))
        });
        let recorders: HashMap<String, EventRecorder> = self
            .profiles
            .iter()
            .map(|p| {
                let r = EventRecorder::new(self.client.clone(), &p.scheduler_name);
                (p.scheduler_name.clone(), r)
            })
            .collect();
        let mut st = State {
            cache: ClusterCache::default(),
            queue: SchedulingQueue::default(),
            relist_pods: None,
            relist_nodes: None,
            next_start: 0,
            pdbs: BTreeMap::new(),
        };
        // Counting the queues walks every pending pod: at most every 100 ms.
        let mut counted = Instant::now();
        loop {
            while let Ok(input) = rx.try_recv() {
                self.apply(&mut st, input, &recorders);
            }
            let now = Instant::now();
            if now.duration_since(counted) >= Duration::from_millis(100) {
                self.metrics.set_queue(st.queue.lengths());
                counted = now;
            }
            if let Some(q) = st.queue.pop(now) {
                self.attempt(&mut st, q.info, &tx, &recorders).await;
                continue;
            }
            let wake = st
                .queue
                .next_backoff()
                .map_or(Duration::from_secs(1), |at| {
                    at.saturating_duration_since(now)
                })
                .min(Duration::from_secs(1));
            tokio::select! {
                input = rx.recv() => match input {
                    Some(i) => self.apply(&mut st, i, &recorders),
                    None => return,
                },
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    fn apply(&self, st: &mut State, input: Input, recorders: &HashMap<String, EventRecorder>) {
        let now = Instant::now();
        match input {
            Input::Pod(ev) => match ev {
                PodEvent::Init => st.relist_pods = Some(HashSet::new()),
                PodEvent::Apply(p) => {
                    if let Some(seen) = st.relist_pods.as_mut() {
                        seen.insert(p.metadata.uid.clone().unwrap_or_default());
                    }
                    self.pod_changed(st, p, now);
                }
                PodEvent::Delete(p) => {
                    self.pod_gone(st, p.metadata.uid.as_deref().unwrap_or_default(), now)
                }
                PodEvent::InitDone => {
                    if let Some(seen) = st.relist_pods.take() {
                        for uid in st.cache.pod_uids() {
                            if !seen.contains(&uid) && !st.cache.is_assumed(&uid) {
                                self.pod_gone(st, &uid, now);
                            }
                        }
                    }
                }
            },
            Input::Node(ev) => match *ev {
                watcher::Event::Init => st.relist_nodes = Some(HashSet::new()),
                watcher::Event::InitApply(mut n) | watcher::Event::Apply(mut n) => {
                    n.metadata.managed_fields = None;
                    if let Some(seen) = st.relist_nodes.as_mut() {
                        seen.insert(n.metadata.name.clone().unwrap_or_default());
                    }
                    if st.cache.upsert_node(Arc::new(n)) {
                        st.queue.cluster_changed(now);
                    }
                }
                watcher::Event::Delete(n) => {
                    st.cache.remove_node(&n.metadata.name.unwrap_or_default());
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = st.relist_nodes.take() {
                        let gone: Vec<String> = st
                            .cache
                            .nodes()
                            .map(|n| n.name.clone())
                            .filter(|n| !seen.contains(n))
                            .collect();
                        for n in gone {
                            st.cache.remove_node(&n);
                        }
                    }
                }
            },
            Input::Pdb(ev) => {
                let key = |b: &PodDisruptionBudget| {
                    format!(
                        "{}/{}",
                        b.metadata.namespace.as_deref().unwrap_or(""),
                        b.metadata.name.as_deref().unwrap_or("")
                    )
                };
                match *ev {
                    watcher::Event::Init => st.pdbs.clear(),
                    watcher::Event::InitApply(b) | watcher::Event::Apply(b) => {
                        st.pdbs.insert(key(&b), b);
                    }
                    watcher::Event::Delete(b) => {
                        st.pdbs.remove(&key(&b));
                    }
                    watcher::Event::InitDone => {}
                }
            }
            Input::Volume(ev) => {
                if st.cache.volumes.apply(*ev) {
                    st.queue.cluster_changed(now);
                }
            }
            Input::Bound(pod, error) => match error {
                None => {
                    st.queue.done(&pod.uid);
                    self.metrics.bound();
                }
                Some(message) => {
                    st.cache.remove_pod(&pod.uid);
                    st.queue.failed(&pod.uid, false, now);
                    self.metrics.attempt("error");
                    if let Some(r) = self
                        .profile_for(&pod.pod)
                        .and_then(|p| recorders.get(&p.scheduler_name))
                    {
                        let (r, pod) = (r.clone(), *pod);
                        tokio::spawn(async move {
                            r.record(&pod, "Warning", "FailedScheduling", &message)
                                .await;
                        });
                    }
                }
            },
        }
    }

    /// A pod as now observed, trimmed as `PodFeed` describes.
    fn pod_changed(&self, st: &mut State, pod: Arc<CachedPod>, now: Instant) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let assigned = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if assigned {
            let was_running = crate::cache::occupies_node(&pod);
            st.queue.remove(&uid);
            st.cache.clear_nomination(&uid);
            st.cache.upsert_pod(pod);
            if !was_running {
                // A finished pod freed its node.
                st.queue.cluster_changed(now);
            }
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            self.pod_gone(st, &uid, now);
            return;
        }
        let Some(profile) = self.profile_for(&pod) else {
            return;
        };
        if st.cache.is_assumed(&uid) {
            return;
        }
        let info = PodInfo::new(pod);
        // A nomination made before a restart, or by another scheduler.
        let nominated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(node) = nominated
            && st.cache.nomination_of(&uid) != Some(node)
        {
            st.cache.nominate(&info, node);
        }
        let gated = profile
            .pre_enqueue
            .iter()
            .any(|p| !p.pre_enqueue(&info).is_success());
        st.queue.upsert(info, gated, now);
    }

    fn pod_gone(&self, st: &mut State, uid: &str, now: Instant) {
        st.queue.remove(uid);
        st.cache.clear_nomination(uid);
        if st.cache.has_pod(uid) {
            st.cache.remove_pod(uid);
            st.queue.cluster_changed(now);
        }
    }

    /// One scheduling attempt: find a node, assume the pod there and bind it
    /// in the background; or record why it fits nowhere.
    async fn attempt(
        &self,
        st: &mut State,
        pod: PodInfo,
        tx: &mpsc::UnboundedSender<Input>,
        recorders: &HashMap<String, EventRecorder>,
    ) {
        let Some(profile) = self.profile_for(&pod.pod).cloned() else {
            st.queue.remove(&pod.uid);
            return;
        };
        let recorder = recorders.get(&profile.scheduler_name).cloned();
        let started = Instant::now();
        let (decision, state) = schedule_pod(&profile, &st.cache, &pod, &mut st.next_start);
        self.metrics.algorithm(started.elapsed());
        match decision {
            Decision::Node(node) => {
                st.cache.clear_nomination(&pod.uid);
                let volumes = st
                    .cache
                    .node(&node)
                    .map(|n| crate::plugins::volume_binding::reservations(&state, n))
                    .unwrap_or_default();
                for r in &volumes {
                    if let crate::plugins::volume_binding::Reservation::Volume(claim, volume) = r {
                        st.cache.volumes.assume(
                            volume.metadata.name.as_deref().unwrap_or_default(),
                            claim.metadata.uid.as_deref().unwrap_or_default(),
                        );
                    }
                }
                st.cache.assume(&pod, &node);
                self.metrics.attempt("scheduled");
                let (client, tx, profile) = (self.client.clone(), tx.clone(), profile.clone());
                let in_flight = self.in_flight.clone();
                tokio::spawn(async move {
                    // The claims get their volumes first (upstream's PreBind).
                    let mut status = Status::ok();
                    if !volumes.is_empty() {
                        status = crate::plugins::volume_binding::pre_bind(
                            &client, &in_flight, &volumes, &node,
                        )
                        .await;
                    }
                    let _permit = in_flight.acquire_owned().await;
                    if status.is_success() {
                        status = profile.bind.bind(&client, &pod, &node).await;
                    }
                    if status.is_success() {
                        if let Some(r) = &recorder {
                            let msg = format!("Successfully assigned {} to {node}", pod.key());
                            r.record(&pod, "Normal", "Scheduled", &msg).await;
                        }
                        let _ = tx.send(Input::Bound(Box::new(pod), None));
                    } else {
                        let _ =
                            tx.send(Input::Bound(Box::new(pod), Some(status.reasons.join(", "))));
                    }
                });
            }
            Decision::Unschedulable {
                nodes,
                reasons,
                resolvable,
            } => {
                st.queue.failed(&pod.uid, true, Instant::now());
                self.metrics.attempt("unschedulable");
                let mut message = crate::events::fit_error_message(nodes, &reasons);
                let pdbs: Vec<PodDisruptionBudget> = st.pdbs.values().cloned().collect();
                let started = Instant::now();
                let outcome =
                    preemption::preempt(&profile, &state, &st.cache, &pod, &resolvable, &pdbs);
                self.metrics.post_filter(started.elapsed());
                let mut preempt = None;
                match outcome {
                    preemption::Outcome::Preempt { node, victims } => {
                        self.metrics.preemption(victims.len());
                        st.cache.nominate(&pod, &node);
                        preempt = Some((node, victims));
                    }
                    preemption::Outcome::NotHelpful(r) if nodes > 0 => {
                        let more = crate::events::fit_error_message(nodes, &r);
                        message = format!("{message} preemption: {more}");
                    }
                    preemption::Outcome::NotEligible(why) if nodes > 0 => {
                        message = format!("{message} preemption: {why}");
                    }
                    _ => {}
                }
                tracing::debug!(pod = %pod.key(), %message, "unschedulable");
                let client = self.client.clone();
                if let Some(r) = recorder {
                    let in_flight = self.in_flight.clone();
                    tokio::spawn(async move {
                        let _permit = in_flight.acquire_owned().await;
                        r.record(&pod, "Warning", "FailedScheduling", &message)
                            .await;
                        r.mark_unschedulable(&pod, &message).await;
                        if let Some((node, victims)) = preempt {
                            preemption::evict(&client, &r, &pod, &node, &victims).await;
                        }
                    });
                }
            }
        }
    }
}
