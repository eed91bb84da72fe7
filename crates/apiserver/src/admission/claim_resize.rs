//! PersistentVolumeClaimResize: a claim's storage request grows only once
//! the claim is bound, and only if its StorageClass says
//! `allowVolumeExpansion: true`, as upstream's admission plugin decides
//! (validation has already held the rest of the spec fixed).

use kybern_apimachinery::ApiError;
use kybern_apimachinery::quantity::parse_value;
use serde_json::Value;

use crate::object;
use crate::registry::ResourceInfo;
use crate::server::ApiState;

use crate::kind_rules::BETA_CLASS;

fn request(claim: &Value) -> Option<i64> {
    claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(|q| parse_value(q).ok())
}

/// Why growing `old` into `new` is refused, given the claim's class (`None`
/// when it names none or it does not exist); `None` when it is allowed.
fn refusal(new: &Value, old: &Value, class: Option<&Value>) -> Option<&'static str> {
    let (Some(n), Some(o)) = (request(new), request(old)) else {
        return None;
    };
    if n <= o {
        return None;
    }
    if old.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
        return Some("Only bound persistent volume claims can be expanded");
    }
    if class.and_then(|c| c["allowVolumeExpansion"].as_bool()) != Some(true) {
        return Some(
            "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        );
    }
    None
}

/// Refuses an update of a claim that grows it where it cannot grow.
pub async fn admit(
    state: &ApiState,
    info: &ResourceInfo,
    new: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    if !(info.group.is_empty() && info.plural == "persistentvolumeclaims") {
        return Ok(());
    }
    if request(new) <= request(old) {
        return Ok(());
    }
    let name = old
        .pointer(&format!(
            "/metadata/annotations/{}",
            BETA_CLASS.replace('/', "~1")
        ))
        .or_else(|| old.pointer("/spec/storageClassName"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let classes = if name.is_empty() {
        Vec::new()
    } else {
        super::cached_values(state, "storage.k8s.io", "storageclasses", None).await?
    };
    let class = classes.iter().find(|c| object::name(c) == name);
    match refusal(new, old, class) {
        Some(why) => Err(ApiError::forbidden(format!(
            "persistentvolumeclaims \"{}\" is forbidden: {why}",
            object::name(old)
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(size: &str, phase: &str) -> Value {
        json!({"spec": {"resources": {"requests": {"storage": size}}},
            "status": {"phase": phase}})
    }

    #[test]
    fn only_bound_claims_of_expandable_classes_grow() {
        let expandable = json!({"allowVolumeExpansion": true});
        let fixed = json!({"allowVolumeExpansion": false});
        let (small, big) = (claim("1Gi", "Bound"), claim("2Gi", "Bound"));
        assert_eq!(refusal(&big, &small, Some(&expandable)), None);
        assert!(
            refusal(&big, &small, Some(&fixed))
                .is_some_and(|w| w.starts_with("only dynamically provisioned"))
        );
        assert!(refusal(&big, &small, None).is_some());
        assert_eq!(
            refusal(
                &claim("2Gi", "Pending"),
                &claim("1Gi", "Pending"),
                Some(&expandable)
            ),
            Some("Only bound persistent volume claims can be expanded")
        );
        // Shrinking or keeping the size is not this plugin's business.
        assert_eq!(refusal(&small, &big, None), None);
        assert_eq!(refusal(&small, &small, None), None);
    }
}
