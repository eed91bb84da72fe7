//! The server: shared state, the router, and serving on a listener.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kybern_apimachinery::ApiError;
use kybern_store::Store;

use crate::cache::{CachedObject, WatchCache};
use crate::discovery;
use crate::handlers::serve_resource;
use crate::registry::{Registry, ResourceInfo};
use crate::storage::ObjectStore;

/// State shared by every request.
pub struct ApiState {
    /// Served resources.
    pub registry: Registry,
    /// Objects in the store.
    pub objects: ObjectStore,
    /// Watch caches, one per resource, started on first use.
    pub caches: crate::cache::Caches,
    /// Request metrics.
    pub metrics: Arc<crate::metrics::ApiMetrics>,
    /// How the server reaches node agents (`pods/log`); unset without a PKI.
    pub node_proxy: std::sync::OnceLock<crate::node_proxy::NodeProxy>,
    /// The bearer-token authenticator, for `TokenReview`; unset without one.
    pub authenticator: std::sync::OnceLock<Arc<crate::auth::Authenticator>>,
    /// Signs and verifies ServiceAccount tokens; unset without a PKI.
    pub token_signer: std::sync::OnceLock<Arc<crate::service_account_token::TokenSigner>>,
    /// Encryption at rest, when configured (the store beneath is sealing).
    pub encryption: std::sync::OnceLock<Arc<crate::encryption::EncryptionConfig>>,
    /// The audit policy and log, when auditing.
    pub audit: std::sync::OnceLock<Arc<crate::audit::Auditor>>,
    /// The RBAC objects, parsed for the authorizer.
    pub rbac: crate::authz::rbac_index::RbacIndex,
}

impl ApiState {
    /// State over a store, serving the built-in resources.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(ApiState {
            registry: Registry::with_builtins(),
            objects: ObjectStore::new(store),
            caches: Default::default(),
            metrics: Default::default(),
            node_proxy: Default::default(),
            authenticator: Default::default(),
            token_signer: Default::default(),
            encryption: Default::default(),
            audit: Default::default(),
            rbac: Default::default(),
        })
    }

    /// Starts the watch cache of every stored resource served now, as
    /// upstream starts its cachers with the server. A client's first list,
    /// read from the store, is then at a revision its resource's cache
    /// already covers, so the watch that follows is served by the cache;
    /// a cache started by that watch would begin after the list, and the
    /// watch would need a store watch of its own (decoding every event of
    /// the resource for it alone) until it ends.
    pub fn start_caches(&self) {
        for info in self.registry.all() {
            if !info.computed() {
                self.caches.get(&self.objects, &info);
            }
        }
    }

    /// The loaded watch cache of one served `v1` resource, for the
    /// authorizers and admission plugins that read objects on every request.
    pub async fn loaded_cache(
        &self,
        group: &str,
        plural: &str,
    ) -> Result<(Arc<ResourceInfo>, Arc<WatchCache>), ApiError> {
        let info = self
            .registry
            .get(group, "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("{plural} is not registered")))?;
        let cache = self
            .caches
            .get(&self.objects, &info)
            .ok_or_else(|| ApiError::internal("watch cache unavailable"))?;
        if !cache.wait_loaded(Duration::from_secs(10)).await {
            return Err(ApiError::unavailable(format!(
                "the {plural} cache is still loading"
            )));
        }
        Ok((info, cache))
    }

    /// One object of a `v1` resource: the watch cache's copy when it has
    /// one (without waiting for the cache to load), else the store's, so
    /// that an object written a moment ago is found.
    pub async fn cached_or_stored(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let info = self
            .registry
            .get(group, "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("{plural} is not registered")))?;
        match self.cached_copy(&info, namespace, name) {
            Some(obj) => Ok(obj),
            None => self.objects.get(&info, namespace, name).await,
        }
    }

    /// The watch cache's copy of one object, if its resource has a cache
    /// holding it (loaded or not: a cache still loading holds nothing).
    pub fn cached_copy(
        &self,
        info: &Arc<ResourceInfo>,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        self.caches
            .get(&self.objects, info)
            .and_then(|c| c.get(&ObjectStore::key(info, namespace, name)))
            .and_then(|c| serde_json::from_slice(&c.json()).ok())
    }

    /// The cached objects of one `v1` resource, in `namespace` (all when
    /// `None`).
    pub async fn cached_objects(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<CachedObject>>, ApiError> {
        let (_, cache) = self.loaded_cache(group, plural).await?;
        Ok(cache
            .snapshot(namespace)
            .map(|(objects, _)| objects)
            .unwrap_or_default())
    }
}

/// The HTTP routes of the API server.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api", get(discovery::api_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::api_groups))
        .route("/apis/{group}", get(discovery::api_group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/version", get(discovery::version))
        .route("/healthz", get(discovery::healthy))
        .route("/livez", get(discovery::healthy))
        .route("/readyz", get(discovery::healthy))
        .route("/metrics", get(crate::metrics::serve))
        .route(
            "/.well-known/openid-configuration",
            get(crate::discovery::openid_configuration),
        )
        .route("/openid/v1/jwks", get(crate::discovery::jwks))
        .route("/openapi/v2", get(crate::openapi::v2))
        .route("/openapi/v3", get(crate::openapi::v3_index))
        .route("/openapi/v3/{*rest}", get(crate::openapi::v3_document))
        .fallback(serve_resource)
        .layer(axum::middleware::from_fn(crate::response::negotiate))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::record,
        ))
        .with_state(state)
}

/// The routes with authentication, auditing, then authorization in front of
/// everything, in upstream's order.
pub fn authenticated_router(state: Arc<ApiState>, auth: Arc<crate::auth::Authenticator>) -> Router {
    let _ = state.authenticator.set(auth);
    router(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::authz::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::audit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::auth::authenticate,
        ))
}

/// Serves the API on `listener` (plain HTTP, no authentication) until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
