//! Each controller's own API identity: a ServiceAccount `kube-system/NAME`
//! and a bound token the manager requests for it and renews before it
//! expires (upstream's `--use-service-account-credentials`), so that a
//! controller can do only what its `system:controller:NAME` role allows.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderValue;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::transport::{Transport, TransportError};

/// The namespace of the controllers' ServiceAccounts.
pub const NAMESPACE: &str = "kube-system";
/// How long a controller's token lives (upstream's 1 hour).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How soon after a failed request for a token the manager asks again.
const RETRY: Duration = Duration::from_secs(5);

/// Why a controller's client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The API refused or failed a request.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// The token is not a valid header value.
    #[error("the API returned an unusable token")]
    BadToken,
}

/// Where the controllers get their API clients.
#[derive(Clone)]
pub struct ControllerClients {
    /// The manager's own client: shared informers, leader election, and
    /// minting the controllers' tokens.
    root: kube::Client,
    /// The connection settings for controller clients, without an identity,
    /// and the connections they all share; `None` runs every controller as
    /// the manager itself.
    accounts: Option<(Arc<kube::Config>, Transport)>,
}

impl std::fmt::Debug for ControllerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClients")
            .field("service_accounts", &self.accounts.is_some())
            .finish()
    }
}

impl ControllerClients {
    /// Every controller uses `client`, the manager's own identity.
    pub fn shared(client: kube::Client) -> Self {
        ControllerClients {
            root: client,
            accounts: None,
        }
    }

    /// Each controller runs as its own ServiceAccount; `config` is how to
    /// reach the API server (its identity, if any, is not used for them).
    pub fn service_accounts(
        client: kube::Client,
        mut config: kube::Config,
    ) -> Result<Self, TransportError> {
        config.auth_info = Default::default();
        let transport = Transport::anonymous(&config)?;
        Ok(ControllerClients {
            root: client,
            accounts: Some((Arc::new(config), transport)),
        })
    }

    /// The manager's own client.
    pub fn root(&self) -> &kube::Client {
        &self.root
    }

    /// The client `controller` acts through. With ServiceAccounts this
    /// waits until the account and a first token exist, then renews the
    /// token in the background for as long as the client is in use.
    pub async fn client(&self, controller: &str) -> kube::Client {
        let Some((config, transport)) = &self.accounts else {
            return self.root.clone();
        };
        let (token, expires) = loop {
            match mint(&self.root, controller).await {
                Ok(t) => break t,
                Err(e) => {
                    tracing::warn!(controller, error = %e, "cannot get a token; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let bearer = Arc::new(RwLock::new(token));
        let client = match transport.client(config, Some(bearer.clone())) {
            Ok(c) => c,
            Err(e) => {
                // The same settings built the manager's client, so this
                // does not happen; acting as the manager is the fallback.
                tracing::error!(controller, error = %e, "cannot build a client; using the manager's");
                return self.root.clone();
            }
        };
        let root = self.root.clone();
        let name = controller.to_owned();
        let weak = Arc::downgrade(&bearer);
        drop(bearer);
        tokio::spawn(renew(root, name, weak, expires));
        client
    }
}

/// Renews the token at 80% of its life until no client holds it.
async fn renew(
    root: kube::Client,
    controller: String,
    bearer: std::sync::Weak<RwLock<HeaderValue>>,
    mut expires: Duration,
) {
    loop {
        tokio::time::sleep(expires.mul_f64(0.8)).await;
        let Some(slot) = bearer.upgrade() else { return };
        match mint(&root, &controller).await {
            Ok((token, lifetime)) => {
                if let Ok(mut s) = slot.write() {
                    *s = token;
                }
                expires = lifetime;
                tracing::debug!(controller, "renewed the controller's token");
            }
            Err(e) => {
                tracing::warn!(controller, error = %e, "cannot renew the token; retrying");
                expires = RETRY.mul_f64(1.25);
            }
        }
    }
}

/// Makes sure `kube-system/controller` exists and requests a token for it:
/// the `Authorization` header and how long it is valid.
async fn mint(
    root: &kube::Client,
    controller: &str,
) -> Result<(HeaderValue, Duration), CredentialsError> {
    let api: Api<ServiceAccount> = Api::namespaced(root.clone(), NAMESPACE);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(controller.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api
        .create_token_request(controller, &PostParams::default(), &request)
        .await?;
    let status = answer.status.ok_or(CredentialsError::BadToken)?;
    let lifetime = Duration::try_from(
        status
            .expiration_timestamp
            .0
            .duration_since(jiff::Timestamp::now()),
    )
    .unwrap_or(RETRY)
    .min(TOKEN_LIFETIME);
    let mut header = HeaderValue::from_str(&format!("Bearer {}", status.token))
        .map_err(|_| CredentialsError::BadToken)?;
    header.set_sensitive(true);
    Ok((header, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;
    use kube::client::Body;

    #[tokio::test]
    async fn requests_carry_the_token_held_at_the_time() {
        // The "server" answers with the Authorization header it was sent.
        let echo = tower::service_fn(|req: http::Request<Body>| async move {
            let seen = req
                .headers()
                .get(AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(seen)))
        });
        let bearer = Arc::new(RwLock::new(HeaderValue::from_static("Bearer first")));
        let client = kube::client::ClientBuilder::new(echo, "default")
            .with_layer(&crate::transport::bearer_layer(bearer.clone()))
            .build();
        let ask = || async {
            let req = http::Request::get("/api")
                .body(Vec::new())
                .expect("request");
            client.request_text(req).await.expect("answer")
        };
        assert_eq!(ask().await, "Bearer first");
        *bearer.write().expect("lock") = HeaderValue::from_static("Bearer renewed");
        assert_eq!(ask().await, "Bearer renewed");
    }
}
