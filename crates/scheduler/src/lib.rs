//! Kybern's scheduler: upstream's scheduling framework (pre-enqueue,
//! pre-filter, filter, post-filter preemption, pre-score, score, normalize,
//! bind), its default plugins and profiles, the active/backoff/unschedulable
//! queue, and an assumed-pod cache.
//!
//! It is an ordinary API client: it watches pods, nodes, disruption budgets
//! and storage objects, and binds through
//! the `pods/binding` subresource. It never touches the store.

pub mod algorithm;
pub mod cache;
pub mod events;
pub mod framework;
pub mod leader;
pub mod metrics;
pub mod plugins;
pub mod pod_feed;
pub mod preemption;
pub mod profile;
pub mod queue;
pub mod scheduler;
pub mod topology;
pub mod volume_match;
pub mod volumes;

pub use metrics::SchedulerMetrics;
pub use profile::{DEFAULT_SCHEDULER_NAME, Profile};
pub use scheduler::Scheduler;

/// Resource vectors, shared with the quota code in `kybern-apimachinery`.
pub use kybern_apimachinery::resources;
