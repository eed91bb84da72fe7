//! The `scale` subresource of workloads: an `autoscaling/v1` Scale view of
//! `spec.replicas`, readable and writable by PUT and PATCH (`kubectl scale`).

use axum::body::Body;
use axum::http::{Method, StatusCode};
use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use super::{Ctx, body, patch, write};
use crate::object::{self, Object};
use crate::registry::ResourceInfo;
use crate::response::{ApiResult, json as json_response};

/// The Scale of a workload object.
/// Where a kind keeps its replica counts and selector: upstream's fixed
/// places for built-ins, a CRD's `subresources.scale` paths for custom kinds.
struct ScalePaths {
    spec: String,
    status: String,
    selector: Option<String>,
}

/// `.spec.replicas` to `/spec/replicas`.
fn pointer_of(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut acc, part| {
            acc.push('/');
            acc.push_str(&part.replace('~', "~0").replace('/', "~1"));
            acc
        })
}

impl ScalePaths {
    fn of(info: &ResourceInfo) -> Self {
        match info.custom.as_ref().and_then(|c| c.scale.as_ref()) {
            Some(scale) => {
                let p = |k: &str| scale.get(k).and_then(Value::as_str).map(pointer_of);
                ScalePaths {
                    spec: p("specReplicasPath").unwrap_or_else(|| "/spec/replicas".into()),
                    status: p("statusReplicasPath").unwrap_or_else(|| "/status/replicas".into()),
                    selector: p("labelSelectorPath"),
                }
            }
            None => ScalePaths {
                spec: "/spec/replicas".into(),
                status: "/status/replicas".into(),
                selector: Some("/spec/selector".into()),
            },
        }
    }
}

fn scale_of(obj: &Object, paths: &ScalePaths) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let selector = match paths.selector.as_deref().and_then(|p| obj.pointer(p)) {
        // A CRD's labelSelectorPath holds the selector as a string already.
        Some(Value::String(s)) => s.clone(),
        // ReplicationControllers have a map; the others a LabelSelector.
        Some(sel) if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() => {
            kybern_apimachinery::labels::Selector::from_label_selector(sel)
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer(&paths.spec).and_then(Value::as_i64).unwrap_or(1)},
        "status": {"replicas": obj.pointer(&paths.status).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

/// Sets the value at a JSON pointer, creating objects on the way.
fn set_at(obj: &mut Value, pointer: &str, value: Value) {
    let mut node = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let key = part.replace("~1", "/").replace("~0", "~");
        if !node.is_object() {
            *node = json!({});
        }
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert(key, value);
            return;
        }
        node = map.entry(key).or_insert_with(|| json!({}));
    }
}

/// GET, PUT or PATCH `.../{name}/scale`.
pub async fn scale(ctx: &Ctx, method: &Method, request: Body) -> ApiResult {
    if *method == Method::GET {
        let obj = ctx
            .state
            .objects
            .get(&ctx.info, ctx.namespace(), ctx.name())
            .await?;
        return Ok(json_response(
            StatusCode::OK,
            &scale_of(&obj, &ScalePaths::of(&ctx.info)),
        ));
    }
    let paths = ScalePaths::of(&ctx.info);
    let bytes = body::read(request).await?;
    let kind = body::content_type(&ctx.headers);
    let put = *method == Method::PUT;
    let change = if put {
        body::decode_object(&ctx.headers, &bytes)?
    } else {
        body::parse_json(&bytes)?
    };
    let requested_rv = change
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(crate::storage::parse_rv)
        .transpose()?;
    let mut warnings = Vec::new();
    let stored = write::update_with(
        ctx,
        |old| {
            let mut scale = scale_of(old, &paths);
            if put {
                scale = change.clone();
            } else {
                match kind.as_str() {
                    "application/json-patch+json" => {
                        let p: json_patch::Patch = serde_json::from_value(change.clone())
                            .map_err(|e| ApiError::bad_request(e.to_string()))?;
                        json_patch::patch(&mut scale, &p)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    }
                    "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                        patch::merge_patch(&mut scale, &change)
                    }
                    other => {
                        return Err(ApiError::new(
                            StatusReason::UnsupportedMediaType,
                            format!("unsupported patch type {other:?}"),
                        ));
                    }
                }
            }
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    object::name(old),
                    vec![kybern_apimachinery::Cause::invalid(
                        "spec.replicas",
                        &json!(replicas),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let mut new = old.clone();
            set_at(&mut new, &paths.spec, json!(replicas));
            Ok(new)
        },
        requested_rv,
        &mut warnings,
        true,
    )
    .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&stored, &paths)))
}
