//! The scheduler's Prometheus metrics, named as upstream's: attempts by
//! result, the scheduling algorithm's duration, and pending pods by queue.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExtensionPointLabels {
    extension_point: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// Handles to the scheduler's metrics; clones share them.
#[derive(Clone)]
pub struct SchedulerMetrics {
    registry: Arc<Registry>,
    attempts: Family<ResultLabels, Counter>,
    algorithm: Histogram,
    extension_points: Family<ExtensionPointLabels, Histogram>,
    pending: Family<QueueLabels, Gauge>,
    bound: Counter,
    preemption_attempts: Counter,
    preemption_victims: Counter,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let attempts = Family::<ResultLabels, Counter>::default();
        let algorithm = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let extension_points = Family::<ExtensionPointLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_05, 2.0, 18))) as fn() -> Histogram,
        );
        let pending = Family::<QueueLabels, Gauge>::default();
        let bound = Counter::default();
        registry.register(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable, error)",
            attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_algorithm_duration_seconds",
            "Time to filter and score the nodes for one pod",
            algorithm.clone(),
        );
        registry.register(
            "scheduler_framework_extension_point_duration_seconds",
            "Time spent in an extension point outside the algorithm's figure (PostFilter: preemption)",
            extension_points.clone(),
        );
        registry.register(
            "scheduler_pending_pods",
            "Pods waiting, by queue (active, backoff, unschedulable, gated)",
            pending.clone(),
        );
        registry.register(
            "scheduler_pods_bound",
            "Pods bound to a node",
            bound.clone(),
        );
        let preemption_attempts = Counter::default();
        let preemption_victims = Counter::default();
        registry.register(
            "scheduler_preemption_attempts",
            "Preemptions that chose victims",
            preemption_attempts.clone(),
        );
        registry.register(
            "scheduler_preemption_victims",
            "Pods evicted by preemption",
            preemption_victims.clone(),
        );
        SchedulerMetrics {
            registry: Arc::new(registry),
            attempts,
            algorithm,
            extension_points,
            pending,
            bound,
            preemption_attempts,
            preemption_victims,
        }
    }
}

impl SchedulerMetrics {
    /// The registry, for a `/metrics` endpoint to encode.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub(crate) fn attempt(&self, result: &str) {
        self.attempts
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub(crate) fn algorithm(&self, took: Duration) {
        self.algorithm.observe(took.as_secs_f64());
    }

    pub(crate) fn post_filter(&self, took: Duration) {
        self.extension_points
            .get_or_create(&ExtensionPointLabels {
                extension_point: "PostFilter",
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn preemption(&self, victims: usize) {
        self.preemption_attempts.inc();
        self.preemption_victims.inc_by(victims as u64);
    }

    pub(crate) fn bound(&self) {
        self.bound.inc();
    }

    pub(crate) fn set_queue(&self, lengths: [usize; 4]) {
        for (name, n) in ["active", "backoff", "unschedulable", "gated"]
            .iter()
            .zip(lengths)
        {
            self.pending
                .get_or_create(&QueueLabels {
                    queue: (*name).to_owned(),
                })
                .set(n as i64);
        }
    }
}
