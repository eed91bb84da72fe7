//! Upstream's validation of workload specs beyond their pod templates:
//! a Deployment's strategy and limits, a Job's counts and modes, and
//! the PodDisruptionBudgets that guard them.

use kybern_apimachinery::Cause;
use serde_json::{Value, json};

use crate::field_rules::{NEGATIVE, non_negative, one_of, text};

/// An int-or-percent field (`maxSurge`, `maxUnavailable`): its value, in
/// percent when it is one, or a cause when it is neither.
fn int_or_percent(v: &Value, at: &str, causes: &mut Vec<Cause>) -> Option<(i64, bool)> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| (n, false)),
        Value::String(s) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) => Some((n, true)),
            None => {
                causes.push(Cause::invalid(
                    at,
                    &json!(s),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                None
            }
        },
        _ => None,
    }
}

/// A Deployment's spec: strategy, rolling-update bounds, the limits of its
/// history and progress deadline.
pub fn deployment(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec") else { return };
    for key in ["minReadySeconds", "revisionHistoryLimit"] {
        non_negative(spec, key, "spec", causes);
    }
    if let Some(strategy) = spec.get("strategy").filter(|s| !s.is_null()) {
        one_of(
            strategy,
            "type",
            "spec.strategy",
            &["Recreate", "RollingUpdate"],
            causes,
        );
        let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
        match (text(strategy, "type"), rolling) {
            (Some("Recreate"), Some(_)) => causes.push(Cause::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )),
            (Some("RollingUpdate"), Some(ru)) => rolling_update(ru, causes),
            _ => {}
        }
    }
    let min_ready = spec
        .get("minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(deadline) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        if deadline < 0 {
            causes.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                &json!(deadline),
                NEGATIVE,
            ));
        } else if deadline <= min_ready {
            causes.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                &json!(deadline),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

/// One bound of a rolling update: its value when it is a valid one.
fn rollout_bound(ru: &Value, key: &str, causes: &mut Vec<Cause>) -> Option<i64> {
    let field = format!("spec.strategy.rollingUpdate.{key}");
    count_or_percent(ru.get(key)?, &field, key == "maxUnavailable", causes)
}

/// A count or a percentage (`ValidatePositiveIntOrPercent`), at most 100%
/// when `whole` (`IsNotMoreThan100Percent`): its number when valid.
pub(crate) fn count_or_percent(
    v: &Value,
    field: &str,
    whole: bool,
    causes: &mut Vec<Cause>,
) -> Option<i64> {
    let (n, percent) = int_or_percent(v, field, causes)?;
    if n < 0 {
        causes.push(Cause::invalid(field, v, NEGATIVE));
    } else if percent && n > 100 && whole {
        causes.push(Cause::invalid(field, v, "must not be greater than 100%"));
    }
    Some(n)
}

/// A PodDisruptionBudget's spec: one of `minAvailable` and
/// `maxUnavailable`, each a count or a percentage, a valid selector and a
/// known unhealthy-pod policy.
pub fn disruption_budget(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return;
    };
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        causes.push(Cause::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (key, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        if let Some(v) = v {
            count_or_percent(v, &format!("spec.{key}"), true, causes);
        }
    }
    if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
        crate::scheduling_rules::label_selector(sel, "spec.selector", causes);
    }
    one_of(
        spec,
        "unhealthyPodEvictionPolicy",
        "spec",
        &["AlwaysAllow", "IfHealthyBudget"],
        causes,
    );
}

fn rolling_update(ru: &Value, causes: &mut Vec<Cause>) {
    let unavailable = rollout_bound(ru, "maxUnavailable", causes);
    let surge = rollout_bound(ru, "maxSurge", causes);
    if unavailable == Some(0) && surge == Some(0) {
        causes.push(Cause::invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            &ru["maxUnavailable"],
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

/// A Job's spec: counts that may not be negative, a known completion mode,
/// and an index for every completion of an Indexed Job.
pub fn job(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec") else { return };
    for key in ["parallelism", "completions", "backoffLimit"] {
        non_negative(spec, key, "spec", causes);
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && n <= 0
    {
        causes.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &json!(n),
            "must be greater than zero",
        ));
    }
    one_of(
        spec,
        "completionMode",
        "spec",
        &["NonIndexed", "Indexed"],
        causes,
    );
    if text(spec, "completionMode") == Some("Indexed")
        && spec.get("completions").is_none_or(Value::is_null)
    {
        causes.push(Cause::required(
            "spec.completions",
            "when completion mode is Indexed",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn deployments_bound_their_rollout() {
        let mut causes = Vec::new();
        deployment(
            &json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
                "minReadySeconds": 10, "progressDeadlineSeconds": 5}}),
            &mut causes,
        );
        assert_eq!(
            messages(&causes),
            vec![
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0",
                "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds",
            ]
        );
        let mut causes = Vec::new();
        deployment(
            &json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": {}}, "minReadySeconds": -1}}),
            &mut causes,
        );
        assert_eq!(
            messages(&causes),
            vec![
                "spec.minReadySeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
            ]
        );
        let mut causes = Vec::new();
        deployment(
            &json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "progressDeadlineSeconds": 600}}),
            &mut causes,
        );
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn jobs_count_from_zero() {
        let mut causes = Vec::new();
        job(
            &json!({"spec": {"parallelism": -1, "completionMode": "Indexed"}}),
            &mut causes,
        );
        assert_eq!(
            messages(&causes),
            vec![
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.completions: Required value: when completion mode is Indexed",
            ]
        );
    }
}
