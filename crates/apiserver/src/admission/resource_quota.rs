//! ResourceQuota admission: a new object (or an update that grows one) that a
//! quota of its namespace counts is refused when it would take the quota's `status.used` past its
//! `status.hard`, with upstream's messages; otherwise the quota is charged
//! at once (compare-and-swap on the quota, retried on conflict), so that
//! creates racing each other cannot overshoot it. The ResourceQuota
//! controller later recomputes `used` from what exists, which also gives
//! back what deletions and failed creates free.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceQuotaSpec};
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::quota_scope::{covers_pod, is_scoped};
use kybern_apimachinery::resources::{
    claim_quota_usage, containers_missing, format_quota_amount, is_claim_quota_resource,
    parse_quota_amount, pod_quota_usage, quota_counted_kind,
};
use kybern_apimachinery::{ApiError, StatusReason};
use serde::Deserialize;
use serde_json::Value;

use crate::object;
use crate::registry::ResourceInfo;
use crate::server::ApiState;
use crate::storage::parse_rv;

/// How often a charge is retried when quotas change under it.
const ATTEMPTS: usize = 8;

/// The resources every container must name when a quota counts them
/// (upstream's "backward compatibility requirement").
const MUST_SPECIFY: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The new object decoded, for the kinds quotas count by their contents.
enum Typed {
    Pod(Box<CachedPod>),
    Claim(Box<PersistentVolumeClaim>),
    Other,
}

impl Typed {
    fn of(info: &ResourceInfo, obj: &Value) -> Self {
        match (info.group.as_str(), info.plural.as_str()) {
            // Decoded as the controllers cache pods: what quotas read, only.
            ("", "pods") => {
                CachedPod::deserialize(obj).map_or(Typed::Other, |p| Typed::Pod(Box::new(p)))
            }
            ("", "persistentvolumeclaims") => serde_json::from_value(obj.clone())
                .map_or(Typed::Other, |c| Typed::Claim(Box::new(c))),
            _ => Typed::Other,
        }
    }

    fn pod(&self) -> Option<&CachedPod> {
        match self {
            Typed::Pod(p) => Some(p),
            _ => None,
        }
    }
}

/// What the new object adds to each quota resource it counts towards.
fn usage(info: &ResourceInfo, obj: &Value, typed: &Typed, name: &str) -> Option<i64> {
    if let Typed::Pod(pod) = typed {
        return pod_quota_usage(pod, name);
    }
    if is_claim_quota_resource(name) {
        let Typed::Claim(claim) = typed else {
            return None;
        };
        return claim_quota_usage(claim, name);
    }
    let (group, _, plural) = quota_counted_kind(name)?;
    if group != info.group || plural != info.plural {
        return None;
    }
    let service_type = obj.pointer("/spec/type").and_then(Value::as_str);
    match name {
        "services.loadbalancers" => Some(i64::from(service_type == Some("LoadBalancer"))),
        "services.nodeports" => Some(i64::from(matches!(
            service_type,
            Some("NodePort" | "LoadBalancer")
        ))),
        _ => Some(1),
    }
}

/// Whether a quota counts the new object at all: a scoped quota counts only
/// the pods its scopes cover.
fn in_scope(quota: &Value, pod: Option<&CachedPod>) -> bool {
    let spec: ResourceQuotaSpec = serde_json::from_value(quota["spec"].clone()).unwrap_or_default();
    !is_scoped(&spec) || pod.is_some_and(|p| covers_pod(&spec, p))
}

/// `a=1,b=2` in name order, as upstream prints resource lists.
fn pretty(list: &BTreeMap<String, String>) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The resources of one quota the object counts towards, and by how much.
type Delta = BTreeMap<String, i64>;

/// Checks one quota; the charged `status.used` if the object fits.
fn charge(quota: &Value, delta: &Delta) -> Result<Value, String> {
    let q = object::name(quota);
    let hard = &quota["status"]["hard"];
    let used = &quota["status"]["used"];
    let unknown: Vec<&str> = delta
        .keys()
        .filter(|k| hard.get(k.as_str()).is_none() || used.get(k.as_str()).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "status unknown for quota: {q}, resources: {}",
            unknown.join(",")
        ));
    }
    let amount = |v: &Value, k: &str| v[k].as_str().and_then(|t| parse_quota_amount(k, t));
    let mut new_used = used.clone();
    let mut requested: BTreeMap<String, String> = BTreeMap::new();
    let mut was: BTreeMap<String, String> = BTreeMap::new();
    let mut limited: BTreeMap<String, String> = BTreeMap::new();
    for (k, add) in delta {
        let (Some(u), Some(h)) = (amount(used, k), amount(hard, k)) else {
            return Err(format!("status unknown for quota: {q}, resources: {k}"));
        };
        if u.saturating_add(*add) > h {
            let text = |v: &Value| v[k.as_str()].as_str().unwrap_or("").to_owned();
            requested.insert(k.clone(), format_quota_amount(k, *add));
            was.insert(k.clone(), text(used));
            limited.insert(k.clone(), text(hard));
        }
        new_used[k.as_str()] = Value::String(format_quota_amount(k, u.saturating_add(*add)));
    }
    if !requested.is_empty() {
        return Err(format!(
            "exceeded quota: {q}, requested: {}, used: {}, limited: {}",
            pretty(&requested),
            pretty(&was),
            pretty(&limited)
        ));
    }
    Ok(new_used)
}

/// Upstream's pod constraint: each container names what the quota counts.
fn missing_constraints(pod: &CachedPod, delta: &Delta) -> Option<String> {
    let missing: Vec<String> = delta
        .keys()
        .filter(|k| MUST_SPECIFY.contains(&k.as_str()))
        .filter_map(|k| {
            let (kind, resource) = k.split_once('.').unwrap_or(("requests", k));
            let mut names = containers_missing(pod, kind, resource);
            names.sort();
            names.dedup();
            (!names.is_empty()).then(|| format!("{k} for: {}", names.join(",")))
        })
        .collect();
    (!missing.is_empty()).then(|| format!("must specify {}", missing.join("; ")))
}

/// Refuses or charges the creation of `obj` against its namespace's quotas.
/// A dry run is checked and not charged.
pub async fn admit(
    state: &ApiState,
    info: &ResourceInfo,
    obj: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    admit_change(state, info, obj, None, dry_run).await
}

/// Refuses or charges an update of `old` to `obj` by what it adds: a
/// Service becoming a NodePort or LoadBalancer, a claim asking for more
/// storage. As upstream, only growth is charged (shrinking is given back by
/// the controller's recount), object counts do not change, and pods are not
/// charged on update (their resources change only through `resize`, which
/// this server does not serve).
pub async fn admit_update(
    state: &ApiState,
    info: &ResourceInfo,
    obj: &Value,
    old: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    // Only these kinds' usage can grow without a create; skipping the rest
    // keeps the quota read off every other update (leases, statuses).
    if !info.group.is_empty()
        || !matches!(info.plural.as_str(), "services" | "persistentvolumeclaims")
    {
        return Ok(());
    }
    admit_change(state, info, obj, Some(old), dry_run).await
}

async fn admit_change(
    state: &ApiState,
    info: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<(), ApiError> {
    let namespace = object::namespace(obj);
    if namespace.is_empty() {
        return Ok(());
    }
    let quotas = super::cached_values(state, "", "resourcequotas", Some(namespace)).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let typed = Typed::of(info, obj);
    let pod = typed.pod();
    let old = old.map(|o| (o, Typed::of(info, o)));
    let deltas_of = |quota: &Value| -> Delta {
        quota["spec"]["hard"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| {
                let now = usage(info, obj, &typed, k)?;
                let before = old
                    .as_ref()
                    .and_then(|(o, t)| usage(info, o, t, k))
                    .unwrap_or(0);
                let grows = now.saturating_sub(before);
                (old.is_none() || grows > 0).then(|| (k.clone(), grows.max(0)))
            })
            .collect()
    };
    let mut charges = Vec::new();
    for quota in quotas {
        if !in_scope(&quota, pod) {
            continue;
        }
        let delta = deltas_of(&quota);
        if delta.is_empty() {
            continue;
        }
        if let Some(pod) = pod
            && let Some(why) = missing_constraints(pod, &delta)
        {
            let q = object::name(&quota);
            return Err(super::forbidden(
                info,
                obj,
                &format!("failed quota: {q}: {why}"),
            ));
        }
        charge(&quota, &delta).map_err(|why| super::forbidden(info, obj, &why))?;
        charges.push((quota, delta));
    }
    if dry_run {
        return Ok(());
    }
    for (quota, delta) in charges {
        commit(state, info, obj, quota, &delta).await?;
    }
    Ok(())
}

/// Writes one quota's charged usage, re-reading and re-checking it when
/// another write got there first.
async fn commit(
    state: &ApiState,
    info: &ResourceInfo,
    obj: &Value,
    mut quota: Value,
    delta: &Delta,
) -> Result<(), ApiError> {
    let quota_info = state
        .registry
        .get("", "v1", "resourcequotas")
        .ok_or_else(|| ApiError::internal("resourcequotas are not registered"))?;
    for _ in 0..ATTEMPTS {
        let used = charge(&quota, delta).map_err(|why| super::forbidden(info, obj, &why))?;
        let rev = parse_rv(object::meta_str(&quota, "resourceVersion"))?;
        let (ns, name) = (
            object::namespace(&quota).to_owned(),
            object::name(&quota).to_owned(),
        );
        let mut updated = quota.clone();
        updated["status"]["used"] = used;
        match state.objects.update(&quota_info, updated, rev).await {
            Ok(_) => return Ok(()),
            Err(e) if e.reason == StatusReason::Conflict => {
                quota = state.objects.get(&quota_info, &ns, &name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        "",
        "resourcequotas",
        object::name(&quota),
        "the quota kept changing; try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard.clone()},
               "status": {"hard": hard, "used": used}})
    }

    #[test]
    fn a_create_that_fits_is_charged() {
        let q = quota(
            json!({"pods": "2", "requests.cpu": "1"}),
            json!({"pods": "1", "requests.cpu": "500m"}),
        );
        let delta = Delta::from([("pods".into(), 1), ("requests.cpu".into(), 250)]);
        assert_eq!(
            charge(&q, &delta),
            Ok(json!({"pods": "2", "requests.cpu": "750m"}))
        );
    }

    #[test]
    fn a_create_past_the_quota_is_refused_with_upstream_s_message() {
        let q = quota(
            json!({"pods": "2", "limits.memory": "1Gi"}),
            json!({"pods": "2", "limits.memory": "512Mi"}),
        );
        let delta = Delta::from([("pods".into(), 1), ("limits.memory".into(), 256 << 20)]);
        assert_eq!(
            charge(&q, &delta),
            Err("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into())
        );
        let fresh = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"}}});
        assert_eq!(
            charge(&fresh, &Delta::from([("pods".into(), 1)])),
            Err("status unknown for quota: q, resources: pods".into())
        );
    }

    #[test]
    fn counted_kinds_and_container_constraints() {
        let reg = crate::registry::Registry::with_builtins();
        let cms = reg.get("", "v1", "configmaps").expect("configmaps");
        let svcs = reg.get("", "v1", "services").expect("services");
        let cm = json!({});
        assert_eq!(usage(&cms, &cm, &Typed::Other, "configmaps"), Some(1));
        assert_eq!(usage(&cms, &cm, &Typed::Other, "count/configmaps"), Some(1));
        assert_eq!(usage(&cms, &cm, &Typed::Other, "secrets"), None);
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(
            usage(&svcs, &lb, &Typed::Other, "services.nodeports"),
            Some(1)
        );
        assert_eq!(
            usage(&svcs, &json!({}), &Typed::Other, "services.loadbalancers"),
            Some(0)
        );
        let pod: CachedPod = serde_json::from_value(json!({"spec": {"containers": [
            {"name": "b", "resources": {"limits": {"cpu": "1"}}},
            {"name": "a"}]}}))
        .expect("pod");
        let delta = Delta::from([
            ("limits.cpu".into(), 1000),
            ("requests.memory".into(), 0),
            ("pods".into(), 1),
        ]);
        assert_eq!(
            missing_constraints(&pod, &delta).as_deref(),
            Some("must specify limits.cpu for: a; requests.memory for: a,b")
        );
    }
}
