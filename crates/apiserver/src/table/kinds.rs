//! The columns of each built-in kind's table, after upstream's printers.

use serde_json::{Value, json};

use super::cells::*;
use super::group_cells::*;
use super::{Column, col, default_cells};
use crate::object::Object;
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
            endpoints_cells,
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
                col("Capacity", "string", 0, ""),
                col("Access Modes", "string", 0, ""),
                col("StorageClass", "string", 0, ""),
                col("VolumeAttributesClass", "string", 0, ""),
                AGE,
                wide("VolumeMode"),
            ],
            pvc_cells,
        ),
        ("", "persistentvolumes") => (
            vec![
                NAME,
                col("Capacity", "string", 0, ""),
                col("Access Modes", "string", 0, ""),
                col("Reclaim Policy", "string", 0, ""),
                col("Status", "string", 0, ""),
                col("Claim", "string", 0, ""),
                col("StorageClass", "string", 0, ""),
                col("VolumeAttributesClass", "string", 0, ""),
                col("Reason", "string", 0, ""),
                AGE,
                wide("VolumeMode"),
            ],
            pv_cells,
        ),
        ("discovery.k8s.io", "endpointslices") => (
            vec![
                NAME,
                col("AddressType", "string", 0, ""),
                col("Ports", "string", 0, ""),
                col("Endpoints", "string", 0, ""),
                AGE,
            ],
            endpointslice_cells,
        ),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => (
            vec![
                NAME,
                col("Role", "string", 0, ""),
                AGE,
                wide("Users"),
                wide("Groups"),
                wide("ServiceAccounts"),
            ],
            binding_cells,
        ),
        ("scheduling.k8s.io", "priorityclasses") => (
            vec![
                NAME,
                col("Value", "integer", 0, ""),
                col("Global-Default", "boolean", 0, ""),
                AGE,
                col("PreemptionPolicy", "string", 0, ""),
            ],
            priorityclass_cells,
        ),
        ("policy", "poddisruptionbudgets") => (
            vec![
                NAME,
                col("Min Available", "string", 0, ""),
                col("Max Unavailable", "string", 0, ""),
                col("Allowed Disruptions", "integer", 0, ""),
                AGE,
            ],
            pdb_cells,
        ),
        ("storage.k8s.io", "storageclasses") => (
            vec![
                NAME,
                col("Provisioner", "string", 0, ""),
                col("ReclaimPolicy", "string", 0, ""),
                col("VolumeBindingMode", "string", 0, ""),
                col("AllowVolumeExpansion", "string", 0, ""),
                AGE,
            ],
            storageclass_cells,
        ),
        ("node.k8s.io", "runtimeclasses") => {
            (vec![NAME, col("Handler", "string", 0, ""), AGE], |o| {
                vec![name(o), json!(s(o, "/handler")), created(o)]
            })
        }
        ("networking.k8s.io", "networkpolicies") => (
            vec![NAME, col("Pod-Selector", "string", 0, ""), AGE],
            networkpolicy_cells,
        ),
        ("networking.k8s.io", "ingressclasses") => (
            vec![
                NAME,
                col("Controller", "string", 0, ""),
                col("Parameters", "string", 0, ""),
                AGE,
            ],
            ingressclass_cells,
        ),
        ("networking.k8s.io", "ingresses") => (
            vec![
                NAME,
                col("Class", "string", 0, ""),
                col("Hosts", "string", 0, ""),
                col("Address", "string", 0, ""),
                col("Ports", "string", 0, ""),
                AGE,
            ],
            ingress_cells,
        ),
        ("apps", "controllerrevisions") => (
            vec![
                NAME,
                col("Controller", "string", 0, ""),
                col("Revision", "string", 0, ""),
                AGE,
            ],
            controllerrevision_cells,
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
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations" | "validatingwebhookconfigurations",
        ) => (vec![NAME, col("Webhooks", "integer", 0, ""), AGE], |o| {
            let count = o["webhooks"].as_array().map_or(0, Vec::len);
            vec![name(o), json!(count), created(o)]
        }),
        ("certificates.k8s.io", "certificatesigningrequests") => (
            vec![
                NAME,
                AGE,
                col("SignerName", "string", 0, ""),
                col("Requestor", "string", 0, ""),
                col("RequestedDuration", "string", 0, ""),
                col("Condition", "string", 0, ""),
            ],
            csr_cells,
        ),
        ("autoscaling", "horizontalpodautoscalers") => (
            vec![
                NAME,
                col("Reference", "string", 0, ""),
                col("Targets", "string", 0, ""),
                col("MinPods", "string", 0, ""),
                col("MaxPods", "integer", 0, ""),
                col("Replicas", "integer", 0, ""),
                AGE,
            ],
            hpa_cells,
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

/// A CertificateSigningRequest's row, as kubectl prints it: its conditions
/// (`Pending` without any), with `Issued` once it holds a certificate.
fn csr_cells(o: &Object) -> Vec<Value> {
    let mut conditions: Vec<String> = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "False")
        .filter_map(|c| c["type"].as_str().map(str::to_owned))
        .collect();
    if conditions.is_empty() {
        conditions.push("Pending".into());
    }
    if !s(o, "/status/certificate").is_empty() {
        conditions.push("Issued".into());
    }
    let duration = o
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .map_or_else(
            || "<none>".to_owned(),
            |secs| {
                if secs % 3600 == 0 {
                    format!("{}h", secs / 3600)
                } else if secs % 60 == 0 {
                    format!("{}m", secs / 60)
                } else {
                    format!("{secs}s")
                }
            },
        );
    vec![
        name(o),
        created(o),
        json!(s(o, "/spec/signerName")),
        json!(s(o, "/spec/username")),
        json!(duration),
        json!(conditions.join(",")),
    ]
}
