//! The Kybern API server: the kernel of the system and the only door to cluster
//! state. It serves the Kubernetes v1.35 REST API (discovery, CRUD, list, watch,
//! patch) over the [`kybern_store::Store`], with upstream's defaulting, validation,
//! optimistic concurrency and `Status` errors.
//!
//! It must not contain controller logic: controllers, the scheduler and node
//! agents are API clients and live in their own crates.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod bootstrap_tokens;
pub mod cache;
pub mod cel_env;
pub mod certificates;
pub mod cluster_rules;
pub mod container_rules;
pub mod crd;
pub mod csi_rules;
pub mod defaults;
pub mod discovery;
pub mod encryption;
pub mod endpoint_rules;
pub mod ephemeral_rules;
pub mod event_rules;
pub mod field_rules;
pub(crate) mod handlers;
pub mod hpa_versions;
pub mod job_success_rules;
pub mod kind_rules;
pub(crate) mod kinds;
pub mod kubernetes_endpoints;
pub mod managed;
pub mod metrics;
pub mod network_rules;
pub mod node_proxy;
pub mod object;
pub mod openapi;
pub mod os_rules;
pub mod packed_json;
pub mod packed_strings;
pub mod partial_metadata;
pub mod pki;
pub mod pod_resource_rules;
pub mod pod_rules;
pub mod pod_security;
pub mod priority;
pub mod proto;
pub mod proxy_location;
pub mod quota_rules;
pub mod rbac_rules;
pub mod registry;
pub mod request;
pub mod resource_rules;
pub mod response;
pub mod scheduling_rules;
pub mod security_rules;
pub mod server;
pub mod service_account_token;
pub mod service_accounts;
pub mod service_ips;
pub mod smp;
pub mod spec_rules;
pub mod storage;
pub mod strategy;
pub mod table;
pub mod tls;
pub mod typed;
pub mod volume_rules;
pub mod workload_rules;
pub mod write_coalescer;
pub mod written;

pub use server::{ApiState, router, serve};
