//! The REST handlers: one module per verb, all generic over the resource registry.
//! This module resolves a request to its resource and verb and dispatches it.

mod admission;
mod apply;
mod attempts;
mod binding;
pub(crate) mod body;
mod delete;
mod eviction;
mod finalize;
mod get;
pub(crate) mod list;
mod list_body;
mod metrics;
mod patch;
mod pod_log;
mod pod_stream;
mod proxy;
mod scale;
mod token_request;
mod watch;
mod workload_proxy;
mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Uri};
use axum::response::{IntoResponse, Response};
use kybern_apimachinery::ApiError;

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
    /// The query as sent (repeated keys such as exec's `command` intact).
    pub raw_query: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The resource's `group/version`.
    pub api_version: String,
    /// Who is asking (after impersonation).
    pub user: crate::auth::UserInfo,
    /// What admission adds to the request's audit event.
    pub audit: crate::audit::AuditContext,
    /// The JSON of the object this request last wrote, so that the answer
    /// need not encode it again (see [`Ctx::answer_written`]).
    pub written: std::sync::Mutex<Option<crate::storage::WrittenJson>>,
}

impl Ctx {
    /// The namespace from the URL, or "" for cluster-scoped resources.
    pub fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or("")
    }

    /// Who is writing, for field ownership: the `fieldManager` parameter, or
    /// the client's User-Agent up to the first `/` (as upstream derives it).
    pub fn ownership(&self) -> Result<crate::managed::Writer<'_>, ApiError> {
        let manager = match self.query.get("fieldManager") {
            Some(m) if m.chars().count() > 128 => {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    vec![kybern_apimachinery::Cause::invalid(
                        "fieldManager",
                        &serde_json::json!(m),
                        "must be no more than 128 characters",
                    )],
                ));
            }
            Some(m) if !m.is_empty() => m,
            _ => self
                .headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|m| !m.is_empty())
                .unwrap_or("unknown"),
        };
        let subresource = self.path.subresource.as_deref().unwrap_or("");
        let domain = match subresource {
            "status" | "approval" => crate::managed::Domain::StatusOnly,
            _ if crate::strategy::separates_status(&self.info) => crate::managed::Domain::NoStatus,
            _ => crate::managed::Domain::All,
        };
        Ok(crate::managed::Writer {
            manager,
            api_version: &self.api_version,
            subresource,
            domain,
            types: match &self.info.custom {
                Some(custom) => crate::managed::Types::Schema(custom.schema.as_ref()),
                None => crate::managed::Types::Builtin,
            },
        })
    }

    /// True when objects of this resource are stored in another version than
    /// the one requested: custom resources with `None` conversion, and
    /// autoscaling/v1 HorizontalPodAutoscalers kept as v2 (the only
    /// built-in kind stored in another version).
    pub fn converts(&self) -> bool {
        self.info.version != self.info.storage_version
    }

    /// True for a built-in kind read and written through another version
    /// than its stored one, whose fields differ (HorizontalPodAutoscalers
    /// through autoscaling/v1).
    pub fn converts_builtin(&self) -> bool {
        self.converts() && self.info.custom.is_none()
    }

    /// An object as the requested version shows it (`None` conversion: its apiVersion).
    pub fn present(&self, mut obj: crate::object::Object) -> crate::object::Object {
        if !self.converts() || !obj.is_object() {
            return obj;
        }
        if self.info.custom.is_none() {
            crate::hpa_versions::to_v1(&mut obj);
        } else {
            obj["apiVersion"] = serde_json::json!(self.api_version);
        }
        obj
    }

    /// Answers with `obj`, a write's result, as the client's version shows
    /// it: the JSON the write stored, when `obj` is that object and needs no
    /// conversion, else `obj` encoded.
    pub fn answer_written(
        &self,
        status: axum::http::StatusCode,
        obj: crate::object::Object,
    ) -> axum::response::Response {
        let written = self.written.lock().ok().and_then(|mut w| w.take());
        if !self.converts()
            && let Some(json) = written.and_then(|w| w.of(&obj))
        {
            return crate::response::json_bytes(status, json);
        }
        crate::response::json(status, &self.present(obj))
    }

    /// Keeps a write's JSON for [`Ctx::answer_written`].
    pub fn note_written(&self, json: crate::storage::WrittenJson) {
        if let Ok(mut w) = self.written.lock() {
            *w = Some(json);
        }
    }

    /// An object as the storage version holds it.
    pub fn to_storage(&self, obj: &mut crate::object::Object) {
        if !self.converts() || !obj.is_object() {
            return;
        }
        if self.info.custom.is_none() {
            crate::hpa_versions::to_v2(obj);
        } else {
            let group = &self.info.group;
            obj["apiVersion"] = serde_json::json!(format!("{group}/{}", self.info.storage_version));
        }
    }

    /// Gives a body without a name the URL's; a different name is a 400.
    pub fn name_from_url(&self, obj: &mut crate::object::Object) -> Result<(), ApiError> {
        match crate::object::name(obj) {
            "" => crate::object::set_meta(obj, "name", serde_json::json!(self.name())),
            n if n != self.name() => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({})",
                    self.name()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// The object name from the URL ("" for collections).
    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }
}

fn not_found_path() -> ApiError {
    ApiError::no_such_path()
}

/// Serves every resource URL (`/api/v1/...`, `/apis/{group}/{version}/...`).
pub async fn serve_resource(State(state): State<Arc<ApiState>>, req: Request<Body>) -> Response {
    let (mut parts, body) = req.into_parts();
    // Present on HTTP/1.1 requests; exec and port-forward take the
    // connection over with it.
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    // Without authentication (the plain-HTTP debugging listener) the caller
    // is upstream's insecure-port user, a cluster admin.
    let user = parts
        .extensions
        .remove::<crate::auth::UserInfo>()
        .unwrap_or_else(crate::auth::UserInfo::unsecured);
    let audit = parts
        .extensions
        .remove::<crate::audit::AuditContext>()
        .unwrap_or_default();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    match dispatch(state, method, uri, headers, body, upgrade, (user, audit)).await {
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
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    (user, audit): (crate::auth::UserInfo, crate::audit::AuditContext),
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
    let api_version = info.api_version();
    let ctx = Ctx {
        state,
        info,
        path,
        query,
        raw_query: uri.query().unwrap_or("").to_owned(),
        headers,
        api_version,
        user,
        audit,
        written: Default::default(),
    };
    if ctx.info.review() {
        return crate::authz::review::serve(&ctx, &method, body).await;
    }
    if ctx.info.computed() {
        return metrics::serve(&ctx, &method).await;
    }
    let has_name = ctx.path.name.is_some();
    if let Some(sub @ ("approval" | "status")) = ctx.path.subresource.as_deref()
        && matches!(method, Method::PUT | Method::PATCH)
        && crate::certificates::is_csr(&ctx.info.group, &ctx.info.plural)
    {
        let stored = ctx.state.objects.get(&ctx.info, "", ctx.name()).await?;
        crate::certificates::authorize_subresource(&ctx.state, &ctx.user, &stored, sub).await?;
    }
    match ctx.path.subresource.as_deref() {
        Some("scale") if matches!(method, Method::GET | Method::PUT | Method::PATCH) => {
            return scale::scale(&ctx, &method, body).await;
        }
        Some("binding") if method == Method::POST => return binding::bind(&ctx, body).await,
        Some("token") if method == Method::POST => return token_request::create(&ctx, body).await,
        Some("eviction") if method == Method::POST => return eviction::evict(&ctx, body).await,
        Some("log") if method == Method::GET => return pod_log::log(&ctx).await,
        Some("exec" | "attach" | "portforward") if matches!(method, Method::GET | Method::POST) => {
            return pod_stream::stream(&ctx, method, upgrade).await;
        }
        Some("finalize") if method == Method::PUT => return finalize::finalize(&ctx, body).await,
        Some("proxy") if ctx.info.plural == "nodes" => {
            return proxy::proxy(&ctx, method, body).await;
        }
        Some("proxy") => return workload_proxy::proxy(&ctx, method, body).await,
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
