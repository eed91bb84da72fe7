//! `pods/{name}/eviction`: deletes a pod unless that would break a
//! PodDisruptionBudget covering it, as upstream's eviction subresource does
//! (429 when the budget allows no disruption; the budget's
//! `disruptionsAllowed` is spent on success).

use axum::body::Body;
use axum::http::StatusCode;
use kybern_apimachinery::labels::Selector;
use kybern_apimachinery::status::success_status;
use kybern_apimachinery::{ApiError, Cause, StatusReason};
use serde_json::{Value, json};

use super::{Ctx, body, delete};
use crate::object;
use crate::response::{ApiResult, json as json_response};
use crate::storage::parse_rv;

/// Pods no budget protects: already going, finished, or never started.
fn ignores_budget(pod: &Value) -> bool {
    object::is_deleting(pod)
        || matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed" | "Pending")
        )
}

/// POST an Eviction for the pod named by the URL.
pub async fn evict(ctx: &Ctx, request: Body) -> ApiResult {
    let bytes = body::read(request).await?;
    let eviction = body::decode_object(&ctx.headers, &bytes)?;
    match object::name(&eviction) {
        "" => {}
        n if n != ctx.name() => {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {n}"
            ))
            .into());
        }
        _ => {}
    }
    let (ns, name) = (ctx.namespace(), ctx.name());
    let pod = ctx.state.objects.get(&ctx.info, ns, name).await?;
    if !ignores_budget(&pod)
        && let Some(pdb_info) = ctx
            .state
            .registry
            .get("policy", "v1", "poddisruptionbudgets")
    {
        let labels = object::labels(&pod);
        let page = ctx
            .state
            .objects
            .list_page(&pdb_info, Some(ns), None, 0, 0)
            .await?;
        let covering: Vec<&Value> = page
            .items
            .iter()
            .filter(|pdb| {
                pdb.pointer("/spec/selector")
                    .and_then(|s| Selector::from_label_selector(s).ok())
                    .is_some_and(|s| !s.is_empty() && s.matches_labels(labels))
            })
            .collect();
        if covering.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            )
            .into());
        }
        if let Some(pdb) = covering.first() {
            let allowed = pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if allowed <= 0 {
                let mut err = ApiError::new(
                    StatusReason::TooManyRequests,
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                err.causes = vec![Cause {
                    reason: "DisruptionBudget",
                    field: String::new(),
                    message: format!(
                        "The disruption budget {} needs {} healthy pods and has {} currently",
                        object::name(pdb),
                        pdb.pointer("/status/desiredHealthy")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        pdb.pointer("/status/currentHealthy")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                    ),
                }];
                return Err(err.into());
            }
            // Spend one disruption; a concurrent change makes the client retry.
            let mut spent = (*pdb).clone();
            spent["status"]["disruptionsAllowed"] = json!(allowed - 1);
            // Recorded so the disruption controller does not count the pod
            // healthy again before it sees the deletion.
            if !spent["status"]["disruptedPods"].is_object() {
                spent["status"]["disruptedPods"] = json!({});
            }
            spent["status"]["disruptedPods"][name] = json!(object::now_rfc3339());
            let rv = parse_rv(object::meta_str(pdb, "resourceVersion"))?;
            ctx.state
                .objects
                .update(&pdb_info, spent, rv)
                .await
                .map_err(|e| {
                    if e.reason == StatusReason::Conflict {
                        ApiError::new(
                            StatusReason::TooManyRequests,
                            "the disruption budget changed; retry",
                        )
                    } else {
                        e
                    }
                })?;
        }
    }
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let opts = delete::options_from(ctx, &options)?;
    delete::delete_object(ctx, ns, name, &opts).await?;
    Ok(json_response(StatusCode::CREATED, &success_status(None)))
}
