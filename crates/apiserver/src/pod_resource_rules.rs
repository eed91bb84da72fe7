//! Upstream's validation of what a pod asks for as a whole: its resource
//! claims (`spec.resourceClaims`, and each container's references to them)
//! and pod-level resources (`spec.resources`), with upstream's paths and
//! messages (`validatePodResourceClaims`, `validateResourceClaimNames`,
//! `validatePodResources`).

use kybern_apimachinery::resources::format_quota_amount;
use kybern_apimachinery::{Cause, names};
use serde_json::{Map, Value, json};

use crate::field_rules::{NEGATIVE, items, text};
use crate::resource_rules::{above_limit, milli, shown};

/// The resources a pod may ask for at pod level, as upstream lists them
/// (huge pages besides).
const POD_LEVEL: &[&str] = &["cpu", "memory"];

fn pod_level(name: &str) -> bool {
    POD_LEVEL.contains(&name) || name.starts_with("hugepages-")
}

/// Checks the claims and pod-level resources of the pod spec `spec` at
/// `path` (`spec`, `spec.template.spec`, …).
pub(crate) fn pod_resources(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let claims = pod_claims(spec, path, causes);
    for list in ["containers", "initContainers"] {
        for (i, c) in items(Some(spec), list).enumerate() {
            let at = format!("{path}.{list}[{i}].resources.claims");
            container_claims(c.pointer("/resources/claims"), &claims, &at, causes);
        }
    }
    if let Some(r) = spec.get("resources").filter(|r| r.is_object()) {
        pod_level_resources(spec, r, &format!("{path}.resources"), causes);
    }
}

/// `spec.resourceClaims`: each named once, by a DNS label, from exactly
/// one of a claim and a claim template. Returns the names given.
fn pod_claims<'a>(spec: &'a Value, path: &str, causes: &mut Vec<Cause>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, claim) in items(Some(spec), "resourceClaims").enumerate() {
        let at = format!("{path}.resourceClaims[{i}]");
        match text(claim, "name").filter(|n| !n.is_empty()) {
            None => causes.push(Cause::required(format!("{at}.name"), "")),
            Some(name) if seen.contains(&name) => {
                causes.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
            }
            Some(name) => {
                for msg in names::dns1123_label(name) {
                    causes.push(Cause::invalid(format!("{at}.name"), &json!(name), msg));
                }
                seen.push(name);
            }
        }
        let sources = ["resourceClaimName", "resourceClaimTemplateName"];
        let given: Vec<(&str, &str)> = sources
            .iter()
            .filter_map(|k| text(claim, k).map(|v| (*k, v)))
            .collect();
        match given.len() {
            0 => causes.push(Cause::invalid(
                &at,
                claim,
                "must specify one of: `resourceClaimName`, `resourceClaimTemplateName`",
            )),
            1 => {}
            _ => causes.push(Cause::invalid(
                &at,
                claim,
                "at most one of `resourceClaimName` or `resourceClaimTemplateName` may be specified",
            )),
        }
        for (key, value) in given {
            for msg in names::dns1123_subdomain(value) {
                causes.push(Cause::invalid(format!("{at}.{key}"), &json!(value), msg));
            }
        }
    }
    seen
}

/// A container's `resources.claims`: each names one of the pod's claims
/// (and optionally one request in it), at most once.
fn container_claims(list: Option<&Value>, pod: &[&str], at: &str, causes: &mut Vec<Cause>) {
    let mut seen: Vec<String> = Vec::new();
    for (i, claim) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let here = format!("{at}[{i}]");
        let Some(name) = text(claim, "name").filter(|n| !n.is_empty()) else {
            causes.push(Cause::required(&here, ""));
            continue;
        };
        let mut key = name.to_owned();
        if let Some(request) = text(claim, "request").filter(|r| !r.is_empty()) {
            for msg in names::dns1123_label(request) {
                causes.push(Cause::invalid(
                    format!("{here}.request"),
                    &json!(request),
                    msg,
                ));
            }
            key = format!("{name}/{request}");
        }
        if seen.contains(&key) {
            causes.push(Cause::duplicate(&here, &json!(name)));
        } else {
            seen.push(key);
        }
        if !pod.contains(&name) {
            let mut known: Vec<&str> = pod.to_vec();
            known.sort_unstable();
            let mut cause = Cause::not_found(&here, &json!(name));
            cause.message = if known.is_empty() {
                format!(
                    "{}: must be one of the names in pod.spec.resourceClaims which is empty",
                    cause.message
                )
            } else {
                format!(
                    "{}: must be one of the names in pod.spec.resourceClaims: {}",
                    cause.message,
                    known.join(", ")
                )
            };
            causes.push(cause);
        }
    }
}

fn list<'a>(r: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    r.get(key).and_then(Value::as_object)
}

/// A quantity of `name` in the unit its messages count in: millicores for
/// CPU, whole units (bytes) for the rest.
fn amount(name: &str, q: &Value) -> Option<i64> {
    let m = milli(q)?;
    Some(if name == "cpu" { m } else { m / 1000 })
}

/// `spec.resources`: no claims; supported names; non-negative amounts,
/// requests within limits; requests at least what the containers ask for
/// together, and no container limit above the pod's.
fn pod_level_resources(spec: &Value, r: &Value, path: &str, causes: &mut Vec<Cause>) {
    if r.get("claims").is_some_and(|c| !c.is_null()) {
        causes.push(Cause::forbidden(
            format!("{path}.claims"),
            "claims cannot be set for Resources at pod-level",
        ));
    }
    let (limits, requests) = (list(r, "limits"), list(r, "requests"));
    for (key, map) in [("limits", limits), ("requests", requests)] {
        for (name, q) in map.into_iter().flatten() {
            let at = format!("{path}.{key}[{name}]");
            for msg in names::qualified_name(name) {
                causes.push(Cause::invalid(&at, &json!(name), msg));
            }
            if !pod_level(name) {
                causes.push(Cause::not_supported(&at, &json!(name), POD_LEVEL));
            }
            if milli(q).is_some_and(|v| v < 0) {
                causes.push(Cause::invalid(&at, &json!(shown(q)), NEGATIVE));
            }
        }
    }
    for (name, q) in requests.into_iter().flatten() {
        let limit = limits.and_then(|l| l.get(name));
        if let (Some(request), Some(l)) = (milli(q), limit.and_then(milli))
            && request > l
        {
            causes.push(above_limit(path, name, q, limit));
        }
    }
    for (name, q) in requests.into_iter().flatten() {
        let (Some(pod), Some(containers)) = (amount(name, q), aggregate_requests(spec, name))
        else {
            continue;
        };
        if containers > pod {
            causes.push(Cause::invalid(
                format!("{path}.requests[{name}]"),
                &json!(shown(q)),
                format!(
                    "must be greater than or equal to aggregate container requests of {}",
                    format_quota_amount(name, containers)
                ),
            ));
        }
    }
    for (i, c) in items(Some(spec), "containers").enumerate() {
        let Some(own) = c.pointer("/resources/limits").and_then(Value::as_object) else {
            continue;
        };
        for (name, q) in own {
            let Some(pod_limit) = limits.and_then(|l| l.get(name)) else {
                continue;
            };
            if let (Some(mine), Some(pods)) = (milli(q), milli(pod_limit))
                && mine > pods
            {
                // Upstream's path for it, as it builds it.
                causes.push(Cause::invalid(
                    format!("{path}.containers[{i}][{name}].limits"),
                    &json!(shown(q)),
                    format!(
                        "must be less than or equal to pod limits of {}",
                        shown(pod_limit)
                    ),
                ));
            }
        }
    }
}

/// What the containers request of `name` together, as upstream's
/// `AggregateContainerRequests` adds them up: the app containers and
/// sidecars run side by side; each other init container runs alone beside
/// the sidecars started before it. A container without a request counts
/// its limit (the defaulted request). `None` when none asks for any.
fn aggregate_requests(spec: &Value, name: &str) -> Option<i64> {
    let ask = |c: &Value| {
        let r = c.get("resources")?;
        let q = r
            .pointer(&format!("/requests/{name}"))
            .or_else(|| r.pointer(&format!("/limits/{name}")))?;
        amount(name, q)
    };
    let mut any = false;
    let mut running = 0i64;
    for c in items(Some(spec), "containers") {
        if let Some(v) = ask(c) {
            any = true;
            running += v;
        }
    }
    let mut sidecars = 0i64;
    let mut peak = 0i64;
    for c in items(Some(spec), "initContainers") {
        let own = ask(c);
        any |= own.is_some();
        let own = own.unwrap_or(0);
        if text(c, "restartPolicy") == Some("Always") {
            running += own;
            sidecars += own;
            peak = peak.max(sidecars);
        } else {
            peak = peak.max(own + sidecars);
        }
    }
    any.then_some(running.max(peak))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines;

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        pod_resources(&spec, "spec", &mut causes);
        cause_lines(&causes)
    }

    #[test]
    fn claims_are_named_once_from_one_source_and_referenced_by_containers() {
        let got = check(json!({
            "resourceClaims": [
                {"name": "gpu", "resourceClaimTemplateName": "gpu-template"},
                {"name": "gpu", "resourceClaimName": "other"},
                {"name": "Bad_Name"},
                {"name": "both", "resourceClaimName": "a", "resourceClaimTemplateName": "b"},
            ],
            "containers": [{"name": "main", "resources": {"claims": [
                {"name": "gpu"}, {"name": "gpu"}, {"name": "gpu", "request": "one"}, {"name": "nic"}, {}
            ]}}],
        }));
        assert_eq!(
            got,
            vec![
                "spec.resourceClaims[1].name: Duplicate value: \"gpu\"",
                "spec.resourceClaims[2].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.resourceClaims[2]: Invalid value: {\"name\":\"Bad_Name\"}: must specify one of: `resourceClaimName`, `resourceClaimTemplateName`",
                "spec.resourceClaims[3]: Invalid value: {\"name\":\"both\",\"resourceClaimName\":\"a\",\"resourceClaimTemplateName\":\"b\"}: at most one of `resourceClaimName` or `resourceClaimTemplateName` may be specified",
                "spec.containers[0].resources.claims[1]: Duplicate value: \"gpu\"",
                "spec.containers[0].resources.claims[3]: Not found: \"nic\": must be one of the names in pod.spec.resourceClaims: Bad_Name, both, gpu",
                "spec.containers[0].resources.claims[4]: Required value",
            ]
        );
        let got =
            check(json!({"containers": [{"name": "a", "resources": {"claims": [{"name": "x"}]}}]}));
        assert_eq!(
            got,
            vec![
                "spec.containers[0].resources.claims[0]: Not found: \"x\": must be one of the names in pod.spec.resourceClaims which is empty"
            ]
        );
    }

    #[test]
    fn pod_level_resources_bound_the_containers() {
        let spec = json!({
            "resources": {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "256Mi"}},
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "250m"}}},
                {"name": "setup", "resources": {"requests": {"cpu": "1"}}},
            ],
            "containers": [{"name": "main", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}}}],
        });
        // Sidecar and app: 750m; the setup container beside the sidecar: 1250m.
        assert_eq!(
            check(spec.clone()),
            vec![
                "spec.resources.requests[cpu]: Invalid value: \"1\": must be greater than or equal to aggregate container requests of 1250m"
            ]
        );
        let mut fits = spec;
        fits["resources"]["requests"]["cpu"] = json!("1250m");
        assert!(check(fits.clone()).is_empty());
        fits["containers"][0]["resources"]["limits"] = json!({"memory": "512Mi"});
        fits["resources"]["claims"] = json!([{"name": "x"}]);
        fits["resources"]["limits"]["ephemeral-storage"] = json!("1Gi");
        fits["resources"]["requests"]["memory"] = json!("1Gi");
        assert_eq!(
            check(fits),
            vec![
                "spec.resources.claims: Forbidden: claims cannot be set for Resources at pod-level",
                "spec.resources.limits[ephemeral-storage]: Unsupported value: \"ephemeral-storage\": supported values: \"cpu\", \"memory\"",
                "spec.resources.requests: Invalid value: \"1Gi\": must be less than or equal to memory limit of 256Mi",
                "spec.resources.containers[0][memory].limits: Invalid value: \"512Mi\": must be less than or equal to pod limits of 256Mi",
            ]
        );
    }
}
