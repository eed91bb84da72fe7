//! The scheduling queue: active pods by priority, pods backing off after a
//! failed attempt, pods found unschedulable (waiting for a cluster change),
//! and pods held by pre-enqueue plugins (scheduling gates).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::cache::PodInfo;

/// First backoff after a failed attempt (upstream's `podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff (upstream's `podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod stays unschedulable without a cluster event before it is retried.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// Where a pod waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Ready to be scheduled.
    Active,
    /// Failed recently; ready at its backoff expiry.
    Backoff,
    /// Did not fit; waits for a cluster change.
    Unschedulable,
    /// Held by a pre-enqueue plugin.
    Gated,
    /// Taken for a scheduling attempt.
    InFlight,
}

/// A pod waiting to be scheduled.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    /// The pod as last observed.
    pub info: PodInfo,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it first entered the queue (ties in priority go to the oldest).
    pub since: Instant,
    /// When its current backoff ends.
    backoff_until: Instant,
    /// When it was last marked unschedulable.
    unschedulable_since: Instant,
    place: Place,
    /// Bumped on every move, so stale heap entries are skipped.
    generation: u64,
}

/// A heap entry: the pod's uid and the generation it was pushed at.
#[derive(PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    since: Instant,
    uid: String,
    generation: u64,
}

impl Ord for ActiveEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        // PrioritySort: higher priority first, then the oldest.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.since.cmp(&self.since))
            .then_with(|| other.uid.cmp(&self.uid))
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The queue.
#[derive(Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, QueuedPod>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, String, u64)>>,
    next_generation: u64,
    /// When unschedulable pods were last checked for having waited too long.
    last_flush: Option<Instant>,
}

/// The backoff after `attempts` failures: 1 s, doubling, at most 10 s.
pub fn backoff_for(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

impl SchedulingQueue {
    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn push_active(&mut self, uid: &str) {
        let generation = self.bump();
        if let Some(p) = self.pods.get_mut(uid) {
            p.place = Place::Active;
            p.generation = generation;
            self.active.push(ActiveEntry {
                priority: p.info.priority,
                since: p.since,
                uid: uid.to_owned(),
                generation,
            });
        }
    }

    fn push_backoff(&mut self, uid: &str) {
        let generation = self.bump();
        if let Some(p) = self.pods.get_mut(uid) {
            p.place = Place::Backoff;
            p.generation = generation;
            self.backoff
                .push(Reverse((p.backoff_until, uid.to_owned(), generation)));
        }
    }

    /// Adds a new pending pod, or refreshes one already queued. `gated` says a
    /// pre-enqueue plugin holds it. A changed pod that was unschedulable gets
    /// another try (after its backoff).
    pub fn upsert(&mut self, info: PodInfo, gated: bool, now: Instant) {
        let uid = info.uid.clone();
        match self.pods.get_mut(&uid) {
            Some(p) => {
                // Only a change to what scheduling reads earns another try;
                // the scheduler's own status update does not.
                let (old, new) = (&p.info.pod, &info.pod);
                let changed = old.spec != new.spec
                    || old.metadata.labels != new.metadata.labels
                    || old.metadata.annotations != new.metadata.annotations;
                p.info = info;
                let place = p.place;
                match (place, gated) {
                    (Place::InFlight, _) => {}
                    (_, true) => {
                        p.place = Place::Gated;
                        p.generation += 1;
                    }
                    (Place::Gated, false) => self.requeue(&uid, now),
                    (Place::Unschedulable, false) if changed => self.requeue(&uid, now),
                    (Place::Unschedulable, false) => {}
                    (Place::Active | Place::Backoff, false) => {}
                }
            }
            None => {
                self.pods.insert(
                    uid.clone(),
                    QueuedPod {
                        info,
                        attempts: 0,
                        since: now,
                        backoff_until: now,
                        unschedulable_since: now,
                        place: Place::Gated,
                        generation: 0,
                    },
                );
                if !gated {
                    self.push_active(&uid);
                }
            }
        }
    }

    /// Removes a pod (deleted, or bound by someone else).
    pub fn remove(&mut self, uid: &str) {
        self.forget(uid);
    }

    /// Drops a pod, and gives back the table's room once a burst of pods
    /// has passed through: a hash map never shrinks on its own.
    fn forget(&mut self, uid: &str) {
        self.pods.remove(uid);
        if self.pods.capacity() > 4 * self.pods.len() + 1024 {
            self.pods.shrink_to(2 * self.pods.len());
        }
    }

    /// Whether a pod is queued (in any place).
    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Moves a pod to active, or to backoff if its backoff has not ended.
    fn requeue(&mut self, uid: &str, now: Instant) {
        let Some(p) = self.pods.get(uid) else { return };
        if p.backoff_until > now {
            self.push_backoff(uid);
        } else {
            self.push_active(uid);
        }
    }

    /// Takes the next pod to schedule, moving pods whose backoff ended first.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        while let Some(Reverse((at, _, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, uid, generation))) = self.backoff.pop() else {
                break;
            };
            if self
                .pods
                .get(&uid)
                .is_some_and(|p| p.generation == generation)
            {
                self.push_active(&uid);
            }
        }
        // Pods unschedulable for too long get another try without an event
        // (checked every few seconds: the scan is over every queued pod).
        if self
            .last_flush
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(5))
        {
            return self.pop_active();
        }
        self.last_flush = Some(now);
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| {
                p.place == Place::Unschedulable && now - p.unschedulable_since > MAX_UNSCHEDULABLE
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uid in stale {
            self.requeue(&uid, now);
        }
        self.pop_active()
    }

    fn pop_active(&mut self) -> Option<QueuedPod> {
        while let Some(e) = self.active.pop() {
            if let Some(p) = self.pods.get_mut(&e.uid)
                && p.generation == e.generation
                && p.place == Place::Active
            {
                p.place = Place::InFlight;
                return Some(p.clone());
            }
        }
        None
    }

    /// Records a failed attempt. `unschedulable` pods wait for a cluster
    /// change; others (errors) retry after their backoff.
    pub fn failed(&mut self, uid: &str, unschedulable: bool, now: Instant) {
        let Some(p) = self.pods.get_mut(uid) else {
            return;
        };
        p.attempts += 1;
        p.backoff_until = now + backoff_for(p.attempts);
        if unschedulable {
            p.place = Place::Unschedulable;
            p.unschedulable_since = now;
            p.generation += 1;
        } else {
            self.push_backoff(uid);
        }
    }

    /// A scheduled pod leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.forget(uid);
    }

    /// A cluster change that may make unschedulable pods fit: they move to
    /// active (or backoff). Returns how many moved.
    pub fn cluster_changed(&mut self, now: Instant) -> usize {
        let waiting: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.place == Place::Unschedulable)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in &waiting {
            self.requeue(uid, now);
        }
        waiting.len()
    }

    /// When the earliest backoff ends, if any pod is backing off.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    /// How many pods wait in each place: active, backoff, unschedulable, gated.
    pub fn lengths(&self) -> [usize; 4] {
        let mut out = [0; 4];
        for p in self.pods.values() {
            match p.place {
                Place::Active => out[0] += 1,
                Place::Backoff => out[1] += 1,
                Place::Unschedulable => out[2] += 1,
                Place::Gated => out[3] += 1,
                Place::InFlight => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pod(uid: &str, priority: i32) -> PodInfo {
        PodInfo::new(Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": uid, "namespace": "d", "uid": uid},
                "spec": {"priority": priority, "containers": []}
            }))
            .expect("pod"),
        ))
    }

    #[test]
    fn priority_then_age_and_backoff() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        q.upsert(pod("low", 0), false, t0);
        q.upsert(pod("high", 10), false, t0 + Duration::from_millis(1));
        q.upsert(pod("low2", 0), false, t0 + Duration::from_millis(2));
        q.upsert(pod("gated", 100), true, t0);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(t0))
            .map(|p| p.info.uid.clone())
            .collect();
        assert_eq!(order, vec!["high", "low", "low2"]);
        // An error backs off 1 s, then 2 s.
        q.failed("low", false, t0);
        assert!(q.pop(t0).is_none());
        let p = q.pop(t0 + Duration::from_secs(1)).expect("after backoff");
        q.failed(&p.info.uid, false, t0 + Duration::from_secs(1));
        assert!(q.pop(t0 + Duration::from_millis(2_500)).is_none());
        assert!(q.pop(t0 + Duration::from_secs(3)).is_some());
        // Unschedulable waits for a cluster event, then honours its backoff.
        q.failed("high", true, t0);
        assert!(q.pop(t0 + Duration::from_secs(5)).is_none());
        assert_eq!(q.cluster_changed(t0 + Duration::from_secs(5)), 1);
        assert_eq!(
            q.pop(t0 + Duration::from_secs(5))
                .map(|p| p.info.uid.clone()),
            Some("high".into())
        );
        // The gate lifted.
        q.upsert(pod("gated", 100), false, t0);
        assert_eq!(q.pop(t0).map(|p| p.info.uid.clone()), Some("gated".into()));
        assert_eq!(backoff_for(10), MAX_BACKOFF);
    }
}
