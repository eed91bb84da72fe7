//! Upstream's validation of a namespace's resource policy: ResourceQuota
//! resource names, amounts and scopes, and LimitRange bounds that agree
//! with each other (`pkg/apis/core/validation`, paths and messages as
//! upstream's).

use kybern_apimachinery::{Cause, names};
use serde_json::{Map, Value, json};

use crate::field_rules::{NEGATIVE, items, text};
use crate::resource_rules::{milli, shown};

/// Quota resources that count objects, which only whole numbers measure.
const COUNTED: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

/// Upstream's standard quota scopes.
const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

/// The compute and storage resources a quota may name without a domain.
const QUOTA_AMOUNTS: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

fn standard_quota_resource(name: &str) -> bool {
    COUNTED.contains(&name)
        || QUOTA_AMOUNTS.contains(&name)
        || ["hugepages-", "requests.hugepages-"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// A ResourceQuota's spec: named resources with whole, non-negative
/// amounts, and known scopes that do not contradict each other.
pub fn resource_quota(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return;
    };
    let hard = spec.get("hard").and_then(Value::as_object);
    for (name, q) in hard.into_iter().flatten() {
        let at = format!("spec.hard[{name}]");
        for msg in names::qualified_name(name) {
            causes.push(Cause::invalid(&at, &json!(name), msg));
        }
        if !name.contains('/') && !standard_quota_resource(name) {
            causes.push(Cause::invalid(
                &at,
                &json!(name),
                "must be a standard resource for quota",
            ));
        }
        let Some(m) = milli(q) else { continue };
        if m < 0 {
            causes.push(Cause::invalid(&at, q, NEGATIVE));
        }
        let counted = COUNTED.contains(&name.as_str()) || name.starts_with("count/");
        if counted && m % 1000 != 0 {
            causes.push(Cause::invalid(&at, q, "must be an integer"));
        }
    }
    let scopes: Vec<&str> = items(Some(spec), "scopes")
        .filter_map(Value::as_str)
        .collect();
    let all = &spec["scopes"];
    if scopes.iter().any(|s| !SCOPES.contains(s)) {
        causes.push(Cause::invalid("spec.scopes", all, "unsupported scope"));
    }
    for pair in [
        ["BestEffort", "NotBestEffort"],
        ["Terminating", "NotTerminating"],
    ] {
        if pair.iter().all(|p| scopes.contains(p)) {
            causes.push(Cause::invalid("spec.scopes", all, "conflicting scopes"));
        }
    }
    if let Some(sel) = spec.get("scopeSelector").filter(|s| !s.is_null()) {
        scope_selector(sel, causes);
    }
}

fn scope_selector(sel: &Value, causes: &mut Vec<Cause>) {
    for (i, rq) in items(Some(sel), "matchExpressions").enumerate() {
        let at = format!("spec.scopeSelector.matchExpressions[{i}]");
        let scope = text(rq, "scopeName").unwrap_or("");
        if !SCOPES.contains(&scope) {
            causes.push(Cause::invalid(
                format!("{at}.scopeName"),
                &json!(scope),
                "unsupported scope",
            ));
        }
        let values = items(Some(rq), "values").next().is_some();
        match text(rq, "operator").unwrap_or("") {
            "In" | "NotIn" if !values => causes.push(Cause::required(
                format!("{at}.values"),
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
            )),
            "Exists" | "DoesNotExist" if values => causes.push(Cause::invalid(
                format!("{at}.values"),
                &rq["values"],
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                format!("{at}.operator"),
                &json!(other),
                "not a valid selector operator",
            )),
        }
    }
}

/// One bound map of a limit (`max`, `min`, …), by resource.
fn bounds<'a>(limit: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    limit.get(key).and_then(Value::as_object)
}

/// A LimitRange's spec: one entry per type, no container defaults on the
/// `Pod` type, a storage bound for claims, and bounds in order
/// (min ≤ default request ≤ default ≤ max, a ratio of at least 1).
pub fn limit_range(obj: &Value, causes: &mut Vec<Cause>) {
    let mut types: Vec<&str> = Vec::new();
    for (i, limit) in items(obj.get("spec"), "limits").enumerate() {
        let at = format!("spec.limits[{i}]");
        let ty = text(limit, "type").unwrap_or("");
        for msg in names::qualified_name(ty) {
            causes.push(Cause::invalid(format!("{at}.type"), &json!(ty), msg));
        }
        if !ty.contains('/') && !matches!(ty, "Pod" | "Container" | "PersistentVolumeClaim") {
            causes.push(Cause::invalid(
                format!("{at}.type"),
                &json!(ty),
                "must be a standard limit type or fully qualified",
            ));
        }
        if types.contains(&ty) {
            causes.push(Cause::duplicate(format!("{at}.type"), &json!(ty)));
        }
        types.push(ty);
        let (max, min) = (bounds(limit, "max"), bounds(limit, "min"));
        let (default, request) = (bounds(limit, "default"), bounds(limit, "defaultRequest"));
        let ratio = bounds(limit, "maxLimitRequestRatio");
        if ty == "Pod" {
            for (key, map) in [("default", default), ("defaultRequest", request)] {
                if map.is_some_and(|m| !m.is_empty()) {
                    causes.push(Cause::forbidden(
                        format!("{at}.{key}"),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        let has_storage =
            |m: Option<&Map<String, Value>>| m.is_some_and(|m| m.contains_key("storage"));
        if ty == "PersistentVolumeClaim" && !has_storage(min) && !has_storage(max) {
            causes.push(Cause::required(
                format!("{at}.limits"),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let mut keys: Vec<&String> = [max, min, default, request, ratio]
            .iter()
            .flatten()
            .flat_map(|m| m.keys())
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let get = |m| bound(m, k);
            order(
                &at,
                k,
                get(min),
                get(max),
                get(default),
                get(request),
                causes,
            );
            if let Some((q, Some(r))) = get(ratio)
                && r < 1000
            {
                causes.push(Cause::invalid(
                    format!("{at}.maxLimitRequestRatio[{k}]"),
                    q,
                    format!("ratio {} is less than 1", shown(q)),
                ));
            }
        }
    }
}

/// One resource's bound in a limit: the quantity and its milli-units.
type Bound<'a> = Option<(&'a Value, Option<i64>)>;

fn bound<'a>(m: Option<&'a Map<String, Value>>, k: &str) -> Bound<'a> {
    m?.get(k).map(|q| (q, milli(q)))
}

/// The order of one resource's bounds in a limit.
fn order(
    at: &str,
    k: &str,
    min: Bound,
    max: Bound,
    default: Bound,
    request: Bound,
    causes: &mut Vec<Cause>,
) {
    let mut above = |field: &str, shown_q: &Value, lo: Bound, hi: Bound, what: (&str, &str)| {
        if let (Some((lq, Some(l))), Some((hq, Some(h)))) = (lo, hi)
            && l > h
        {
            causes.push(Cause::invalid(
                format!("{at}.{field}[{k}]"),
                shown_q,
                format!(
                    "{} value {} is greater than {} value {}",
                    what.0,
                    shown(lq),
                    what.1,
                    shown(hq)
                ),
            ));
        }
    };
    fn q<'a>(b: Bound<'a>) -> &'a Value {
        b.map_or(&Value::Null, |(q, _)| q)
    }
    above("min", q(min), min, max, ("min", "max"));
    above(
        "defaultRequest",
        q(request),
        min,
        request,
        ("min", "default request"),
    );
    above(
        "defaultRequest",
        q(request),
        request,
        max,
        ("default request", "max"),
    );
    above(
        "defaultRequest",
        q(request),
        request,
        default,
        ("default request", "default limit"),
    );
    above("default", q(min), min, default, ("min", "default"));
    above("default", q(max), default, max, ("default", "max"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines as lines;

    #[test]
    fn quotas_name_standard_resources_with_whole_counts_and_consistent_scopes() {
        let mut causes = Vec::new();
        resource_quota(
            &json!({"spec": {
                "hard": {"pods": "1500m", "cpu": "-1", "gpus": "2", "count/deployments.apps": "3",
                    "requests.example.com/fpga": "1"},
                "scopes": ["BestEffort", "NotBestEffort", "Weekdays"]}}),
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "spec.hard[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.hard[gpus]: Invalid value: \"gpus\": must be a standard resource for quota",
                "spec.hard[pods]: Invalid value: \"1500m\": must be an integer",
                "spec.scopes: Invalid value: [\"BestEffort\",\"NotBestEffort\",\"Weekdays\"]: unsupported scope",
                "spec.scopes: Invalid value: [\"BestEffort\",\"NotBestEffort\",\"Weekdays\"]: conflicting scopes",
            ]
        );
    }

    #[test]
    fn limit_ranges_keep_their_bounds_in_order() {
        let mut causes = Vec::new();
        limit_range(
            &json!({"spec": {"limits": [
                {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"},
                    "default": {"memory": "1Gi"}, "defaultRequest": {"memory": "2Gi"},
                    "maxLimitRequestRatio": {"cpu": "500m"}},
                {"type": "Pod", "default": {"cpu": "1"}},
                {"type": "PersistentVolumeClaim"},
                {"type": "Container"}]}}),
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1",
                "spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: \"500m\": ratio 500m is less than 1",
                "spec.limits[0].defaultRequest[memory]: Invalid value: \"2Gi\": default request value 2Gi is greater than default limit value 1Gi",
                "spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'",
                "spec.limits[2].limits: Required value: either minimum or maximum storage value is required, but neither was provided",
                "spec.limits[3].type: Duplicate value: \"Container\"",
            ]
        );
    }
}
