//! Admission plugins that upstream runs as separate plugins: LimitRanger,
//! DefaultTolerationSeconds, DefaultStorageClass, RuntimeClass (mutating, on
//! create),
//! ValidatingAdmissionPolicy (validating, on create, update and delete),
//! the mutating and validating admission webhooks, and ResourceQuota
//! (validating, and charging the quota, on create).
//! Priority, ServiceAccount, PodSecurity and NodeRestriction live beside the
//! code they share (`priority`, `service_accounts`, `pod_security`,
//! `authz::node`).

pub mod claim_resize;
pub mod default_storage_class;
pub mod default_tolerations;
pub mod limit_ranger;
pub mod match_rules;
pub mod resource_quota;
pub mod runtime_class;
pub mod validating_policy;
pub mod webhook;

use kybern_apimachinery::ApiError;
use serde_json::Value;

use crate::object;
use crate::registry::ResourceInfo;
use crate::server::ApiState;

/// The group of admission configuration (policies, bindings, webhook
/// configurations).
pub const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";

/// Whether the request is exempt from configurable admission: objects of
/// the admission group itself, as upstream, so a broken policy or webhook
/// can always be removed.
fn exempt(a: &match_rules::AdmissionAttempt<'_>) -> bool {
    a.group == ADMISSION_GROUP
}

/// The cached objects of an admission-group resource, by name (the order
/// upstream applies bindings and webhook configurations in).
async fn configurations(state: &ApiState, plural: &str) -> Result<Vec<Value>, ApiError> {
    let mut all = cached_values(state, ADMISSION_GROUP, plural, None).await?;
    all.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    Ok(all)
}

/// Upstream's `admission.NewForbidden`: `pods "web" is forbidden: <why>`.
fn forbidden(info: &ResourceInfo, obj: &Value, why: &str) -> ApiError {
    let name = match object::name(obj) {
        "" => object::meta_str(obj, "generateName"),
        n => n,
    };
    let mut err = ApiError::forbidden(format!("{} {name:?} is forbidden: {why}", info.plural));
    err.group = Some(info.group.clone());
    err.kind = Some(info.plural.clone());
    err.name = Some(name.to_owned());
    err
}

/// The cached objects of one `v1` resource, decoded, in `namespace` (all
/// when `None`).
async fn cached_values(
    state: &ApiState,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    Ok(state
        .cached_objects(group, plural, namespace)
        .await?
        .iter()
        .filter_map(|c| serde_json::from_slice(&c.json()).ok())
        .collect())
}
