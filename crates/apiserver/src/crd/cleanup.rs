//! The `customresourcecleanup.apiextensions.k8s.io` finalizer: a deleted CRD
//! stays, `Terminating`, while every object of it is deleted (their own
//! finalizers honoured), and goes once none is left, as upstream's CRD
//! finalizer controller does. Meanwhile its API serves everything but create.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use crate::object::{self, Object};
use crate::registry::ResourceInfo;
use crate::server::ApiState;

/// The finalizer a CRD's first delete adds.
pub const FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// How long the objects may take before the condition says so (upstream's
/// one-minute poll).
const PATIENCE: Duration = Duration::from_secs(60);

/// The longest wait between passes over the objects left.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// CRDs whose objects are being deleted, by uid, so that each has one task.
pub type Running = Arc<Mutex<BTreeSet<String>>>;

/// Whether `info` is the CRD resource itself.
pub fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions"
}

/// Sets the CRD's `Terminating` condition (its transition time moves only
/// when its status does).
pub fn set_terminating(crd: &mut Object, status: &str, reason: &str, message: &str) {
    let now = object::now_rfc3339();
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    let conditions = &mut crd["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    let fresh = json!({"type": "Terminating", "status": status, "reason": reason,
        "message": message, "lastTransitionTime": now});
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Terminating"))
    {
        Some(c) => {
            let since = c
                .get("lastTransitionTime")
                .filter(|_| c.get("status").and_then(Value::as_str) == Some(status))
                .cloned();
            *c = fresh;
            if let Some(t) = since {
                c["lastTransitionTime"] = t;
            }
        }
        None => list.push(fresh),
    }
}

/// Starts deleting a deleted CRD's objects unless that already runs.
pub fn start_if_due(state: &Arc<ApiState>, crd: &Value, running: &Running) {
    if !object::is_deleting(crd) || !object::finalizers(crd).iter().any(|f| f == FINALIZER) {
        return;
    }
    let uid = object::meta_str(crd, "uid").to_owned();
    let Ok(mut set) = running.lock() else { return };
    if !set.insert(uid.clone()) {
        return;
    }
    drop(set);
    let (state, running) = (state.clone(), running.clone());
    let name = object::name(crd).to_owned();
    tokio::spawn(async move {
        if let Err(e) = clean_up(&state, &name, &uid).await {
            tracing::warn!(crd = %name, error = %e.message, "CRD cleanup stopped; it resumes with the CRD's next change or restart");
        }
        if let Ok(mut set) = running.lock() {
            set.remove(&uid);
        }
    });
}

fn crd_info(state: &ApiState) -> Result<Arc<ResourceInfo>, ApiError> {
    state
        .registry
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(|| ApiError::internal("CRDs are not registered"))
}

/// Changes the CRD named `name` with `change` unless it is gone or another
/// CRD of that name (uid); `change` returns whether to remove it instead.
async fn update_crd(
    state: &ApiState,
    name: &str,
    uid: &str,
    mut change: impl FnMut(&mut Object) -> bool,
) -> Result<Option<Object>, ApiError> {
    let info = crd_info(state)?;
    loop {
        let crd = match state.objects.get(&info, "", name).await {
            Err(e) if e.reason == StatusReason::NotFound => return Ok(None),
            other => other?,
        };
        if object::meta_str(&crd, "uid") != uid {
            return Ok(None);
        }
        let rev = object::meta_str(&crd, "resourceVersion")
            .parse()
            .unwrap_or(0);
        let mut new = crd.clone();
        let remove = change(&mut new);
        let result = if remove {
            state.objects.delete(&info, "", name, rev).await
        } else if new == crd {
            return Ok(Some(crd));
        } else {
            state.objects.update(&info, new, rev).await
        };
        match result {
            Err(e) if e.reason == StatusReason::Conflict => continue,
            other => return other.map(Some),
        }
    }
}

async fn clean_up(state: &ApiState, name: &str, uid: &str) -> Result<(), ApiError> {
    let in_progress = |crd: &mut Object| {
        set_terminating(
            crd,
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
        false
    };
    let Some(crd) = update_crd(state, name, uid, in_progress).await? else {
        return Ok(());
    };
    // Every served version keys its objects alike; the first will do.
    if let Some(info) = super::resources_of(&crd).into_iter().next() {
        let started = tokio::time::Instant::now();
        let mut reported = false;
        let mut pause = Duration::from_millis(250);
        loop {
            // Each pass checks that this is still the CRD being deleted: one
            // removed by hand and created anew must keep its objects.
            let check = |crd: &mut Object| {
                if !reported && started.elapsed() > PATIENCE {
                    set_terminating(
                        crd,
                        "True",
                        "InstanceDeletionCheck",
                        "could not confirm zero CustomResources remaining: timed out waiting for the condition",
                    );
                }
                false
            };
            if update_crd(state, name, uid, check).await?.is_none() {
                return Ok(());
            }
            reported = started.elapsed() > PATIENCE;
            if delete_all(state, &info).await? == 0 {
                break;
            }
            // Objects held by finalizers may take long: look less often.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
    let done = |crd: &mut Object| {
        let rest: Vec<String> = object::finalizers(crd)
            .into_iter()
            .filter(|f| f != FINALIZER)
            .collect();
        object::set_meta(crd, "finalizers", json!(rest));
        set_terminating(
            crd,
            "False",
            "InstanceDeletionCompleted",
            "removed all instances",
        );
        !object::held(crd)
    };
    update_crd(state, name, uid, done).await?;
    Ok(())
}

/// Deletes every object of the resource, as a delete without options would:
/// one held by finalizers is marked deleting and left to them. Returns how
/// many objects were left.
async fn delete_all(state: &ApiState, info: &ResourceInfo) -> Result<usize, ApiError> {
    let mut left = 0;
    let mut after = None;
    loop {
        let page = state
            .objects
            .list_page(info, None, after.take(), 500, 0)
            .await?;
        for obj in page.items {
            left += 1;
            let rev = object::meta_str(&obj, "resourceVersion")
                .parse()
                .unwrap_or(0);
            let (ns, name) = (
                object::namespace(&obj).to_owned(),
                object::name(&obj).to_owned(),
            );
            let result = if object::held(&obj) {
                if object::is_deleting(&obj) {
                    continue;
                }
                let mut new = obj;
                object::set_meta(&mut new, "deletionTimestamp", json!(object::now_rfc3339()));
                object::set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
                state.objects.update(info, new, rev).await.map(drop)
            } else {
                state.objects.delete(info, &ns, &name, rev).await.map(drop)
            };
            match result {
                // Changed or gone meanwhile: the next pass sees it again.
                Err(e) if matches!(e.reason, StatusReason::Conflict | StatusReason::NotFound) => {}
                other => other?,
            }
        }
        match page.last_key {
            Some(k) => after = Some(k),
            None => return Ok(left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_condition_keeps_its_time_while_its_status_holds() {
        let mut crd = json!({"status": {"conditions": [
            {"type": "Established", "status": "True"},
            {"type": "Terminating", "status": "True", "reason": "InstanceDeletionPending",
             "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
        set_terminating(&mut crd, "True", "InstanceDeletionInProgress", "m");
        let t = &crd["status"]["conditions"][1];
        assert_eq!(t["reason"], "InstanceDeletionInProgress");
        assert_eq!(t["lastTransitionTime"], "2020-01-01T00:00:00Z");
        set_terminating(
            &mut crd,
            "False",
            "InstanceDeletionCompleted",
            "removed all instances",
        );
        let t = &crd["status"]["conditions"][1];
        assert_ne!(t["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(
            crd["status"]["conditions"].as_array().map(Vec::len),
            Some(2)
        );

        let mut bare = json!({"metadata": {"name": "x"}});
        set_terminating(&mut bare, "True", "InstanceDeletionPending", "m");
        assert_eq!(bare["status"]["conditions"][0]["type"], "Terminating");
    }
}
