//! DefaultTolerationSeconds: a new pod that does not tolerate the
//! `not-ready` and `unreachable` `NoExecute` taints tolerates each for 300
//! s, so a node that goes quiet for a moment does not lose its pods at once.

use serde_json::{Value, json};

/// The taints a pod gets a bounded toleration of.
const TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];
/// Upstream's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
const SECONDS: i64 = 300;

/// Adds the missing tolerations to a new pod.
pub fn admit(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerates = |taint: &str| {
        existing.iter().any(|t| {
            let key = t["key"].as_str().unwrap_or("");
            let effect = t["effect"].as_str().unwrap_or("");
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    let mut added: Vec<Value> = TAINTS
        .iter()
        .filter(|taint| !tolerates(taint))
        .map(|taint| {
            json!({"key": taint, "operator": "Exists", "effect": "NoExecute",
                   "tolerationSeconds": SECONDS})
        })
        .collect();
    if added.is_empty() {
        return;
    }
    let mut all = existing;
    all.append(&mut added);
    spec.insert("tolerations".into(), Value::Array(all));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_tolerate_a_quiet_node_for_five_minutes() {
        let mut pod = json!({"spec": {"containers": []}});
        admit(&mut pod);
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
    }

    #[test]
    fn a_pod_s_own_toleration_is_kept() {
        let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 2});
        let mut pod = json!({"spec": {"tolerations": [own.clone()]}});
        admit(&mut pod);
        let tolerations = pod["spec"]["tolerations"].as_array().expect("list");
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0], own);
        assert_eq!(tolerations[1]["key"], "node.kubernetes.io/not-ready");
        // Tolerating everything needs nothing added.
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        admit(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
    }
}
