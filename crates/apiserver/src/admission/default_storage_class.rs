//! DefaultStorageClass: a new PersistentVolumeClaim that names no
//! `storageClassName` gets the cluster's default StorageClass (the one
//! annotated `storageclass.kubernetes.io/is-default-class: "true"`, the
//! newest if several are), as upstream's plugin does. An explicit `""`
//! asks for no class and is left alone.

use kybern_apimachinery::ApiError;
use serde_json::Value;

use crate::object;
use crate::server::ApiState;

/// The annotations that mark a default class (the beta one is still read).
const DEFAULT_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// The default class among `classes`: the newest, then the first by name.
fn default_class(classes: &[Value]) -> Option<&str> {
    classes
        .iter()
        .filter(|c| {
            let annotations = &c["metadata"]["annotations"];
            DEFAULT_ANNOTATIONS
                .iter()
                .any(|a| annotations[*a].as_str() == Some("true"))
        })
        .max_by(|a, b| {
            let created = |c: &Value| object::meta_str(c, "creationTimestamp").to_owned();
            created(a)
                .cmp(&created(b))
                .then_with(|| object::name(b).cmp(object::name(a)))
        })
        .map(object::name)
}

/// Sets a new claim's class to the default, if it names none.
pub async fn admit(state: &ApiState, claim: &mut Value) -> Result<(), ApiError> {
    if claim.pointer("/spec/storageClassName").is_some() {
        return Ok(());
    }
    let classes = super::cached_values(state, "storage.k8s.io", "storageclasses", None).await?;
    if let Some(name) = default_class(&classes)
        && let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("storageClassName".into(), Value::String(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, created: &str, default: bool) -> Value {
        let annotations = if default {
            json!({"storageclass.kubernetes.io/is-default-class": "true"})
        } else {
            json!({})
        };
        json!({"metadata": {"name": name, "creationTimestamp": created, "annotations": annotations}})
    }

    #[test]
    fn the_newest_default_class_wins() {
        let classes = [
            class("old", "2026-01-01T00:00:00Z", true),
            class("plain", "2026-06-01T00:00:00Z", false),
            class("new", "2026-03-01T00:00:00Z", true),
        ];
        assert_eq!(default_class(&classes), Some("new"));
        assert_eq!(default_class(&classes[1..2]), None);
    }
}
