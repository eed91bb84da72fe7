//! Objects every cluster starts with: the system namespaces, the system
//! PriorityClasses, the bootstrap RBAC policy and the `default/kubernetes`
//! Service, created once if absent.

use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use crate::server::ApiState;
use crate::strategy;

/// Namespaces upstream creates at start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure(
    state: &ApiState,
    (group, version, plural): (&str, &str, &str),
    mut obj: Value,
) -> Result<(), ApiError> {
    let info = state
        .registry
        .get(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} is not registered")))?;
    strategy::check_type(&info, &mut obj)?;
    strategy::prepare_create(&info, &mut obj)?;
    match state.objects.create(&info, obj).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == StatusReason::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the system namespaces, PriorityClasses, default ClusterRoles and
/// ClusterRoleBindings and the `kubernetes` Service if missing.
pub async fn bootstrap(state: &ApiState, secure_port: u16) -> Result<(), ApiError> {
    for ns in SYSTEM_NAMESPACES {
        ensure(
            state,
            ("", "v1", "namespaces"),
            json!({"metadata": {"name": ns}}),
        )
        .await?;
    }
    for (name, value, description) in crate::priority::SYSTEM_CLASSES {
        let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description,
            "preemptionPolicy": "PreemptLowerPriority"});
        ensure(state, ("scheduling.k8s.io", "v1", "priorityclasses"), class).await?;
    }
    let rbac = crate::authz::rbac::RBAC_GROUP;
    use crate::authz::{controller_policy, policy};
    for role in policy::cluster_roles()
        .into_iter()
        .chain(controller_policy::cluster_roles())
    {
        ensure(state, (rbac, "v1", "clusterroles"), role).await?;
    }
    for binding in policy::cluster_role_bindings()
        .into_iter()
        .chain(controller_policy::cluster_role_bindings())
    {
        ensure(state, (rbac, "v1", "clusterrolebindings"), binding).await?;
    }
    for (role, binding) in controller_policy::kube_system_roles() {
        ensure(state, (rbac, "v1", "roles"), role).await?;
        ensure(state, (rbac, "v1", "rolebindings"), binding).await?;
    }
    ensure(
        state,
        ("", "v1", "services"),
        json!({
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "10.96.0.1",
                "clusterIPs": ["10.96.0.1"],
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}],
            },
        }),
    )
    .await
}
