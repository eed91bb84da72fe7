//! `get`: one object.

use axum::http::StatusCode;

use super::Ctx;
use crate::response::{ApiResult, json};

/// GET `.../{resource}/{name}[/status]`.
pub async fn get(ctx: &Ctx) -> ApiResult {
    let obj = ctx.present(
        ctx.state
            .objects
            .get(&ctx.info, ctx.namespace(), ctx.name())
            .await?,
    );
    if crate::table::wants_table(&ctx.headers) {
        let meta = serde_json::json!({"resourceVersion": crate::object::meta_str(&obj, "resourceVersion")});
        let include = ctx.query.get("includeObject");
        let t = crate::table::table(
            &ctx.info,
            &ctx.headers,
            include,
            std::slice::from_ref(&obj),
            meta,
        );
        return Ok(json(StatusCode::OK, &t));
    }
    if let Some(v) =
        crate::partial_metadata::wanted(&ctx.headers, crate::partial_metadata::Shape::One)
    {
        return Ok(json(
            StatusCode::OK,
            &crate::partial_metadata::of_object(&obj, v),
        ));
    }
    Ok(json(StatusCode::OK, &obj))
}
