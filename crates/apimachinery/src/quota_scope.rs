//! ResourceQuota scopes: which pods a scoped quota covers (`scopes` and
//! `scopeSelector`: Terminating, NotTerminating, BestEffort, NotBestEffort,
//! PriorityClass, CrossNamespacePodAffinity), as upstream's pod evaluator.

use k8s_openapi::api::core::v1::{ResourceQuotaSpec, ScopedResourceSelectorRequirement};

use crate::cached_pod::{CachedContainer, CachedPod};

/// Whether the quota has any scope; a scoped quota counts pods only.
pub fn is_scoped(spec: &ResourceQuotaSpec) -> bool {
    spec.scopes.as_ref().is_some_and(|s| !s.is_empty())
        || spec
            .scope_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .is_some_and(|e| !e.is_empty())
}

/// Whether every scope of the quota covers `pod` (an unscoped quota covers
/// every pod).
pub fn covers_pod(spec: &ResourceQuotaSpec, pod: &CachedPod) -> bool {
    // `scopes` are selector requirements with `Exists`, as upstream reads them.
    let listed = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| ScopedResourceSelectorRequirement {
            scope_name: s.clone(),
            operator: "Exists".into(),
            values: None,
        });
    let selected = spec
        .scope_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten().cloned());
    listed.chain(selected).all(|r| requirement_holds(&r, pod))
}

fn requirement_holds(r: &ScopedResourceSelectorRequirement, pod: &CachedPod) -> bool {
    let spec = pod.spec.as_ref();
    match r.scope_name.as_str() {
        "Terminating" => terminating(pod),
        "NotTerminating" => !terminating(pod),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        "PriorityClass" => {
            let class = spec
                .and_then(|s| s.priority_class_name.as_deref())
                .unwrap_or("");
            let values = r.values.as_deref().unwrap_or(&[]);
            match r.operator.as_str() {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            }
        }
        // A scope this server does not know covers nothing, rather than all.
        _ => false,
    }
}

fn terminating(pod: &CachedPod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d >= 0)
}

/// Upstream's BestEffort QoS: no container asks for or is limited in CPU or
/// memory.
fn best_effort(pod: &CachedPod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let sized = |c: &CachedContainer| {
        let r = c.resources.as_ref();
        [
            r.and_then(|r| r.requests.as_ref()),
            r.and_then(|r| r.limits.as_ref()),
        ]
        .into_iter()
        .flatten()
        .any(|m| m.contains_key("cpu") || m.contains_key("memory"))
    };
    !spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(sized)
}

fn cross_namespace_affinity(pod: &CachedPod) -> bool {
    let Some(affinity) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return false;
    };
    let terms =
        |required: Option<&Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>,
         preferred: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            required
                .into_iter()
                .flatten()
                .cloned()
                .chain(
                    preferred
                        .into_iter()
                        .flatten()
                        .map(|w| w.pod_affinity_term.clone()),
                )
                .collect::<Vec<_>>()
        };
    let mut all = Vec::new();
    if let Some(a) = &affinity.pod_affinity {
        all.extend(terms(
            a.required_during_scheduling_ignored_during_execution
                .as_ref(),
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
        ));
    }
    if let Some(a) = &affinity.pod_anti_affinity {
        all.extend(terms(
            a.required_during_scheduling_ignored_during_execution
                .as_ref(),
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
        ));
    }
    all.iter().any(|t| {
        t.namespaces.as_ref().is_some_and(|n| !n.is_empty()) || t.namespace_selector.is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> CachedPod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    fn quota(spec: serde_json::Value) -> ResourceQuotaSpec {
        serde_json::from_value(spec).expect("quota")
    }

    #[test]
    fn scopes_select_pods_as_upstream() {
        let bare = pod(json!({"containers": [{"name": "c"}]}));
        let sized = pod(json!({"containers": [{"name": "c"}],
            "initContainers": [{"name": "i", "resources": {"limits": {"memory": "1Gi"}}}]}));
        let deadline = pod(
            json!({"containers": [{"name": "c"}], "activeDeadlineSeconds": 30,
            "priorityClassName": "high"}),
        );
        let best_effort = quota(json!({"scopes": ["BestEffort"]}));
        assert!(is_scoped(&best_effort));
        assert!(covers_pod(&best_effort, &bare));
        assert!(!covers_pod(&best_effort, &sized));
        let not_best = quota(json!({"scopes": ["NotBestEffort", "NotTerminating"]}));
        assert!(covers_pod(&not_best, &sized));
        assert!(!covers_pod(&not_best, &bare));
        let terminating = quota(json!({"scopes": ["Terminating"]}));
        assert!(covers_pod(&terminating, &deadline) && !covers_pod(&terminating, &bare));
        let high = quota(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high", "critical"]}]}}));
        assert!(covers_pod(&high, &deadline) && !covers_pod(&high, &bare));
        let classless = quota(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "DoesNotExist"}]}}));
        assert!(!covers_pod(&classless, &deadline) && covers_pod(&classless, &bare));
        let unscoped = quota(json!({"hard": {"pods": "1"}}));
        assert!(!is_scoped(&unscoped) && covers_pod(&unscoped, &sized));
        let affinity = pod(
            json!({"containers": [{"name": "c"}], "affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "zone", "namespaceSelector": {}}]}}}),
        );
        let cross = quota(json!({"scopes": ["CrossNamespacePodAffinity"]}));
        assert!(covers_pod(&cross, &affinity) && !covers_pod(&cross, &bare));
        assert!(!covers_pod(&quota(json!({"scopes": ["Sometimes"]})), &bare));
    }
}
