//! The `--audit-*` flags of `kybern server`, as kube-apiserver names them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kybern_apiserver::audit::{
    AuditLog, AuditWebhook, Auditor, Destination, LogOptions, Policy, WebhookOptions,
};

/// Where audit events go and which requests produce them.
#[derive(clap::Args, Debug)]
pub struct AuditFlags {
    /// An audit `Policy` (audit.k8s.io/v1): which requests are recorded,
    /// and at which level. Without it nothing is audited.
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// The audit log: one JSON event per line (`-` for standard output).
    /// Without it nothing is audited.
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// Rotate the audit log when it passes this many megabytes (0: never).
    #[arg(long, default_value_t = 0)]
    audit_log_maxsize: u64,
    /// Keep at most this many rotated audit logs (0: all).
    #[arg(long, default_value_t = 0)]
    audit_log_maxbackup: usize,
    /// Remove rotated audit logs older than this many days (0: never).
    #[arg(long, default_value_t = 0)]
    audit_log_maxage: u64,
    /// A kubeconfig naming the audit webhook (its first cluster's `server`
    /// URL and CA): events are also POSTed there in batches, as
    /// `audit.k8s.io/v1` `EventList`s.
    #[arg(long)]
    audit_webhook_config_file: Option<PathBuf>,
    /// The most events in one webhook request.
    #[arg(long, default_value_t = 400)]
    audit_webhook_batch_max_size: usize,
    /// The longest an event waits for its webhook batch to fill (`30s`,
    /// `500ms`, `1m`).
    #[arg(long, default_value = "30s", value_parser = crate::flag_values::duration)]
    audit_webhook_batch_max_wait: Duration,
    /// Events held while the webhook is slow or down; more are dropped.
    #[arg(long, default_value_t = 10_000)]
    audit_webhook_batch_buffer_size: usize,
    /// The wait after a failed webhook request, doubled on each retry.
    #[arg(long, default_value = "10s", value_parser = crate::flag_values::duration)]
    audit_webhook_initial_backoff: Duration,
}

impl AuditFlags {
    /// The auditor the flags describe: a policy and at least one backend
    /// (the log, the webhook), or nothing.
    pub fn auditor(&self) -> anyhow::Result<Option<Arc<Auditor>>> {
        let backends = self.audit_log_path.is_some() || self.audit_webhook_config_file.is_some();
        let policy = match &self.audit_policy_file {
            Some(policy) if backends => policy,
            None if !backends => return Ok(None),
            // As upstream: a policy without a backend, or a backend without
            // a policy, records nothing.
            _ => {
                tracing::warn!(
                    "auditing needs --audit-policy-file and --audit-log-path or --audit-webhook-config-file; not auditing"
                );
                return Ok(None);
            }
        };
        let text = std::fs::read_to_string(policy)
            .with_context(|| format!("reading {}", policy.display()))?;
        let policy = Policy::parse(&text)?;
        let mut log = match &self.audit_log_path {
            Some(path) => {
                let log = AuditLog::open(LogOptions {
                    path: path.clone(),
                    max_size_mb: self.audit_log_maxsize,
                    max_backups: self.audit_log_maxbackup,
                    max_age_days: self.audit_log_maxage,
                })
                .with_context(|| format!("opening audit log {}", path.display()))?;
                tracing::info!(path = %path.display(), "auditing requests to a log");
                log
            }
            None => AuditLog::default(),
        };
        if let Some(config) = &self.audit_webhook_config_file {
            let destination = Destination::load(config)?;
            let options = WebhookOptions {
                buffer_size: self.audit_webhook_batch_buffer_size,
                batch_max_size: self.audit_webhook_batch_max_size,
                batch_max_wait: self.audit_webhook_batch_max_wait,
                initial_backoff: self.audit_webhook_initial_backoff,
                ..WebhookOptions::default()
            };
            log = log.with_webhook(AuditWebhook::start(destination, options));
            tracing::info!(config = %config.display(), "auditing requests to a webhook");
        }
        Ok(Some(Arc::new(Auditor::new(policy, log))))
    }
}
