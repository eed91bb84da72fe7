//! `namespaces/{name}/finalize`: the namespace controller's way to clear
//! `spec.finalizers`; a terminating namespace with none left is removed.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, body, write};
use crate::response::{ApiResult, json as json_response};

/// PUT the namespace's `spec.finalizers`.
pub async fn finalize(ctx: &Ctx, request: Body) -> ApiResult {
    let bytes = body::read(request).await?;
    let new = body::decode_object(&ctx.headers, &bytes)?;
    let finalizers = new
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let mut warnings = Vec::new();
    let stored = write::update_with(
        ctx,
        |old| {
            let mut next = old.clone();
            if !next.get("spec").is_some_and(Value::is_object) {
                next["spec"] = json!({});
            }
            next["spec"]["finalizers"] = finalizers.clone();
            Ok(next)
        },
        None,
        &mut warnings,
        true,
    )
    .await?;
    Ok(json_response(StatusCode::OK, &stored))
}
