//! Strategic merge patch for built-in kinds: maps merge, lists of objects merge
//! by their patch merge key (`containers` by `name`, `volumeMounts` by
//! `mountPath`, ...), and the directives `$patch` (`replace`, `delete`, `merge`),
//! `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
//!
//! Merge keys come from upstream's `patchMergeKey` tags. They are chosen by the
//! list's field name, and where one name has two keys (`ports` of containers
//! versus services) by what the elements hold.

use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// Lists whose elements are strings merged as sets (`patchStrategy: merge` on a primitive list).
const MERGED_PRIMITIVE_LISTS: &[&str] = &["finalizers"];

/// The merge key of a list of objects, or `None` when the list is replaced whole.
pub(crate) fn merge_key(field: &str, elements: &[&Value]) -> Option<&'static str> {
    let has = |k: &str| elements.iter().any(|e| e.get(k).is_some());
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "readinessGates" => "conditionType",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "addresses" if has("type") && !has("ip") => "type",
        "ports" if has("containerPort") => "containerPort",
        "ports" if has("port") => "port",
        "taints" => return None,
        _ => return None,
    })
}

fn is_directive(k: &str) -> bool {
    k == "$patch"
        || k == "$retainKeys"
        || k.starts_with("$setElementOrder/")
        || k.starts_with("$deleteFromPrimitiveList/")
}

/// Applies a strategic merge patch to `target` in place.
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = Value::Object(strip(p));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError(format!("unknown patch type: {other}"))),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return Ok(());
    };
    for (k, v) in p {
        if is_directive(k) {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => {
                if v.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                } else {
                    apply(t.entry(k.clone()).or_insert(Value::Null), v)?;
                }
            }
            Value::Array(items) => {
                let current = t.remove(k).unwrap_or(Value::Array(Vec::new()));
                t.insert(k.clone(), merge_list(k, current, items)?);
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(list)) = t.get_mut(field) {
                list.retain(|x| !remove.contains(&x));
            }
        }
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) = (t.get_mut(field), v.as_array())
        {
            reorder(field, list, order);
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

/// A patch map without its directives.
fn strip(p: &Map<String, Value>) -> Map<String, Value> {
    p.iter()
        .filter(|(k, _)| !is_directive(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_list(field: &str, current: Value, patch: &[Value]) -> Result<Value, PatchError> {
    let mut current = match current {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    // A `$patch: replace` element replaces the whole list with the others.
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let rest = patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .map(|e| {
                e.as_object()
                    .map_or_else(|| e.clone(), |m| Value::Object(strip(m)))
            })
            .collect();
        return Ok(Value::Array(rest));
    }
    if MERGED_PRIMITIVE_LISTS.contains(&field) && patch.iter().all(|e| !e.is_object()) {
        for e in patch {
            if !current.contains(e) {
                current.push(e.clone());
            }
        }
        return Ok(Value::Array(current));
    }
    let all_objects = patch.iter().all(Value::is_object) && current.iter().all(Value::is_object);
    let elements: Vec<&Value> = patch.iter().chain(current.iter()).collect();
    let key = if all_objects {
        merge_key(field, &elements)
    } else {
        None
    };
    let Some(key) = key else {
        // No merge key: the list is replaced, as upstream does.
        return Ok(Value::Array(patch.to_vec()));
    };
    for e in patch {
        let Some(id) = e.get(key) else {
            return Err(PatchError(format!(
                "map: {e} does not contain declared merge key: {key}"
            )));
        };
        let pos = current.iter().position(|c| c.get(key) == Some(id));
        match (e.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                current.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => apply(&mut current[i], e)?,
            (_, None) => {
                let mut fresh = Value::Object(Map::new());
                apply(&mut fresh, e)?;
                current.push(fresh);
            }
        }
    }
    Ok(Value::Array(current))
}

/// Orders `list` as `order` (elements identified by their merge key, or by value
/// for primitives); elements not named keep their relative order at the end.
fn reorder(field: &str, list: &mut [Value], order: &[Value]) {
    let elements: Vec<&Value> = order.iter().chain(list.iter()).collect();
    let key = merge_key(field, &elements);
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        order
            .iter()
            .position(|o| id(o) == id(v))
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(target: Value, patch: Value) -> Value {
        let mut t = target;
        apply(&mut t, &patch).expect("patch applies");
        t
    }

    #[test]
    fn containers_merge_by_name() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}});
        assert_eq!(
            patched(t, p)["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
    }

    #[test]
    fn directives() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}], "x": {"k": 1}}, "metadata": {"finalizers": ["f1", "f2"]}});
        let p = json!({
            "spec": {"containers": [{"name": "a", "$patch": "delete"}], "x": {"$patch": "replace", "n": 2}},
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]},
        });
        let r = patched(t, p);
        assert_eq!(
            r["spec"]["containers"],
            json!([{"name": "b", "image": "b"}])
        );
        assert_eq!(r["spec"]["x"], json!({"n": 2}));
        assert_eq!(r["metadata"]["finalizers"], json!(["f2"]));
    }

    #[test]
    fn set_element_order_and_retain_keys() {
        let t = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x"}],
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
        }});
        let r = patched(t, p);
        assert_eq!(
            r["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a", "image": "x"}])
        );
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
        assert!(
            r.to_string().find('$').is_none(),
            "no directive is stored: {r}"
        );
    }

    #[test]
    fn ports_pick_their_key_and_other_lists_replace() {
        let t = json!({"ports": [{"containerPort": 80, "name": "http"}], "args": ["a", "b"], "tolerations": [{"key": "x"}]});
        let p = json!({"ports": [{"containerPort": 443}], "args": ["c"], "tolerations": [{"key": "y"}]});
        let r = patched(t, p);
        assert_eq!(
            r["ports"],
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 443}])
        );
        assert_eq!(r["args"], json!(["c"]));
        assert_eq!(r["tolerations"], json!([{"key": "y"}]));
        let svc = patched(
            json!({"ports": [{"port": 80, "targetPort": 8080}]}),
            json!({"ports": [{"port": 80, "targetPort": 9090}]}),
        );
        assert_eq!(svc["ports"], json!([{"port": 80, "targetPort": 9090}]));
    }

    #[test]
    fn nulls_remove_and_bad_elements_fail() {
        assert_eq!(
            patched(json!({"a": 1, "b": 2}), json!({"a": null})),
            json!({"b": 2})
        );
        let mut t = json!({"containers": [{"name": "a"}]});
        assert!(apply(&mut t, &json!({"containers": [{"image": "no-name"}]})).is_err());
    }
}
