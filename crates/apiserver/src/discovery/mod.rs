//! Discovery: `/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]`, `/version`,
//! and the health endpoints, built from the resource registry.

mod aggregated;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::ResourceInfo;
use crate::response::json;
use crate::server::ApiState;

/// What a subresource answers with: (group, version, kind, verbs); `None`
/// group/version means the resource's own.
pub(crate) fn subresource_kind<'a>(
    r: &'a ResourceInfo,
    sub: &str,
) -> (
    Option<&'static str>,
    Option<&'static str>,
    &'a str,
    &'static [&'static str],
) {
    match sub {
        "status" | "approval" | "ephemeralcontainers" => {
            (None, None, &r.kind, &["get", "patch", "update"])
        }
        "scale" => (
            Some("autoscaling"),
            Some("v1"),
            "Scale",
            &["get", "patch", "update"],
        ),
        "binding" => (None, None, "Binding", &["create"]),
        "token" => (
            Some("authentication.k8s.io"),
            Some("v1"),
            "TokenRequest",
            &["create"],
        ),
        "eviction" => (Some("policy"), Some("v1"), "Eviction", &["create"]),
        "finalize" => (None, None, &r.kind, &["update"]),
        "exec" => (None, None, "PodExecOptions", &["create", "get"]),
        "attach" => (None, None, "PodAttachOptions", &["create", "get"]),
        "portforward" => (None, None, "PodPortForwardOptions", &["create", "get"]),
        "proxy" => (
            None,
            None,
            match r.plural.as_str() {
                "pods" => "PodProxyOptions",
                "services" => "ServiceProxyOptions",
                _ => "NodeProxyOptions",
            },
            &["create", "delete", "get", "patch", "update"],
        ),
        // Upstream lists pods/log with kind Pod and verb get.
        _ => (None, None, &r.kind, &["get"]),
    }
}

/// The discovery entries of one resource and its subresources.
fn resource_entries(r: &ResourceInfo) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced(),
        "kind": r.kind,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        main["categories"] = json!(r.categories);
    }
    let mut out = vec![main];
    for sub in &r.subresources {
        let (group, version, kind, verbs) = subresource_kind(r, sub);
        let mut e = json!({
            "name": format!("{}/{sub}", r.plural),
            "singularName": "",
            "namespaced": r.namespaced(),
            "kind": kind,
            "verbs": verbs,
        });
        if let Some(g) = group {
            e["group"] = json!(g);
        }
        if let Some(v) = version {
            e["version"] = json!(v);
        }
        out.push(e);
    }
    out
}

fn resource_list(state: &ApiState, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = state
        .registry
        .all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| resource_entries(r))
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn group_object(state: &ApiState, group: &str) -> Option<Value> {
    let versions = state.registry.group_versions(group);
    let preferred = versions.first()?;
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    Some(json!({
        "name": group,
        "versions": entries,
        "preferredVersion": {"groupVersion": format!("{group}/{preferred}"), "version": preferred},
    }))
}

fn not_found() -> Response {
    crate::response::ErrorResponse(kybern_apimachinery::ApiError::no_such_path()).into_response()
}

/// GET `/api`: the legacy version list, or the aggregated core group.
pub async fn api_versions(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated::requested(&headers) {
        return aggregated::document(&state, true, v);
    }
    json(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }),
    )
}

/// GET `/api/v1`.
pub async fn core_resources(State(state): State<Arc<ApiState>>) -> Response {
    match resource_list(&state, "", "v1") {
        Some(list) => json(StatusCode::OK, &list),
        None => not_found(),
    }
}

/// GET `/apis`: the group list, or every group aggregated.
pub async fn api_groups(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated::requested(&headers) {
        return aggregated::document(&state, false, v);
    }
    let groups: Vec<Value> = state
        .registry
        .groups()
        .iter()
        .filter_map(|g| group_object(&state, g))
        .collect();
    json(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// GET `/apis/{group}`.
pub async fn api_group(State(state): State<Arc<ApiState>>, Path(group): Path<String>) -> Response {
    match group_object(&state, &group) {
        Some(mut g) => {
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            json(StatusCode::OK, &g)
        }
        None => not_found(),
    }
}

/// GET `/apis/{group}/{version}`.
pub async fn group_resources(
    State(state): State<Arc<ApiState>>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    match resource_list(&state, &group, &version) {
        Some(list) => json(StatusCode::OK, &list),
        None => not_found(),
    }
}

/// GET `/version`.
pub async fn version() -> Response {
    json(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": "35",
            "gitVersion": format!("v1.35.0+kybern.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
        }),
    )
}

/// `GET /.well-known/openid-configuration`: the ServiceAccount token issuer.
pub async fn openid_configuration() -> Response {
    json(
        StatusCode::OK,
        &crate::service_account_token::openid_configuration(),
    )
}

/// `GET /openid/v1/jwks`: the public key ServiceAccount tokens verify with.
pub async fn jwks(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::server::ApiState>>,
) -> Response {
    match state.token_signer.get() {
        Some(signer) => json(StatusCode::OK, &signer.jwks()),
        None => (StatusCode::NOT_FOUND, "no service account issuer").into_response(),
    }
}

/// GET `/healthz`, `/livez`, `/readyz`.
pub async fn healthy() -> Response {
    (StatusCode::OK, "ok").into_response()
}
