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
    crate::job_success_rules::validate(spec, causes);
}

/// A StatefulSet's spec: a known pod management policy and update
/// strategy, a non-negative partition and start ordinal, and known claim
/// retention policies.
pub fn stateful_set(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return;
    };
    match text(spec, "podManagementPolicy") {
        None | Some("") => causes.push(Cause::required("spec.podManagementPolicy", "")),
        Some("OrderedReady" | "Parallel") => {}
        Some(other) => causes.push(Cause::invalid(
            "spec.podManagementPolicy",
            &json!(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match text(strategy, "type").unwrap_or("") {
        "" => causes.push(Cause::required("spec.updateStrategy", "")),
        "OnDelete" => {
            if let Some(r) = rolling {
                causes.push(Cause::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    r,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(r) = rolling {
                non_negative(r, "partition", "spec.updateStrategy.rollingUpdate", causes);
            }
        }
        _ => causes.push(Cause::invalid(
            "spec.updateStrategy",
            strategy,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(policy) = spec
        .get("persistentVolumeClaimRetentionPolicy")
        .filter(|p| !p.is_null())
    {
        for key in ["whenDeleted", "whenScaled"] {
            one_of(
                policy,
                key,
                "spec.persistentVolumeClaimRetentionPolicy",
                &["Delete", "Retain"],
                causes,
            );
        }
    }
    non_negative(spec, "minReadySeconds", "spec", causes);
    if let Some(ordinals) = spec.get("ordinals").filter(|o| !o.is_null()) {
        non_negative(ordinals, "start", "spec.ordinals", causes);
    }
}

/// A DaemonSet's update strategy: known, and for rolling updates exactly
/// one of `maxUnavailable` and `maxSurge` above zero.
pub fn daemon_set(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return;
    };
    non_negative(spec, "minReadySeconds", "spec", causes);
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    let at = "spec.updateStrategy";
    match text(strategy, "type").unwrap_or("") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let Some(ru) = strategy.get("rollingUpdate").filter(|r| !r.is_null()) else {
                causes.push(Cause::required(format!("{at}.rollingUpdate"), ""));
                return;
            };
            let bound = |key: &str, causes: &mut Vec<Cause>| {
                ru.get(key).and_then(|v| {
                    count_or_percent(v, &format!("{at}.rollingUpdate.{key}"), true, causes)
                })
            };
            let unavailable = bound("maxUnavailable", causes).unwrap_or(0) != 0;
            let surge = bound("maxSurge", causes).unwrap_or(0) != 0;
            if unavailable && surge {
                causes.push(Cause::invalid(
                    format!("{at}.rollingUpdate.maxSurge"),
                    &ru["maxSurge"],
                    "may not be set when maxUnavailable is non-zero",
                ));
            } else if !unavailable && !surge {
                causes.push(Cause::required(
                    format!("{at}.rollingUpdate.maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                ));
            }
        }
        _ => causes.push(Cause::not_supported(
            at,
            strategy,
            &["RollingUpdate", "OnDelete"],
        )),
    }
}

/// A CronJob's spec beyond its job template: a schedule without a time
/// zone in it, a known concurrency policy and non-negative limits.
pub fn cron_job(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(schedule) = text(spec, "schedule").filter(|s| !s.is_empty()) {
        // The parser upstream uses takes a leading `TZ=` or `CRON_TZ=`;
        // the rule below then refuses it, alone.
        let fields = match schedule.split_once(' ') {
            Some((zone, rest)) if zone.starts_with("TZ=") || zone.starts_with("CRON_TZ=") => rest,
            _ => schedule,
        };
        if let Err(e) = kybern_apimachinery::cron::Schedule::parse(fields) {
            causes.push(Cause::invalid(
                "spec.schedule",
                &json!(schedule),
                e.reason(),
            ));
        }
        if schedule.contains("TZ") {
            causes.push(Cause::invalid(
                "spec.schedule",
                &json!(schedule),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    match text(spec, "concurrencyPolicy") {
        None | Some("") => causes.push(Cause::required("spec.concurrencyPolicy", "")),
        Some(_) => one_of(
            spec,
            "concurrencyPolicy",
            "spec",
            &["Allow", "Forbid", "Replace"],
            causes,
        ),
    }
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(spec, key, "spec", causes);
    }
    if let Some(zone) = text(spec, "timeZone") {
        time_zone(zone, causes);
    }
}

/// A CronJob's `timeZone`: an IANA zone by name (upstream loads it from the
/// zone database; ours is the one bundled with jiff).
fn time_zone(zone: &str, causes: &mut Vec<Cause>) {
    let refuse = |causes: &mut Vec<Cause>, msg: String| {
        causes.push(Cause::invalid("spec.timeZone", &json!(zone), msg));
    };
    if zone.is_empty() {
        return refuse(causes, "timeZone must be nil or non-empty string".into());
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    };
    if !zone.split('/').all(part_ok) {
        return refuse(causes, format!("unknown time zone {zone}"));
    }
    if zone.eq_ignore_ascii_case("Local") {
        return refuse(
            causes,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    if k8s_openapi::jiff::tz::TimeZone::get(zone).is_err() {
        refuse(causes, format!("unknown time zone {zone}"));
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

    #[test]
    fn stateful_and_daemon_sets_and_cron_jobs_keep_to_known_strategies() {
        let mut causes = Vec::new();
        stateful_set(
            &json!({"spec": {"podManagementPolicy": "Random",
                "updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 1}},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Keep"}}}),
            &mut causes,
        );
        daemon_set(
            &json!({"spec": {"updateStrategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}}}),
            &mut causes,
        );
        cron_job(
            &json!({"spec": {"schedule": "CRON_TZ=UTC 0 * * * *", "concurrencyPolicy": "Sometimes",
                "startingDeadlineSeconds": -5}}),
            &mut causes,
        );
        let got = crate::field_rules::cause_lines(&causes);
        assert_eq!(
            got,
            vec![
                "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
                "spec.updateStrategy.rollingUpdate: Invalid value: {\"partition\":1}: only allowed for updateStrategy 'RollingUpdate'",
                "spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: \"Keep\": supported values: \"Delete\", \"Retain\"",
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0",
                "spec.schedule: Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
                "spec.startingDeadlineSeconds: Invalid value: -5: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn cron_schedules_parse_and_time_zones_exist() {
        let check = |schedule: &str, zone: Option<&str>| {
            let mut spec = json!({"schedule": schedule, "concurrencyPolicy": "Allow"});
            if let Some(z) = zone {
                spec["timeZone"] = json!(z);
            }
            let mut causes = Vec::new();
            cron_job(&json!({ "spec": spec }), &mut causes);
            crate::field_rules::cause_lines(&causes)
        };
        assert!(check("*/5 9-17 * * mon-fri", Some("Europe/Berlin")).is_empty());
        assert!(check("@hourly", None).is_empty());
        assert_eq!(
            check("* * * *", None),
            vec![
                "spec.schedule: Invalid value: \"* * * *\": expected exactly 5 fields, found 4: [* * * *]"
            ]
        );
        assert_eq!(
            check("0 0 * * *", Some("Mars/Olympus_Mons")),
            vec![
                "spec.timeZone: Invalid value: \"Mars/Olympus_Mons\": unknown time zone Mars/Olympus_Mons"
            ]
        );
        assert_eq!(
            check("0 0 * * *", Some("../etc")),
            vec!["spec.timeZone: Invalid value: \"../etc\": unknown time zone ../etc"]
        );
        assert_eq!(
            check("0 0 * * *", Some("local")),
            vec![
                "spec.timeZone: Invalid value: \"local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
            ]
        );
        assert_eq!(
            check("0 0 * * *", Some("")),
            vec!["spec.timeZone: Invalid value: \"\": timeZone must be nil or non-empty string"]
        );
    }
}
