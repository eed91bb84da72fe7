//! The controllers' Prometheus metrics: each work queue's, named and
//! labelled as client-go's work queues report them in kube-controller-manager
//! (`workqueue_*{name="<controller>"}`).
//!
//! One registry serves the process, as client-go's global metrics provider
//! does: queues are made inside each controller, and a queue learns its name
//! when its workers start.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueName {
    name: String,
}

type Histograms = Family<QueueName, Histogram, fn() -> Histogram>;

/// client-go's buckets for both queue histograms: 10 ns to 1,000 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(10e-9, 10.0, 12))
}

struct ControllerMetrics {
    registry: Arc<Registry>,
    adds: Family<QueueName, Counter>,
    depth: Family<QueueName, Gauge>,
    retries: Family<QueueName, Counter>,
    queue_duration: Histograms,
    work_duration: Histograms,
}

static METRICS: LazyLock<ControllerMetrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let adds = Family::<QueueName, Counter>::default();
    let depth = Family::<QueueName, Gauge>::default();
    let retries = Family::<QueueName, Counter>::default();
    let queue_duration: Histograms = Family::new_with_constructor(duration_histogram);
    let work_duration: Histograms = Family::new_with_constructor(duration_histogram);
    registry.register(
        "workqueue_adds",
        "Total number of adds handled by workqueue",
        adds.clone(),
    );
    registry.register(
        "workqueue_depth",
        "Current depth of workqueue",
        depth.clone(),
    );
    registry.register(
        "workqueue_retries",
        "Total number of retries handled by workqueue",
        retries.clone(),
    );
    registry.register(
        "workqueue_queue_duration_seconds",
        "How long in seconds an item stays in workqueue before being requested",
        queue_duration.clone(),
    );
    registry.register(
        "workqueue_work_duration_seconds",
        "How long in seconds processing an item from workqueue takes",
        work_duration.clone(),
    );
    ControllerMetrics {
        registry: Arc::new(registry),
        adds,
        depth,
        retries,
        queue_duration,
        work_duration,
    }
});

/// The controllers' registry, for a `/metrics` endpoint to encode.
pub fn registry() -> Arc<Registry> {
    METRICS.registry.clone()
}

/// One work queue's metrics.
#[derive(Clone, Debug)]
pub(crate) struct QueueMetrics {
    adds: Counter,
    depth: Gauge,
    retries: Counter,
    queue_duration: Histogram,
    work_duration: Histogram,
}

impl QueueMetrics {
    /// The metrics of the queue called `name`.
    pub(crate) fn named(name: &str) -> Self {
        let label = QueueName { name: name.into() };
        let m = &*METRICS;
        QueueMetrics {
            adds: m.adds.get_or_create(&label).clone(),
            depth: m.depth.get_or_create(&label).clone(),
            retries: m.retries.get_or_create(&label).clone(),
            queue_duration: m.queue_duration.get_or_create(&label).clone(),
            work_duration: m.work_duration.get_or_create(&label).clone(),
        }
    }

    pub(crate) fn added(&self, depth: usize) {
        self.adds.inc();
        self.set_depth(depth);
    }

    pub(crate) fn set_depth(&self, depth: usize) {
        self.depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub(crate) fn taken(&self, waited: Duration, depth: usize) {
        self.queue_duration.observe(waited.as_secs_f64());
        self.set_depth(depth);
    }

    pub(crate) fn retried(&self) {
        self.retries.inc();
    }

    pub(crate) fn worked(&self, took: Duration) {
        self.work_duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded() -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry()).expect("encode");
        out
    }

    #[test]
    fn a_queue_reports_under_its_name() {
        let m = QueueMetrics::named("metrics-test");
        m.added(3);
        m.retried();
        m.taken(Duration::from_millis(2), 2);
        m.worked(Duration::from_millis(5));
        let text = encoded();
        for line in [
            "workqueue_adds_total{name=\"metrics-test\"} 1",
            "workqueue_depth{name=\"metrics-test\"} 2",
            "workqueue_retries_total{name=\"metrics-test\"} 1",
            "workqueue_queue_duration_seconds_count{name=\"metrics-test\"} 1",
            "workqueue_work_duration_seconds_count{name=\"metrics-test\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
