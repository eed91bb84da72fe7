//! `pods/{name}/binding`: assigns a pod to a node, as the scheduler does.

use axum::body::Body;
use axum::http::StatusCode;
use kybern_apimachinery::ApiError;
use kybern_apimachinery::status::success_status;
use serde_json::{Value, json};

use super::{Ctx, body, write};
use crate::object;
use crate::response::{ApiResult, json as json_response};

/// POST a Binding: sets `spec.nodeName` (409 when the pod is already bound) and
/// the `PodScheduled` condition.
pub async fn bind(ctx: &Ctx, request: Body) -> ApiResult {
    let bytes = body::read(request).await?;
    let binding = body::decode_object(&ctx.headers, &bytes)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            ctx.name(),
            vec![kybern_apimachinery::Cause::required("target.name", "")],
        )
        .into());
    }
    let (info, name) = (ctx.info.clone(), ctx.name().to_owned());
    write::update_in_storage(
        ctx,
        |old| {
            let current = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict(&info.group, &info.plural, &name, &format!("pod {name} is already assigned to node {current:?}")));
            }
            if object::is_deleting(old) {
                return Err(ApiError::conflict(&info.group, &info.plural, &name, "pod is being deleted, cannot be assigned to a host"));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(node);
            let mut conditions: Vec<Value> = old.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()}));
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            new["status"]["conditions"] = json!(conditions);
            Ok(new)
        },
    )
    .await?;
    Ok(json_response(StatusCode::CREATED, &success_status(None)))
}
