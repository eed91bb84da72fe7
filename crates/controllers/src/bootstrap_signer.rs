//! The bootstrap signer, as upstream's: keeps one `jws-kubeconfig-<id>`
//! signature in `kube-public/cluster-info` for every live bootstrap token
//! that allows signing, and none for any other, so that a node joining with
//! a token can tell the cluster-info it fetched without trusting anyone came
//! from a holder of its token.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kybern_apimachinery::bootstrap_token::{
    CLUSTER_INFO, JWS_PREFIX, KUBECONFIG_KEY, NAMESPACE, PUBLIC_NAMESPACE, SECRET_TYPE,
    detached_signature, expired, split,
};

use crate::ControllerError;

/// How often signatures are checked without a change (tokens expire without
/// any event).
const RESYNC: Duration = Duration::from_secs(30);

/// Runs the signer until the process ends.
pub async fn run(client: kube::Client) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let maps: Api<ConfigMap> = Api::namespaced(client, PUBLIC_NAMESPACE);
    let secret_events = watcher::watcher(secrets.clone(), watcher::Config::default())
        .default_backoff()
        .map(|_| ());
    let map_events = watcher::watcher(
        maps.clone(),
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_INFO}")),
    )
    .default_backoff()
    .map(|_| ());
    let mut events = futures::stream::select(secret_events, map_events).boxed();
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => {
                if event.is_none() {
                    return;
                }
                // One pass for everything that has arrived.
                while let Some(Some(())) = events.next().now_or_never() {}
            }
            _ = tick.tick() => {}
        }
        if let Err(e) = sign(&secrets, &maps).await {
            tracing::warn!(error = %e, "signing cluster-info failed");
        }
    }
}

/// A Secret's data field as text.
fn field(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The signature each signing token should have over `kubeconfig`, by key.
pub fn signatures(
    kubeconfig: &str,
    secrets: &[Secret],
    now: std::time::SystemTime,
) -> BTreeMap<String, String> {
    secrets
        .iter()
        .filter(|s| s.type_.as_deref() == Some(SECRET_TYPE))
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| field(s, "usage-bootstrap-signing").as_deref() == Some("true"))
        .filter(|s| !expired(field(s, "expiration").as_deref(), now))
        .filter_map(|s| {
            let (id, secret) = (field(s, "token-id")?, field(s, "token-secret")?);
            // Only well-formed tokens: the key becomes a ConfigMap key.
            split(&format!("{id}.{secret}"))?;
            Some((
                format!("{JWS_PREFIX}{id}"),
                detached_signature(kubeconfig, &id, &secret),
            ))
        })
        .collect()
}

async fn sign(secrets: &Api<Secret>, maps: &Api<ConfigMap>) -> Result<(), ControllerError> {
    let Some(mut info) = maps.get_opt(CLUSTER_INFO).await? else {
        return Ok(());
    };
    let data = info.data.get_or_insert_with(BTreeMap::new);
    let Some(kubeconfig) = data.get(KUBECONFIG_KEY).cloned() else {
        return Ok(());
    };
    let tokens = secrets.list(&ListParams::default()).await?.items;
    let want = signatures(&kubeconfig, &tokens, std::time::SystemTime::now());
    let have: BTreeMap<String, String> = data
        .iter()
        .filter(|(k, _)| k.starts_with(JWS_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if have == want {
        return Ok(());
    }
    data.retain(|k, _| !k.starts_with(JWS_PREFIX));
    data.extend(want.clone());
    tracing::info!(signatures = want.len(), "signing cluster-info");
    // Conditional on the version read; a conflict waits for the next event.
    match maps
        .replace(CLUSTER_INFO, &PostParams::default(), &info)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use kybern_apimachinery::bootstrap_token::signature_valid;

    fn token(id: &str, secret: &str, signing: &str, expiration: Option<&str>) -> Secret {
        let mut fields = vec![
            ("token-id", id),
            ("token-secret", secret),
            ("usage-bootstrap-signing", signing),
        ];
        fields.extend(expiration.map(|at| ("expiration", at)));
        let data = fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Secret {
            type_: Some(SECRET_TYPE.into()),
            data: Some(data),
            ..Secret::default()
        }
    }

    #[test]
    fn only_live_signing_tokens_sign() {
        let now = std::time::SystemTime::now();
        let secrets = [
            token("abcdef", "0123456789abcdef", "true", None),
            token("ghijkl", "0123456789abcdef", "false", None),
            token(
                "mnopqr",
                "0123456789abcdef",
                "true",
                Some("2020-01-01T00:00:00Z"),
            ),
            token("BADID!", "0123456789abcdef", "true", None),
        ];
        let sigs = signatures("config", &secrets, now);
        assert_eq!(
            sigs.keys().collect::<Vec<_>>(),
            ["jws-kubeconfig-abcdef"],
            "{sigs:?}"
        );
        assert!(signature_valid(
            &sigs["jws-kubeconfig-abcdef"],
            "config",
            "abcdef",
            "0123456789abcdef"
        ));
    }
}
