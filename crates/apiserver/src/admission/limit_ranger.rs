//! LimitRanger: the LimitRanges of a namespace give a new pod's containers
//! the requests and limits they leave out (`defaultRequest`, `default`), then
//! hold each container and the pod as a whole to `min`, `max` and
//! `maxLimitRequestRatio`, and a new claim's storage request to
//! `PersistentVolumeClaim` items' `min` and `max`, with upstream's messages.

use std::collections::BTreeMap;

use kybern_apimachinery::ApiError;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::quantity::{parse_milli, parse_value};
use kybern_apimachinery::resources::{Resources, format_quota_amount, pod_limits, pod_requests};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::object;
use crate::registry::ResourceInfo;
use crate::server::ApiState;

/// The annotation that says what LimitRanger filled in.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// A resource list (`{"cpu": "1", ...}`), sorted by name.
type List = BTreeMap<String, String>;

fn list(v: &Value) -> List {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), q.as_str()?.to_owned())))
        .collect()
}

/// A `Container` item's defaults after upstream's LimitRange defaulting: a
/// missing `default` is the `max`; a missing `defaultRequest` the
/// `default`, else the `min`.
fn container_defaults(item: &Value) -> (List, List) {
    let mut limits = list(&item["default"]);
    for (k, v) in list(&item["max"]) {
        limits.entry(k).or_insert(v);
    }
    let mut requests = list(&item["defaultRequest"]);
    for (k, v) in limits.iter().chain(list(&item["min"]).iter()) {
        requests.entry(k.clone()).or_insert(v.clone());
    }
    (limits, requests)
}

fn is_container_item(item: &&Value) -> bool {
    item["type"].as_str() == Some("Container")
}

/// Fills in what one container leaves out; what was set, for the annotation.
fn fill(container: &mut Value, requests: &List, limits: &List, what: &str) -> Vec<String> {
    let name = container["name"].as_str().unwrap_or("").to_owned();
    let Some(c) = container.as_object_mut() else {
        return Vec::new();
    };
    let resources = c
        .entry("resources")
        .or_insert_with(|| Value::Object(Map::new()));
    let mut notes = Vec::new();
    for (field, defaults) in [("requests", requests), ("limits", limits)] {
        let Some(r) = resources.as_object_mut() else {
            break;
        };
        let target = r.entry(field).or_insert_with(|| Value::Object(Map::new()));
        let Some(target) = target.as_object_mut() else {
            continue;
        };
        let mut set: Vec<&str> = Vec::new();
        for (k, v) in defaults {
            if !target.contains_key(k) {
                target.insert(k.clone(), Value::String(v.clone()));
                set.push(k);
            }
        }
        if !set.is_empty() {
            let kind = &field[..field.len() - 1];
            notes.push(format!("{} {kind} for {what} {name}", set.join(", ")));
        }
    }
    notes
}

/// Fills in the defaults of every `Container` item of `ranges`.
fn apply_defaults(ranges: &[Value], pod: &mut Value) {
    let mut notes = Vec::new();
    for range in ranges {
        for item in range["spec"]["limits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(is_container_item)
        {
            let (limits, requests) = container_defaults(item);
            for (field, what) in [
                ("containers", "container"),
                ("initContainers", "init container"),
            ] {
                for c in pod["spec"][field].as_array_mut().into_iter().flatten() {
                    notes.extend(fill(c, &requests, &limits, what));
                }
            }
        }
    }
    if !notes.is_empty() {
        let meta = object::meta_mut(pod);
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = annotations.as_object_mut() {
            let text = format!("LimitRanger plugin set: {}", notes.join("; "));
            a.insert(ANNOTATION.into(), Value::String(text));
        }
    }
}

/// A quantity in thousandths; huge byte counts fall back to whole units
/// scaled, so comparisons stay right.
fn milli(q: &str) -> i128 {
    match parse_milli(q) {
        Ok(m) if m < i64::MAX => i128::from(m),
        _ => parse_value(q).map(|v| i128::from(v) * 1000).unwrap_or(0),
    }
}

/// One side's request and limit of a resource, as written.
struct Observed {
    request: Option<String>,
    limit: Option<String>,
}

/// Upstream's min, max and ratio constraints of one item on one subject
/// (`Container` or `Pod`).
fn check(kind: &str, item: &Value, of: &dyn Fn(&str) -> Observed, errs: &mut Vec<String>) {
    for (resource, min) in list(&item["min"]) {
        let o = of(&resource);
        match (o.request.as_deref(), o.limit.as_deref()) {
            (None, _) => errs.push(format!(
                "minimum {resource} usage per {kind} is {min}.  No request is specified"
            )),
            (Some(r), _) if milli(r) < milli(&min) => errs.push(format!(
                "minimum {resource} usage per {kind} is {min}, but request is {r}"
            )),
            (_, Some(l)) if milli(l) < milli(&min) => errs.push(format!(
                "minimum {resource} usage per {kind} is {min}, but limit is {l}"
            )),
            _ => {}
        }
    }
    for (resource, max) in list(&item["max"]) {
        let o = of(&resource);
        match (o.limit.as_deref(), o.request.as_deref()) {
            (None, _) => errs.push(format!(
                "maximum {resource} usage per {kind} is {max}.  No limit is specified"
            )),
            (Some(l), _) if milli(l) > milli(&max) => errs.push(format!(
                "maximum {resource} usage per {kind} is {max}, but limit is {l}"
            )),
            (_, Some(r)) if milli(r) > milli(&max) => errs.push(format!(
                "maximum {resource} usage per {kind} is {max}, but request is {r}"
            )),
            _ => {}
        }
    }
    for (resource, ratio) in list(&item["maxLimitRequestRatio"]) {
        let o = of(&resource);
        let request = o.request.as_deref().map(milli).filter(|r| *r != 0);
        let limit = o.limit.as_deref().map(milli).filter(|l| *l != 0);
        match (request, limit) {
            (None, _) => errs.push(format!(
                "{resource} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
            )),
            (_, None) => errs.push(format!(
                "{resource} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
            )),
            (Some(r), Some(l)) => {
                let observed = l as f64 / r as f64;
                if observed * 1000.0 > milli(&ratio) as f64 {
                    errs.push(format!(
                        "{resource} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
                    ));
                }
            }
        }
    }
}

/// Whether any container of the pod sets `field` (`requests` or `limits`)
/// for `resource`.
fn any_sets(pod: &Value, field: &str, resource: &str) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        pod["spec"][*list]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["resources"][field].get(resource).is_some())
    })
}

/// Every violation of `ranges` by the (defaulted) pod.
fn violations(ranges: &[Value], pod: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let typed = CachedPod::deserialize(pod).ok();
    let totals = |f: fn(&CachedPod) -> Resources| typed.as_ref().map(f).unwrap_or_default();
    let (requests, limits) = (totals(pod_requests), totals(pod_limits));
    for range in ranges {
        for item in range["spec"]["limits"].as_array().into_iter().flatten() {
            match item["type"].as_str() {
                Some("Container") => {
                    for field in ["containers", "initContainers"] {
                        for c in pod["spec"][field].as_array().into_iter().flatten() {
                            let r = &c["resources"];
                            let of = |res: &str| Observed {
                                request: r["requests"][res].as_str().map(str::to_owned),
                                limit: r["limits"][res].as_str().map(str::to_owned),
                            };
                            check("Container", item, &of, &mut errs);
                        }
                    }
                }
                Some("Pod") => {
                    let text = |total: &Resources, field: &str, res: &str| {
                        any_sets(pod, field, res).then(|| format_quota_amount(res, total.get(res)))
                    };
                    let of = |res: &str| Observed {
                        request: text(&requests, "requests", res),
                        limit: text(&limits, "limits", res),
                    };
                    check("Pod", item, &of, &mut errs);
                }
                _ => {}
            }
        }
    }
    errs
}

/// Upstream's claim constraints: the request (only) against `min` and `max`.
fn check_claim(item: &Value, requests: &Value, errs: &mut Vec<String>) {
    const KIND: &str = "PersistentVolumeClaim";
    for (resource, min) in list(&item["min"]) {
        match requests[&resource].as_str() {
            None => errs.push(format!(
                "minimum {resource} usage per {KIND} is {min}.  No request is specified"
            )),
            Some(r) if milli(r) < milli(&min) => errs.push(format!(
                "minimum {resource} usage per {KIND} is {min}, but request is {r}"
            )),
            _ => {}
        }
    }
    for (resource, max) in list(&item["max"]) {
        match requests[&resource].as_str() {
            None => errs.push(format!(
                "maximum {resource} usage per {KIND} is {max}.  No request is specified"
            )),
            Some(r) if milli(r) > milli(&max) => errs.push(format!(
                "maximum {resource} usage per {KIND} is {max}, but request is {r}"
            )),
            _ => {}
        }
    }
}

/// The error for `errs`: one as it is, several as upstream's aggregate.
fn refusal(info: &ResourceInfo, obj: &Value, errs: &[String]) -> Result<(), ApiError> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(super::forbidden(info, obj, &errs[0])),
        _ => Err(super::forbidden(
            info,
            obj,
            &format!("[{}]", errs.join(", ")),
        )),
    }
}

/// Checks a new claim's storage request against its namespace's
/// `PersistentVolumeClaim` LimitRange items.
pub async fn admit_claim(
    state: &ApiState,
    info: &ResourceInfo,
    claim: &Value,
) -> Result<(), ApiError> {
    let namespace = object::namespace(claim);
    if namespace.is_empty() {
        return Ok(());
    }
    let ranges = super::cached_values(state, "", "limitranges", Some(namespace)).await?;
    let mut errs = Vec::new();
    for range in &ranges {
        for item in range["spec"]["limits"].as_array().into_iter().flatten() {
            if item["type"].as_str() == Some("PersistentVolumeClaim") {
                check_claim(item, &claim["spec"]["resources"]["requests"], &mut errs);
            }
        }
    }
    refusal(info, claim, &errs)
}

/// Defaults and checks a new pod against its namespace's LimitRanges.
pub async fn admit(state: &ApiState, info: &ResourceInfo, pod: &mut Value) -> Result<(), ApiError> {
    let namespace = object::namespace(pod).to_owned();
    if namespace.is_empty() {
        return Ok(());
    }
    let mut ranges = super::cached_values(state, "", "limitranges", Some(&namespace)).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    ranges.sort_by(|a, b| object::name(a).cmp(object::name(b)));
    apply_defaults(&ranges, pod);
    let errs = violations(&ranges, pod);
    refusal(info, pod, &errs)
}

#[cfg(test)]
mod tests;
