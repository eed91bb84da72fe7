//! Upstream's validation of resource requirements (a container's, or a
//! pod's overhead): resource names, quantities, requests within limits; and
//! the decode-time check for malformed quantities.

use kybern_apimachinery::quantity::parse_milli;
use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::NEGATIVE;

/// A quantity in milli-units, if it parses (malformed ones are refused
/// when the body is decoded).
pub(crate) fn milli(q: &Value) -> Option<i64> {
    match q {
        Value::String(s) => parse_milli(s).ok(),
        Value::Number(n) => n.as_f64().map(|f| (f * 1000.0).ceil() as i64),
        _ => None,
    }
}

/// A quantity as messages show it.
pub(crate) fn shown(q: &Value) -> String {
    q.as_str().map_or_else(|| q.to_string(), str::to_owned)
}

/// Native resources (no domain, or a `kubernetes.io` one) may be
/// overcommitted, except huge pages.
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

fn resource_name(name: &str, at: &str, causes: &mut Vec<Cause>) {
    if !name.contains('/') {
        let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.starts_with("hugepages-");
        if !standard {
            causes.push(Cause::invalid(
                at,
                &json!(name),
                "must be a standard resource for containers",
            ));
        }
        return;
    }
    for msg in names::qualified_name(name) {
        causes.push(Cause::invalid(at, &json!(name), msg));
    }
    // An extended resource (any other domain) may not look like a quota's
    // `requests.` name.
    if !name.contains("kubernetes.io/") && name.starts_with("requests.") {
        causes.push(Cause::invalid(
            at,
            &json!(name),
            "doesn't follow extended resource name standard",
        ));
    }
}

/// A request of `name` above its limit, reported at `path.requests`.
pub(crate) fn above_limit(path: &str, name: &str, request: &Value, limit: Option<&Value>) -> Cause {
    Cause::invalid(
        format!("{path}.requests"),
        &json!(shown(request)),
        format!(
            "must be less than or equal to {name} limit of {}",
            limit.map(shown).unwrap_or_default()
        ),
    )
}

/// A container's (or the pod overhead's) `resources`.
pub(crate) fn resources(r: &Value, path: &str, causes: &mut Vec<Cause>) {
    let limits = r.get("limits").and_then(Value::as_object);
    let requests = r.get("requests").and_then(Value::as_object);
    for (list, map) in [("limits", limits), ("requests", requests)] {
        for (name, q) in map.into_iter().flatten() {
            let at = format!("{path}.{list}[{name}]");
            resource_name(name, &at, causes);
            let Some(value) = milli(q) else { continue };
            if value < 0 {
                causes.push(Cause::invalid(&at, &json!(shown(q)), NEGATIVE));
            } else if name.contains('/') && !name.contains("kubernetes.io/") && value % 1000 != 0 {
                causes.push(Cause::invalid(&at, &json!(shown(q)), "must be an integer"));
            }
        }
    }
    for (name, q) in requests.into_iter().flatten() {
        let Some(request) = milli(q) else { continue };
        let limit = limits.and_then(|l| l.get(name));
        match limit.and_then(milli) {
            Some(l) if request != l && !overcommit_allowed(name) => {
                causes.push(Cause::invalid(
                    format!("{path}.requests"),
                    &json!(shown(q)),
                    format!(
                        "must be equal to {name} limit of {}",
                        limit.map(shown).unwrap_or_default()
                    ),
                ));
            }
            Some(l) if request > l => {
                causes.push(above_limit(path, name, q, limit));
            }
            None if !overcommit_allowed(name) => {
                causes.push(Cause::required(
                    format!("{path}.limits"),
                    "Limit must be set for non overcommitable resources",
                ));
            }
            _ => {}
        }
    }
}

/// The fields of a kind's objects that hold quantities (a map of them, or
/// one), which its decoder parses: any quantity in them that does not parse
/// fails the whole body, as upstream's typed decoding does.
pub fn quantity_fields(group: &str, plural: &str) -> Option<&'static [&'static str]> {
    const POD: &[&str] = &["limits", "requests", "overhead", "sizeLimit"];
    Some(match (group, plural) {
        ("", "pods" | "podtemplates" | "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs" | "cronjobs") => POD,
        ("", "resourcequotas") => &["hard", "used"],
        ("", "limitranges") => &[
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ],
        ("", "persistentvolumeclaims") => &["limits", "requests", "capacity", "allocatedResources"],
        ("", "persistentvolumes") => &["capacity"],
        ("", "nodes") => &["capacity", "allocatable"],
        _ => return None,
    })
}

/// The first malformed quantity under one of `fields` anywhere in `v`.
pub fn malformed_quantity(v: &Value, fields: &[&str]) -> Option<String> {
    let bad = |q: &Value| match q {
        Value::String(s) => parse_milli(s).is_err().then(|| s.clone()),
        _ => None,
    };
    match v {
        Value::Object(map) => map.iter().find_map(|(k, child)| {
            if !fields.contains(&k.as_str()) {
                return malformed_quantity(child, fields);
            }
            match child {
                Value::Object(m) => m
                    .values()
                    .find_map(bad)
                    .or_else(|| malformed_quantity(child, fields)),
                _ => bad(child),
            }
        }),
        Value::Array(items) => items.iter().find_map(|i| malformed_quantity(i, fields)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_quantities_are_found_in_each_kinds_quantity_fields() {
        let template = json!({"spec": {"template": {"spec": {"containers": [{"resources": {"limits": {"cpu": "1"}, "requests": {"memory": "lots"}}}],
            "volumes": [{"emptyDir": {"sizeLimit": "1Gi"}}]}}}});
        let pod = quantity_fields("apps", "deployments").expect("pod kind");
        assert_eq!(malformed_quantity(&template, pod), Some("lots".into()));
        let fine = json!({"spec": {"overhead": {"cpu": "250m"}, "volumes": [{"emptyDir": {"sizeLimit": "1Gi"}}]}});
        assert_eq!(malformed_quantity(&fine, pod), None);
        let quota = json!({"spec": {"hard": {"pods": "10", "requests.cpu": "many"}}});
        let fields = quantity_fields("", "resourcequotas").expect("quota");
        assert_eq!(malformed_quantity(&quota, fields), Some("many".into()));
        let ranges = json!({"spec": {"limits": [{"type": "Container", "default": {"memory": "1Gi"}, "max": {"cpu": "2x"}}]}});
        let fields = quantity_fields("", "limitranges").expect("ranges");
        assert_eq!(malformed_quantity(&ranges, fields), Some("2x".into()));
        assert!(quantity_fields("", "configmaps").is_none());
    }
}
