//! ServiceAccount admission, as upstream's `ServiceAccount` plugin: a new
//! pod runs as `default` unless it names an account, and unless it or its
//! account opts out, every container mounts a projected volume with a
//! bound token, the cluster CA and the namespace at
//! `/var/run/secrets/kubernetes.io/serviceaccount`.

use serde_json::{Value, json};

use crate::object::{self, Object};
use crate::server::ApiState;

/// Where containers find the account's credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Upstream's token lifetime for these volumes (an hour and a little, so a
/// legacy client's caching shows up as the extra 7 s).
const TOKEN_SECONDS: i64 = 3607;

fn volume_name() -> String {
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| {
            crate::strategy::GENERATED_CHARS[*b as usize % crate::strategy::GENERATED_CHARS.len()]
                as char
        })
        .collect();
    format!("kube-api-access-{suffix}")
}

/// The account's `automountServiceAccountToken`, when it exists and says so.
async fn account_automounts(state: &ApiState, namespace: &str, name: &str) -> bool {
    // The cache's copy, as upstream's admission reads its informer's.
    match state
        .cached_or_stored("", "serviceaccounts", namespace, name)
        .await
    {
        Ok(sa) => sa["automountServiceAccountToken"].as_bool() != Some(false),
        Err(_) => true,
    }
}

/// Sets the pod's account and adds the token volume and mounts.
pub async fn admit(state: &ApiState, pod: &mut Object) {
    let namespace = object::namespace(pod).to_owned();
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let account = match spec["serviceAccountName"].as_str() {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => "default".to_owned(),
    };
    spec["serviceAccountName"] = json!(account);
    spec["serviceAccount"] = json!(account);
    if spec["automountServiceAccountToken"].as_bool() == Some(false)
        || !account_automounts(state, &namespace, &account).await
    {
        return;
    }
    let name = volume_name();
    let mounts_path = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH))
    };
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if mounts_path(c) {
                continue;
            }
            let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH});
            match c["volumeMounts"].as_array_mut() {
                Some(m) => m.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
            mounted = true;
        }
    }
    if !mounted {
        return;
    }
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    match spec["volumes"].as_array_mut() {
        Some(v) => v.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
}
