//! `get`: one object.

use axum::http::StatusCode;

use super::Ctx;
use crate::response::{ApiResult, json};

/// GET `.../{resource}/{name}[/status]`.
pub async fn get(ctx: &Ctx) -> ApiResult {
    let obj = ctx
        .state
        .objects
        .get(&ctx.info, ctx.namespace(), ctx.name())
        .await?;
    Ok(json(StatusCode::OK, &obj))
}
