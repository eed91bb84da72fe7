//! The endpoint's streaming routes: `/exec/{ns}/{pod}/{container}` and
//! `/portForward/{ns}/{pod}`, upgraded to WebSockets (or, for port-forward,
//! to SPDY directly, kubectl's fallback).

use std::sync::Arc;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::text;
use crate::NodeContext;
use crate::streaming::{PodTarget, StreamOptions, attach, channel, exec, portforward, tunnel};

fn not_running(namespace: &str, pod: &str, container: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("container {container} is not running in pod {namespace}/{pod}"),
    )
}

fn needs_websocket(verb: &str) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        format!("{verb} needs a WebSocket upgrade (v5.channel.k8s.io)"),
    )
}

fn not_on_node(namespace: &str, pod: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("pod {namespace}/{pod} is not on this node"),
    )
}

/// `/exec/{namespace}/{pod}/{container}`.
pub async fn exec(
    State(ctx): State<Arc<NodeContext>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let opts = match StreamOptions::parse(query.as_deref().unwrap_or("")) {
        Ok(o) if !o.command.is_empty() => o,
        Ok(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 command".into(),
            );
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(target) = PodTarget::find(&ctx, &namespace, &pod) else {
        return not_on_node(&namespace, &pod);
    };
    let Some(id) = target.running_container(&container) else {
        return not_running(&namespace, &pod, &container);
    };
    let Ok(ws) = ws else {
        return needs_websocket("exec");
    };
    let runtime = target.runtime(&ctx);
    tracing::info!(%namespace, %pod, %container, tty = opts.tty, "exec");
    ws.protocols(channel::PROTOCOLS)
        .on_upgrade(move |socket| exec::session(socket, runtime, id, opts))
}

/// `/attach/{namespace}/{pod}/{container}`.
pub async fn attach(
    State(ctx): State<Arc<NodeContext>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let opts = match StreamOptions::parse(query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(target) = PodTarget::find(&ctx, &namespace, &pod) else {
        return not_on_node(&namespace, &pod);
    };
    let Some(run) = target.attach_target(&container) else {
        return not_running(&namespace, &pod, &container);
    };
    let Ok(ws) = ws else {
        return needs_websocket("attach");
    };
    tracing::info!(%namespace, %pod, %container, stdin = opts.stdin, "attach");
    ws.protocols(channel::PROTOCOLS)
        .on_upgrade(move |socket| attach::session(socket, run, opts))
}

/// `/portForward/{namespace}/{pod}`: SPDY tunnelled in a WebSocket, or SPDY
/// itself after an HTTP upgrade.
pub async fn port_forward(
    State(ctx): State<Arc<NodeContext>>,
    Path((namespace, pod)): Path<(String, String)>,
    mut req: Request,
) -> Response {
    let Some(target) = PodTarget::find(&ctx, &namespace, &pod) else {
        return not_on_node(&namespace, &pod);
    };
    let netns = target.netns();
    let name = format!("{namespace}/{pod}");
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if upgrade == "spdy/3.1" {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(io) => portforward::session(TokioIo::new(io), netns, name).await,
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        });
        let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static(portforward::PROTOCOL),
        );
        return resp;
    }
    let (mut parts, _) = req.into_parts();
    let ws = match <WebSocketUpgrade as axum::extract::FromRequestParts<()>>::from_request_parts(
        &mut parts,
        &(),
    )
    .await
    {
        Ok(ws) => ws,
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "port-forward needs an upgrade to SPDY/3.1 or a WebSocket".into(),
            );
        }
    };
    tracing::info!(pod = %name, "port-forward");
    ws.protocols([portforward::WEBSOCKET_PROTOCOL])
        .on_upgrade(move |socket| portforward::session(tunnel::bytes_over(socket), netns, name))
}
