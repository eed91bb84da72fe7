//! `pods/exec`, `pods/attach` and `pods/portforward`: the client's upgrade
//! request goes on
//! to the agent that runs the pod, and once both sides have switched
//! protocols the server copies bytes between them. The session's protocol
//! (WebSocket `v5.channel.k8s.io`, SPDY for port-forward) is the agent's
//! business, as it is the kubelet's upstream.

use axum::http::{HeaderName, Method, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Ctx;
use super::pod_log::{agent_for_pod, container_of, node_proxy};
use crate::response::ApiResult;
use kybern_apimachinery::ApiError;

/// Request headers that make up the upgrade, passed to the agent.
const UPGRADE_HEADERS: [&str; 6] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// GET or POST `.../pods/{name}/exec`, `.../attach` or `.../portforward`.
pub async fn stream(
    ctx: &Ctx,
    method: Method,
    client: Option<hyper::upgrade::OnUpgrade>,
) -> ApiResult {
    let name = ctx.name();
    let sub = ctx.path.subresource.as_deref().unwrap_or("");
    let pod = ctx
        .state
        .objects
        .get(&ctx.info, ctx.namespace(), name)
        .await?;
    let path = if sub == "exec" || sub == "attach" {
        let container = container_of(&pod, name, ctx.query.get("container"))?;
        if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
            let what = if sub == "exec" {
                "exec into"
            } else {
                "attach to"
            };
            return Err(ApiError::bad_request(format!(
                "cannot {what} a container in a completed pod; current phase is {phase}"
            ))
            .into());
        }
        let mut options = exec_options(ctx, &container);
        let kind = if sub == "attach" {
            options["kind"] = "PodAttachOptions".into();
            if let Some(o) = options.as_object_mut() {
                o.remove("command");
            }
            "PodAttachOptions"
        } else {
            "PodExecOptions"
        };
        ctx.connect_admission(kind, &options).await?;
        format!("/{sub}/{}/{name}/{container}", ctx.namespace())
    } else {
        ctx.connect_admission("PodPortForwardOptions", &port_forward_options(ctx))
            .await?;
        format!("/portForward/{}/{name}", ctx.namespace())
    };
    let agent = agent_for_pod(ctx, &pod).await?;
    let proxy = node_proxy(ctx)?;
    let (Some(client), true) = (client, ctx.headers.contains_key(header::UPGRADE)) else {
        return Err(ApiError::bad_request("Upgrade request required").into());
    };
    let mut headers = Vec::new();
    for key in UPGRADE_HEADERS {
        for v in ctx.headers.get_all(key) {
            headers.push((HeaderName::from_static(key), v.clone()));
        }
    }
    let path_and_query = format!("{path}?{}", ctx.raw_query);
    let agent = proxy
        .request(&agent, method, &path_and_query, &headers)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if agent.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = agent.status().as_u16();
        let text = crate::node_proxy::AgentResponse {
            status,
            body: agent.into_body(),
        }
        .text()
        .await;
        let text = text.trim();
        let err = if matches!(status, 400 | 404) {
            ApiError::bad_request(text.to_owned())
        } else {
            ApiError::internal(format!("error upgrading connection: {text}"))
        };
        return Err(err.into());
    }
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    for (k, v) in agent.headers() {
        resp.headers_mut().append(k.clone(), v.clone());
    }
    let what = format!("{}/{name}/{sub}", ctx.namespace());
    tokio::spawn(async move {
        let (agent_io, client_io) = match tokio::join!(hyper::upgrade::on(agent), client) {
            (Ok(a), Ok(c)) => (a, c),
            (a, c) => {
                tracing::debug!(stream = %what, agent_ok = a.is_ok(), client_ok = c.is_ok(),
                    "stream upgrade failed");
                return;
            }
        };
        splice(TokioIo::new(client_io), TokioIo::new(agent_io)).await;
        tracing::debug!(stream = %what, "stream ended");
    });
    Ok(resp)
}

/// Every value of a repeated query parameter, decoded.
fn query_values(ctx: &Ctx, key: &str) -> Vec<String> {
    ctx.raw_query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| crate::request::percent_decode(k) == key)
        .map(|(_, v)| crate::request::percent_decode(v))
        .collect()
}

/// The `PodExecOptions` admission sees, from the query (less the command,
/// the `PodAttachOptions`).
fn exec_options(ctx: &Ctx, container: &str) -> serde_json::Value {
    let flag = |k: &str| matches!(ctx.query.get(k), Some("true" | "1"));
    serde_json::json!({
        "apiVersion": "v1", "kind": "PodExecOptions",
        "stdin": flag("stdin"), "stdout": flag("stdout"), "stderr": flag("stderr"),
        "tty": flag("tty"), "container": container, "command": query_values(ctx, "command"),
    })
}

/// The `PodPortForwardOptions` admission sees, from the query.
fn port_forward_options(ctx: &Ctx) -> serde_json::Value {
    let ports: Vec<u16> = query_values(ctx, "ports")
        .iter()
        .flat_map(|p| {
            p.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "PodPortForwardOptions", "ports": ports})
}

/// Copies bytes both ways until the agent's side ends. Unlike
/// `copy_bidirectional`, a failed write towards the agent (it has closed
/// already) does not cut off what the agent sent last, such as the
/// session's closing `Status`.
async fn splice<C, A>(client: C, agent: A)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    A: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_agent, mut to_agent) = tokio::io::split(agent);
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_agent).await;
        let _ = to_agent.shutdown().await;
    });
    let _ = tokio::io::copy(&mut from_agent, &mut to_client).await;
    let _ = to_client.shutdown().await;
    // The client closes its side once it has read the end.
    let abort = up.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(10), up)
        .await
        .is_err()
    {
        abort.abort();
    }
}
