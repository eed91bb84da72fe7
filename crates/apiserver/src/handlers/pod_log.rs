//! `pods/log`: finds the node that runs the pod and streams the container's
//! log from its agent (`/containerLogs/...`), as upstream does.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;

use super::Ctx;
use crate::node_proxy::AgentAddress;
use crate::response::ApiResult;
use kybern_apimachinery::ApiError;

/// Query parameters passed on to the agent.
const PASSED_ON: [&str; 6] = [
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "limitBytes",
];

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// The container the request names, or the pod's only one.
pub(super) fn container_of(
    pod: &Value,
    name: &str,
    asked: Option<&str>,
) -> Result<String, ApiError> {
    let apps = names(pod, "containers");
    let all: Vec<String> = apps
        .iter()
        .chain(&names(pod, "initContainers"))
        .chain(&names(pod, "ephemeralContainers"))
        .cloned()
        .collect();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if apps.len() == 1 => Ok(apps[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            apps.join(" ")
        ))),
    }
}

/// The agent's address: the node's InternalIP (else its first address) and
/// the port it publishes in `daemonEndpoints`.
pub(super) fn agent_of(node: &Value) -> Option<AgentAddress> {
    let name = node["metadata"]["name"].as_str()?.to_owned();
    let addresses = node["status"]["addresses"].as_array()?;
    let ip = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or(addresses.first())?["address"]
        .as_str()?
        .to_owned();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
    Some(AgentAddress {
        node: name,
        host: ip,
        port: u16::try_from(port).ok()?,
    })
}

/// The address of the agent that runs `pod`.
pub(super) async fn agent_for_pod(ctx: &Ctx, pod: &Value) -> Result<AgentAddress, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = ctx
        .state
        .objects
        .get(&*core_resource(ctx, "nodes")?, "", node_name)
        .await?;
    agent_of(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name} publishes no agent endpoint")))
}

/// A core/v1 resource the server must serve.
pub(super) fn core_resource(
    ctx: &Ctx,
    plural: &str,
) -> Result<std::sync::Arc<crate::registry::ResourceInfo>, ApiError> {
    ctx.state
        .registry
        .get("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

/// The server's client settings for node agents.
pub(super) fn node_proxy(ctx: &Ctx) -> Result<&crate::node_proxy::NodeProxy, ApiError> {
    ctx.state
        .node_proxy
        .get()
        .ok_or_else(|| ApiError::internal("this server has no credentials for node agents"))
}

/// GET `.../pods/{name}/log`.
pub async fn log(ctx: &Ctx) -> ApiResult {
    let name = ctx.name();
    let pod = ctx
        .state
        .objects
        .get(&ctx.info, ctx.namespace(), name)
        .await?;
    let container = container_of(&pod, name, ctx.query.get("container"))?;
    let agent = agent_for_pod(ctx, &pod).await?;
    let proxy = node_proxy(ctx)?;
    let mut query: Vec<String> = Vec::new();
    for key in PASSED_ON {
        if let Some(v) = ctx.query.get(key) {
            // Values are numbers and booleans; anything else is refused here.
            if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ApiError::bad_request(format!("invalid {key}: {v:?}")).into());
            }
            query.push(format!("{key}={v}"));
        }
    }
    let path = format!(
        "/containerLogs/{}/{}/{}?{}",
        ctx.namespace(),
        name,
        container,
        query.join("&")
    );
    let resp = proxy
        .get(&agent, &path)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if resp.status != 200 {
        let status = resp.status;
        let text = resp.text().await;
        let err = if status == 404 || status == 400 {
            ApiError::bad_request(text.trim().to_owned())
        } else {
            ApiError::internal(text.trim())
        };
        return Err(err.into());
    }
    Ok((
        StatusCode::OK,
        [("content-type", "text/plain")],
        axum::body::Body::new(resp.body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one =
            json!({"spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container_of(&one, "p", None).expect("only"), "a");
        assert_eq!(container_of(&one, "p", Some("i")).expect("init"), "i");
        let err = container_of(&one, "p", Some("x")).expect_err("unknown");
        assert!(
            err.to_string()
                .contains("container x is not valid for pod p"),
            "{err}"
        );
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let err = container_of(&two, "p", None).expect_err("ambiguous");
        assert!(err.to_string().contains("choose one of: [a b]"), "{err}");
    }

    #[test]
    fn the_agent_is_found_from_the_node_status() {
        let node = json!({"metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "Hostname", "address": "n"},
            {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        let agent = AgentAddress {
            node: "n1".into(),
            host: "10.0.0.5".into(),
            port: 10250,
        };
        assert_eq!(agent_of(&node), Some(agent));
        assert_eq!(agent_of(&json!({"status": {}})), None);
    }
}
