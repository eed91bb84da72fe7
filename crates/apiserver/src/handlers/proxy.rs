//! `nodes/{name}/proxy/{path}`: a request passed on to the node's agent,
//! as upstream's node proxy passes it to the kubelet. The method, path,
//! query, content type and body go through; the agent's status, content
//! type and body come back, streamed. The agent sees the API server's
//! client certificate; who may proxy is decided here, by `nodes/proxy`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use kybern_apimachinery::ApiError;

use super::Ctx;
use super::pod_log::{agent_of, node_proxy};
use crate::response::ApiResult;

/// Request headers passed on to the agent.
const PASSED_ON: [header::HeaderName; 2] = [header::CONTENT_TYPE, header::ACCEPT];

/// Any method on `.../nodes/{name}/proxy[/{path}]`.
pub async fn proxy(ctx: &Ctx, method: Method, request: Body) -> ApiResult {
    let node = ctx.state.objects.get(&ctx.info, "", ctx.name()).await?;
    let Some(agent) = agent_of(&node) else {
        return Err(ApiError::unavailable(format!(
            "node {} publishes no agent endpoint",
            ctx.name()
        ))
        .into());
    };
    let mut target = ctx.path.proxy_path.clone().unwrap_or_else(|| "/".into());
    if !ctx.raw_query.is_empty() {
        target = format!("{target}?{}", ctx.raw_query);
    }
    let body = super::body::read(request).await?;
    let headers: Vec<(header::HeaderName, HeaderValue)> = PASSED_ON
        .iter()
        .filter_map(|h| Some((h.clone(), ctx.headers.get(h)?.clone())))
        .collect();
    let resp = node_proxy(ctx)?
        .send(&agent, method, &target, &headers, body)
        .await
        .map_err(|e| ApiError::unavailable(format!("error trying to reach service: {e}")))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    Ok((
        status,
        [(header::CONTENT_TYPE, content_type)],
        Body::new(resp.into_body()),
    )
        .into_response())
}
