//! The HorizontalPodAutoscaler controller (autoscaling/v2): every sync
//! period reads each target's `scale` subresource and its pods' usage from
//! the resource metrics API (`metrics.k8s.io`), and sets the replica count
//! upstream's controller would, with its conditions, Events and metrics.

mod normalize;
mod pod_metrics;
mod replicas;
mod spec_metrics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::events::{EventRecorder, NORMAL, WARNING, error_text, reference_to};
use crate::informer::{Change, next_change};
use crate::{ControllerError, Informers, metrics};
use normalize::{Bounds, ScaleHistory};

/// The autoscaler's settings: upstream's `--horizontal-pod-autoscaler-*`
/// flags.
#[derive(Clone, Debug)]
pub struct AutoscalerOptions {
    /// How often every HPA is reconciled (`sync-period`, 15 s).
    pub sync_period: Duration,
    /// How long a scale-down waits for higher recommendations
    /// (`downscale-stabilization`, 5 min).
    pub downscale_stabilization: Duration,
    /// The usage ratio band that changes nothing (`tolerance`, 0.1).
    pub tolerance: f64,
    /// After a pod starts, how long its CPU samples need it ready
    /// (`cpu-initialization-period`, 5 min).
    pub cpu_initialization_period: Duration,
    /// How long after its start an unready pod counts as starting
    /// (`initial-readiness-delay`, 30 s).
    pub initial_readiness_delay: Duration,
}

impl Default for AutoscalerOptions {
    fn default() -> Self {
        AutoscalerOptions {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

/// What a pass needs besides the HPA.
struct Ctx<'a> {
    client: &'a kube::Client,
    recorder: &'a EventRecorder,
    informers: &'a Informers,
    options: &'a AutoscalerOptions,
}

fn key_of(hpa: &HorizontalPodAutoscaler) -> String {
    format!(
        "{}/{}",
        hpa.metadata.namespace.as_deref().unwrap_or_default(),
        hpa.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Runs the autoscaler: one pass over every HPA per sync period, and one
/// over an HPA as soon as it is created or changed.
pub async fn run(client: kube::Client, informers: &Informers, options: AutoscalerOptions) {
    let hpas = informers.autoscalers.clone();
    let recorder = EventRecorder::new(client.clone(), "horizontal-pod-autoscaler");
    let ctx = Ctx {
        client: &client,
        recorder: &recorder,
        informers,
        options: &options,
    };
    let mut histories: HashMap<String, ScaleHistory> = HashMap::new();
    // The generation each HPA was last reconciled at: a change that leaves
    // it (the pass's own status write) waits for the next period, as
    // upstream's rate-limited queue makes it.
    let mut seen: HashMap<String, Option<i64>> = HashMap::new();
    let mut changes = hpas.subscribe();
    hpas.synced().await;
    let mut tick = tokio::time::interval(options.sync_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due: Vec<Arc<HorizontalPodAutoscaler>> = tokio::select! {
            _ = tick.tick() => hpas.state(),
            c = next_change(&mut changes) => match c {
                Some(Change::Added(h) | Change::Modified(h)) => {
                    if seen.get(&key_of(&h)) == Some(&h.metadata.generation) {
                        continue;
                    }
                    vec![h]
                }
                Some(Change::Deleted(h)) => {
                    histories.remove(&key_of(&h));
                    seen.remove(&key_of(&h));
                    continue;
                }
                Some(Change::Resync) => hpas.state(),
                None => return,
            },
        };
        for hpa in due {
            let started = Instant::now();
            seen.insert(key_of(&hpa), hpa.metadata.generation);
            let history = histories.entry(key_of(&hpa)).or_default();
            let (action, error) = match reconcile(&ctx, history, &hpa).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(hpa = ?hpa.metadata.name, error = %e, "autoscaler pass failed");
                    ("none", "internal")
                }
            };
            metrics::hpa_reconciled(action, error, started.elapsed());
        }
    }
}

/// The target's resource, from `scaleTargetRef` (plural by upstream's
/// lower-case-plus-s rule for the kinds it scales).
fn target_resource(api_version: Option<&str>, kind: &str) -> ApiResource {
    let api_version = api_version.unwrap_or("v1");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.to_owned()),
    };
    ApiResource {
        api_version: api_version.to_owned(),
        group,
        version,
        kind: kind.to_owned(),
        plural: format!("{}s", kind.to_ascii_lowercase()),
    }
}

/// One HPA's pass; returns what it did and what stopped it, as upstream's
/// metrics label a reconciliation (`scale_up`/`scale_down`/`none`,
/// `spec`/`internal`/`none`).
async fn reconcile(
    ctx: &Ctx<'_>,
    history: &mut ScaleHistory,
    hpa: &HorizontalPodAutoscaler,
) -> Result<(&'static str, &'static str), ControllerError> {
    let event = |type_: &'static str, reason: &'static str, message: String| {
        ctx.recorder.post(reference_to(hpa), type_, reason, message);
    };
    let ns = hpa.metadata.namespace.as_deref().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let resource = target_resource(target.api_version.as_deref(), &target.kind);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let instant = Instant::now();
    let mut status = hpa.status.clone().unwrap_or_default();
    let scale: Value = match api.get_subresource("scale", &target.name).await {
        Ok(s) => serde_json::to_value(s).unwrap_or(Value::Null),
        Err(e) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            set(
                &mut status,
                "AbleToScale",
                "False",
                "FailedGetScale",
                &message,
                &now,
            );
            event(WARNING, "FailedGetScale", error_text(&e));
            write(ctx.client, hpa, status).await?;
            return Ok(("none", "spec"));
        }
    };
    // Upstream reads the count from the scale's spec, not its status.
    let current = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .map_or(0, |r| i32::try_from(r).unwrap_or(i32::MAX));
    let selector = scale
        .pointer("/status/selector")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    set(
        &mut status,
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        &now,
    );
    history.record_initial(current, instant);
    let (desired, reason) = if current == 0 && min != 0 {
        set(
            &mut status,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &now,
        );
        (0, String::new())
    } else if current > max {
        (
            max,
            "Current number of replicas above Spec.MaxReplicas".into(),
        )
    } else if current < min {
        (
            min,
            "Current number of replicas below Spec.MinReplicas".into(),
        )
    } else {
        let pass = spec_metrics::MetricPass {
            client: ctx.client,
            informers: ctx.informers,
            options: ctx.options,
            hpa,
            now: &now,
            event: &event,
        };
        match pass.replicas(current, selector, &mut status).await {
            Err((statuses, error)) => {
                status.current_replicas = Some(current);
                status.current_metrics = Some(statuses).filter(|s| !s.is_empty());
                write(ctx.client, hpa, status).await?;
                event(WARNING, "FailedComputeMetricsReplicas", error);
                return Ok(("none", "internal"));
            }
            Ok((proposed, metric, statuses)) => {
                status.current_metrics = Some(statuses).filter(|s| !s.is_empty());
                let reason = match proposed.cmp(&current) {
                    std::cmp::Ordering::Greater => format!("{metric} above target"),
                    std::cmp::Ordering::Less => "All metrics below target".into(),
                    std::cmp::Ordering::Equal => String::new(),
                };
                let bounds = Bounds {
                    min,
                    max,
                    behavior: spec.behavior.as_ref(),
                    downscale_window: ctx.options.downscale_stabilization,
                };
                let n = history.normalize(current, proposed.max(0), &bounds, instant);
                set(&mut status, "AbleToScale", "True", n.able.0, n.able.1, &now);
                let (limited, (why, message)) = n.limited;
                let value = if limited { "True" } else { "False" };
                set(&mut status, "ScalingLimited", value, why, message, &now);
                (n.replicas, reason)
            }
        }
    };
    let rescale = desired != current;
    if rescale {
        let patch = json!({"spec": {"replicas": desired}});
        let params = PatchParams::default();
        let patched = api
            .patch_subresource("scale", &target.name, &params, &Patch::Merge(&patch))
            .await;
        if let Err(e) = patched {
            let message = format!("the HPA controller was unable to update the target scale: {e}");
            set(
                &mut status,
                "AbleToScale",
                "False",
                "FailedUpdateScale",
                &message,
                &now,
            );
            let text = format!(
                "New size: {desired}; reason: {reason}; error: {}",
                error_text(&e)
            );
            event(WARNING, "FailedRescale", text);
            status.current_replicas = Some(current);
            write(ctx.client, hpa, status).await?;
            return Err(e.into());
        }
        let message =
            format!("the HPA controller was able to update the target scale to {desired}");
        set(
            &mut status,
            "AbleToScale",
            "True",
            "SucceededRescale",
            &message,
            &now,
        );
        event(
            NORMAL,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {reason}"),
        );
        history.record_scale(spec.behavior.as_ref(), current, desired, instant);
        status.last_scale_time = Some(now.clone());
    }
    status.current_replicas = Some(current);
    status.desired_replicas = desired;
    write(ctx.client, hpa, status).await?;
    let action = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => "scale_up",
        std::cmp::Ordering::Less => "scale_down",
        std::cmp::Ordering::Equal => "none",
    };
    Ok((action, "none"))
}

/// Sets condition `kind`, keeping its transition time while its status
/// stays.
fn set(
    status: &mut HorizontalPodAutoscalerStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let fresh = HorizontalPodAutoscalerCondition {
        type_: kind.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(now.clone()),
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) if c.status == value => {
            c.reason = fresh.reason;
            c.message = fresh.message;
        }
        Some(c) => *c = fresh,
        None => conditions.push(fresh),
    }
}

async fn write(
    client: &kube::Client,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
) -> Result<(), ControllerError> {
    if hpa.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut updated = hpa.clone();
    updated.status = Some(status);
    crate::write_status(client, &updated).await.map(drop)
}
