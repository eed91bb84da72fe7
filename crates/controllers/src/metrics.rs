//! The controllers' Prometheus metrics: each work queue's, named and
//! labelled as client-go's work queues report them in kube-controller-manager
//! (`workqueue_*{name="<controller>"}`), and those of the controllers that
//! run without one (node lifecycle, pod GC, the HPA), under upstream's names.
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Zone {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForceDeletion {
    namespace: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reconciliation {
    action: String,
    error: String,
}

/// The node lifecycle controller's view of each zone.
struct ZoneMetrics {
    evictions: Family<Zone, Counter>,
    size: Family<Zone, Gauge>,
    unhealthy: Family<Zone, Gauge>,
    health: Family<Zone, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// The other controllers without a work queue.
struct LoopMetrics {
    force_deleted: Family<ForceDeletion, Counter>,
    force_delete_errors: Family<ForceDeletion, Counter>,
    reconciliations: Family<Reconciliation, Counter>,
    reconciliation_duration: Family<Reconciliation, Histogram, fn() -> Histogram>,
}

/// Upstream's buckets for an HPA reconciliation: 1 ms to ~16 s.
fn reconciliation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

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
    zones: ZoneMetrics,
    loops: LoopMetrics,
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
    let zones = ZoneMetrics {
        evictions: Family::default(),
        size: Family::default(),
        unhealthy: Family::default(),
        health: Family::default(),
    };
    registry.register(
        "node_collector_evictions",
        "Number of Node evictions that happened since current instance of NodeController started",
        zones.evictions.clone(),
    );
    registry.register(
        "node_collector_zone_size",
        "Gauge measuring number of registered Nodes per zones",
        zones.size.clone(),
    );
    registry.register(
        "node_collector_unhealthy_nodes_in_zone",
        "Gauge measuring number of not Ready Nodes per zones",
        zones.unhealthy.clone(),
    );
    registry.register(
        "node_collector_zone_health",
        "Gauge measuring percentage of healthy nodes per zone",
        zones.health.clone(),
    );
    let loops = LoopMetrics {
        force_deleted: Family::default(),
        force_delete_errors: Family::default(),
        reconciliations: Family::default(),
        reconciliation_duration: Family::new_with_constructor(reconciliation_histogram),
    };
    registry.register(
        "pod_gc_collector_force_delete_pods",
        "Number of pods that are being forcefully deleted since the Pod GC Controller started",
        loops.force_deleted.clone(),
    );
    registry.register(
        "pod_gc_collector_force_delete_pod_errors",
        "Number of errors encountered when forcefully deleting the pods since the Pod GC Controller started",
        loops.force_delete_errors.clone(),
    );
    registry.register(
        "horizontal_pod_autoscaler_controller_reconciliations",
        "Number of reconciliations of HPA controller, by the action taken and the error met",
        loops.reconciliations.clone(),
    );
    registry.register(
        "horizontal_pod_autoscaler_controller_reconciliation_duration_seconds",
        "The time (seconds) that the HPA controller takes to reconcile once",
        loops.reconciliation_duration.clone(),
    );
    ControllerMetrics {
        zones,
        loops,
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

/// Counts a pod the node lifecycle controller evicted from a node in `zone`.
pub(crate) fn node_evicted(zone: &str) {
    let label = Zone { zone: zone.into() };
    METRICS.zones.evictions.get_or_create(&label).inc();
}

/// Sets each zone's node count and not-Ready count (`(size, unhealthy)`);
/// zones no longer listed are dropped.
pub(crate) fn zone_census<'a>(zones: impl IntoIterator<Item = (&'a str, (usize, usize))>) {
    let z = &METRICS.zones;
    z.size.clear();
    z.unhealthy.clear();
    z.health.clear();
    for (zone, (size, unhealthy)) in zones {
        let label = Zone { zone: zone.into() };
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        z.size.get_or_create(&label).set(count(size));
        z.unhealthy.get_or_create(&label).set(count(unhealthy));
        let healthy = size.saturating_sub(unhealthy) as f64;
        let percent = if size == 0 {
            100.0
        } else {
            100.0 * healthy / size as f64
        };
        z.health.get_or_create(&label).set(percent);
    }
}

/// Counts a pod the pod GC force-deleted (or failed to), with upstream's
/// reason: `orphaned`, `terminated`, `unscheduled_terminating`.
pub(crate) fn pod_force_deleted(namespace: &str, reason: &str, ok: bool) {
    let label = ForceDeletion {
        namespace: namespace.into(),
        reason: reason.into(),
    };
    let loops = &METRICS.loops;
    let family = if ok {
        &loops.force_deleted
    } else {
        &loops.force_delete_errors
    };
    family.get_or_create(&label).inc();
}

/// Counts one HPA reconciliation: `action` is `scale_up`, `scale_down` or
/// `none`; `error` is `spec`, `internal` or `none`, as upstream labels them.
pub(crate) fn hpa_reconciled(action: &str, error: &str, took: Duration) {
    let label = Reconciliation {
        action: action.into(),
        error: error.into(),
    };
    let loops = &METRICS.loops;
    loops.reconciliations.get_or_create(&label).inc();
    let histogram = loops.reconciliation_duration.get_or_create(&label);
    histogram.observe(took.as_secs_f64());
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

    #[test]
    fn loops_without_a_queue_report_under_upstream_names() {
        node_evicted("metrics-test-zone");
        zone_census([("metrics-test-zone", (4, 1))]);
        pod_force_deleted("metrics-test", "orphaned", true);
        pod_force_deleted("metrics-test", "orphaned", false);
        hpa_reconciled("scale_up", "none", Duration::from_millis(3));
        let text = encoded();
        for line in [
            "node_collector_evictions_total{zone=\"metrics-test-zone\"} 1",
            "node_collector_zone_size{zone=\"metrics-test-zone\"} 4",
            "node_collector_unhealthy_nodes_in_zone{zone=\"metrics-test-zone\"} 1",
            "node_collector_zone_health{zone=\"metrics-test-zone\"} 75.0",
            "pod_gc_collector_force_delete_pods_total{namespace=\"metrics-test\",reason=\"orphaned\"} 1",
            "pod_gc_collector_force_delete_pod_errors_total{namespace=\"metrics-test\",reason=\"orphaned\"} 1",
            "horizontal_pod_autoscaler_controller_reconciliations_total{action=\"scale_up\",error=\"none\"} 1",
            "horizontal_pod_autoscaler_controller_reconciliation_duration_seconds_count{action=\"scale_up\",error=\"none\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
