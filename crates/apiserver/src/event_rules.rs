//! Upstream's validation of Events (`ValidateEventCreate`): the legacy rules
//! every Event meets, and the strict ones of `events.k8s.io/v1`. Both forms
//! are checked in upstream's internal field names (`involvedObject`,
//! `message`, `firstTimestamp`), which is how its messages name them.

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{set, text};

/// Longest `reportingInstance`, `action` and `reason`.
const SHORT_LIMIT: usize = 128;
/// Longest message (`note` in `events.k8s.io/v1`).
const NOTE_LIMIT: usize = 1024;

/// The fields of an Event that the two API versions name differently, read
/// from either.
struct EventFields<'a> {
    regarding: Option<&'a Value>,
    message: Option<&'a str>,
    reporting: Option<&'a str>,
    /// How the reporting controller's field is named in messages.
    reporting_field: &'static str,
}

/// Checks an Event; `strict` for `events.k8s.io/v1`.
pub(crate) fn event(obj: &Value, strict: bool, causes: &mut Vec<Cause>) {
    let fields = if strict {
        EventFields {
            regarding: obj.get("regarding"),
            message: text(obj, "note"),
            reporting: text(obj, "reportingController"),
            reporting_field: "reportingController",
        }
    } else {
        EventFields {
            regarding: obj.get("involvedObject"),
            message: text(obj, "message"),
            reporting: text(obj, "reportingComponent"),
            reporting_field: "reportingComponent",
        }
    };
    legacy(obj, &fields, causes);
    if !strict {
        return;
    }
    if !set(obj, "eventTime") {
        causes.push(Cause::required("eventTime", ""));
    }
    if let Some(series) = obj.get("series").filter(|s| s.is_object()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            causes.push(Cause::invalid(
                "series.count",
                &json!(""),
                "should be at least 2",
            ));
        }
        if !set(series, "lastObservedTime") {
            causes.push(Cause::required("series.lastObservedTime", ""));
        }
    }
    let ty = text(obj, "type").unwrap_or("");
    if ty != "Normal" && ty != "Warning" {
        causes.push(Cause::invalid(
            "type",
            &json!(""),
            format!("has invalid value: {ty}"),
        ));
    }
    for (key, field) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
    ] {
        if set(obj, key) {
            causes.push(Cause::invalid(field, &json!(""), "needs to be unset"));
        }
    }
    if obj
        .get("deprecatedCount")
        .and_then(Value::as_i64)
        .is_some_and(|c| c != 0)
    {
        causes.push(Cause::invalid("count", &json!(""), "needs to be unset"));
    }
    let source = obj.get("deprecatedSource");
    let source_set = ["component", "host"].iter().any(|k| {
        source
            .and_then(|s| text(s, k))
            .is_some_and(|v| !v.is_empty())
    });
    if source_set {
        causes.push(Cause::invalid("source", &json!(""), "needs to be unset"));
    }
}

/// The rules every Event meets: the namespace agrees with the object's,
/// and an Event with an `eventTime` (a "new" one) says who reported what.
fn legacy(obj: &Value, f: &EventFields, causes: &mut Vec<Cause>) {
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved = f.regarding.and_then(|r| text(r, "namespace")).unwrap_or("");
    let mismatch = |causes: &mut Vec<Cause>| {
        causes.push(Cause::invalid(
            "involvedObject.namespace",
            &json!(involved),
            "does not match event.namespace",
        ));
    };
    if !set(obj, "eventTime") {
        let agrees = if involved.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved
        };
        if !agrees {
            mismatch(causes);
        }
        return;
    }
    if involved.is_empty() && namespace != "default" && namespace != "kube-system" {
        mismatch(causes);
    }
    let reporting = f.reporting.unwrap_or("");
    if reporting.is_empty() {
        causes.push(Cause::required(f.reporting_field, ""));
    }
    for msg in names::qualified_name(reporting) {
        causes.push(Cause::invalid(f.reporting_field, &json!(reporting), msg));
    }
    for (key, value) in [
        ("reportingInstance", text(obj, "reportingInstance")),
        ("action", text(obj, "action")),
        ("reason", text(obj, "reason")),
    ] {
        let value = value.unwrap_or("");
        if value.is_empty() {
            causes.push(Cause::required(key, ""));
        }
        if value.len() > SHORT_LIMIT {
            causes.push(Cause::invalid(
                key,
                &json!(""),
                format!("can have at most {SHORT_LIMIT} characters"),
            ));
        }
    }
    if f.message.is_some_and(|m| m.len() > NOTE_LIMIT) {
        causes.push(Cause::invalid(
            "message",
            &json!(""),
            format!("can have at most {NOTE_LIMIT} characters"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines;

    fn check(obj: Value, strict: bool) -> Vec<String> {
        let mut causes = Vec::new();
        event(&obj, strict, &mut causes);
        cause_lines(&causes)
    }

    #[test]
    fn legacy_events_agree_with_their_object_namespace() {
        let ev = |ns: &str, involved: Value| json!({"metadata": {"namespace": ns}, "involvedObject": involved, "reason": "Started"});
        assert!(check(ev("web", json!({"namespace": "web"})), false).is_empty());
        // A cluster-scoped object's Events live in `default`.
        assert!(check(ev("default", json!({"kind": "Node"})), false).is_empty());
        assert_eq!(
            check(ev("web", json!({"namespace": "other"})), false),
            vec![
                "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
            ]
        );
        // A new-style core Event names who reported what.
        let mut new = ev("web", json!({"namespace": "web"}));
        new["eventTime"] = json!("2026-12-06T10:00:00.000000Z");
        new["message"] = json!("x".repeat(1025));
        assert_eq!(
            check(new, false),
            vec![
                "reportingComponent: Required value",
                "reportingComponent: Invalid value: \"\": name part must be non-empty",
                "reportingInstance: Required value",
                "action: Required value",
                "message: Invalid value: \"\": can have at most 1024 characters",
            ]
        );
    }

    #[test]
    fn events_api_events_are_held_to_the_strict_rules() {
        let good = json!({
            "metadata": {"namespace": "web"}, "eventTime": "2026-12-06T10:00:00.000000Z",
            "regarding": {"namespace": "web"}, "reportingController": "example.com/ctl",
            "reportingInstance": "ctl-1", "action": "Scale", "reason": "Scaled", "type": "Normal",
        });
        assert!(check(good.clone(), true).is_empty());
        let mut bad = good;
        bad["type"] = json!("Fine");
        bad["series"] = json!({"count": 1});
        bad["deprecatedCount"] = json!(3);
        bad["deprecatedSource"] = json!({"component": "old"});
        assert_eq!(
            check(bad, true),
            vec![
                "series.count: Invalid value: \"\": should be at least 2",
                "series.lastObservedTime: Required value",
                "type: Invalid value: \"\": has invalid value: Fine",
                "count: Invalid value: \"\": needs to be unset",
                "source: Invalid value: \"\": needs to be unset",
            ]
        );
    }
}
