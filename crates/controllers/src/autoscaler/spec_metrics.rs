//! One pass over an HPA's `spec.metrics`: each metric's proposed replica
//! count and observed value, the largest proposal, and the `ScalingActive`
//! condition upstream's `computeReplicasForMetrics` sets.

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus, MetricTarget, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::labels::Selector;
use kybern_apimachinery::quantity::parse_milli;

use super::replicas::{Calculator, Proposal, Tolerances};
use super::{AutoscalerOptions, pod_metrics, set};
use crate::Informers;
use crate::events::WARNING;

/// Posts an Event about the HPA: (type, reason, message).
pub type PostEvent<'a> = &'a (dyn Fn(&'static str, &'static str, String) + Sync);

/// What one pass over the metrics reads.
pub struct MetricPass<'a> {
    /// The autoscaler's client.
    pub client: &'a kube::Client,
    /// The pods' informer.
    pub informers: &'a Informers,
    /// The autoscaler's settings.
    pub options: &'a AutoscalerOptions,
    /// The HPA.
    pub hpa: &'a HorizontalPodAutoscaler,
    /// The time of the pass.
    pub now: &'a Time,
    /// Where Events go.
    pub event: PostEvent<'a>,
}

/// A failed metric: the `ScalingActive` reason, and the error.
type Failure = (&'static str, String);

/// The metric upstream assumes when an HPA names none: 80% of the CPU
/// requested.
fn default_metrics() -> Vec<MetricSpec> {
    let spec = serde_json::json!([{"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    serde_json::from_value(spec).unwrap_or_default()
}

/// A milli-unit amount as a canonical decimal quantity (`250m`, `2`, `5M`).
pub fn milli_quantity(milli: i64) -> Quantity {
    if milli % 1000 != 0 {
        return Quantity(format!("{milli}m"));
    }
    let mut n = milli / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while n != 0 && n % 1000 == 0 && suffix + 1 < SUFFIXES.len() {
        n /= 1000;
        suffix += 1;
    }
    Quantity(format!("{n}{}", SUFFIXES[suffix]))
}

/// A tolerance from a `behavior` direction's `tolerance`, or the default.
fn tolerance(set: Option<&Quantity>, default: f64) -> f64 {
    set.and_then(|q| parse_milli(&q.0).ok())
        .map_or(default, |m| m as f64 / 1000.0)
}

impl MetricPass<'_> {
    fn calculator(&self) -> Calculator {
        let behavior = self.hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
        let rules = |up: bool| {
            behavior
                .and_then(|b| {
                    if up {
                        b.scale_up.as_ref()
                    } else {
                        b.scale_down.as_ref()
                    }
                })
                .and_then(|r| r.tolerance.as_ref())
        };
        Calculator {
            tolerances: Tolerances {
                down: tolerance(rules(false), self.options.tolerance),
                up: tolerance(rules(true), self.options.tolerance),
            },
            cpu_initialization_period: self.options.cpu_initialization_period,
            initial_readiness_delay: self.options.initial_readiness_delay,
            now: self.now.0,
        }
    }

    fn namespace(&self) -> &str {
        self.hpa.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// The largest replica count the metrics propose, the metric that
    /// proposed it and every metric's status; or, when no metric could be
    /// read (or some failed and the rest would scale down), the statuses and
    /// the error, with `ScalingActive` false.
    pub async fn replicas(
        &self,
        current: i32,
        selector: &str,
        status: &mut HorizontalPodAutoscalerStatus,
    ) -> Result<(i32, String, Vec<MetricStatus>), (Vec<MetricStatus>, String)> {
        let selector = match self.selector(selector, status) {
            Ok(s) => s,
            Err(e) => return Err((Vec::new(), e)),
        };
        let pods: Vec<std::sync::Arc<CachedPod>> = self
            .informers
            .pods
            .in_namespace(self.namespace())
            .into_iter()
            .filter(|p| crate::labels_match(&selector, p.metadata.labels.as_ref()))
            .collect();
        let pods: Vec<&CachedPod> = pods.iter().map(|p| &**p).collect();
        let specs = match self.hpa.spec.as_ref().and_then(|s| s.metrics.clone()) {
            Some(m) if !m.is_empty() => m,
            _ => default_metrics(),
        };
        let mut statuses = vec![MetricStatus::default(); specs.len()];
        let (mut replicas, mut metric) = (0, String::new());
        let mut first_failure: Option<Failure> = None;
        let mut failed = 0;
        for (spec, slot) in specs.iter().zip(statuses.iter_mut()) {
            match self.one(spec, current, &selector, &pods).await {
                Ok((proposal, name, s)) => {
                    *slot = s;
                    if replicas == 0 || proposal > replicas {
                        replicas = proposal;
                        metric = name;
                    }
                }
                Err((reason, error)) => {
                    (self.event)(WARNING, reason, error.clone());
                    failed += 1;
                    first_failure.get_or_insert((reason, error));
                }
            }
        }
        if let Some((reason, error)) = first_failure
            && (failed >= specs.len() || replicas < current)
        {
            let message = format!("the HPA was unable to compute the replica count: {error}");
            set(status, "ScalingActive", "False", reason, &message, self.now);
            let error = format!(
                "invalid metrics ({failed} invalid out of {}), first error is: {error}",
                specs.len()
            );
            return Err((statuses, error));
        }
        let message =
            format!("the HPA was able to successfully calculate a replica count from {metric}");
        set(
            status,
            "ScalingActive",
            "True",
            "ValidMetricFound",
            &message,
            self.now,
        );
        Ok((replicas, metric, statuses))
    }

    /// The scale's selector, parsed; an Event and `InvalidSelector` if it is
    /// missing or malformed.
    fn selector(
        &self,
        text: &str,
        status: &mut HorizontalPodAutoscalerStatus,
    ) -> Result<Selector, String> {
        if text.is_empty() {
            let error = "selector is required".to_owned();
            (self.event)(WARNING, "SelectorRequired", error.clone());
            let message = "the HPA target's scale is missing a selector";
            set(
                status,
                "ScalingActive",
                "False",
                "InvalidSelector",
                message,
                self.now,
            );
            return Err(error);
        }
        Selector::parse(text).map_err(|e| {
            let error = format!(
                "couldn't convert selector into a corresponding internal selector object: {}",
                e.0
            );
            (self.event)(WARNING, "InvalidSelector", error.clone());
            set(
                status,
                "ScalingActive",
                "False",
                "InvalidSelector",
                &error,
                self.now,
            );
            error
        })
    }

    /// One metric's proposal, its name in messages and its status.
    async fn one(
        &self,
        spec: &MetricSpec,
        current: i32,
        selector: &Selector,
        pods: &[&CachedPod],
    ) -> Result<(i32, String, MetricStatus), Failure> {
        let custom = |what: &str, name: &str| {
            format!(
                "failed to get {what} metric value: unable to get metric {name}: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
            )
        };
        match spec.type_.as_str() {
            "Resource" => {
                let Some(r) = spec.resource.as_ref() else {
                    return Err(("FailedGetResourceMetric", "no resource given".into()));
                };
                let (p, name, current_value) = self
                    .resource(current, &r.name, None, &r.target, selector, pods)
                    .await
                    .map_err(|e| ("FailedGetResourceMetric", e))?;
                let status = MetricStatus {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricStatus {
                        name: r.name.clone(),
                        current: current_value,
                    }),
                    ..Default::default()
                };
                Ok((p.replicas, name, status))
            }
            "ContainerResource" => {
                let Some(r) = spec.container_resource.as_ref() else {
                    return Err((
                        "FailedGetContainerResourceMetric",
                        "no resource given".into(),
                    ));
                };
                let container = Some(r.container.as_str());
                let (p, name, current_value) = self
                    .resource(current, &r.name, container, &r.target, selector, pods)
                    .await
                    .map_err(|e| ("FailedGetContainerResourceMetric", e))?;
                let status = MetricStatus {
                    type_: "ContainerResource".into(),
                    container_resource: Some(ContainerResourceMetricStatus {
                        name: r.name.clone(),
                        container: r.container.clone(),
                        current: current_value,
                    }),
                    ..Default::default()
                };
                Ok((p.replicas, name, status))
            }
            "Pods" => {
                let name = spec
                    .pods
                    .as_ref()
                    .map(|p| p.metric.name.as_str())
                    .unwrap_or_default();
                Err(("FailedGetPodsMetric", custom("pods", name)))
            }
            "Object" => {
                let name = spec
                    .object
                    .as_ref()
                    .map(|o| o.metric.name.as_str())
                    .unwrap_or_default();
                Err(("FailedGetObjectMetric", custom("object", name)))
            }
            "External" => {
                let name = spec
                    .external
                    .as_ref()
                    .map(|e| e.metric.name.as_str())
                    .unwrap_or_default();
                Err((
                    "FailedGetExternalMetric",
                    format!(
                        "failed to get external metric value: unable to get external metric {}/{name}/nil: unable to fetch metrics from external metrics API: no external metrics API (external.metrics.k8s.io) registered",
                        self.namespace()
                    ),
                ))
            }
            other => Err((
                "InvalidMetricSourceType",
                format!("unknown metric source type {other:?}"),
            )),
        }
    }

    /// A resource metric (of every container, or of one): upstream's
    /// `computeStatusForResourceMetricGeneric`.
    async fn resource(
        &self,
        current: i32,
        resource: &str,
        container: Option<&str>,
        target: &MetricTarget,
        selector: &Selector,
        pods: &[&CachedPod],
    ) -> Result<(Proposal, String, MetricValueStatus), String> {
        let kind = if container.is_some() {
            " container"
        } else {
            ""
        };
        let samples = |what: &'static str| async move {
            pod_metrics::fetch(self.client, self.namespace(), &selector.to_string(), resource, container)
                .await
                .map_err(|e| format!("failed to get {resource} {what}: unable to get metrics for resource {resource}: {e}"))
        };
        let calc = self.calculator();
        if let Some(average) = target.average_value.as_ref() {
            let wanted = parse_milli(&average.0).map_err(|e| e.to_string())?;
            let s = samples("usage").await?;
            let p = calc
                .average_replicas(current, wanted, resource, pods, s)
                .map_err(|e| format!("failed to get {resource} usage: {e}"))?;
            let value = MetricValueStatus {
                average_value: Some(milli_quantity(p.average)),
                ..Default::default()
            };
            return Ok((p, format!("{resource}{kind} resource"), value));
        }
        let Some(utilization) = target.average_utilization else {
            return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into());
        };
        let s = samples("utilization").await?;
        let p = calc
            .utilization_replicas(current, utilization, resource, container, pods, s)
            .map_err(|e| format!("failed to get {resource} utilization: {e}"))?;
        let value = MetricValueStatus {
            average_utilization: p.utilization,
            average_value: Some(milli_quantity(p.average)),
            ..Default::default()
        };
        let name = format!("{resource}{kind} resource utilization (percentage of request)");
        Ok((p, name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_amounts_read_as_upstream_writes_them() {
        assert_eq!(milli_quantity(250).0, "250m");
        assert_eq!(milli_quantity(2000).0, "2");
        assert_eq!(milli_quantity(5_000_000_000).0, "5M");
        assert_eq!(milli_quantity(4_194_304_000).0, "4194304");
        assert_eq!(milli_quantity(0).0, "0");
    }

    #[test]
    fn a_behavior_tolerance_overrides_the_default() {
        assert_eq!(tolerance(Some(&Quantity("50m".into())), 0.1), 0.05);
        assert_eq!(tolerance(Some(&Quantity("0.02".into())), 0.1), 0.02);
        assert_eq!(tolerance(None, 0.1), 0.1);
    }
}
