//! The autoscaler's reads of the resource metrics API (`metrics.k8s.io`
//! PodMetrics): each pod's usage of one resource, summed over its
//! containers or taken from one, worded as upstream's metrics client.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kybern_apimachinery::go_text::parse_duration;
use kybern_apimachinery::quantity::parse_milli;
use serde_json::Value;

use super::replicas::{PodSample, PodSamples};

fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// Lists the PodMetrics of the pods `selector` picks in `namespace` and
/// reads each one's usage of `resource`.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<PodSamples, String> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &pod_metrics_resource());
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            format!(
                "unable to fetch metrics from resource metrics API: {}",
                crate::events::error_text(&e)
            )
        })?;
    let items: Vec<Value> = list
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect();
    samples(&items, resource, container)
}

/// Each listed pod's usage of `resource`, in milli-units. A pod that lacks
/// the resource for some container is left out (all containers) or an
/// error (one named container), as upstream.
pub fn samples(
    items: &[Value],
    resource: &str,
    container: Option<&str>,
) -> Result<PodSamples, String> {
    if items.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let mut out = PodSamples::with_capacity(items.len());
    for m in items {
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        let containers = m["containers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let usage = |c: &Value| {
            c["usage"][resource]
                .as_str()
                .and_then(|q| parse_milli(q).ok())
        };
        let value = match container {
            None if containers.is_empty() => None,
            None => containers
                .iter()
                .map(usage)
                .try_fold(0i64, |sum, v| Some(sum.saturating_add(v?))),
            Some(wanted) => match containers.iter().find(|c| c["name"] == wanted) {
                None => None,
                Some(c) => Some(usage(c).ok_or_else(|| {
                    let ns = m["metadata"]["namespace"].as_str().unwrap_or_default();
                    format!(
                        "failed to get container metrics: missing resource metric {resource} for container {wanted} in pod {ns}/{name}"
                    )
                })?),
            },
        };
        let Some(value) = value else { continue };
        let timestamp = m["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let window = m["window"]
            .as_str()
            .and_then(parse_duration)
            .and_then(|n| u64::try_from(n).ok())
            .map_or(Duration::ZERO, Duration::from_nanos);
        out.insert(
            name.to_owned(),
            PodSample {
                value,
                timestamp,
                window,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(name: &str, containers: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "d"},
            "timestamp": "2026-06-01T12:00:00Z", "window": "5s", "containers": containers})
    }

    #[test]
    fn usage_sums_over_containers_in_milli_units() {
        let items = [
            item(
                "a",
                json!([{"name": "x", "usage": {"cpu": "250000000n", "memory": "1Ki"}},
                    {"name": "y", "usage": {"cpu": "100m", "memory": "1Ki"}}]),
            ),
            item("b", json!([{"name": "x", "usage": {"memory": "1Ki"}}])),
        ];
        let cpu = samples(&items, "cpu", None).expect("samples");
        assert_eq!(cpu.len(), 1, "b lacks a cpu figure and is left out");
        assert_eq!(cpu["a"].value, 350);
        assert_eq!(cpu["a"].window, Duration::from_secs(5));
        let memory = samples(&items, "memory", None).expect("samples");
        assert_eq!(memory["b"].value, 1_024_000);
        let one = samples(&items, "cpu", Some("y")).expect("one container");
        assert_eq!(one["a"].value, 100);
        let err = samples(&items, "cpu", Some("x")).expect_err("b's x has no cpu");
        assert!(
            err.contains("missing resource metric cpu for container x in pod d/b"),
            "{err}"
        );
        assert_eq!(
            samples(&[], "cpu", None).expect_err("empty"),
            "no metrics returned from resource metrics API"
        );
    }
}
