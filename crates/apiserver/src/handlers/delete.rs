//! `delete` and `deletecollection`: preconditions, propagation policy, finalizers
//! and `deletionTimestamp`.

use axum::body::Body;
use axum::http::StatusCode;
use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use super::attempts::{Attempt, Reads, settle};
use super::{Ctx, body, list};
use crate::object::{self, Object};
use crate::request::ListOptions;
use crate::response::{ApiResult, json as json_response};
use crate::storage::parse_rv;

/// The parts of `DeleteOptions` (body and query) that deletion uses.
#[derive(Debug, Default)]
pub(super) struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    propagation: Option<String>,
    /// `gracePeriodSeconds`, which pods honour.
    grace_period: Option<i64>,
    dry_run: bool,
}

fn options(ctx: &Ctx, bytes: &[u8]) -> Result<DeleteOptions, ApiError> {
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        body::decode_object(&ctx.headers, bytes)?
    };
    options_from(ctx, &body)
}

/// Reads `DeleteOptions` from a decoded body (and the query).
pub(super) fn options_from(ctx: &Ctx, body: &Value) -> Result<DeleteOptions, ApiError> {
    let str_at = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let mut propagation = str_at("/propagationPolicy")
        .or_else(|| ctx.query.get("propagationPolicy").map(str::to_owned));
    if propagation.is_none() {
        // The deprecated orphanDependents flag maps onto the policy.
        match body
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or_else(|| ctx.query.get("orphanDependents").map(|v| v == "true"))
        {
            Some(true) => propagation = Some("Orphan".into()),
            Some(false) => propagation = Some("Background".into()),
            None => {}
        }
    }
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![kybern_apimachinery::Cause::not_supported(
                "propagationPolicy",
                &json!(p),
                &["Foreground", "Background", "Orphan"],
            )],
        ));
    }
    let dry_run = ctx.query.dry_run()?
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let grace_period =
        match body.get("gracePeriodSeconds") {
            Some(Value::Null) | None => match ctx.query.get("gracePeriodSeconds") {
                Some(v) => Some(v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {v:?}"))
                })?),
                None => None,
            },
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                ApiError::bad_request("gracePeriodSeconds must be an integer".to_owned())
            })?),
        };
    Ok(DeleteOptions {
        uid: str_at("/preconditions/uid"),
        resource_version: str_at("/preconditions/resourceVersion"),
        propagation,
        grace_period,
        dry_run,
    })
}

/// How long a pod being deleted may take to stop, as upstream's pod strategy
/// decides: none if it never reached a node or has finished; otherwise the
/// request's period, else the pod's `terminationGracePeriodSeconds` (30).
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let unscheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty();
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished {
        return 0;
    }
    let period = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    // A negative period means "as soon as possible", not "now".
    if period < 0 { 1 } else { period }
}

/// Deletes one object as upstream's generic registry does; returns it (with
/// `deletionTimestamp` when finalizers keep it) and whether it is gone.
///
/// As upstream's, the first try starts from the watch cache's copy; anything
/// it ends in other than a write that succeeded is judged again against the
/// stored object, since that copy may trail the store.
pub(super) async fn delete_object(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(Object, bool), ApiError> {
    let mut reads = Reads::new(ctx, namespace, name, opts.dry_run);
    while let Some((old, from_store)) = reads.next().await? {
        let outcome = delete_attempt(ctx, namespace, name, opts, old).await;
        if let Some(answer) = settle(outcome, from_store, opts.resource_version.is_none()) {
            return answer;
        }
    }
    Err(super::write::modified_too_often(ctx, name))
}

/// One try of [`delete_object`] from `old`.
async fn delete_attempt(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
    old: Object,
) -> Result<Attempt<(Object, bool)>, ApiError> {
    let info = &ctx.info;
    let old_rv = parse_rv(object::meta_str(&old, "resourceVersion"))?;
    // Upstream's precondition checks, in its words.
    for (wanted, field, label) in [
        (&opts.uid, "uid", "UID"),
        (&opts.resource_version, "resourceVersion", "ResourceVersion"),
    ] {
        let actual = object::meta_str(&old, field);
        if let Some(wanted) = wanted
            && wanted != actual
        {
            return Err(ApiError::conflict(
                &info.group,
                &info.plural,
                name,
                &format!(
                    "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}"
                ),
            ));
        }
    }
    // Admission sees the delete once per attempt, with the object it removes.
    let mut warnings = Vec::new();
    ctx.mutate_admission("DELETE", None, Some(&old), &mut warnings)
        .await?;
    ctx.validate_admission("DELETE", None, Some(&old), &mut warnings)
        .await?;
    let mut finalizers = object::finalizers(&old);
    let policy_finalizer = match opts.propagation.as_deref() {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ => None,
    };
    if let Some(f) = policy_finalizer {
        // One policy at a time: the other's finalizer goes, as upstream.
        finalizers.retain(|x| x == f || !matches!(x.as_str(), "orphan" | "foregroundDeletion"));
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_owned());
        }
    }
    // A CRD's first delete holds it until its objects are gone.
    let crd_cleanup = crate::crd::cleanup::is_crd(info) && !object::is_deleting(&old);
    if crd_cleanup
        && !finalizers
            .iter()
            .any(|x| x == crate::crd::cleanup::FINALIZER)
    {
        finalizers.push(crate::crd::cleanup::FINALIZER.to_owned());
    }
    // Namespaces are emptied by the namespace controller before they go.
    let namespace_finalizers = info.group.is_empty()
        && info.plural == "namespaces"
        && old
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    let grace = if info.group.is_empty() && info.plural == "pods" {
        pod_grace_period(&old, opts.grace_period)
    } else {
        0
    };
    // A pod already terminating keeps its deadline unless this one is sooner.
    let current_grace = old
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    let shortens = !object::is_deleting(&old) || current_grace.is_none_or(|c| grace < c);
    if finalizers.is_empty() && !namespace_finalizers && grace == 0 {
        if opts.dry_run {
            return Ok(Attempt::Written((old, true)));
        }
        return match ctx
            .state
            .objects
            .delete(info, namespace, name, old_rv)
            .await
        {
            Ok(gone) => Ok(Attempt::Written((gone, true))),
            Err(e) if e.reason == StatusReason::Conflict => Ok(Attempt::Conflict(e)),
            Err(e) => Err(e),
        };
    }
    let mut new = old.clone();
    if grace > 0 && shortens {
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        object::set_meta(&mut new, "deletionTimestamp", json!(at));
        object::set_meta(&mut new, "deletionGracePeriodSeconds", json!(grace));
    } else if !object::is_deleting(&new) {
        object::set_meta(&mut new, "deletionTimestamp", json!(object::now_rfc3339()));
        object::set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
    }
    object::set_meta(&mut new, "finalizers", json!(finalizers));
    if namespace_finalizers {
        new["status"]["phase"] = json!("Terminating");
    }
    if crd_cleanup {
        crate::crd::cleanup::set_terminating(
            &mut new,
            "True",
            "InstanceDeletionPending",
            "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        );
    }
    if opts.dry_run {
        return Ok(Attempt::Written((new, false)));
    }
    if new == old {
        return Ok(Attempt::Unchanged((new, false)));
    }
    match ctx.state.objects.update(info, new, old_rv).await {
        Ok(stored) => Ok(Attempt::Written((stored, false))),
        Err(e) if e.reason == StatusReason::Conflict => Ok(Attempt::Conflict(e)),
        Err(e) => Err(e),
    }
}

/// DELETE an object.
pub async fn delete(ctx: &Ctx, request: Body) -> ApiResult {
    if ctx.path.subresource.is_some() {
        return Err(
            ApiError::method_not_allowed("delete", &ctx.info.group, &ctx.info.plural).into(),
        );
    }
    let bytes = body::read(request).await?;
    let opts = options(ctx, &bytes)?;
    let (obj, _gone) = delete_object(ctx, ctx.namespace(), ctx.name(), &opts).await?;
    Ok(json_response(StatusCode::OK, &ctx.present(obj)))
}

/// Deletes a collection runs at once.
const DELETE_COLLECTION_WORKERS: usize = 16;

/// DELETE a collection: every object the selectors match; returns them as a list.
pub async fn delete_collection(ctx: &Ctx, request: Body) -> ApiResult {
    let bytes = body::read(request).await?;
    let opts = options(ctx, &bytes)?;
    let mut list_opts = ListOptions::parse(&ctx.query)?;
    list_opts.limit = 0;
    list_opts.continue_from = None;
    // Only names are kept from the read, and each deleted object is encoded
    // as it comes back: a collection of 20,000 pods held as decoded objects,
    // twice, once took the server's RSS up by more than a gigabyte.
    let mut targets: Vec<(String, String)> = Vec::new();
    let end = list::read_each(ctx, &list_opts, |obj| {
        targets.push((
            object::namespace(&obj).to_owned(),
            object::name(&obj).to_owned(),
        ));
    })
    .await?;
    // Several deletes in flight (upstream's `--delete-collection-workers`), so
    // that their writes share the store's group commits; results keep the
    // listed order.
    let mut deleted = super::list_body::EncodedItems::default();
    for chunk in targets.chunks(DELETE_COLLECTION_WORKERS) {
        let batch = chunk
            .iter()
            .map(|(namespace, name)| delete_object(ctx, namespace, name, &opts));
        for result in futures::future::join_all(batch).await {
            match result {
                Ok((obj, _)) => deleted.push(&ctx.present(obj)),
                Err(e) if e.reason == StatusReason::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(deleted.into_response(&list::list_head(&ctx.info, end.meta())))
}
