//! The columns and cells of each built-in kind, after upstream's printers.

use serde_json::{Value, json};

use super::{Column, age, col, default_cells};
use crate::object::{self, Object};
use crate::registry::ResourceInfo;

type Cells = fn(&Object) -> Vec<Value>;

const NAME: Column = col(
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn s<'a>(o: &'a Object, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn n(o: &Object, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn len(o: &Object, ptr: &str) -> usize {
    match o.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn name(o: &Object) -> Value {
    json!(object::name(o))
}

fn created(o: &Object) -> Value {
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

fn pod_cells(o: &Object) -> Vec<Value> {
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

fn node_cells(o: &Object) -> Vec<Value> {
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

fn service_cells(o: &Object) -> Vec<Value> {
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
    let selector: Vec<String> = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
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

fn deployment_cells(o: &Object) -> Vec<Value> {
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

fn replicaset_cells(o: &Object) -> Vec<Value> {
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

fn statefulset_cells(o: &Object) -> Vec<Value> {
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

fn daemonset_cells(o: &Object) -> Vec<Value> {
    let selector: Vec<String> = o
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
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

fn job_cells(o: &Object) -> Vec<Value> {
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

fn cronjob_cells(o: &Object) -> Vec<Value> {
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

fn event_cells(o: &Object) -> Vec<Value> {
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

/// The columns and cell function of a resource.
pub(super) fn for_resource(info: &ResourceInfo) -> (Vec<Column>, Cells) {
    let wide = |name: &'static str| col(name, "string", 1, "");
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => (
            vec![
                NAME,
                col(
                    "Ready",
                    "string",
                    0,
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                col(
                    "Status",
                    "string",
                    0,
                    "The aggregate status of the containers in this pod.",
                ),
                col(
                    "Restarts",
                    "string",
                    0,
                    "The number of times the containers in this pod have been restarted.",
                ),
                AGE,
                wide("IP"),
                wide("Node"),
                wide("Nominated Node"),
                wide("Readiness Gates"),
            ],
            pod_cells,
        ),
        ("", "namespaces") => (
            vec![
                NAME,
                col("Status", "string", 0, "The status of the namespace"),
                AGE,
            ],
            |o| vec![name(o), json!(s(o, "/status/phase")), created(o)],
        ),
        ("", "configmaps") => (
            vec![
                NAME,
                col("Data", "string", 0, "Number of data in configmap"),
                AGE,
            ],
            |o| {
                vec![
                    name(o),
                    json!(len(o, "/data") + len(o, "/binaryData")),
                    created(o),
                ]
            },
        ),
        ("", "secrets") => (
            vec![
                NAME,
                col("Type", "string", 0, "The type of the secret"),
                col("Data", "string", 0, "Number of data in the secret"),
                AGE,
            ],
            |o| {
                vec![
                    name(o),
                    json!(s(o, "/type")),
                    json!(len(o, "/data")),
                    created(o),
                ]
            },
        ),
        ("", "serviceaccounts") => (
            vec![NAME, col("Secrets", "string", 0, "Number of secrets"), AGE],
            |o| vec![name(o), json!(len(o, "/secrets")), created(o)],
        ),
        ("", "nodes") => (
            vec![
                NAME,
                col("Status", "string", 0, "The status of the node"),
                col("Roles", "string", 0, "The roles of the node"),
                AGE,
                col(
                    "Version",
                    "string",
                    0,
                    "Kubelet Version reported by the node.",
                ),
                wide("Internal-IP"),
                wide("External-IP"),
                wide("OS-Image"),
                wide("Kernel-Version"),
                wide("Container-Runtime"),
            ],
            node_cells,
        ),
        ("", "services") => (
            vec![
                NAME,
                col("Type", "string", 0, "The type of the service."),
                col("Cluster-IP", "string", 0, "The cluster IP of the service."),
                col(
                    "External-IP",
                    "string",
                    0,
                    "The external IPs of the service.",
                ),
                col("Port(s)", "string", 0, "The ports of the service."),
                AGE,
                wide("Selector"),
            ],
            service_cells,
        ),
        ("", "endpoints") => (
            vec![
                NAME,
                col("Endpoints", "string", 0, "Endpoints of the service"),
                AGE,
            ],
            |o| {
                let eps: Vec<String> = o
                    .pointer("/subsets")
                    .and_then(Value::as_array)
                    .map(|subsets| {
                        subsets
                            .iter()
                            .flat_map(|ss| {
                                let ports: Vec<i64> = ss
                                    .get("ports")
                                    .and_then(Value::as_array)
                                    .map(|p| {
                                        p.iter()
                                            .filter_map(|x| x.get("port").and_then(Value::as_i64))
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                let ips: Vec<String> = ss
                                    .get("addresses")
                                    .and_then(Value::as_array)
                                    .map(|a| {
                                        a.iter()
                                            .filter_map(|x| {
                                                x.get("ip")
                                                    .and_then(Value::as_str)
                                                    .map(str::to_owned)
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                ips.into_iter()
                                    .flat_map(move |ip| {
                                        let ports = ports.clone();
                                        ports.into_iter().map(move |p| format!("{ip}:{p}"))
                                    })
                                    .collect::<Vec<_>>()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    name(o),
                    json!(if eps.is_empty() {
                        "<none>".to_owned()
                    } else {
                        eps.join(",")
                    }),
                    created(o),
                ]
            },
        ),
        ("", "events") => (
            vec![
                col("Last Seen", "string", 0, ""),
                col("Type", "string", 0, ""),
                col("Reason", "string", 0, ""),
                col("Object", "string", 0, ""),
                col("Message", "string", 0, ""),
            ],
            event_cells,
        ),
        ("", "persistentvolumeclaims") => (
            vec![
                NAME,
                col("Status", "string", 0, ""),
                col("Volume", "string", 0, ""),
                AGE,
            ],
            |o| {
                vec![
                    name(o),
                    json!(s(o, "/status/phase")),
                    json!(s(o, "/spec/volumeName")),
                    created(o),
                ]
            },
        ),
        ("", "persistentvolumes") => (
            vec![
                NAME,
                col("Status", "string", 0, ""),
                col("Claim", "string", 0, ""),
                AGE,
            ],
            |o| {
                let claim = if s(o, "/spec/claimRef/name").is_empty() {
                    String::new()
                } else {
                    format!(
                        "{}/{}",
                        s(o, "/spec/claimRef/namespace"),
                        s(o, "/spec/claimRef/name")
                    )
                };
                vec![
                    name(o),
                    json!(s(o, "/status/phase")),
                    json!(claim),
                    created(o),
                ]
            },
        ),
        ("apps", "deployments") => (
            vec![
                NAME,
                col("Ready", "string", 0, "Number of the pod with ready state"),
                col(
                    "Up-to-date",
                    "string",
                    0,
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                col(
                    "Available",
                    "string",
                    0,
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                AGE,
                wide("Containers"),
                wide("Images"),
                wide("Selector"),
            ],
            deployment_cells,
        ),
        ("apps", "replicasets") | ("", "replicationcontrollers") => (
            vec![
                NAME,
                col("Desired", "integer", 0, "Number of desired pods."),
                col("Current", "integer", 0, "Number of actually running pods."),
                col("Ready", "integer", 0, "Number of ready pods."),
                AGE,
                wide("Containers"),
                wide("Images"),
                wide("Selector"),
            ],
            replicaset_cells,
        ),
        ("apps", "statefulsets") => (
            vec![
                NAME,
                col("Ready", "string", 0, "Number of the pod with ready state"),
                AGE,
                wide("Containers"),
                wide("Images"),
            ],
            statefulset_cells,
        ),
        ("apps", "daemonsets") => (
            vec![
                NAME,
                col("Desired", "integer", 0, ""),
                col("Current", "integer", 0, ""),
                col("Ready", "integer", 0, ""),
                col("Up-to-date", "integer", 0, ""),
                col("Available", "integer", 0, ""),
                col("Node Selector", "string", 0, ""),
                AGE,
                wide("Containers"),
                wide("Images"),
                wide("Selector"),
            ],
            daemonset_cells,
        ),
        ("batch", "jobs") => (
            vec![
                NAME,
                col("Status", "string", 0, ""),
                col("Completions", "string", 0, ""),
                col("Duration", "string", 0, ""),
                AGE,
                wide("Containers"),
                wide("Images"),
                wide("Selector"),
            ],
            job_cells,
        ),
        ("batch", "cronjobs") => (
            vec![
                NAME,
                col("Schedule", "string", 0, ""),
                col("Timezone", "string", 0, ""),
                col("Suspend", "boolean", 0, ""),
                col("Active", "integer", 0, ""),
                col("Last Schedule", "string", 0, ""),
                AGE,
            ],
            cronjob_cells,
        ),
        ("coordination.k8s.io", "leases") => {
            (vec![NAME, col("Holder", "string", 0, ""), AGE], |o| {
                vec![name(o), json!(s(o, "/spec/holderIdentity")), created(o)]
            })
        }
        _ => (
            vec![
                NAME,
                col(
                    "Created At",
                    "date",
                    0,
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                ),
            ],
            default_cells,
        ),
    }
}
