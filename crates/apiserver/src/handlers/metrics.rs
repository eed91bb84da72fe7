//! `metrics.k8s.io/v1beta1` (NodeMetrics, PodMetrics), metrics-server's
//! role built in: answered on request from the node agents'
//! `/stats/summary`, never stored. `kubectl top` reads it.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::Ctx;
use super::pod_log::{agent_of, core_resource, node_proxy};
use crate::response::{ApiResult, json as json_response};
use kybern_apimachinery::ApiError;
use kybern_apimachinery::labels::Selector;

/// The window the agents average CPU use over (their sampling interval).
const WINDOW: &str = "5s";
/// The most objects read from the store for one answer.
const MAX_OBJECTS: usize = 100_000;

/// Every node's summary that could be fetched in time, with the node.
async fn summaries(ctx: &Ctx, only: Option<&str>) -> Result<Vec<(Value, Value)>, ApiError> {
    let nodes = ctx
        .state
        .objects
        .list_page(&*core_resource(ctx, "nodes")?, None, None, MAX_OBJECTS, 0)
        .await?
        .items;
    let proxy = node_proxy(ctx)?;
    let fetches = nodes
        .into_iter()
        .filter(|n| only.is_none_or(|name| n["metadata"]["name"] == name))
        .filter_map(|node| {
            let agent = agent_of(&node)?;
            Some(async move {
                let fetch = async {
                    let resp = proxy.get(&agent, "/stats/summary").await.ok()?;
                    if resp.status != 200 {
                        return None;
                    }
                    serde_json::from_str::<Value>(&resp.text().await).ok()
                };
                let summary = tokio::time::timeout(Duration::from_secs(5), fetch)
                    .await
                    .ok()
                    .flatten()?;
                Some((node, summary))
            })
        });
    Ok(futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect())
}

/// `cpu` and `memory` as quantities from a summary's stats; `None` until the
/// agent has a CPU rate.
fn usage(stats: &Value) -> Option<Value> {
    let cores = stats["cpu"]["usageNanoCores"].as_u64()?;
    let memory = stats["memory"]["workingSetBytes"].as_u64()?;
    Some(json!({"cpu": format!("{cores}n"), "memory": format!("{}Ki", memory / 1024)}))
}

fn metadata(name: &str, namespace: Option<&str>, labels: &Value) -> Value {
    let mut meta = json!({"name": name, "creationTimestamp": crate::object::now_rfc3339()});
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    if labels.is_object() {
        meta["labels"] = labels.clone();
    }
    meta
}

fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let name = node["metadata"]["name"].as_str()?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metadata(name, None, &node["metadata"]["labels"]),
        "timestamp": summary["node"]["cpu"]["time"],
        "window": WINDOW,
        "usage": usage(&summary["node"])?,
    }))
}

fn pod_metrics(pod: &Value, labels: &Value) -> Option<Value> {
    let containers = pod["containers"]
        .as_array()?
        .iter()
        .map(|c| Some(json!({"name": c["name"], "usage": usage(c)?})))
        .collect::<Option<Vec<Value>>>()?;
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metadata(
            pod["podRef"]["name"].as_str()?,
            pod["podRef"]["namespace"].as_str(),
            labels,
        ),
        "timestamp": pod["cpu"]["time"],
        "window": WINDOW,
        "containers": containers,
    }))
}

/// The pods' labels by `namespace/name`, for selectors and metadata.
async fn pod_labels(ctx: &Ctx) -> Result<std::collections::HashMap<String, Value>, ApiError> {
    let ns = ctx.path.namespace.as_deref();
    let pods = ctx
        .state
        .objects
        .list_page(&*core_resource(ctx, "pods")?, ns, None, MAX_OBJECTS, 0)
        .await?
        .items;
    Ok(pods
        .into_iter()
        .map(|p| {
            let key = format!(
                "{}/{}",
                crate::object::namespace(&p),
                crate::object::name(&p)
            );
            (key, p["metadata"]["labels"].clone())
        })
        .collect())
}

/// GET (list or one) of `nodes` or `pods` in `metrics.k8s.io`.
pub async fn serve(ctx: &Ctx, method: &Method) -> ApiResult {
    if method != Method::GET || ctx.query.flag("watch") || ctx.path.subresource.is_some() {
        let verb = if ctx.query.flag("watch") {
            "WATCH"
        } else {
            method.as_str()
        };
        return Err(ApiError::method_not_allowed(verb, &ctx.info.group, &ctx.info.plural).into());
    }
    let selector = Selector::parse(ctx.query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.0))?;
    let name = ctx.path.name.as_deref();
    let items: Vec<Value> = if ctx.info.plural == "nodes" {
        summaries(ctx, name)
            .await?
            .iter()
            .filter(|(node, _)| selector.matches_labels(Some(&node["metadata"]["labels"])))
            .filter_map(|(node, summary)| node_metrics(node, summary))
            .collect()
    } else {
        let labels = pod_labels(ctx).await?;
        let namespace = ctx.path.namespace.as_deref();
        summaries(ctx, None)
            .await?
            .iter()
            .flat_map(|(_, s)| s["pods"].as_array().cloned().unwrap_or_default())
            .filter(|p| namespace.is_none_or(|ns| p["podRef"]["namespace"] == ns))
            .filter(|p| name.is_none_or(|n| p["podRef"]["name"] == n))
            .filter_map(|p| {
                let key = format!(
                    "{}/{}",
                    p["podRef"]["namespace"].as_str()?,
                    p["podRef"]["name"].as_str()?
                );
                // Only pods the API knows (and the selector picks).
                let l = labels.get(&key)?;
                selector
                    .matches_labels(Some(l))
                    .then(|| pod_metrics(&p, l))
                    .flatten()
            })
            .collect()
    };
    if let Some(name) = name {
        let one = items
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(&ctx.info.group, &ctx.info.plural, name))?;
        return Ok(json_response(StatusCode::OK, &one));
    }
    let kind = format!("{}List", ctx.info.kind);
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {}, "items": items}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_needs_a_cpu_rate() {
        let stats = json!({"cpu": {"usageNanoCores": 1500000, "usageCoreNanoSeconds": 9},
            "memory": {"workingSetBytes": 4194304}});
        assert_eq!(
            usage(&stats),
            Some(json!({"cpu": "1500000n", "memory": "4096Ki"}))
        );
        assert_eq!(usage(&json!({"cpu": {"usageCoreNanoSeconds": 9}})), None);
    }

    #[test]
    fn a_pod_reports_only_when_every_container_has_usage() {
        let c = |name: &str, cores: Option<u64>| {
            json!({"name": name, "cpu": {"usageNanoCores": cores},
                "memory": {"workingSetBytes": 2048}})
        };
        let pod = json!({"podRef": {"name": "p", "namespace": "d"},
            "cpu": {"time": "2026-01-01T00:00:00Z"},
            "containers": [c("a", Some(5)), c("b", Some(7))]});
        let m = pod_metrics(&pod, &json!({"app": "x"})).expect("metrics");
        assert_eq!(m["metadata"]["namespace"], "d");
        assert_eq!(m["metadata"]["labels"]["app"], "x");
        assert_eq!(m["containers"][1]["usage"]["cpu"], "7n");
        let partial = json!({"podRef": {"name": "p", "namespace": "d"},
            "containers": [c("a", Some(5)), c("b", None)]});
        assert_eq!(pod_metrics(&partial, &Value::Null), None);
    }
}
