//! Projected volumes: ServiceAccount tokens, ConfigMaps, Secrets and
//! downward API fields in one directory. The token is requested bound to
//! the pod (so it dies with it) and renewed once 80% of its life has
//! passed, as the kubelet does.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use k8s_openapi::api::core::v1::{
    KeyToPath, Pod, ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection,
};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::projection::project;
use super::volumes::{data_of, downward_field};
use crate::AgentError;

/// Seconds since the epoch.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Whether a token written earlier still has a fifth of its life left.
fn fresh(token: &str) -> bool {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let Some(c) = claims else {
        return false;
    };
    match (c["iat"].as_i64(), c["exp"].as_i64()) {
        (Some(iat), Some(exp)) if exp > iat => now() < iat + (exp - iat) * 4 / 5,
        _ => false,
    }
}

async fn token_for(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
    target: &Path,
) -> Result<String, AgentError> {
    if let Ok(existing) = std::fs::read_to_string(target.join(&projection.path))
        && fresh(&existing)
    {
        return Ok(existing);
    }
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let audiences: Vec<&String> = projection
        .audience
        .iter()
        .filter(|a| !a.is_empty())
        .collect();
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences,
            "expirationSeconds": projection.expiration_seconds.unwrap_or(3600),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid}}});
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let answer: Value = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| AgentError::Config(format!("no token for service account {account:?}")))
}

/// Writes one projected volume into `target`.
pub async fn write(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    volume: &ProjectedVolumeSource,
    target: &Path,
) -> Result<(), AgentError> {
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut items: Vec<KeyToPath> = Vec::new();
    let mut add = |path: &str, bytes: Vec<u8>, mode: Option<i32>| {
        data.insert(path.to_owned(), bytes);
        items.push(KeyToPath {
            key: path.to_owned(),
            path: path.to_owned(),
            mode,
        });
    };
    for source in volume.sources.iter().flatten() {
        if let Some(t) = &source.service_account_token {
            let token = token_for(client, ns, pod, t, target).await?;
            add(&t.path, token.into_bytes(), None);
        }
        let keyed = [
            source
                .config_map
                .as_ref()
                .map(|c| ("ConfigMap", c.name.clone(), c.items.as_ref(), c.optional)),
            source
                .secret
                .as_ref()
                .map(|s| ("Secret", s.name.clone(), s.items.as_ref(), s.optional)),
        ];
        for (kind, name, wanted, optional) in keyed.into_iter().flatten() {
            match data_of(client, ns, kind, &name).await? {
                Some(values) => match wanted {
                    Some(wanted) => {
                        for i in wanted {
                            if let Some(v) = values.get(&i.key) {
                                add(&i.path, v.clone(), i.mode);
                            }
                        }
                    }
                    None => {
                        for (k, v) in values {
                            add(&k, v, None);
                        }
                    }
                },
                None if optional.unwrap_or(false) => {}
                None => {
                    return Err(AgentError::Config(format!(
                        "{} {name:?} not found",
                        kind.to_lowercase()
                    )));
                }
            }
        }
        if let Some(d) = &source.downward_api {
            for item in d.items.iter().flatten() {
                let value = item
                    .field_ref
                    .as_ref()
                    .and_then(|f| downward_field(pod, &f.field_path));
                if let Some(value) = value {
                    add(&item.path, value.into_bytes(), item.mode);
                }
            }
        }
    }
    project(target, &data, Some(&items), volume.default_mode)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(iat: i64, exp: i64) -> String {
        let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            b(json!({"alg": "ES256"})),
            b(json!({"iat": iat, "exp": exp}))
        )
    }

    #[test]
    fn tokens_are_renewed_after_four_fifths_of_their_life() {
        let t = now();
        assert!(fresh(&token(t - 100, t + 3500)));
        assert!(!fresh(&token(t - 3000, t + 600)));
        assert!(!fresh(&token(t - 4000, t - 1)));
        assert!(!fresh("not a token"));
    }
}
