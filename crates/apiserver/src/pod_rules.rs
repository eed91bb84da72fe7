//! Upstream's validation of a pod spec (`ValidatePodSpec`): its volumes
//! (`volume_rules`), the containers (`container_rules`, `ephemeral_rules`),
//! the scheduling fields (`scheduling_rules`), security settings
//! (`security_rules`), resource claims and pod-level resources
//! (`pod_resource_rules`) and DNS, with upstream's paths and messages.

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::container_rules::{self, PodFacts};
use crate::field_rules::{items, one_of, text};
use crate::scheduling_rules::{self, labels, spread_constraints, tolerations};

/// Checks a pod spec at `path` (`spec`, `spec.template.spec`, …).
pub fn pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        causes.push(Cause::required(format!("{path}.containers"), ""));
        return;
    };
    let volumes = crate::volume_rules::volumes(spec, path, causes);
    let pod = PodFacts { volumes };
    if items(Some(spec), "containers").next().is_none() {
        causes.push(Cause::required(format!("{path}.containers"), ""));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (list, init) in [("containers", false), ("initContainers", true)] {
        for (i, c) in items(Some(spec), list).enumerate() {
            let field = format!("{path}.{list}[{i}]");
            match text(c, "name") {
                None | Some("") => causes.push(Cause::required(format!("{field}.name"), "")),
                Some(name) => {
                    for msg in names::dns1123_label(name) {
                        causes.push(Cause::invalid(format!("{field}.name"), &json!(name), msg));
                    }
                    if seen.contains(&name) {
                        causes.push(Cause::duplicate(format!("{field}.name"), &json!(name)));
                    }
                    seen.push(name);
                }
            }
            if text(c, "image").is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{field}.image"), ""));
            }
            container_rules::container(c, &field, init, &pod, causes);
        }
    }
    crate::ephemeral_rules::containers(spec, path, &seen, &pod, causes);
    crate::pod_resource_rules::pod_resources(spec, path, causes);
    host_port_conflicts(spec, path, causes);
    crate::security_rules::pod_security(spec, path, causes);
    one_of(
        spec,
        "restartPolicy",
        path,
        &["Always", "OnFailure", "Never"],
        causes,
    );
    one_of(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        causes,
    );
    one_of(
        spec,
        "preemptionPolicy",
        path,
        &["PreemptLowerPriority", "Never"],
        causes,
    );
    dns_config(spec, path, causes);
    labels(
        spec.get("nodeSelector"),
        &format!("{path}.nodeSelector"),
        causes,
    );
    if let Some(affinity) = spec.get("affinity").filter(|a| !a.is_null()) {
        scheduling_rules::affinity(affinity, &format!("{path}.affinity"), causes);
    }
    tolerations(spec, path, causes);
    spread_constraints(spec, path, causes);
    for key in ["hostname", "subdomain"] {
        if let Some(v) = text(spec, key).filter(|v| !v.is_empty()) {
            for msg in names::dns1123_label(v) {
                causes.push(Cause::invalid(format!("{path}.{key}"), &json!(v), msg));
            }
        }
    }
    for key in [
        "serviceAccountName",
        "nodeName",
        "priorityClassName",
        "runtimeClassName",
    ] {
        if let Some(v) = text(spec, key).filter(|v| !v.is_empty()) {
            for msg in names::dns1123_subdomain(v) {
                causes.push(Cause::invalid(format!("{path}.{key}"), &json!(v), msg));
            }
        }
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        causes.push(Cause::invalid(
            format!("{path}.activeDeadlineSeconds"),
            &json!(n),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    let mut gates: Vec<&str> = Vec::new();
    for (i, g) in items(Some(spec), "schedulingGates").enumerate() {
        let name = text(g, "name").unwrap_or("");
        let at = format!("{path}.schedulingGates[{i}]");
        for msg in names::qualified_name(name) {
            causes.push(Cause::invalid(&at, &json!(name), msg));
        }
        if gates.contains(&name) {
            causes.push(Cause::duplicate(&at, &json!(name)));
        }
        gates.push(name);
    }
    for (i, g) in items(Some(spec), "readinessGates").enumerate() {
        let ty = text(g, "conditionType").unwrap_or("");
        for msg in names::qualified_name(ty) {
            causes.push(Cause::invalid(
                format!("{path}.readinessGates[{i}].conditionType"),
                &json!(ty),
                msg,
            ));
        }
    }
    for (i, alias) in items(Some(spec), "hostAliases").enumerate() {
        let ip = text(alias, "ip").unwrap_or("");
        if ip.parse::<std::net::IpAddr>().is_err() {
            causes.push(Cause::invalid(
                format!("{path}.hostAliases[{i}].ip"),
                &json!(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    if let Some(overhead) = spec.get("overhead").filter(|o| !o.is_null()) {
        crate::resource_rules::resources(
            &json!({ "limits": overhead }),
            &format!("{path}.overhead"),
            causes,
        );
    }
}

/// Host ports may not collide between the app containers (each init
/// container runs alone, so only against itself).
fn host_port_conflicts(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut check = |containers: Vec<(usize, &Value)>, list: &str| {
        let mut seen: Vec<String> = Vec::new();
        for (ci, c) in containers {
            for (pi, p) in items(Some(c), "ports").enumerate() {
                let port = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
                if port == 0 {
                    continue;
                }
                let key = format!(
                    "{}/{}/{port}",
                    text(p, "protocol").unwrap_or("TCP"),
                    text(p, "hostIP").unwrap_or("")
                );
                if seen.contains(&key) {
                    causes.push(Cause::duplicate(
                        format!("{path}.{list}[{ci}].ports[{pi}].hostPort"),
                        &json!(key),
                    ));
                } else {
                    seen.push(key);
                }
            }
        }
    };
    check(
        items(Some(spec), "containers").enumerate().collect(),
        "containers",
    );
    for (ci, c) in items(Some(spec), "initContainers").enumerate() {
        check(vec![(ci, c)], "initContainers");
    }
}

fn dns_config(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let config = spec.get("dnsConfig").filter(|c| !c.is_null());
    let at = format!("{path}.dnsConfig");
    if text(spec, "dnsPolicy") == Some("None") {
        match config {
            None => {
                causes.push(Cause::required(
                    at,
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
                return;
            }
            Some(c) if items(Some(c), "nameservers").next().is_none() => {
                causes.push(Cause::required(
                    format!("{at}.nameservers"),
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                ));
                return;
            }
            Some(_) => {}
        }
    }
    let Some(config) = config else { return };
    let servers: Vec<&Value> = items(Some(config), "nameservers").collect();
    if servers.len() > 3 {
        causes.push(Cause::invalid(
            format!("{at}.nameservers"),
            &json!(servers),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, s) in servers.iter().enumerate() {
        let s = s.as_str().unwrap_or("");
        if s.parse::<std::net::IpAddr>().is_err() {
            causes.push(Cause::invalid(
                format!("{at}.nameservers[{i}]"),
                &json!(s),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    for (i, o) in items(Some(config), "options").enumerate() {
        if text(o, "name").is_none_or(str::is_empty) {
            causes.push(Cause::required(
                format!("{at}.options[{i}]"),
                "must not be empty",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        pod_spec(Some(&spec), "spec", &mut causes);
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn with(extra: Value) -> Value {
        let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        spec
    }

    #[test]
    fn a_full_spec_passes() {
        let spec = with(json!({
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c", "items": [{"key": "k", "path": "a/b"}]}},
                {"name": "pod", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}, {"operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
                    "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "x"}}}}]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}]
        }));
        assert_eq!(check(spec), Vec::<String>::new());
    }

    #[test]
    fn volumes_need_one_source_and_unique_names() {
        let spec = with(
            json!({"volumes": [{"name": "a"}, {"name": "b", "emptyDir": {}, "hostPath": {"path": "/x"}},
            {"name": "c", "hostPath": {}}, {"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}},
            {"name": "e", "secret": {"defaultMode": 1024}}]}),
        );
        assert_eq!(
            check(spec),
            vec![
                "spec.volumes[0]: Required value: must specify a volume type",
                "spec.volumes[1].hostPath: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[2].hostPath.path: Required value",
                "spec.volumes[4].name: Duplicate value: \"d\"",
                "spec.volumes[5].secret.secretName: Required value",
                "spec.volumes[5].secret.defaultMode: Invalid value: 1024: must be a number between 0 and 0777 (octal), both inclusive",
            ]
        );
    }

    #[test]
    fn scheduling_fields_follow_upstream_rules() {
        let spec = with(json!({
            "restartPolicy": "Sometimes",
            "tolerations": [{"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}},
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}},
            "topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]
        }));
        assert_eq!(
            check(spec),
            vec![
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: must have at least one node selector term",
                "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty",
                "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                "spec.tolerations[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
                "spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero",
                "spec.topologySpreadConstraints[0].{topologyKey, whenUnsatisfiable}: Duplicate value: \"{zone, DoNotSchedule}\"",
            ]
        );
    }

    #[test]
    fn host_ports_may_not_collide() {
        let spec = json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]},
            {"name": "b", "image": "i", "ports": [{"containerPort": 81, "hostPort": 8080, "protocol": "TCP"}]}]});
        assert_eq!(
            check(spec),
            vec!["spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//8080\""]
        );
    }
}
