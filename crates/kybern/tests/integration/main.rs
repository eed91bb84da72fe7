//! Every integration test of the `kybern` binary, in one test binary: each
//! module starts the real `kybern` (server, agent, sim) and drives it with
//! kube-rs and the real `kubectl`. One binary links the client stack once
//! instead of once per file, which is most of the suite's build time.

mod common;

mod api_admission;
mod api_admission_policy;
mod api_admission_webhook;
mod api_audit;
mod api_auth;
mod api_certificates;
mod api_crd;
mod api_crd_apply;
mod api_crd_cleanup;
mod api_crd_rules;
mod api_crd_schema;
mod api_encryption;
mod api_helm;
mod api_http2;
mod api_kube;
mod api_kube_apply;
mod api_kubectl;
mod api_kubectl_ops;
mod api_kubectl_tables;
mod api_kubectl_validation;
mod api_metadata;
mod api_node_authorizer;
mod api_pod_security;
mod api_rbac;
mod api_rbac_reconcile;
mod api_service_accounts;
mod api_subresources;
mod api_watch_history;
mod controllers;
mod controllers_batch;
mod controllers_identity;
mod controllers_nodes;
mod controllers_policy;
mod controllers_rollout;
mod controllers_sets;
mod controllers_volumes;
mod node_agent;
mod node_autoscaling;
mod node_debug;
mod node_images;
mod node_join;
mod node_local_path;
mod node_network;
mod node_pids;
mod node_probes;
mod node_proxy;
mod node_runtime_class;
mod node_streams;
mod node_terminals;
mod node_volumes;
mod scheduler;
mod scheduler_leader;
mod scheduler_preemption;
mod scheduler_volumes;
mod sim;
mod store_crash;
