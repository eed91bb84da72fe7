//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): merges the
//! applied configuration into the object (creating it if absent) under the
//! field manager's ownership, with 409 conflicts unless `force=true`.

use axum::http::StatusCode;
use kybern_apimachinery::{ApiError, Cause, StatusReason};
use serde_json::Value;

use super::{Ctx, body, write};
use crate::managed::{self, Conflict};
use crate::response::ApiResult;

fn conflict_error(
    info: &crate::registry::ResourceInfo,
    name: &str,
    conflicts: Vec<Conflict>,
) -> ApiError {
    let n = conflicts.len();
    let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
    for c in &conflicts {
        let label = format!("conflict with {:?} using {}", c.manager, c.api_version);
        match by_manager.iter_mut().find(|(l, _)| *l == label) {
            Some((_, fields)) => fields.push(c.field.clone()),
            None => by_manager.push((label, vec![c.field.clone()])),
        }
    }
    let text = if n == 1 {
        format!("{}: {}", by_manager[0].0, by_manager[0].1[0])
    } else {
        by_manager
            .iter()
            .map(|(l, f)| {
                format!(
                    "{}:\n- {}",
                    l.replacen("conflict", "conflicts", 1),
                    f.join("\n- ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let plural = if n == 1 { "conflict" } else { "conflicts" };
    let mut err = ApiError::new(
        StatusReason::Conflict,
        format!("Apply failed with {n} {plural}: {text}"),
    );
    err.group = Some(info.group.clone());
    err.kind = Some(info.plural.clone());
    err.name = Some(name.to_string());
    err.causes = conflicts
        .into_iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict",
            field: c.field,
            message: format!("conflict with {:?} using {}", c.manager, c.api_version),
        })
        .collect();
    err
}

/// Applies the configuration in `bytes` to the object named by the URL.
pub async fn apply(ctx: &Ctx, bytes: &[u8]) -> ApiResult {
    if ctx.query.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause::required(
                "fieldManager",
                "is required for apply patch",
            )],
        )
        .into());
    }
    let force = match ctx.query.get("force") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(
                ApiError::bad_request(format!("invalid value for force: {other:?}")).into(),
            );
        }
    };
    let mut config = body::parse_yaml(bytes)?;
    if !config.is_object() {
        return Err(ApiError::bad_request("the applied configuration must be an object").into());
    }
    for field in ["apiVersion", "kind"] {
        if config
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(format!(
                "Object '{}' is missing in '{}'",
                if field == "kind" {
                    "Kind"
                } else {
                    "apiVersion"
                },
                String::from_utf8_lossy(bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
            .into());
        }
    }
    ctx.name_from_url(&mut config)?;
    let writer = ctx.ownership()?;
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let mut warnings = Vec::new();
    for _ in 0..4 {
        match ctx.state.objects.get(&info, ctx.namespace(), &name).await {
            Err(e) if e.reason == StatusReason::NotFound && ctx.path.subresource.is_none() => {
                let obj = managed::apply(None, &config, &writer, force)
                    .map_err(|c| conflict_error(&info, &name, c))?;
                match write::create_object(ctx, obj, &mut warnings, false).await {
                    Ok(stored) => {
                        return Ok(write::with_warnings(
                            ctx.answer_written(StatusCode::CREATED, stored),
                            &warnings,
                        ));
                    }
                    // Created meanwhile: apply to it instead.
                    Err(e) if e.reason == StatusReason::AlreadyExists => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {
                let stored = write::update_with(
                    ctx,
                    |old| {
                        managed::apply(Some(old), &config, &writer, force)
                            .map_err(|c| conflict_error(&info, &name, c))
                    },
                    None,
                    &mut warnings,
                    false,
                )
                .await?;
                return Ok(write::with_warnings(
                    ctx.answer_written(StatusCode::OK, stored),
                    &warnings,
                ));
            }
        }
    }
    Err(ApiError::conflict(
        &info.group,
        &info.plural,
        &name,
        "the object is being created and deleted too often; try again",
    )
    .into())
}
