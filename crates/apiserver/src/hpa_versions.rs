//! HorizontalPodAutoscaler conversion between autoscaling/v1 and the stored
//! autoscaling/v2, as upstream converts: v1's CPU target and current use
//! are v2's CPU utilization metric, and what v1 cannot hold (other metrics,
//! `behavior`, conditions) travels in upstream's
//! `autoscaling.alpha.kubernetes.io/*` annotations.

use serde_json::{Map, Value, json};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["averageUtilization"].is_i64()
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    meta.as_object_mut()?
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

/// Takes the JSON held in annotation `key`, removing it.
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    let notes = meta.get_mut("annotations")?.as_object_mut()?;
    let text = notes.remove(key)?;
    if notes.is_empty() {
        meta.remove("annotations");
    }
    serde_json::from_str(text.as_str()?).ok()
}

/// A v2 metric target or status value as v1's flat fields, prefixed.
fn flat(prefix: &str, v: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (v2, v1) in [
        ("averageUtilization", "AverageUtilization"),
        ("averageValue", "AverageValue"),
        ("value", "Value"),
    ] {
        if let Some(x) = v.get(v2).filter(|x| !x.is_null()) {
            out.insert(format!("{prefix}{v1}"), x.clone());
        }
    }
    out
}

/// v1's flat fields with `prefix` as a v2 target (with its type) or status.
fn nested(prefix: &str, v: &Value, with_type: bool) -> Value {
    let mut out = Map::new();
    for (v2, v1, kind) in [
        ("averageUtilization", "AverageUtilization", "Utilization"),
        ("averageValue", "AverageValue", "AverageValue"),
        ("value", "Value", "Value"),
    ] {
        if let Some(x) = v.get(format!("{prefix}{v1}")).filter(|x| !x.is_null()) {
            out.insert(v2.into(), x.clone());
            if with_type {
                out.entry("type").or_insert_with(|| json!(kind));
            }
        }
    }
    Value::Object(out)
}

/// The field that holds a metric of type `t`, in both versions.
pub(crate) fn metric_key(t: &str) -> Option<&'static str> {
    Some(match t {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => return None,
    })
}

/// One v2 metric (spec when `spec`, else status) in v1's annotation form.
fn metric_to_v1(m: &Value, spec: bool) -> Value {
    // v1 prefixes the same word to its flat fields: `targetAverageValue`.
    let part = if spec { "target" } else { "current" };
    let t = m["type"].as_str().unwrap_or_default();
    let mut out = json!({"type": t});
    let Some(key) = metric_key(t) else {
        return out;
    };
    let src = &m[key];
    let mut b = flat(part, &src[part]);
    if matches!(t, "Resource" | "ContainerResource") {
        b.insert("name".into(), src["name"].clone());
        if t == "ContainerResource" {
            b.insert("container".into(), src["container"].clone());
        }
    } else {
        b.insert("metricName".into(), src["metric"]["name"].clone());
        if let Some(sel) = src["metric"].get("selector") {
            let field = if t == "External" {
                "metricSelector"
            } else {
                "selector"
            };
            b.insert(field.into(), sel.clone());
        }
        if t == "Object" {
            b.insert("target".into(), src["describedObject"].clone());
        }
    }
    out[key] = Value::Object(b);
    out
}

/// One v1 annotation metric back in v2's form.
fn metric_to_v2(m: &Value, spec: bool) -> Value {
    // v1 prefixes the same word to its flat fields: `targetAverageValue`.
    let part = if spec { "target" } else { "current" };
    let t = m["type"].as_str().unwrap_or_default();
    let mut out = json!({"type": t});
    let Some(key) = metric_key(t) else {
        return out;
    };
    let src = &m[key];
    let mut b = Map::new();
    b.insert(part.into(), nested(part, src, spec));
    match t {
        "Resource" | "ContainerResource" => {
            b.insert("name".into(), src["name"].clone());
            if t == "ContainerResource" {
                b.insert("container".into(), src["container"].clone());
            }
        }
        _ => {
            let sel = if t == "External" {
                "metricSelector"
            } else {
                "selector"
            };
            let mut metric = json!({"name": src["metricName"]});
            if let Some(s) = src.get(sel) {
                metric["selector"] = s.clone();
            }
            b.insert("metric".into(), metric);
            if t == "Object" {
                b.insert("describedObject".into(), src["target"].clone());
            }
        }
    }
    out[key] = Value::Object(b);
    out
}

/// Stores a v1 object as v2 (no change to an object already in v2).
pub fn to_v2(obj: &mut Value) {
    if obj["apiVersion"] != "autoscaling/v1" {
        return;
    }
    obj["apiVersion"] = json!("autoscaling/v2");
    let mut metrics: Vec<Value> = Vec::new();
    if let Some(cpu) = obj["spec"]
        .as_object_mut()
        .and_then(|s| s.remove("targetCPUUtilizationPercentage"))
        .filter(|v| !v.is_null())
    {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": cpu}}}));
    }
    if let Some(Value::Array(more)) = take_annotation(obj, METRICS) {
        metrics.extend(more.iter().map(|m| metric_to_v2(m, true)));
    }
    if !metrics.is_empty() && obj["spec"].is_object() {
        obj["spec"]["metrics"] = Value::Array(metrics);
    }
    if let Some(b) = take_annotation(obj, BEHAVIOR)
        && obj["spec"].is_object()
    {
        obj["spec"]["behavior"] = b;
    }
    let mut current: Vec<Value> = Vec::new();
    let conditions = take_annotation(obj, CONDITIONS);
    let more = take_annotation(obj, CURRENT_METRICS);
    let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(cpu) = status
        .remove("currentCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        current.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": cpu}}}));
    }
    if let Some(Value::Array(more)) = more {
        current.extend(more.iter().map(|m| metric_to_v2(m, false)));
    }
    if !current.is_empty() {
        status.insert("currentMetrics".into(), Value::Array(current));
    }
    if let Some(c) = conditions {
        status.insert("conditions".into(), c);
    }
    status.entry("desiredReplicas").or_insert_with(|| json!(0));
}

/// Shows a stored v2 object as v1.
pub fn to_v1(obj: &mut Value) {
    if obj["apiVersion"] != "autoscaling/v2" {
        return;
    }
    obj["apiVersion"] = json!("autoscaling/v1");
    let spec_metrics = obj["spec"]
        .as_object_mut()
        .and_then(|s| s.remove("metrics"))
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let mut others = Vec::new();
    for m in &spec_metrics {
        if is_cpu_utilization(m) && obj["spec"].get("targetCPUUtilizationPercentage").is_none() {
            obj["spec"]["targetCPUUtilizationPercentage"] =
                m["resource"]["target"]["averageUtilization"].clone();
        } else {
            others.push(metric_to_v1(m, true));
        }
    }
    let behavior = obj["spec"]
        .as_object_mut()
        .and_then(|s| s.remove("behavior"));
    let status = obj.get_mut("status").and_then(Value::as_object_mut);
    let (mut current_others, mut conditions) = (Vec::new(), None);
    if let Some(status) = status {
        for m in status
            .remove("currentMetrics")
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default()
        {
            let cpu = m["type"] == "Resource"
                && m["resource"]["name"] == "cpu"
                && m["resource"]["current"]["averageUtilization"].is_i64();
            if cpu && !status.contains_key("currentCPUUtilizationPercentage") {
                status.insert(
                    "currentCPUUtilizationPercentage".into(),
                    m["resource"]["current"]["averageUtilization"].clone(),
                );
            } else {
                current_others.push(metric_to_v1(&m, false));
            }
        }
        conditions = status.remove("conditions").filter(|c| !c.is_null());
    }
    let Some(notes) = annotations(obj) else {
        return;
    };
    let mut put = |key: &str, v: Value| {
        notes.insert(key.into(), json!(v.to_string()));
    };
    if !others.is_empty() {
        put(METRICS, Value::Array(others));
    }
    if !current_others.is_empty() {
        put(CURRENT_METRICS, Value::Array(current_others));
    }
    if let Some(c) = conditions {
        put(CONDITIONS, c);
    }
    if let Some(b) = behavior.filter(|b| !b.is_null()) {
        put(BEHAVIOR, b);
    }
    if notes.is_empty()
        && let Some(meta) = obj["metadata"].as_object_mut()
    {
        meta.remove("annotations");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_cpu_target_is_a_v2_utilization_metric_and_back() {
        let mut hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"},
            "spec": {"maxReplicas": 4, "minReplicas": 1, "targetCPUUtilizationPercentage": 60,
                "scaleTargetRef": {"kind": "Deployment", "name": "web"}},
            "status": {"currentReplicas": 1, "desiredReplicas": 2,
                "currentCPUUtilizationPercentage": 75}});
        let original = hpa.clone();
        to_v2(&mut hpa);
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(
            hpa["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60}}}])
        );
        assert_eq!(
            hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            75
        );
        assert!(hpa["spec"].get("targetCPUUtilizationPercentage").is_none());
        to_v1(&mut hpa);
        assert_eq!(hpa, original);
    }

    #[test]
    fn what_v1_cannot_hold_travels_in_annotations() {
        let mut hpa = json!({"apiVersion": "autoscaling/v2", "metadata": {"name": "h"},
            "spec": {"maxReplicas": 4,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"},
                        "target": {"type": "AverageValue", "averageValue": "10"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"desiredReplicas": 1, "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let original = hpa.clone();
        to_v1(&mut hpa);
        let notes = &hpa["metadata"]["annotations"];
        let metrics: Value =
            serde_json::from_str(notes[METRICS].as_str().expect("metrics")).expect("json");
        assert_eq!(
            metrics[0],
            json!({"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}})
        );
        assert_eq!(metrics[1]["pods"]["metricName"], "qps");
        assert!(notes[BEHAVIOR].as_str().is_some_and(|b| b.contains("60")));
        assert!(hpa["status"].get("conditions").is_none());
        assert!(hpa["spec"].get("targetCPUUtilizationPercentage").is_none());
        to_v2(&mut hpa);
        assert_eq!(hpa, original);
    }
}
