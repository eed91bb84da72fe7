//! OpenAPI documents: `/openapi/v3` (an index of group-versions) with one
//! document per group-version, and `/openapi/v2` (all in one), for built-in
//! kinds and the custom resources CRDs define. kubectl reads them for
//! `explain`, client-side validation, `fieldValidation` support and the merge
//! keys of client-side `apply`.

mod builtin;
mod custom;
mod paths;
mod v2_paths;
mod v2_proto;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kybern_apimachinery::ApiError;
use serde_json::{Map, json};

use crate::registry::ResourceInfo;
use crate::response::{ErrorResponse, json as json_response};
use crate::server::ApiState;
use builtin::{BUILTIN, REF_PREFIX};

/// The URL key of a group-version in the v3 index (`api/v1`, `apis/apps/v1`).
fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn builtin_def(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    BUILTIN
        .kinds
        .iter()
        .find(|(g, v, k, _)| g == group && v == version && k == kind)
        .map(|(_, _, _, d)| d.as_str())
}

/// Whether a resource appears in the OpenAPI documents: stored ones, and
/// reviews (answered, never stored).
fn documented(r: &ResourceInfo) -> bool {
    !r.computed() || r.review()
}

/// The definition that describes a resource's objects: the built-in one,
/// or the one made from its CRD.
fn definition_of(r: &ResourceInfo) -> String {
    match builtin_def(&r.group, &r.version, &r.kind) {
        Some(d) => d.to_string(),
        None => custom::definition_name(&r.group, &r.version, &r.kind),
    }
}

/// A rendered document: (hash, JSON bytes).
type Document = Arc<(String, Vec<u8>)>;

/// Group-version documents of built-in kinds never change: built once.
static BUILTIN_DOCS: LazyLock<Mutex<HashMap<String, Document>>> = LazyLock::new(Default::default);

/// The document of one group-version as (hash, JSON bytes), or `None` if nothing is served there.
async fn gv_document(
    state: &ApiState,
    group: &str,
    version: &str,
) -> Result<Option<Document>, ApiError> {
    let key = gv_key(group, version);
    let resources: Vec<_> = state
        .registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version && documented(r))
        .collect();
    if resources.is_empty() {
        return Ok(None);
    }
    let all_builtin = resources
        .iter()
        .all(|r| builtin_def(group, version, &r.kind).is_some());
    if all_builtin
        && let Ok(cache) = BUILTIN_DOCS.lock()
        && let Some(doc) = cache.get(&key)
    {
        return Ok(Some(doc.clone()));
    }
    let mut definitions = Map::new();
    let mut paths = Map::new();
    let customs = if all_builtin {
        Map::new()
    } else {
        let crds = custom::crds(state).await?;
        custom::definitions(&crds, |g, v| g == group && v == version)
    };
    let mut all = BUILTIN.definitions.clone();
    for (name, schema) in &customs {
        all.insert(name.clone(), schema.clone());
    }
    for r in &resources {
        let def = definition_of(r);
        if !all.contains_key(&def) {
            continue;
        }
        builtin::collect(&def, &all, &mut definitions);
        builtin::collect(&format!("{def}List"), &all, &mut definitions);
        if r.has_subresource("scale") {
            builtin::collect("io.k8s.api.autoscaling.v1.Scale", &all, &mut definitions);
        }
        paths::add(&mut paths, r, &def);
    }
    for meta in builtin::META {
        builtin::collect(meta, &all, &mut definitions);
    }
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": definitions},
    });
    let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let entry = Arc::new((format!("{:016X}", hasher.finish()), bytes));
    if all_builtin && let Ok(mut cache) = BUILTIN_DOCS.lock() {
        cache.insert(key, entry.clone());
    }
    Ok(Some(entry))
}

fn group_versions(state: &ApiState) -> Vec<(String, String)> {
    let mut gvs: Vec<(String, String)> = state
        .registry
        .all()
        .iter()
        .filter(|r| documented(r))
        .map(|r| (r.group.clone(), r.version.clone()))
        .collect();
    gvs.sort();
    gvs.dedup();
    gvs
}

/// `GET /openapi/v3`: where each group-version's document is.
pub async fn v3_index(State(state): State<Arc<ApiState>>) -> Response {
    let mut paths = Map::new();
    for (group, version) in group_versions(&state) {
        let hash = match gv_document(&state, &group, &version).await {
            Ok(Some(doc)) => doc.0.clone(),
            _ => continue,
        };
        let key = gv_key(&group, &version);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json_response(StatusCode::OK, &json!({ "paths": paths }))
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`.
pub async fn v3_document(State(state): State<Arc<ApiState>>, uri: Uri) -> Response {
    let rest = uri.path().trim_start_matches("/openapi/v3/");
    let parts: Vec<&str> = rest.split('/').collect();
    let (group, version) = match parts.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return not_found(),
    };
    match gv_document(&state, group, version).await {
        Ok(Some(doc)) => {
            let mut resp = (StatusCode::OK, doc.1.clone()).into_response();
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Ok(None) => not_found(),
        Err(e) => ErrorResponse(e).into_response(),
    }
}

/// `GET /openapi/v2`: one Swagger 2.0 document with every definition, as
/// JSON or, when the client asks for it first (client-go does), as gnostic
/// protobuf.
pub async fn v2(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let mut definitions = BUILTIN.definitions.clone();
    // One read of the CRDs for every custom group-version.
    if let Ok(crds) = custom::crds(&state).await {
        let served = group_versions(&state);
        definitions.extend(custom::definitions(&crds, |g, v| {
            served.iter().any(|(sg, sv)| sg == g && sv == v)
        }));
    }
    // The operations of every served resource, as the v3 documents have them.
    let mut v3_paths = Map::new();
    for r in state.registry.all().iter().filter(|r| documented(r)) {
        let def = definition_of(r);
        if definitions.contains_key(&def) {
            paths::add(&mut v3_paths, r, &def);
        }
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": v2_paths::from_v3(&v3_paths),
        "definitions": definitions,
    });
    if wants_protobuf(&headers) {
        let mut resp = (StatusCode::OK, v2_proto::document(&doc)).into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(v2_proto::MEDIA_TYPE),
        );
        return resp;
    }
    let text = doc.to_string().replace(REF_PREFIX, "#/definitions/");
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Whether the first media type of `Accept` is the v2 protobuf one.
fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|first| {
            first
                .trim()
                .starts_with("application/com.github.proto-openapi.spec.v2")
        })
}

fn not_found() -> Response {
    ErrorResponse(ApiError::no_such_path()).into_response()
}
