//! The built-in resources of Kubernetes v1.35 that Kybern serves, as upstream
//! declares them (group, version, kind, plural, scope, short names, categories,
//! subresources).

use super::{ResourceInfo, Scope};

use Scope::{Cluster, Namespaced};

struct Row {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
}

const ALL: &[&str] = &["all"];
const API_EXTENSIONS: &[&str] = &["api-extensions"];
const NONE: &[&str] = &[];
const STATUS: &[&str] = &["status"];
const STATUS_PROXY: &[&str] = &["status", "proxy"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

macro_rules! rows {
    ($( $g:literal $v:literal $k:literal $p:literal $s:ident [$($sn:literal),*] $c:ident $sub:expr ;)*) => {
        &[ $( Row { group: $g, version: $v, kind: $k, plural: $p, scope: $s, short: &[$($sn),*], categories: $c, subresources: $sub }, )* ]
    };
}

const ROWS: &[Row] = rows! {
    "" "v1" "Namespace" "namespaces" Cluster ["ns"] NONE &["status", "finalize"];
    "" "v1" "Pod" "pods" Namespaced ["po"] ALL &["status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach", "portforward", "proxy"];
    "" "v1" "Node" "nodes" Cluster ["no"] NONE STATUS_PROXY;
    "" "v1" "Service" "services" Namespaced ["svc"] ALL STATUS_PROXY;
    "" "v1" "Endpoints" "endpoints" Namespaced ["ep"] NONE NONE;
    "" "v1" "ConfigMap" "configmaps" Namespaced ["cm"] NONE NONE;
    "" "v1" "Secret" "secrets" Namespaced [] NONE NONE;
    "" "v1" "ServiceAccount" "serviceaccounts" Namespaced ["sa"] NONE &["token"];
    "" "v1" "Event" "events" Namespaced ["ev"] NONE NONE;
    "" "v1" "PodTemplate" "podtemplates" Namespaced [] NONE NONE;
    "" "v1" "ReplicationController" "replicationcontrollers" Namespaced ["rc"] ALL STATUS_SCALE;
    "" "v1" "LimitRange" "limitranges" Namespaced ["limits"] NONE NONE;
    "" "v1" "ResourceQuota" "resourcequotas" Namespaced ["quota"] NONE STATUS;
    "" "v1" "PersistentVolume" "persistentvolumes" Cluster ["pv"] NONE STATUS;
    "" "v1" "PersistentVolumeClaim" "persistentvolumeclaims" Namespaced ["pvc"] NONE STATUS;
    "apps" "v1" "Deployment" "deployments" Namespaced ["deploy"] ALL STATUS_SCALE;
    "apps" "v1" "ReplicaSet" "replicasets" Namespaced ["rs"] ALL STATUS_SCALE;
    "apps" "v1" "StatefulSet" "statefulsets" Namespaced ["sts"] ALL STATUS_SCALE;
    "apps" "v1" "DaemonSet" "daemonsets" Namespaced ["ds"] ALL STATUS;
    "apps" "v1" "ControllerRevision" "controllerrevisions" Namespaced [] NONE NONE;
    "batch" "v1" "Job" "jobs" Namespaced [] ALL STATUS;
    "batch" "v1" "CronJob" "cronjobs" Namespaced ["cj"] ALL STATUS;
    "autoscaling" "v1" "HorizontalPodAutoscaler" "horizontalpodautoscalers" Namespaced ["hpa"] ALL STATUS;
    "autoscaling" "v2" "HorizontalPodAutoscaler" "horizontalpodautoscalers" Namespaced ["hpa"] ALL STATUS;
    "coordination.k8s.io" "v1" "Lease" "leases" Namespaced [] NONE NONE;
    "events.k8s.io" "v1" "Event" "events" Namespaced ["ev"] NONE NONE;
    "discovery.k8s.io" "v1" "EndpointSlice" "endpointslices" Namespaced [] NONE NONE;
    "policy" "v1" "PodDisruptionBudget" "poddisruptionbudgets" Namespaced ["pdb"] NONE STATUS;
    "metrics.k8s.io" "v1beta1" "NodeMetrics" "nodes" Cluster [] NONE NONE;
    "metrics.k8s.io" "v1beta1" "PodMetrics" "pods" Namespaced [] NONE NONE;
    "scheduling.k8s.io" "v1" "PriorityClass" "priorityclasses" Cluster ["pc"] NONE NONE;
    "node.k8s.io" "v1" "RuntimeClass" "runtimeclasses" Cluster [] NONE NONE;
    "networking.k8s.io" "v1" "NetworkPolicy" "networkpolicies" Namespaced ["netpol"] NONE NONE;
    "networking.k8s.io" "v1" "Ingress" "ingresses" Namespaced ["ing"] NONE STATUS;
    "networking.k8s.io" "v1" "IngressClass" "ingressclasses" Cluster [] NONE NONE;
    "certificates.k8s.io" "v1" "CertificateSigningRequest" "certificatesigningrequests" Cluster ["csr"] NONE &["status", "approval"];
    "storage.k8s.io" "v1" "StorageClass" "storageclasses" Cluster ["sc"] NONE NONE;
    "storage.k8s.io" "v1" "CSIDriver" "csidrivers" Cluster [] NONE NONE;
    "storage.k8s.io" "v1" "CSINode" "csinodes" Cluster [] NONE NONE;
    "authentication.k8s.io" "v1" "TokenReview" "tokenreviews" Cluster [] NONE NONE;
    "authentication.k8s.io" "v1" "SelfSubjectReview" "selfsubjectreviews" Cluster [] NONE NONE;
    "authorization.k8s.io" "v1" "SubjectAccessReview" "subjectaccessreviews" Cluster [] NONE NONE;
    "authorization.k8s.io" "v1" "SelfSubjectAccessReview" "selfsubjectaccessreviews" Cluster [] NONE NONE;
    "authorization.k8s.io" "v1" "LocalSubjectAccessReview" "localsubjectaccessreviews" Namespaced [] NONE NONE;
    "authorization.k8s.io" "v1" "SelfSubjectRulesReview" "selfsubjectrulesreviews" Cluster [] NONE NONE;
    "rbac.authorization.k8s.io" "v1" "Role" "roles" Namespaced [] NONE NONE;
    "rbac.authorization.k8s.io" "v1" "RoleBinding" "rolebindings" Namespaced [] NONE NONE;
    "rbac.authorization.k8s.io" "v1" "ClusterRole" "clusterroles" Cluster [] NONE NONE;
    "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" "clusterrolebindings" Cluster [] NONE NONE;
    "apiregistration.k8s.io" "v1" "APIService" "apiservices" Cluster [] NONE STATUS;
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicy" "validatingadmissionpolicies" Cluster [] API_EXTENSIONS STATUS;
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicyBinding" "validatingadmissionpolicybindings" Cluster [] API_EXTENSIONS NONE;
    "admissionregistration.k8s.io" "v1" "MutatingWebhookConfiguration" "mutatingwebhookconfigurations" Cluster [] API_EXTENSIONS NONE;
    "admissionregistration.k8s.io" "v1" "ValidatingWebhookConfiguration" "validatingwebhookconfigurations" Cluster [] API_EXTENSIONS NONE;
    "apiextensions.k8s.io" "v1" "CustomResourceDefinition" "customresourcedefinitions" Cluster ["crd", "crds"] NONE STATUS;
};

/// Every built-in resource, one entry per served version.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    ROWS.iter()
        .map(|r| ResourceInfo {
            group: r.group.to_owned(),
            version: r.version.to_owned(),
            kind: r.kind.to_owned(),
            plural: r.plural.to_owned(),
            singular: r.kind.to_lowercase(),
            scope: r.scope,
            short_names: r.short.iter().map(|s| (*s).to_owned()).collect(),
            categories: r.categories.iter().map(|s| (*s).to_owned()).collect(),
            subresources: r.subresources.iter().map(|s| (*s).to_owned()).collect(),
            // autoscaling/v1 and v2 share one store, kept in v2 as upstream does.
            storage_version: if r.group == "autoscaling" {
                "v2".to_owned()
            } else {
                r.version.to_owned()
            },
            custom: None,
        })
        .collect()
}
