//! The `scale` subresource of workloads: an `autoscaling/v1` Scale view of
//! `spec.replicas`, readable and writable by PUT and PATCH (`kubectl scale`).

use axum::body::Body;
use axum::http::{Method, StatusCode};
use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use super::{Ctx, body, patch, write};
use crate::object::{self, Object};
use crate::response::{ApiResult, json as json_response};

/// The Scale of a workload object.
fn scale_of(obj: &Object) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let selector = match obj.pointer("/spec/selector") {
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
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

/// GET, PUT or PATCH `.../{name}/scale`.
pub async fn scale(ctx: &Ctx, method: &Method, request: Body) -> ApiResult {
    if *method == Method::GET {
        let obj = ctx
            .state
            .objects
            .get(&ctx.info, ctx.namespace(), ctx.name())
            .await?;
        return Ok(json_response(StatusCode::OK, &scale_of(&obj)));
    }
    let bytes = body::read(request).await?;
    let kind = body::content_type(&ctx.headers);
    let change = body::parse_json(&bytes)?;
    let put = *method == Method::PUT;
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
            let mut scale = scale_of(old);
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
            new["spec"]["replicas"] = json!(replicas);
            Ok(new)
        },
        requested_rv,
        &mut warnings,
    )
    .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&stored)))
}
