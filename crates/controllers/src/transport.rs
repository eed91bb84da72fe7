//! Connections from the control plane's API clients to the API server: one
//! pool per TLS identity, shared by every client that presents it, as
//! client-go's transports are, keeping at most 25 idle connections unless
//! its user bounds its requests in flight otherwise (the scheduler).
//!
//! Over HTTP/1.1 each request in flight holds a connection of its own, so
//! the controllers' bursts of creates and deletes opened over a thousand,
//! and each stayed open with its buffers on both ends. (One HTTP/2
//! connection for all the controllers kept fewer, but halved the rate of a
//! mass delete on two cores; measured in docs/controllers.md.)

use std::sync::{Arc, RwLock};

use http::HeaderValue;
use http::header::AUTHORIZATION;
use hyper_util::client::legacy::connect::HttpConnector;
use kube::client::{Body, ConfigExt};

/// Idle connections kept per server by default (client-go's `MaxIdleConnsPerHost`).
pub const MAX_IDLE_PER_HOST: usize = 25;

type Connector = hyper_timeout::TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>;

/// Why connections could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The kubeconfig's settings are unusable.
    #[error("client settings: {0}")]
    Config(#[from] kube::Error),
}

/// A pool of connections to one API server; clones share it.
#[derive(Clone)]
pub struct Transport {
    http: hyper_util::client::legacy::Client<Connector, Body>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

/// A per-request `Authorization` header: the token it holds at the time.
pub type Bearer = Arc<RwLock<HeaderValue>>;

impl Transport {
    /// Connections to `config`'s server under `tls` (its trust roots and
    /// client certificate, if any), with `config`'s timeouts.
    pub fn new(config: &kube::Config, tls: rustls::ClientConfig) -> Self {
        Self::keeping_idle(config, tls, MAX_IDLE_PER_HOST)
    }

    /// As [`Transport::new`], keeping up to `max_idle` connections open
    /// between requests.
    pub fn keeping_idle(config: &kube::Config, tls: rustls::ClientConfig, max_idle: usize) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // As Go's dialer, which client-go uses: no Nagle delay on small writes.
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let mut connector = hyper_timeout::TimeoutConnector::new(https);
        connector.set_connect_timeout(config.connect_timeout);
        connector.set_read_timeout(config.read_timeout);
        connector.set_write_timeout(config.write_timeout);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(max_idle)
                .build(connector);
        Transport { http }
    }

    /// Connections that trust `config`'s CA and present no client
    /// certificate: for clients that send tokens.
    pub fn anonymous(config: &kube::Config) -> Result<Self, TransportError> {
        let mut config = config.clone();
        config.auth_info = Default::default();
        let tls = config.rustls_client_config()?;
        Ok(Self::new(&config, tls))
    }

    /// A client over these connections with `config`'s server, namespace,
    /// headers, retries and credentials, and `bearer`'s token on each
    /// request when given.
    pub fn client(
        &self,
        config: &kube::Config,
        bearer: Option<Bearer>,
    ) -> Result<kube::Client, TransportError> {
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.default_retry.then(|| {
                tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
            }))
            .option_layer(config.auth_layer()?)
            .option_layer(bearer.map(bearer_layer))
            .layer(config.extra_headers_layer()?)
            .map_err(tower::BoxError::from)
            .service(self.http.clone());
        Ok(kube::Client::new(service, config.default_namespace.clone()))
    }
}

/// Sets each request's `Authorization` to the token in `bearer` at the time.
pub fn bearer_layer(
    bearer: Bearer,
) -> tower::util::MapRequestLayer<impl Fn(http::Request<Body>) -> http::Request<Body> + Clone> {
    tower::util::MapRequestLayer::new(move |mut req: http::Request<Body>| {
        if let Ok(value) = bearer.read() {
            req.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        req
    })
}
