//! The cells of each built-in kind's table row, after upstream's printers.

use serde_json::{Value, json};

use super::age;
use crate::object::{self, Object};

pub(super) fn s<'a>(o: &'a Object, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn n(o: &Object, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn len(o: &Object, ptr: &str) -> usize {
    match o.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// A string map at a JSON pointer as `k=v` pairs (a selector, a node selector).
pub(super) fn key_values(o: &Object, ptr: &str) -> Vec<String> {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn name(o: &Object) -> Value {
    json!(object::name(o))
}

pub(super) fn created(o: &Object) -> Value {
    json!(age(object::meta_str(o, "creationTimestamp")))
}

fn or_none(v: &str) -> Value {
    json!(if v.is_empty() { "<none>" } else { v })
}

fn containers_images(o: &Object, ptr: &str) -> (String, String) {
    let list = o
        .pointer(ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = list
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let images: Vec<&str> = list
        .iter()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .collect();
    (names.join(","), images.join(","))
}

fn selector_string(o: &Object, ptr: &str) -> String {
    match o.pointer(ptr) {
        Some(sel) => kybern_apimachinery::labels::Selector::from_label_selector(sel)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        None => String::new(),
    }
}

pub(super) fn pod_cells(o: &Object) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = len(o, "/spec/containers");
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    let mut status = s(o, "/status/phase").to_owned();
    if !s(o, "/status/reason").is_empty() {
        status = s(o, "/status/reason").to_owned();
    }
    for c in &statuses {
        if let Some(reason) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = reason.to_owned();
        } else if let Some(reason) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            status = reason.to_owned();
        }
    }
    if object::is_deleting(o) {
        status = "Terminating".into();
    }
    if status.is_empty() {
        status = "Pending".into();
    }
    let gates = len(o, "/spec/readinessGates");
    vec![
        name(o),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        created(o),
        or_none(s(o, "/status/podIP")),
        or_none(s(o, "/spec/nodeName")),
        or_none(s(o, "/status/nominatedNodeName")),
        json!(if gates == 0 {
            "<none>".to_owned()
        } else {
            format!("0/{gates}")
        }),
    ]
}

pub(super) fn node_cells(o: &Object) -> Vec<Value> {
    let conditions = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    let mut status = match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let address = |kind: &str| -> String {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some(kind))
            })
            .and_then(|x| x.get("address").and_then(Value::as_str))
            .unwrap_or("")
            .to_owned()
    };
    vec![
        name(o),
        json!(status),
        json!(if roles.is_empty() {
            "<none>".to_owned()
        } else {
            roles.join(",")
        }),
        created(o),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        or_none(&address("InternalIP")),
        or_none(&address("ExternalIP")),
        json!(s(o, "/status/nodeInfo/osImage")),
        json!(s(o, "/status/nodeInfo/kernelVersion")),
        json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

pub(super) fn service_cells(o: &Object) -> Vec<Value> {
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{port}:{np}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let external: Vec<String> = o
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let ty = s(o, "/spec/type");
    let external = if !external.is_empty() {
        external.join(",")
    } else if ty == "LoadBalancer" {
        "<pending>".into()
    } else if ty == "ExternalName" {
        s(o, "/spec/externalName").to_owned()
    } else {
        "<none>".into()
    };
    let selector = key_values(o, "/spec/selector");
    vec![
        name(o),
        json!(if ty.is_empty() { "ClusterIP" } else { ty }),
        or_none(s(o, "/spec/clusterIP")),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".to_owned()
        } else {
            ports.join(",")
        }),
        created(o),
        json!(if selector.is_empty() {
            "<none>".to_owned()
        } else {
            selector.join(",")
        }),
    ]
}

fn workload_wide(o: &Object) -> Vec<Value> {
    let (c, i) = containers_images(o, "/spec/template/spec/containers");
    vec![
        json!(c),
        json!(i),
        json!(selector_string(o, "/spec/selector")),
    ]
}

pub(super) fn deployment_cells(o: &Object) -> Vec<Value> {
    let mut cells = vec![
        name(o),
        json!(format!(
            "{}/{}",
            n(o, "/status/readyReplicas"),
            n(o, "/spec/replicas")
        )),
        json!(n(o, "/status/updatedReplicas")),
        json!(n(o, "/status/availableReplicas")),
        created(o),
    ];
    cells.extend(workload_wide(o));
    cells
}

pub(super) fn replicaset_cells(o: &Object) -> Vec<Value> {
    let mut cells = vec![
        name(o),
        json!(n(o, "/spec/replicas")),
        json!(n(o, "/status/replicas")),
        json!(n(o, "/status/readyReplicas")),
        created(o),
    ];
    cells.extend(workload_wide(o));
    cells
}

pub(super) fn statefulset_cells(o: &Object) -> Vec<Value> {
    let (c, i) = containers_images(o, "/spec/template/spec/containers");
    vec![
        name(o),
        json!(format!(
            "{}/{}",
            n(o, "/status/readyReplicas"),
            n(o, "/spec/replicas")
        )),
        created(o),
        json!(c),
        json!(i),
    ]
}

pub(super) fn daemonset_cells(o: &Object) -> Vec<Value> {
    let selector = key_values(o, "/spec/template/spec/nodeSelector");
    let mut cells = vec![
        name(o),
        json!(n(o, "/status/desiredNumberScheduled")),
        json!(n(o, "/status/currentNumberScheduled")),
        json!(n(o, "/status/numberReady")),
        json!(n(o, "/status/updatedNumberScheduled")),
        json!(n(o, "/status/numberAvailable")),
        json!(if selector.is_empty() {
            "<none>".to_owned()
        } else {
            selector.join(",")
        }),
        created(o),
    ];
    cells.extend(workload_wide(o));
    cells
}

pub(super) fn job_cells(o: &Object) -> Vec<Value> {
    let conditions = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conditions.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    let completions = o
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let duration = match (
        o.pointer("/status/startTime").and_then(Value::as_str),
        o.pointer("/status/completionTime").and_then(Value::as_str),
    ) {
        (Some(start), Some(end)) => match (
            chrono::DateTime::parse_from_rfc3339(start),
            chrono::DateTime::parse_from_rfc3339(end),
        ) {
            (Ok(a), Ok(b)) => super::human_duration((b - a).num_seconds()),
            _ => String::new(),
        },
        (Some(start), None) => age(start),
        _ => String::new(),
    };
    let (c, i) = containers_images(o, "/spec/template/spec/containers");
    vec![
        name(o),
        json!(status),
        json!(format!("{}/{completions}", n(o, "/status/succeeded"))),
        json!(duration),
        created(o),
        json!(c),
        json!(i),
        json!(selector_string(o, "/spec/selector")),
    ]
}

pub(super) fn cronjob_cells(o: &Object) -> Vec<Value> {
    let last = s(o, "/status/lastScheduleTime");
    vec![
        name(o),
        json!(s(o, "/spec/schedule")),
        or_none(s(o, "/spec/timeZone")),
        json!(
            o.pointer("/spec/suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string()
                .replace("true", "True")
                .replace("false", "False")
        ),
        json!(len(o, "/status/active")),
        json!(if last.is_empty() {
            "<none>".to_owned()
        } else {
            age(last)
        }),
        created(o),
    ]
}

pub(super) fn event_cells(o: &Object) -> Vec<Value> {
    let last = [
        s(o, "/lastTimestamp"),
        s(o, "/eventTime"),
        object::meta_str(o, "creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or("");
    vec![
        json!(age(last)),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(format!(
            "{}/{}",
            s(o, "/involvedObject/kind").to_lowercase(),
            s(o, "/involvedObject/name")
        )),
        json!(s(o, "/message")),
    ]
}

/// One metric of an HPA as kubectl prints it: `cpu: 45%/60%`,
/// `memory: 80Mi/100Mi`, `<unknown>` until the controller has measured.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_owned();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let percent = |v: &Value| v.as_i64().map(|p| format!("{p}%"));
    let kind = spec["type"].as_str().unwrap_or_default();
    let Some(key) = crate::hpa_versions::metric_key(kind) else {
        return "<unknown type>".into();
    };
    let target = &spec[key]["target"];
    let current = status.map(|s| &s[key]["current"]);
    let (now, wanted) = if let Some(avg) = text(&target["averageValue"]) {
        let now = current.and_then(|c| text(&c["averageValue"]));
        (now.unwrap_or_else(unknown), avg)
    } else if let Some(value) = text(&target["value"]) {
        let now = current.and_then(|c| text(&c["value"]));
        (now.unwrap_or_else(unknown), value)
    } else {
        let now = current.and_then(|c| percent(&c["averageUtilization"]));
        let wanted = percent(&target["averageUtilization"]).unwrap_or_else(|| "<auto>".into());
        (now.unwrap_or_else(unknown), wanted)
    };
    match kind {
        "Resource" | "ContainerResource" => {
            format!(
                "{}: {now}/{wanted}",
                spec[key]["name"].as_str().unwrap_or_default()
            )
        }
        _ => format!("{now}/{wanted}"),
    }
}

/// A HorizontalPodAutoscaler's row (v2, or v1 with its CPU target).
pub(super) fn hpa_cells(o: &Object) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        s(o, "/spec/scaleTargetRef/kind"),
        s(o, "/spec/scaleTargetRef/name")
    );
    let targets = if let Some(cpu) = o.pointer("/spec/targetCPUUtilizationPercentage") {
        let now = o
            .pointer("/status/currentCPUUtilizationPercentage")
            .and_then(Value::as_i64)
            .map_or("<unknown>".to_owned(), |p| format!("{p}%"));
        format!("cpu: {now}/{cpu}%")
    } else {
        let specs = o.pointer("/spec/metrics").and_then(Value::as_array);
        let statuses = o
            .pointer("/status/currentMetrics")
            .and_then(Value::as_array);
        let all: Vec<String> = specs
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, m)| hpa_metric(m, statuses.and_then(|st| st.get(i))))
            .collect();
        match all.len() {
            0 => "<none>".to_owned(),
            1 | 2 => all.join(", "),
            n => format!("{} + {} more...", all[..2].join(", "), n - 2),
        }
    };
    let min = o
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .map_or(json!("<unset>"), |m| json!(m));
    vec![
        name(o),
        json!(reference),
        json!(targets),
        min,
        json!(n(o, "/spec/maxReplicas")),
        json!(n(o, "/status/currentReplicas")),
        created(o),
    ]
}
