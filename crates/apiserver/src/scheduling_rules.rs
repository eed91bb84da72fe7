//! Upstream's validation of a pod spec's scheduling fields: label maps,
//! node and pod affinity terms, tolerations and topology spread constraints.

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{items, set, text};

/// A label map: qualified-name keys and label values.
pub(crate) fn labels(map: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    for (k, v) in map.and_then(Value::as_object).into_iter().flatten() {
        for msg in names::qualified_name(k) {
            causes.push(Cause::invalid(path, &json!(k), msg));
        }
        for msg in names::label_value(v.as_str().unwrap_or("")) {
            causes.push(Cause::invalid(format!("{path}[{k}]"), v, msg));
        }
    }
}

/// One requirement of a selector: a known operator with the values it
/// needs (`Gt` and `Lt` only in node selectors, `numeric`) and a valid key;
/// returns its values.
fn requirement<'a>(
    rq: &'a Value,
    at: &str,
    numeric: bool,
    causes: &mut Vec<Cause>,
) -> Vec<&'a Value> {
    let values: Vec<&Value> = items(Some(rq), "values").collect();
    match text(rq, "operator").unwrap_or("") {
        "In" | "NotIn" if values.is_empty() => causes.push(Cause::required(
            format!("{at}.values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
            format!("{at}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if numeric && values.len() != 1 => causes.push(Cause::required(
            format!("{at}.values"),
            "must be specified single value when `operator` is 'Lt' or 'Gt'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        "Gt" | "Lt" if numeric => {}
        other => causes.push(Cause::invalid(
            format!("{at}.operator"),
            &json!(other),
            "not a valid selector operator",
        )),
    }
    let key = text(rq, "key").unwrap_or("");
    for msg in names::qualified_name(key) {
        causes.push(Cause::invalid(format!("{at}.key"), &json!(key), msg));
    }
    values
}

/// A `metav1.LabelSelector` (`ValidateLabelSelector`): valid match labels,
/// and expressions with a known operator and the values it needs.
pub(crate) fn label_selector(sel: &Value, path: &str, causes: &mut Vec<Cause>) {
    labels(
        sel.get("matchLabels"),
        &format!("{path}.matchLabels"),
        causes,
    );
    for (j, rq) in items(Some(sel), "matchExpressions").enumerate() {
        requirement(rq, &format!("{path}.matchExpressions[{j}]"), false, causes);
    }
}

fn node_selector_term(term: &Value, at: &str, required: bool, causes: &mut Vec<Cause>) {
    for (j, rq) in items(Some(term), "matchExpressions").enumerate() {
        let at = format!("{at}.matchExpressions[{j}]");
        let values = requirement(rq, &at, true, causes);
        if required {
            for (k, v) in values.iter().enumerate() {
                for msg in names::label_value(v.as_str().unwrap_or("")) {
                    causes.push(Cause::invalid(format!("{at}.values[{k}]"), v, msg));
                }
            }
        }
    }
}

fn weight(term: &Value, at: &str, causes: &mut Vec<Cause>) {
    let w = term.get("weight").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=100).contains(&w) {
        causes.push(Cause::invalid(
            format!("{at}.weight"),
            &json!(w),
            "must be in the range 1-100",
        ));
    }
}

fn pod_affinity_term(term: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(sel) = term.get("labelSelector").filter(|s| !s.is_null())
        && kybern_apimachinery::labels::Selector::from_label_selector(sel).is_err()
    {
        causes.push(Cause::invalid(
            format!("{at}.labelSelector"),
            sel,
            "invalid label selector",
        ));
    }
    match text(term, "topologyKey").filter(|k| !k.is_empty()) {
        None => causes.push(Cause::required(
            format!("{at}.topologyKey"),
            "can not be empty",
        )),
        Some(key) => {
            for msg in names::qualified_name(key) {
                causes.push(Cause::invalid(
                    format!("{at}.topologyKey"),
                    &json!(key),
                    msg,
                ));
            }
        }
    }
}

pub(crate) fn affinity(affinity: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(na) = affinity.get("nodeAffinity").filter(|n| !n.is_null()) {
        let at = format!("{path}.nodeAffinity");
        if let Some(req) = na
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .filter(|r| !r.is_null())
        {
            let at =
                format!("{at}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
            let terms: Vec<&Value> = items(Some(req), "nodeSelectorTerms").collect();
            if terms.is_empty() {
                causes.push(Cause::required(
                    &at,
                    "must have at least one node selector term",
                ));
            }
            for (i, term) in terms.iter().enumerate() {
                node_selector_term(term, &format!("{at}[{i}]"), true, causes);
            }
        }
        let at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution");
        for (i, term) in
            items(Some(na), "preferredDuringSchedulingIgnoredDuringExecution").enumerate()
        {
            let at = format!("{at}[{i}]");
            weight(term, &at, causes);
            if let Some(pref) = term.get("preference") {
                node_selector_term(pref, &format!("{at}.preference"), false, causes);
            }
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = affinity.get(kind).filter(|p| !p.is_null()) else {
            continue;
        };
        let at = format!("{path}.{kind}");
        let required = "requiredDuringSchedulingIgnoredDuringExecution";
        for (i, term) in items(Some(pa), required).enumerate() {
            pod_affinity_term(term, &format!("{at}.{required}[{i}]"), causes);
        }
        let preferred = "preferredDuringSchedulingIgnoredDuringExecution";
        for (i, term) in items(Some(pa), preferred).enumerate() {
            let at = format!("{at}.{preferred}[{i}]");
            weight(term, &at, causes);
            if let Some(t) = term.get("podAffinityTerm") {
                pod_affinity_term(t, &format!("{at}.podAffinityTerm"), causes);
            }
        }
    }
}

pub(crate) fn tolerations(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, t) in items(Some(spec), "tolerations").enumerate() {
        let at = format!("{path}.tolerations[{i}]");
        let key = text(t, "key").unwrap_or("");
        let operator = text(t, "operator").unwrap_or("");
        let value = text(t, "value").unwrap_or("");
        let effect = text(t, "effect").unwrap_or("");
        if !key.is_empty() {
            for msg in names::qualified_name(key) {
                causes.push(Cause::invalid(format!("{at}.key"), &json!(key), msg));
            }
        }
        if key.is_empty() && operator != "Exists" {
            causes.push(Cause::invalid(
                format!("{at}.operator"),
                &json!(operator),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if set(t, "tolerationSeconds") && effect != "NoExecute" {
            causes.push(Cause::invalid(
                format!("{at}.effect"),
                &json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "" | "Equal" => {
                let errs = names::label_value(value);
                if !errs.is_empty() {
                    causes.push(Cause::invalid(
                        format!("{at}.operator"),
                        &json!(value),
                        errs.join(";"),
                    ));
                }
            }
            "Exists" if !value.is_empty() => causes.push(Cause::invalid(
                format!("{at}.operator"),
                &json!(value),
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => causes.push(Cause::not_supported(
                format!("{at}.operator"),
                &json!(other),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            causes.push(Cause::not_supported(
                format!("{at}.effect"),
                &json!(effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
}

pub(crate) fn spread_constraints(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let all: Vec<&Value> = items(Some(spec), "topologySpreadConstraints").collect();
    for (i, c) in all.iter().enumerate() {
        let at = format!("{path}.topologySpreadConstraints[{i}]");
        let skew = c.get("maxSkew").and_then(Value::as_i64).unwrap_or(0);
        if skew <= 0 {
            causes.push(Cause::invalid(
                format!("{at}.maxSkew"),
                &json!(skew),
                "must be greater than zero",
            ));
        }
        let key = text(c, "topologyKey").unwrap_or("");
        if key.is_empty() {
            causes.push(Cause::required(
                format!("{at}.topologyKey"),
                "can not be empty",
            ));
        } else {
            for msg in names::qualified_name(key) {
                causes.push(Cause::invalid(
                    format!("{at}.topologyKey"),
                    &json!(key),
                    msg,
                ));
            }
        }
        let action = text(c, "whenUnsatisfiable").unwrap_or("");
        if !matches!(action, "DoNotSchedule" | "ScheduleAnyway") {
            causes.push(Cause::not_supported(
                format!("{at}.whenUnsatisfiable"),
                &json!(action),
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        let repeated = all[i + 1..].iter().any(|o| {
            text(o, "topologyKey") == Some(key) && text(o, "whenUnsatisfiable") == Some(action)
        });
        if repeated {
            causes.push(Cause::duplicate(
                format!("{at}.{{topologyKey, whenUnsatisfiable}}"),
                &json!(format!("{{{key}, {action}}}")),
            ));
        }
        if let Some(min) = c.get("minDomains").and_then(Value::as_i64) {
            if min <= 0 {
                causes.push(Cause::invalid(
                    format!("{at}.minDomains"),
                    &json!(min),
                    "must be greater than zero",
                ));
            } else if action != "DoNotSchedule" {
                causes.push(Cause::invalid(
                    format!("{at}.minDomains"),
                    &json!(min),
                    format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"
                    ),
                ));
            }
        }
    }
}
