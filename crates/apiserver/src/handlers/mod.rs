//! The REST handlers: one module per verb, all generic over the resource registry.
//! This module resolves a request to its resource and verb and dispatches it.

mod binding;
mod body;
mod delete;
mod get;
pub(crate) mod list;
mod patch;
mod scale;
mod watch;
mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use kybern_apimachinery::{ApiError, StatusReason};

use crate::registry::ResourceInfo;
use crate::request::{Query, ResourcePath};
use crate::response::ErrorResponse;
use crate::server::ApiState;

/// Everything a verb handler needs about its request.
pub struct Ctx {
    /// Shared server state.
    pub state: Arc<ApiState>,
    /// The resource addressed.
    pub info: Arc<ResourceInfo>,
    /// The URL parts.
    pub path: ResourcePath,
    /// Query parameters.
    pub query: Query,
    /// Request headers.
    pub headers: HeaderMap,
}

impl Ctx {
    /// The namespace from the URL, or "" for cluster-scoped resources.
    pub fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or("")
    }

    /// The object name from the URL ("" for collections).
    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }
}

fn not_found_path() -> ApiError {
    ApiError::new(
        StatusReason::NotFound,
        "the server could not find the requested resource",
    )
}

/// Serves every resource URL (`/api/v1/...`, `/apis/{group}/{version}/...`).
pub async fn serve_resource(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match dispatch(state, method, uri, headers, body).await {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    }
}

async fn dispatch(
    state: Arc<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ErrorResponse> {
    let path = ResourcePath::parse(uri.path()).ok_or_else(not_found_path)?;
    let info = state
        .registry
        .get(&path.group, &path.version, &path.resource)
        .ok_or_else(not_found_path)?;
    // A namespace in the URL of a cluster-scoped resource, or an object of a
    // namespaced resource addressed without one, is no resource at all.
    if path.namespace.is_some() && !info.namespaced()
        || path.name.is_some() && info.namespaced() && path.namespace.is_none()
    {
        return Err(not_found_path().into());
    }
    if let Some(sub) = &path.subresource
        && !info.has_subresource(sub)
    {
        return Err(not_found_path().into());
    }
    let query = Query::parse(uri.query());
    let ctx = Ctx {
        state,
        info,
        path,
        query,
        headers,
    };
    let has_name = ctx.path.name.is_some();
    match ctx.path.subresource.as_deref() {
        Some("scale") if matches!(method, Method::GET | Method::PUT | Method::PATCH) => {
            return scale::scale(&ctx, &method, body).await;
        }
        Some("binding") if method == Method::POST => return binding::bind(&ctx, body).await,
        _ => {}
    }
    match (method, has_name) {
        (Method::GET, true) => get::get(&ctx).await,
        (Method::GET, false) => {
            if ctx.query.flag("watch") {
                watch::watch(ctx).await
            } else {
                list::list(&ctx).await
            }
        }
        (Method::POST, false) => write::create(&ctx, body).await,
        (Method::PUT, true) => write::update(&ctx, body).await,
        (Method::PATCH, true) => patch::patch(&ctx, body).await,
        (Method::DELETE, true) => delete::delete(&ctx, body).await,
        (Method::DELETE, false) => delete::delete_collection(&ctx, body).await,
        (method, _) => {
            Err(
                ApiError::method_not_allowed(method.as_str(), &ctx.info.group, &ctx.info.plural)
                    .into(),
            )
        }
    }
}
