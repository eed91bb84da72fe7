//! RuntimeClass admission, as upstream's plugin: a new pod naming a
//! `runtimeClassName` must name an existing RuntimeClass; it gets the
//! class's pod overhead and its scheduling constraints (nodeSelector merged
//! without conflicts, tolerations added). An overhead the pod brings itself
//! must match its class's.

use kybern_apimachinery::ApiError;
use kybern_apimachinery::quantity::parse_milli;
use serde_json::{Map, Value};

use crate::registry::ResourceInfo;
use crate::server::ApiState;

/// Overheads are equal when they name the same resources in equal amounts
/// (`1000m` equals `1`), like upstream's semantic comparison.
fn same_overhead(a: &Value, b: &Value) -> bool {
    let amounts = |v: &Value| -> Option<Vec<(String, i64)>> {
        let mut out: Vec<(String, i64)> = v
            .as_object()?
            .iter()
            .map(|(k, q)| Some((k.clone(), parse_milli(q.as_str()?).ok()?)))
            .collect::<Option<_>>()?;
        out.sort();
        Some(out)
    };
    amounts(a).is_some() && amounts(a) == amounts(b)
}

/// Adds the class's nodeSelector to the pod's, refusing a key both set to
/// different values.
fn merge_node_selector(
    spec: &mut Map<String, Value>,
    wanted: &Map<String, Value>,
) -> Result<(), String> {
    let selector = spec
        .entry("nodeSelector")
        .or_insert_with(|| Value::Object(Map::new()));
    if !selector.is_object() {
        *selector = Value::Object(Map::new());
    }
    let Some(selector) = selector.as_object_mut() else {
        return Ok(());
    };
    for (key, value) in wanted {
        match selector.get(key) {
            Some(existing) if existing != value => {
                return Err(format!(
                    "conflict: runtimeClass.scheduling.nodeSelector[{key}] = {}; pod.spec.nodeSelector[{key}] = {}",
                    value.as_str().unwrap_or_default(),
                    existing.as_str().unwrap_or_default()
                ));
            }
            Some(_) => {}
            None => {
                selector.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// Applies class `class` (a RuntimeClass, or none) to the pod's spec.
fn apply(spec: &mut Map<String, Value>, class: Option<&Value>) -> Result<(), String> {
    let overhead = class.and_then(|c| c.pointer("/overhead/podFixed"));
    match (overhead, spec.get("overhead")) {
        (Some(fixed), Some(asked)) if !same_overhead(fixed, asked) => {
            return Err(
                "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead".into(),
            );
        }
        (Some(fixed), _) => {
            spec.insert("overhead".into(), fixed.clone());
        }
        (None, Some(_)) => {
            return Err("pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead".into());
        }
        (None, None) => {}
    }
    let Some(scheduling) = class.and_then(|c| c.get("scheduling")) else {
        return Ok(());
    };
    if let Some(selector) = scheduling.get("nodeSelector").and_then(Value::as_object) {
        merge_node_selector(spec, selector)?;
    }
    if let Some(wanted) = scheduling.get("tolerations").and_then(Value::as_array) {
        let tolerations = spec
            .entry("tolerations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !tolerations.is_array() {
            *tolerations = Value::Array(Vec::new());
        }
        if let Some(list) = tolerations.as_array_mut() {
            for t in wanted {
                if !list.contains(t) {
                    list.push(t.clone());
                }
            }
        }
    }
    Ok(())
}

/// Admits a new pod: resolves its RuntimeClass and applies it.
pub async fn admit(state: &ApiState, info: &ResourceInfo, pod: &mut Value) -> Result<(), ApiError> {
    let name = pod
        .pointer("/spec/runtimeClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let class = match &name {
        None => None,
        Some(name) => match state
            .cached_or_stored("node.k8s.io", "runtimeclasses", "", name)
            .await
        {
            Ok(class) => Some(class),
            Err(e) if e.code() == 404 => {
                let why = format!("pod rejected: RuntimeClass {name:?} not found");
                return Err(super::forbidden(info, pod, &why));
            }
            Err(e) => return Err(e),
        },
    };
    let result = match pod.get_mut("spec").and_then(Value::as_object_mut) {
        Some(spec) => apply(spec, class.as_ref()),
        None => Ok(()),
    };
    result.map_err(|why| super::forbidden(info, pod, &why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn the_class_gives_overhead_selector_and_tolerations() {
        let class = json!({"handler": "kata", "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
            "scheduling": {"nodeSelector": {"sandbox": "yes"},
                           "tolerations": [{"key": "sandbox", "operator": "Exists"}]}});
        let mut s = spec(json!({"nodeSelector": {"zone": "a"}, "containers": []}));
        apply(&mut s, Some(&class)).expect("applies");
        assert_eq!(s["overhead"], json!({"cpu": "250m", "memory": "64Mi"}));
        assert_eq!(s["nodeSelector"], json!({"zone": "a", "sandbox": "yes"}));
        assert_eq!(
            s["tolerations"],
            json!([{"key": "sandbox", "operator": "Exists"}])
        );
        // Applying again (a pod that already has all of it) changes nothing.
        let before = s.clone();
        apply(&mut s, Some(&class)).expect("applies again");
        assert_eq!(s, before);
    }

    #[test]
    fn conflicts_and_foreign_overheads_are_refused() {
        let class = json!({"overhead": {"podFixed": {"cpu": "1"}},
            "scheduling": {"nodeSelector": {"sandbox": "yes"}}});
        let mut s = spec(json!({"nodeSelector": {"sandbox": "no"}}));
        let err = apply(&mut s, Some(&class)).expect_err("conflict");
        assert_eq!(
            err,
            "conflict: runtimeClass.scheduling.nodeSelector[sandbox] = yes; pod.spec.nodeSelector[sandbox] = no"
        );
        let mut s = spec(json!({"overhead": {"cpu": "2"}}));
        assert!(apply(&mut s, Some(&class)).is_err());
        let mut s = spec(json!({"overhead": {"cpu": "1000m"}}));
        assert!(apply(&mut s, Some(&class)).is_ok(), "1000m is 1 CPU");
        let mut s = spec(json!({"overhead": {"cpu": "1"}}));
        assert_eq!(
            apply(&mut s, None).expect_err("overhead without class"),
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
        );
    }
}
