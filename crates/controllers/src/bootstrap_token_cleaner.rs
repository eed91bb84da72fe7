//! The bootstrap token cleaner: deletes the Secrets of bootstrap tokens
//! whose `expiration` has passed, as upstream's tokencleaner.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kybern_apimachinery::bootstrap_token::{NAMESPACE, SECRET_TYPE, expired};

use crate::ControllerError;

/// How often expirations are checked.
const PERIOD: Duration = Duration::from_secs(10);

/// Runs the cleaner until the process ends.
pub async fn run(client: kube::Client) {
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = clean(&api).await {
            tracing::warn!(error = %e, "cleaning bootstrap tokens failed");
        }
    }
}

async fn clean(api: &Api<Secret>) -> Result<(), ControllerError> {
    let now = std::time::SystemTime::now();
    for secret in api.list(&ListParams::default()).await?.items {
        if secret.type_.as_deref() != Some(SECRET_TYPE) {
            continue;
        }
        let expiration = secret
            .data
            .as_ref()
            .and_then(|d| d.get("expiration"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        if !expired(expiration.as_deref(), now) {
            continue;
        }
        let name = secret.metadata.name.clone().unwrap_or_default();
        tracing::info!(secret = %name, "deleting expired bootstrap token");
        // Only the Secret that was read: one renewed meanwhile stays.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                resource_version: secret.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
