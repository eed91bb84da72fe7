//! `patch`: JSON merge patch (RFC 7386) and JSON patch (RFC 6902), applied to the
//! stored object and written through the shared update path.
//!
//! Strategic merge patch (merge keys and directives) comes from [`crate::smp`].
//! Server-side apply is in [`super::apply`].

use axum::body::Body;
use axum::http::StatusCode;
use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::Value;

use super::{Ctx, body, write};
use crate::object;
use crate::response::ApiResult;
use crate::storage::parse_rv;

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// PATCH an object (or its status).
pub async fn patch(ctx: &Ctx, request: Body) -> ApiResult {
    let bytes = body::read(request).await?;
    let kind = body::content_type(&ctx.headers);
    let patch_doc = match kind.as_str() {
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => body::parse_json(&bytes)?,
        "application/apply-patch+yaml" => return super::apply::apply(ctx, &bytes).await,
        "application/apply-patch+cbor" => {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                "the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml",
            )
            .into());
        }
        other => {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"),
            )
            .into());
        }
    };
    if ctx.query.get("force").is_some() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![kybern_apimachinery::Cause::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )],
        )
        .into());
    }
    let strategic = kind == "application/strategic-merge-patch+json";
    let json_patch: Option<json_patch::Patch> = if kind == "application/json-patch+json" {
        Some(
            serde_json::from_value(patch_doc.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?,
        )
    } else {
        if !patch_doc.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object").into());
        }
        None
    };
    // A resourceVersion inside a merge patch is a precondition, as upstream.
    let requested_rv = match patch_doc
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        Some(rv) if json_patch.is_none() => Some(parse_rv(rv)?),
        _ => None,
    };
    let info = ctx.info.clone();
    let mut warnings = Vec::new();
    let stored = write::update_with(
        ctx,
        |old| {
            let mut new = old.clone();
            match &json_patch {
                Some(p) => json_patch::patch(&mut new, p).map_err(|e| {
                    ApiError::invalid(
                        &info.group,
                        &info.kind,
                        object::name(old),
                        vec![kybern_apimachinery::Cause {
                            reason: "FieldValueInvalid",
                            field: String::new(),
                            message: format!("the JSON patch could not be applied: {e}"),
                        }],
                    )
                })?,
                None if strategic => crate::smp::apply(&mut new, &patch_doc)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
                None => merge_patch(&mut new, &patch_doc),
            }
            if !new.is_object() {
                return Err(ApiError::bad_request("the patch must leave an object"));
            }
            Ok(new)
        },
        requested_rv,
        &mut warnings,
        true,
    )
    .await?;
    Ok(write::with_warnings(
        ctx.answer_written(StatusCode::OK, stored),
        &warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            t,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
    }
}
