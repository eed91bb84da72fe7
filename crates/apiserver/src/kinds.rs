//! The built-in kinds that have a typed form in k8s-openapi, listed once for
//! every part that needs the types (decoding, OpenAPI schemas).

/// Calls `$callback!` with `(group, version, kind) => type` for every built-in kind.
macro_rules! with_builtin_kinds {
    ($callback:ident ! ( $($args:tt)* )) => {{
        #[allow(unused_imports)]
        use k8s_openapi::api::{
            admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates, coordination, core, discovery, events, networking, node,
            policy, rbac, scheduling, storage,
        };
        #[allow(unused_imports)]
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
        #[allow(unused_imports)]
        use k8s_openapi::kube_aggregator::pkg::apis::apiregistration;
        $callback!($($args)*;
        ("", "v1", "Namespace") => core::v1::Namespace,
        ("", "v1", "Pod") => core::v1::Pod,
        ("", "v1", "Node") => core::v1::Node,
        ("", "v1", "Service") => core::v1::Service,
        ("", "v1", "Endpoints") => core::v1::Endpoints,
        ("", "v1", "ConfigMap") => core::v1::ConfigMap,
        ("", "v1", "Secret") => core::v1::Secret,
        ("", "v1", "ServiceAccount") => core::v1::ServiceAccount,
        ("", "v1", "Event") => core::v1::Event,
        ("", "v1", "PodTemplate") => core::v1::PodTemplate,
        ("", "v1", "ReplicationController") => core::v1::ReplicationController,
        ("", "v1", "LimitRange") => core::v1::LimitRange,
        ("", "v1", "ResourceQuota") => core::v1::ResourceQuota,
        ("", "v1", "PersistentVolume") => core::v1::PersistentVolume,
        ("", "v1", "PersistentVolumeClaim") => core::v1::PersistentVolumeClaim,
        ("apps", "v1", "Deployment") => apps::v1::Deployment,
        ("apps", "v1", "ReplicaSet") => apps::v1::ReplicaSet,
        ("apps", "v1", "StatefulSet") => apps::v1::StatefulSet,
        ("apps", "v1", "DaemonSet") => apps::v1::DaemonSet,
        ("apps", "v1", "ControllerRevision") => apps::v1::ControllerRevision,
        ("batch", "v1", "Job") => batch::v1::Job,
        ("batch", "v1", "CronJob") => batch::v1::CronJob,
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => autoscaling::v1::HorizontalPodAutoscaler,
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => autoscaling::v2::HorizontalPodAutoscaler,
        ("coordination.k8s.io", "v1", "Lease") => coordination::v1::Lease,
        ("events.k8s.io", "v1", "Event") => events::v1::Event,
        ("discovery.k8s.io", "v1", "EndpointSlice") => discovery::v1::EndpointSlice,
        ("policy", "v1", "PodDisruptionBudget") => policy::v1::PodDisruptionBudget,
        ("scheduling.k8s.io", "v1", "PriorityClass") => scheduling::v1::PriorityClass,
        ("node.k8s.io", "v1", "RuntimeClass") => node::v1::RuntimeClass,
        ("networking.k8s.io", "v1", "NetworkPolicy") => networking::v1::NetworkPolicy,
        ("networking.k8s.io", "v1", "Ingress") => networking::v1::Ingress,
        ("networking.k8s.io", "v1", "IngressClass") => networking::v1::IngressClass,
        ("certificates.k8s.io", "v1", "CertificateSigningRequest") => certificates::v1::CertificateSigningRequest,
        ("storage.k8s.io", "v1", "StorageClass") => storage::v1::StorageClass,
        ("storage.k8s.io", "v1", "CSIDriver") => storage::v1::CSIDriver,
        ("storage.k8s.io", "v1", "CSINode") => storage::v1::CSINode,
        ("authentication.k8s.io", "v1", "TokenReview") => authentication::v1::TokenReview,
        ("authentication.k8s.io", "v1", "SelfSubjectReview") => authentication::v1::SelfSubjectReview,
        ("authorization.k8s.io", "v1", "SubjectAccessReview") => authorization::v1::SubjectAccessReview,
        ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => authorization::v1::SelfSubjectAccessReview,
        ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => authorization::v1::LocalSubjectAccessReview,
        ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => authorization::v1::SelfSubjectRulesReview,
        ("rbac.authorization.k8s.io", "v1", "Role") => rbac::v1::Role,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => rbac::v1::ClusterRoleBinding,
        ("apiregistration.k8s.io", "v1", "APIService") => apiregistration::v1::APIService,
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy") => admissionregistration::v1::ValidatingAdmissionPolicy,
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding") => admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration") => admissionregistration::v1::MutatingWebhookConfiguration,
        ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration") => admissionregistration::v1::ValidatingWebhookConfiguration,
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => apiextensions::v1::CustomResourceDefinition,
        )
    }};
}

pub(crate) use with_builtin_kinds;
