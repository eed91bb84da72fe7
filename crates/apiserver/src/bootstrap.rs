//! Objects every cluster starts with: the system namespaces, the system
//! PriorityClasses, the bootstrap RBAC policy (reconciled at every start) and
//! the `default/kubernetes` Service, created once if absent.

use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use crate::authz::reconcile::{self, Reconciled};
use crate::server::ApiState;
use crate::strategy;

/// Namespaces upstream creates at start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// A built-in resource the server always registers.
fn registered(
    state: &ApiState,
    (group, version, plural): (&str, &str, &str),
) -> Result<std::sync::Arc<crate::registry::ResourceInfo>, ApiError> {
    state
        .registry
        .get(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} is not registered")))
}

async fn ensure(
    state: &ApiState,
    (group, version, plural): (&str, &str, &str),
    mut obj: Value,
) -> Result<(), ApiError> {
    let info = registered(state, (group, version, plural))?;
    strategy::check_type(&info, &mut obj)?;
    strategy::prepare_create(&info, &mut obj)?;
    match state.objects.create(&info, obj).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == StatusReason::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a bootstrap RBAC object, or brings the stored one up to the
/// server's policy (upstream reconciles at every start so that an upgrade's new
/// rules reach clusters created by an older server).
async fn reconcile(
    state: &ApiState,
    (group, version, plural): (&str, &str, &str),
    expected: Value,
) -> Result<(), ApiError> {
    let info = registered(state, (group, version, plural))?;
    let namespace = crate::object::namespace(&expected).to_owned();
    let name = crate::object::name(&expected).to_owned();
    // Another server may be reconciling the same object; a conflict means
    // reading it again.
    for _ in 0..5 {
        let existing = match state.objects.get(&info, &namespace, &name).await {
            Ok(obj) => obj,
            Err(e) if e.reason == StatusReason::NotFound => {
                return ensure(state, (group, version, plural), expected).await;
            }
            Err(e) => return Err(e),
        };
        let revision =
            crate::storage::parse_rv(crate::object::meta_str(&existing, "resourceVersion"))?;
        let is_role = plural.ends_with("roles");
        let decision = if is_role {
            reconcile::role(&expected, &existing)
        } else {
            reconcile::binding(&expected, &existing)
        };
        let written = match decision {
            Reconciled::Unchanged => return Ok(()),
            Reconciled::Update(obj) => state.objects.update(&info, obj, revision).await.map(drop),
            Reconciled::Recreate => match state
                .objects
                .delete(&info, &namespace, &name, revision)
                .await
            {
                Ok(_) => return ensure(state, (group, version, plural), expected).await,
                Err(e) => Err(e),
            },
        };
        match written {
            Ok(()) => {
                tracing::info!(
                    kind = plural,
                    namespace,
                    name,
                    "reconciled bootstrap RBAC object"
                );
                return Ok(());
            }
            Err(e) if e.reason == StatusReason::Conflict || e.reason == StatusReason::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::internal(format!(
        "could not reconcile {plural} {name}: it kept changing"
    )))
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
        reconcile(state, (rbac, "v1", "clusterroles"), role).await?;
    }
    for binding in policy::cluster_role_bindings()
        .into_iter()
        .chain(controller_policy::cluster_role_bindings())
    {
        reconcile(state, (rbac, "v1", "clusterrolebindings"), binding).await?;
    }
    for (role, binding) in controller_policy::namespaced_roles() {
        reconcile(state, (rbac, "v1", "roles"), role).await?;
        reconcile(state, (rbac, "v1", "rolebindings"), binding).await?;
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

/// The kubeconfig cluster-info holds: the cluster and its CA, no users, in
/// the shape kubeadm writes.
pub fn cluster_info_kubeconfig(server_url: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
    )
}

/// Publishes `kube-public/cluster-info` for bootstrap-token discovery: made
/// if missing, rewritten when it names another CA (the bootstrap signer then
/// signs it again). Servers of one cluster differ in their URLs, so a
/// different URL alone is not rewritten (a joining agent keeps the URL it
/// was given).
pub async fn publish_cluster_info(
    state: &ApiState,
    server_url: &str,
    ca_pem: &str,
) -> Result<(), ApiError> {
    use kybern_apimachinery::bootstrap_token::{CLUSTER_INFO, KUBECONFIG_KEY, PUBLIC_NAMESPACE};
    let kubeconfig = cluster_info_kubeconfig(server_url, ca_pem);
    let info = registered(state, ("", "v1", "configmaps"))?;
    let ca_line = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("certificate-authority-data:"))
            .map(str::trim)
            .map(str::to_owned)
    };
    for _ in 0..5 {
        let existing = match state
            .objects
            .get(&info, PUBLIC_NAMESPACE, CLUSTER_INFO)
            .await
        {
            Ok(obj) => obj,
            Err(e) if e.reason == StatusReason::NotFound => {
                let obj = json!({"metadata": {"name": CLUSTER_INFO, "namespace": PUBLIC_NAMESPACE},
                    "data": {KUBECONFIG_KEY: kubeconfig}});
                return ensure(state, ("", "v1", "configmaps"), obj).await;
            }
            Err(e) => return Err(e),
        };
        let stored = existing["data"][KUBECONFIG_KEY]
            .as_str()
            .unwrap_or_default();
        if ca_line(stored).is_some() && ca_line(stored) == ca_line(&kubeconfig) {
            return Ok(());
        }
        let revision =
            crate::storage::parse_rv(crate::object::meta_str(&existing, "resourceVersion"))?;
        let mut updated = existing.clone();
        updated["data"][KUBECONFIG_KEY] = json!(kubeconfig);
        match state.objects.update(&info, updated, revision).await {
            Ok(_) => return Ok(()),
            Err(e) if e.reason == StatusReason::Conflict => {}
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::internal(
        "could not publish cluster-info: it kept changing",
    ))
}
