//! The `pod-template-hash` that names a Deployment's ReplicaSets, and the
//! helpers that read a ReplicaSet's rollout annotations.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label (and selector key) that tells apart the ReplicaSets of one Deployment.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's `replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Characters upstream uses for names derived from numbers (no vowels, no
/// look-alikes), so a hash never spells a word.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The hash of a pod template and the Deployment's collision count, as a
/// short DNS-safe string.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    // serde_json writes maps in key order (BTreeMap), so equal templates hash equal.
    feed(
        serde_json::to_string(template)
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// Whether two templates are equal apart from the `pod-template-hash` label.
///
/// Zero values count as absent, as they do when Go compares the structs
/// (`false`, `0`, `""`, empty lists and maps): a template sent as protobuf
/// carries every zero-valued field, the same template patched back by
/// `kubectl rollout undo` in JSON carries none.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(labels) = v
            .pointer_mut("/metadata/labels")
            .and_then(|l| l.as_object_mut())
        {
            labels.remove(POD_TEMPLATE_HASH);
        }
        without_zero_values(&mut v);
        v
    };
    strip(a) == strip(b)
}

/// Removes zero-valued members, deepest first; returns whether `v` is itself zero.
fn without_zero_values(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Bool(b) => !*b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => {
            for item in a.iter_mut() {
                without_zero_values(item);
            }
            a.is_empty()
        }
        Value::Object(m) => {
            m.retain(|_, member| !without_zero_values(member));
            m.is_empty()
        }
    }
}

/// A ReplicaSet's revision annotation (0 when absent).
pub fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation_int(rs, REVISION).unwrap_or(0)
}

/// An integer annotation of a ReplicaSet.
pub fn annotation_int(rs: &ReplicaSet, key: &str) -> Option<i64> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// `spec.replicas` of a ReplicaSet.
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .expect("template")
    }

    #[test]
    fn the_hash_is_stable_safe_and_changes_with_the_template_and_collisions() {
        let a = template("nginx:1");
        assert_eq!(template_hash(&a, None), template_hash(&a.clone(), None));
        assert_ne!(
            template_hash(&a, None),
            template_hash(&template("nginx:2"), None)
        );
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(
            template_hash(&a, None)
                .bytes()
                .all(|b| ALPHABET.contains(&b))
        );
    }

    #[test]
    fn the_hash_label_does_not_make_templates_differ() {
        let a = template("nginx:1");
        let mut b = a.clone();
        b.metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert(POD_TEMPLATE_HASH.into(), "x".into()));
        assert!(equal_ignoring_hash(&a, &b));
        assert!(!equal_ignoring_hash(&a, &template("nginx:2")));
        let mut zeros: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}, "generation": 0},
            "spec": {"hostIPC": false, "containers": [{"name": "c", "image": "nginx:1", "stdin": false, "resources": {}}]}}))
        .expect("template");
        assert!(equal_ignoring_hash(&a, &zeros));
        if let Some(spec) = zeros.spec.as_mut() {
            spec.host_ipc = Some(true);
        }
        assert!(!equal_ignoring_hash(&a, &zeros));
    }
}
