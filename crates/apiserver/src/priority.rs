//! Pod priority admission, as upstream's `Priority` plugin: a new pod's
//! `priorityClassName` (or the cluster's `globalDefault` class) sets its
//! `spec.priority` and `spec.preemptionPolicy`; an unknown class is refused.

use kybern_apimachinery::ApiError;
use serde_json::{Value, json};

use crate::object::Object;
use crate::server::ApiState;

/// Upstream's built-in classes, created at bootstrap.
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The PriorityClasses, from the watch cache when it is loaded.
async fn classes(state: &ApiState) -> Result<Vec<Object>, ApiError> {
    let Some(info) = state
        .registry
        .get("scheduling.k8s.io", "v1", "priorityclasses")
    else {
        return Ok(Vec::new());
    };
    if let Some((cached, _)) = state
        .caches
        .get(&state.objects, &info)
        .and_then(|c| c.snapshot(None))
    {
        return Ok(cached
            .iter()
            .filter_map(|c| serde_json::from_slice(&c.json()).ok())
            .collect());
    }
    // Classes are few: one page holds them.
    Ok(state
        .objects
        .list_page(&info, None, None, 0, 0)
        .await?
        .items)
}

/// Sets a new pod's priority from its class.
pub async fn admit(state: &ApiState, pod: &mut Object) -> Result<(), ApiError> {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let class_name = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let all = classes(state).await?;
    let class = if class_name.is_empty() {
        all.into_iter()
            .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
    } else {
        let found = all
            .into_iter()
            .find(|c| crate::object::name(c) == class_name);
        if found.is_none() {
            return Err(ApiError::forbidden(format!(
                "pods \"{}\" is forbidden: no PriorityClass with name {class_name} was found",
                crate::object::name(pod)
            )));
        }
        found
    };
    let (name, value, policy) = match &class {
        Some(c) => (
            crate::object::name(c).to_owned(),
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_owned(),
        ),
        None => (String::new(), 0, "PreemptLowerPriority".to_owned()),
    };
    if let Some(asked) = spec.get("priority").and_then(Value::as_i64)
        && asked != value
    {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: the integer value of priority ({asked}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name",
            crate::object::name(pod)
        )));
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if !name.is_empty() && class_name.is_empty() {
        spec.insert("priorityClassName".into(), json!(name));
    }
    spec.insert("priority".into(), json!(value));
    spec.entry("preemptionPolicy").or_insert(json!(policy));
    Ok(())
}
