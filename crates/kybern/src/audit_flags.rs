//! The `--audit-*` flags of `kybern server`, as kube-apiserver names them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kybern_apiserver::audit::{AuditLog, Auditor, LogOptions, Policy};

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
}

impl AuditFlags {
    /// The auditor the flags describe, if both a policy and a log are given.
    pub fn auditor(&self) -> anyhow::Result<Option<Arc<Auditor>>> {
        let (policy, path) = match (&self.audit_policy_file, &self.audit_log_path) {
            (Some(policy), Some(path)) => (policy, path),
            (None, None) => return Ok(None),
            // As upstream: one without the other records nothing.
            _ => {
                tracing::warn!(
                    "auditing needs both --audit-policy-file and --audit-log-path; not auditing"
                );
                return Ok(None);
            }
        };
        let text = std::fs::read_to_string(policy)
            .with_context(|| format!("reading {}", policy.display()))?;
        let policy = Policy::parse(&text)?;
        let log = AuditLog::open(LogOptions {
            path: path.clone(),
            max_size_mb: self.audit_log_maxsize,
            max_backups: self.audit_log_maxbackup,
            max_age_days: self.audit_log_maxage,
        })
        .with_context(|| format!("opening audit log {}", path.display()))?;
        tracing::info!(path = %path.display(), "auditing requests");
        Ok(Some(Arc::new(Auditor::new(policy, log))))
    }
}
