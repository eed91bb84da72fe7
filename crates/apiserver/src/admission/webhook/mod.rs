//! Admission webhooks (upstream's MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook): which configured webhooks a request
//! matches, calling them in upstream's order (mutating one after another,
//! with one reinvocation round; validating all at once), and what their
//! answers do to the request.

pub mod client;
pub mod config;
pub mod review;

use std::time::Duration;

use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use super::match_rules::{AdmissionAttempt, matches};
use crate::audit::AuditContext;
use crate::auth::UserInfo;
use crate::server::ApiState;
use review::Verdict;

/// One configured webhook and the configuration it belongs to.
struct Hook {
    configuration: String,
    spec: Value,
}

impl Hook {
    fn name(&self) -> &str {
        self.spec["name"].as_str().unwrap_or("")
    }

    fn fails_open(&self) -> bool {
        self.spec["failurePolicy"].as_str() == Some("Ignore")
    }

    fn timeout(&self) -> Duration {
        let secs = self.spec["timeoutSeconds"]
            .as_u64()
            .unwrap_or(10)
            .clamp(1, 30);
        Duration::from_secs(secs)
    }
}

/// Every webhook of every configuration of `plural`, in upstream's order:
/// configurations by name, webhooks in the order listed.
async fn hooks(state: &ApiState, plural: &str) -> Result<Vec<Hook>, ApiError> {
    Ok(super::configurations(state, plural)
        .await?
        .into_iter()
        .flat_map(|mut c| {
            let name = c["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let webhooks = match c["webhooks"].take() {
                Value::Array(w) => w,
                _ => Vec::new(),
            };
            webhooks.into_iter().map(move |spec| Hook {
                configuration: name.clone(),
                spec,
            })
        })
        .collect())
}

/// Whether the webhook's rules, selectors and match conditions take the
/// request. A match condition that fails to evaluate is the webhook's
/// failure (`Err`), handled by its failure policy.
async fn applies(
    state: &ApiState,
    hook: &Hook,
    a: &AdmissionAttempt<'_>,
    user: &UserInfo,
) -> Result<Result<bool, String>, ApiError> {
    let match_resources = json!({
        "resourceRules": hook.spec["rules"],
        "namespaceSelector": hook.spec["namespaceSelector"],
        "objectSelector": hook.spec["objectSelector"],
    });
    if !matches(state, &match_resources, a, true).await? {
        return Ok(Ok(false));
    }
    let conditions = &hook.spec["matchConditions"];
    if conditions.as_array().is_none_or(Vec::is_empty) {
        return Ok(Ok(true));
    }
    Ok(crate::admission::validating_policy::match_conditions(
        conditions, a, user,
    ))
}

/// One call: the review out, the verdict back. Errors are upstream's
/// `failed calling webhook` messages.
async fn call(
    state: &ApiState,
    hook: &Hook,
    a: &AdmissionAttempt<'_>,
    user: &UserInfo,
    mutating: bool,
) -> Result<Verdict, String> {
    let name = hook.name();
    let failed = |why: String| format!("failed calling webhook {name:?}: {why}");
    let version = review::review_version(&hook.spec);
    let uid = uuid::Uuid::new_v4().to_string();
    let body = review::request_body(version, &uid, a, user).to_string();
    let client_config = &hook.spec["clientConfig"];
    let target = client::resolve(state, client_config)
        .await
        .map_err(|e| failed(format!("failed to call webhook: {e}")))?;
    let ca = client_config["caBundle"].as_str().unwrap_or("");
    let started = std::time::Instant::now();
    let answer = client::post(&target, ca, body.into_bytes(), hook.timeout())
        .await
        .map_err(|e| failed(format!("failed to call webhook: {e}")))?;
    tracing::debug!(webhook = name, url = %target.url, elapsed_ms = started.elapsed().as_millis() as u64, "called admission webhook");
    review::parse_response(&answer, version, &uid, name, mutating).map_err(failed)
}

/// Where a webhook was called: `mutation` or `validating`, the round and
/// the webhook's index, as upstream's audit annotations name them.
type CallSite = (&'static str, usize, usize);

/// A webhook that could not be called: refused (`Fail`) with upstream's
/// internal error, or let through (`Ignore`) with a log line and an audit
/// annotation.
fn on_failure(
    hook: &Hook,
    why: String,
    (stage, round, index): CallSite,
    audit: &AuditContext,
) -> Result<(), ApiError> {
    if !hook.fails_open() {
        return Err(ApiError::internal(why));
    }
    tracing::warn!(webhook = hook.name(), error = %why, "admission webhook failed open");
    audit.annotate(
        &format!("failed-open.{stage}.webhook.admission.k8s.io/round_{round}_index_{index}"),
        hook.name().to_owned(),
    );
    Ok(())
}

fn record_allowed(
    hook: &Hook,
    allowed: &review::Allowed,
    warnings: &mut Vec<String>,
    audit: &AuditContext,
) {
    warnings.extend(allowed.warnings.iter().cloned());
    for (key, value) in &allowed.audit_annotations {
        audit.annotate(&format!("{}/{key}", hook.name()), value.clone());
    }
}

/// A dry run may only reach webhooks without side effects.
fn check_dry_run(hook: &Hook, a: &AdmissionAttempt<'_>) -> Result<(), ApiError> {
    let safe = matches!(
        hook.spec["sideEffects"].as_str(),
        Some("None" | "NoneOnDryRun")
    );
    if a.dry_run && !safe {
        return Err(ApiError::new(
            StatusReason::BadRequest,
            format!(
                "admission webhook {:?} does not support dry run",
                hook.name()
            ),
        ));
    }
    Ok(())
}

/// Runs the mutating webhooks over `object` (the new object; `None` on
/// delete, when patches have nothing to change). `settle` prunes and
/// defaults an object a webhook patched, as upstream decodes it again.
pub async fn mutate(
    state: &ApiState,
    user: &UserInfo,
    a: &AdmissionAttempt<'_>,
    mut object: Option<&mut Value>,
    settle: &(dyn Fn(&mut Value) + Sync),
    warnings: &mut Vec<String>,
    audit: &AuditContext,
) -> Result<(), ApiError> {
    if super::exempt(a) {
        return Ok(());
    }
    let hooks = hooks(state, "mutatingwebhookconfigurations").await?;
    if hooks.is_empty() {
        return Ok(());
    }
    // Round 0 calls every matching webhook; round 1 calls again those that
    // asked for it (`IfNeeded`) when a later webhook changed the object.
    let mut invoked_before_change = Vec::new();
    let mut invoked = Vec::new();
    for round in 0..2 {
        let mut changed_after: Option<usize> = None;
        for (index, hook) in hooks.iter().enumerate() {
            if round == 1 && !invoked_before_change.contains(&index) {
                continue;
            }
            let verdict = {
                let current = object.as_deref();
                let attempt = AdmissionAttempt {
                    object: current,
                    ..a.clone()
                };
                let site = ("mutation", round, index);
                match applies(state, hook, &attempt, user).await? {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(why) => {
                        let why = format!("failed calling webhook {:?}: {why}", hook.name());
                        on_failure(hook, why, site, audit)?;
                        continue;
                    }
                }
                check_dry_run(hook, &attempt)?;
                match call(state, hook, &attempt, user, true).await {
                    Ok(v) => v,
                    Err(why) => {
                        on_failure(hook, why, site, audit)?;
                        continue;
                    }
                }
            };
            invoked.push(index);
            let allowed = match verdict {
                Verdict::Denied(err) => return Err(*err),
                Verdict::Allowed(allowed) => allowed,
            };
            record_allowed(hook, &allowed, warnings, audit);
            let mutated = match (&allowed.patch, object.as_deref_mut()) {
                (Some(patch), Some(obj)) => apply_patch(hook, obj, patch, settle)?,
                _ => false,
            };
            audit.annotate(
                &format!("mutation.webhook.admission.k8s.io/round_{round}_index_{index}"),
                json!({"configuration": hook.configuration, "webhook": hook.name(),
                    "mutated": mutated})
                .to_string(),
            );
            if mutated {
                changed_after = Some(index);
            }
        }
        if round == 1 {
            break;
        }
        // Webhooks invoked before the last change and willing to see it.
        let Some(last_change) = changed_after else {
            break;
        };
        invoked_before_change = invoked
            .iter()
            .copied()
            .filter(|&i| i < last_change)
            .filter(|&i| hooks[i].spec["reinvocationPolicy"].as_str() == Some("IfNeeded"))
            .collect();
        if invoked_before_change.is_empty() {
            break;
        }
    }
    Ok(())
}

/// Applies a webhook's JSON patch (the object must keep its kind); true
/// when the object changed.
fn apply_patch(
    hook: &Hook,
    obj: &mut Value,
    patch: &json_patch::Patch,
    settle: &(dyn Fn(&mut Value) + Sync),
) -> Result<bool, ApiError> {
    let (api_version, kind) = (obj["apiVersion"].clone(), obj["kind"].clone());
    let mut patched = obj.clone();
    json_patch::patch(&mut patched, patch).map_err(|e| {
        ApiError::internal(format!(
            "failed calling webhook {:?}: JSON patch failed: {e}",
            hook.name()
        ))
    })?;
    if patched["apiVersion"] != api_version || patched["kind"] != kind {
        return Err(ApiError::internal(format!(
            "failed calling webhook {:?}: the patch changed the object's apiVersion or kind",
            hook.name()
        )));
    }
    settle(&mut patched);
    let changed = patched != *obj;
    *obj = patched;
    Ok(changed)
}

/// Runs the validating webhooks that match, all at once (as upstream); the
/// first refusal in webhook order refuses the request.
pub async fn validate(
    state: &ApiState,
    user: &UserInfo,
    a: &AdmissionAttempt<'_>,
    warnings: &mut Vec<String>,
    audit: &AuditContext,
) -> Result<(), ApiError> {
    if super::exempt(a) {
        return Ok(());
    }
    let hooks = hooks(state, "validatingwebhookconfigurations").await?;
    let mut chosen = Vec::new();
    for (index, hook) in hooks.iter().enumerate() {
        let site = ("validating", 0, index);
        match applies(state, hook, a, user).await? {
            Ok(true) => {
                check_dry_run(hook, a)?;
                chosen.push((hook, site));
            }
            Ok(false) => {}
            Err(why) => {
                let why = format!("failed calling webhook {:?}: {why}", hook.name());
                on_failure(hook, why, site, audit)?;
            }
        }
    }
    let verdicts = futures::future::join_all(
        chosen
            .iter()
            .map(|(hook, _)| call(state, hook, a, user, false)),
    )
    .await;
    let mut refusal = None;
    for ((hook, site), verdict) in chosen.iter().zip(verdicts) {
        let outcome = match verdict {
            Ok(Verdict::Allowed(allowed)) => {
                record_allowed(hook, &allowed, warnings, audit);
                Ok(())
            }
            Ok(Verdict::Denied(err)) => Err(*err),
            Err(why) => on_failure(hook, why, *site, audit),
        };
        if let Err(e) = outcome {
            refusal.get_or_insert(e);
        }
    }
    match refusal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
