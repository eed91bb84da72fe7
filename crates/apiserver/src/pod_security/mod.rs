//! PodSecurity admission: the Pod Security Standards a namespace asks for
//! through its `pod-security.kubernetes.io/{enforce,warn,audit}` labels.
//! A pod that violates the `enforce` level is refused (403, upstream's
//! message); one that violates `warn` gets a `Warning` header. Workloads
//! with pod templates are only warned about, as upstream does, so that
//! `kubectl apply` of a Deployment says early what its pods will meet.

pub mod checks;

use kybern_apimachinery::ApiError;
use serde_json::Value;

use crate::object;
use crate::registry::ResourceInfo;
use crate::server::ApiState;
use checks::{Level, Violation};

const PREFIX: &str = "pod-security.kubernetes.io/";

/// One mode's level and the version it names (`latest` or `v1.N`).
#[derive(Debug, PartialEq, Eq)]
struct ModePolicy {
    level: Level,
    version: String,
}

impl ModePolicy {
    /// The mode's policy from the namespace's labels. No label is
    /// `privileged`; a value that names no level is `restricted`, the safe
    /// reading of a typo, as upstream does.
    fn from_labels(labels: &Value, mode: &str) -> Self {
        let level = match labels[format!("{PREFIX}{mode}")].as_str() {
            None => Level::Privileged,
            Some(v) => Level::parse(v).unwrap_or(Level::Restricted),
        };
        let version = labels[format!("{PREFIX}{mode}-version")]
            .as_str()
            .filter(|v| *v == "latest" || valid_version(v))
            .unwrap_or("latest")
            .to_owned();
        ModePolicy { level, version }
    }

    fn label(&self) -> String {
        format!("{}:{}", self.level.as_str(), self.version)
    }
}

/// `v1.N`.
fn valid_version(v: &str) -> bool {
    v.strip_prefix("v1.")
        .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
}

/// `reason (detail), reason, ...` as upstream joins them.
fn summary(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.to_owned()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod metadata and spec an object carries: a pod's own, or a
/// workload's template (`None` for other kinds).
fn pod_parts<'a>(info: &ResourceInfo, obj: &'a Value) -> Option<(&'a Value, &'a Value)> {
    let template = match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => return Some((&obj["metadata"], &obj["spec"])),
        ("", "podtemplates") => &obj["template"],
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => &obj["spec"]["template"],
        ("batch", "cronjobs") => &obj["spec"]["jobTemplate"]["spec"]["template"],
        _ => return None,
    };
    Some((&template["metadata"], &template["spec"]))
}

/// The labels of namespace `name`, from the watch cache when it has it.
async fn namespace_labels(state: &ApiState, name: &str) -> Result<Value, ApiError> {
    let ns = state.cached_or_stored("", "namespaces", "", name).await?;
    Ok(ns["metadata"]["labels"].clone())
}

/// Admits the creation of `obj`: refuses a pod that violates its
/// namespace's `enforce` level; warns about a pod or template that
/// violates the `warn` level, and records in the audit event one that
/// violates the `audit` level.
pub async fn admit(
    state: &ApiState,
    info: &ResourceInfo,
    obj: &Value,
    warnings: &mut Vec<String>,
    audit: &crate::audit::AuditContext,
) -> Result<(), ApiError> {
    let Some((meta, spec)) = pod_parts(info, obj) else {
        return Ok(());
    };
    let namespace = object::namespace(obj);
    if namespace.is_empty() {
        return Ok(());
    }
    let labels = namespace_labels(state, namespace).await?;
    let enforce = ModePolicy::from_labels(&labels, "enforce");
    let warn = ModePolicy::from_labels(&labels, "warn");
    let audited = ModePolicy::from_labels(&labels, "audit");
    let is_pod = info.group.is_empty() && info.plural == "pods";
    if is_pod {
        audit.annotate("pod-security.kubernetes.io/enforce-policy", enforce.label());
    }
    let violations = checks::violations(audited.level, meta, spec);
    if !violations.is_empty() {
        audit.annotate(
            "pod-security.kubernetes.io/audit-violations",
            format!(
                "would violate PodSecurity {:?}: {}",
                audited.label(),
                summary(&violations)
            ),
        );
    }
    if is_pod {
        let violations = checks::violations(enforce.level, meta, spec);
        if !violations.is_empty() {
            let name = match object::name(obj) {
                "" => object::meta_str(obj, "generateName"),
                n => n,
            };
            return Err(ApiError::forbidden(format!(
                "pods {name:?} is forbidden: violates PodSecurity {:?}: {}",
                enforce.label(),
                summary(&violations)
            )));
        }
    }
    // Workloads are warned about against the stricter of the two levels,
    // so that a template that would be refused says so at apply time.
    let warn_policy = if !is_pod && enforce.level > warn.level {
        &enforce
    } else {
        &warn
    };
    let violations = checks::violations(warn_policy.level, meta, spec);
    if !violations.is_empty() {
        warnings.push(format!(
            "would violate PodSecurity {:?}: {}",
            warn_policy.label(),
            summary(&violations)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
