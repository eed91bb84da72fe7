//! The HorizontalPodAutoscaler controller (autoscaling/v2): every 15 s reads
//! each target's `scale` subresource, keeps replicas within
//! `minReplicas`..`maxReplicas`, and asks the resource metrics API
//! (`metrics.k8s.io`) for pod usage; until a node agent serves that API the
//! `ScalingActive` condition says the metrics are unavailable, in upstream's
//! words.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::events::{EventRecorder, NORMAL, WARNING, error_text, reference_to};
use crate::informer::{Change, next_change};
use crate::{ControllerError, Informers, metrics};

/// Upstream's `--horizontal-pod-autoscaler-sync-period`.
const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// Runs the autoscaler: one pass over every HPA per sync period, and one
/// over an HPA as soon as it is created or changed.
pub async fn run(client: kube::Client, informers: &Informers) {
    let hpas = informers.autoscalers.clone();
    let recorder = EventRecorder::new(client.clone(), "horizontal-pod-autoscaler");
    let mut changes = hpas.subscribe();
    hpas.synced().await;
    let mut tick = tokio::time::interval(SYNC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due: Vec<Arc<HorizontalPodAutoscaler>> = tokio::select! {
            _ = tick.tick() => hpas.state(),
            c = next_change(&mut changes) => match c {
                Some(Change::Added(h) | Change::Modified(h)) => vec![h],
                Some(Change::Deleted(_)) => continue,
                Some(Change::Resync) => hpas.state(),
                None => return,
            },
        };
        for hpa in due {
            let started = std::time::Instant::now();
            let (action, error) = match reconcile(&client, &recorder, &hpa).await {
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

/// One HPA's pass; returns what it did and what stopped it, as upstream's
/// metrics label a reconciliation (`scale_up`/`scale_down`/`none`,
/// `spec`/`none`).
async fn reconcile(
    client: &kube::Client,
    recorder: &EventRecorder,
    hpa: &HorizontalPodAutoscaler,
) -> Result<(&'static str, &'static str), ControllerError> {
    let event = |type_, reason, message: String| {
        recorder.post(reference_to(hpa), type_, reason, message);
    };
    let ns = hpa.metadata.namespace.as_deref().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let (group, version) = match target
        .api_version
        .as_deref()
        .unwrap_or("v1")
        .split_once('/')
    {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (
            String::new(),
            target.api_version.clone().unwrap_or("v1".into()),
        ),
    };
    let plural = format!("{}s", target.kind.to_ascii_lowercase());
    let resource = ApiResource {
        api_version: target.api_version.clone().unwrap_or_default(),
        group,
        version,
        kind: target.kind.clone(),
        plural,
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
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
            write(client, hpa, status).await?;
            return Ok(("none", "spec"));
        }
    };
    let current = scale
        .pointer("/status/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0) as i32;
    let wanted = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0) as i32;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    status.current_replicas = Some(current);
    set(
        &mut status,
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        &now,
    );
    let desired = if wanted == 0 && min != 0 {
        // Scaled to zero by hand: autoscaling is off, as upstream.
        set(
            &mut status,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &now,
        );
        wanted
    } else if wanted > max {
        set_limited(
            &mut status,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
            &now,
        );
        max
    } else if wanted < min {
        set_limited(
            &mut status,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
            &now,
        );
        min
    } else {
        let message = metrics_unavailable(client, ns, &mut status, &now).await;
        event(WARNING, "FailedGetResourceMetric", message.to_owned());
        wanted
    };
    status.desired_replicas = desired;
    if desired != wanted {
        let patch = json!({"spec": {"replicas": desired}});
        api.patch_subresource(
            "scale",
            &target.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        status.last_scale_time = Some(now.clone());
        let why = if wanted > max {
            "Current number of replicas above Spec.MaxReplicas"
        } else {
            "Current number of replicas below Spec.MinReplicas"
        };
        event(
            NORMAL,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {why}"),
        );
    }
    write(client, hpa, status).await?;
    let action = match desired.cmp(&wanted) {
        std::cmp::Ordering::Greater => "scale_up",
        std::cmp::Ordering::Less => "scale_down",
        std::cmp::Ordering::Equal => "none",
    };
    Ok((action, "none"))
}

/// Asks the resource metrics API for pod metrics; without it, says so.
/// Returns what it said.
async fn metrics_unavailable(
    client: &kube::Client,
    ns: &str,
    status: &mut HorizontalPodAutoscalerStatus,
    now: &Time,
) -> &'static str {
    let metrics = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &metrics);
    let message = match api.list(&Default::default()).await {
        Ok(_) => {
            "the HPA was unable to compute the replica count: resource metrics are served but not yet used by this controller"
        }
        Err(_) => {
            "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
        }
    };
    set(
        status,
        "ScalingActive",
        "False",
        "FailedGetResourceMetric",
        message,
        now,
    );
    message
}

fn set_limited(
    status: &mut HorizontalPodAutoscalerStatus,
    reason: &str,
    message: &str,
    now: &Time,
) {
    set(status, "ScalingLimited", "True", reason, message, now);
}

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
