//! Aggregated discovery (`apidiscovery.k8s.io/v2` and `v2beta1`): `/api` and
//! `/apis` answer with every group, version and resource in one document when
//! the client asks for `as=APIGroupDiscoveryList`, as kubectl 1.35 does first.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::ResourceInfo;
use crate::server::ApiState;

/// The aggregated version a request accepts (`v2` or `v2beta1`), in the client's order.
pub fn requested(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    accept.split(',').find_map(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        if parts.next() != Some("application/json") {
            return None;
        }
        let params: Vec<&str> = parts.collect();
        let has = |p: &str| params.contains(&p);
        if !has("g=apidiscovery.k8s.io") || !has("as=APIGroupDiscoveryList") {
            return None;
        }
        if has("v=v2") {
            Some("v2")
        } else if has("v=v2beta1") {
            Some("v2beta1")
        } else {
            None
        }
    })
}

fn resource(r: &ResourceInfo) -> Value {
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (g, v, k, verbs) = super::subresource_kind(r, sub);
            json!({
                "subresource": sub,
                "responseKind": {"group": g.unwrap_or(&r.group), "version": v.unwrap_or(&r.version), "kind": k},
                "verbs": verbs,
            })
        })
        .collect();
    if !subs.is_empty() {
        e["subresources"] = json!(subs);
    }
    e
}

fn group(state: &ApiState, name: &str) -> Option<Value> {
    let versions: Vec<Value> = state
        .registry
        .group_versions(name)
        .iter()
        .map(|v| {
            let resources: Vec<Value> = state
                .registry
                .all()
                .iter()
                .filter(|r| r.group == name && &r.version == v)
                .map(|r| resource(r))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    (!versions.is_empty()).then(
        || json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions}),
    )
}

/// The aggregated document of the core group (`legacy`) or of all named groups.
pub fn document(state: &ApiState, legacy: bool, version: &str) -> Response {
    let items: Vec<Value> = if legacy {
        group(state, "").into_iter().collect()
    } else {
        state
            .registry
            .groups()
            .iter()
            .filter_map(|g| group(state, g))
            .collect()
    };
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    let mut resp = (
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response();
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_version_in_client_order() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert_eq!(requested(&h), Some("v2"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"));
        assert_eq!(requested(&h), Some("v2beta1"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(requested(&h), None);
    }
}
