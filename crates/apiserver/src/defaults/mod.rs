//! Upstream's defaulting of built-in kinds (`SetDefaults_*`), applied to every
//! create and update body before validation, so objects read back as a
//! Kubernetes user expects (`restartPolicy: Always`, `replicas: 1`, ...).

use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;

mod volumes;

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

/// Sets `map[key]` when absent.
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_owned()).or_insert(value);
}

/// The map at `key`, created when absent (`None` when it holds a non-object).
fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.entry(key.to_owned())
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

/// `imagePullPolicy` as upstream defaults it: `Always` for `:latest` or no tag.
fn pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    let untagged = !name.contains(':') && !image.contains('@');
    if untagged || name.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn container_defaults(c: &mut Value) {
    let Some(c) = obj(c) else { return };
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    default(c, "imagePullPolicy", json!(pull_policy(&image)));
    default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
        }
    }
}

/// Defaults of a pod spec (pods and every workload's template).
pub fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container_defaults);
        }
    }
}

/// A pod's container that sets a limit and no request for a resource
/// requests its limit, as upstream defaults pods (not templates, so that a
/// template's later change of limit still moves the request).
fn requests_from_limits(spec: &mut Map<String, Value>) {
    for list in ["containers", "initContainers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut().filter_map(|c| c.get_mut("resources")) {
            let Some(limits) = c.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            let Some(r) = obj(c) else { continue };
            request_limits(r, limits);
        }
    }
    // Pod-level resources: a CPU or memory limit without a request is the
    // request too (huge pages upstream take the containers' sum instead).
    let Some(r) = spec.get_mut("resources").and_then(Value::as_object_mut) else {
        return;
    };
    let limits: Vec<(String, Value)> = r
        .get("limits")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| matches!(k.as_str(), "cpu" | "memory"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !limits.is_empty() {
        request_limits(r, limits);
    }
}

/// Makes each of `limits` the request of `resources` where it has none.
fn request_limits(
    resources: &mut Map<String, Value>,
    limits: impl IntoIterator<Item = (String, Value)>,
) {
    if !resources.get("requests").is_some_and(Value::is_object) {
        resources.insert("requests".into(), json!({}));
    }
    if let Some(requests) = resources.get_mut("requests").and_then(Value::as_object_mut) {
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
}

/// A pod on the host network listens on the host's ports: each container
/// port's `hostPort` defaults to it (pods only; upstream stopped doing this
/// for templates).
fn host_network_ports(spec: &mut Map<String, Value>) {
    if spec.get("hostNetwork").and_then(Value::as_bool) != Some(true) {
        return;
    }
    for list in ["containers", "initContainers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut() {
            let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
                    && let Some(port) = p.get("containerPort").cloned()
                {
                    p.insert("hostPort".into(), port);
                }
            }
        }
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut)
        && let Some(s) = child(t, "spec")
    {
        pod_spec(s);
    }
}

/// Upstream's QoS class of a pod spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let has = |m: Option<&Map<String, Value>>, k: &str| m.is_some_and(|m| m.contains_key(k));
        if has(requests, "cpu")
            || has(requests, "memory")
            || has(limits, "cpu")
            || has(limits, "memory")
        {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let limit = limits.and_then(|m| m.get(r));
            let request = requests.and_then(|m| m.get(r)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Applies the defaults of `info`'s kind to an object body.
pub fn apply(info: &ResourceInfo, body: &mut Value) {
    let Some(root) = obj(body) else { return };
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => {
            if let Some(spec) = child(root, "spec") {
                pod_spec(spec);
                requests_from_limits(spec);
                host_network_ports(spec);
            }
        }
        ("", "podtemplates") => template(root),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => {
            crate::admission::webhook::config::apply_defaults(root, true);
        }
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            crate::admission::webhook::config::apply_defaults(root, false);
        }
        ("", "replicationcontrollers") | ("apps", "replicasets") => {
            if let Some(spec) = child(root, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "minReadySeconds", json!(0));
                template(spec);
            }
        }
        ("apps", "deployments") => {
            if let Some(spec) = child(root, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                if let Some(strategy) = child(spec, "strategy") {
                    default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                        && let Some(ru) = child(strategy, "rollingUpdate")
                    {
                        default(ru, "maxSurge", json!("25%"));
                        default(ru, "maxUnavailable", json!("25%"));
                    }
                }
                template(spec);
            }
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = child(root, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                if let Some(us) = child(spec, "updateStrategy") {
                    default(us, "type", json!("RollingUpdate"));
                    if us.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                        && let Some(ru) = child(us, "rollingUpdate")
                    {
                        default(ru, "partition", json!(0));
                    }
                }
                template(spec);
            }
        }
        ("apps", "daemonsets") => {
            if let Some(spec) = child(root, "spec") {
                default(spec, "revisionHistoryLimit", json!(10));
                if let Some(us) = child(spec, "updateStrategy") {
                    default(us, "type", json!("RollingUpdate"));
                    if us.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                        && let Some(ru) = child(us, "rollingUpdate")
                    {
                        default(ru, "maxUnavailable", json!(1));
                        default(ru, "maxSurge", json!(0));
                    }
                }
                template(spec);
            }
        }
        ("batch", "jobs") => {
            if let Some(spec) = child(root, "spec") {
                job_spec(spec);
            }
        }
        ("batch", "cronjobs") => {
            if let Some(spec) = child(root, "spec") {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = spec.get_mut("jobTemplate").and_then(Value::as_object_mut)
                    && let Some(js) = child(jt, "spec")
                {
                    job_spec(js);
                }
            }
        }
        ("", "services") => {
            if let Some(spec) = child(root, "spec") {
                default(spec, "type", json!("ClusterIP"));
                default(spec, "sessionAffinity", json!("None"));
                if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
                    default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        ("", "secrets") => {
            default(root, "type", json!("Opaque"));
            string_data(root);
        }
        ("", "endpoints") => {
            for subset in array_items(root, "subsets") {
                for p in array_items(subset, "ports") {
                    default(p, "protocol", json!("TCP"));
                }
            }
        }
        ("discovery.k8s.io", "endpointslices") => {
            for p in array_items(root, "ports") {
                default(p, "name", json!(""));
                default(p, "protocol", json!("TCP"));
            }
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            if let Some(spec) = child(root, "spec") {
                autoscaler(&info.version, spec);
            }
        }
        ("", "persistentvolumes") => volumes::persistent_volume(root),
        ("", "persistentvolumeclaims") => volumes::claim(root),
        ("scheduling.k8s.io", "priorityclasses") => {
            default(root, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("storage.k8s.io", "csidrivers") => crate::csi_rules::driver_defaults(root),
        ("storage.k8s.io", "storageclasses") => {
            default(root, "reclaimPolicy", json!("Delete"));
            default(root, "volumeBindingMode", json!("Immediate"));
        }
        ("networking.k8s.io", "networkpolicies") => {
            if let Some(spec) = child(root, "spec") {
                network_policy(spec);
            }
        }
        ("networking.k8s.io", "ingressclasses") => {
            if let Some(params) = root
                .get_mut("spec")
                .and_then(|s| s.get_mut("parameters"))
                .and_then(Value::as_object_mut)
            {
                default(params, "scope", json!("Cluster"));
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            if let Some(role_ref) = root.get_mut("roleRef").and_then(Value::as_object_mut) {
                default(role_ref, "apiGroup", json!("rbac.authorization.k8s.io"));
            }
            for s in array_items(root, "subjects") {
                if matches!(
                    s.get("kind").and_then(Value::as_str),
                    Some("User" | "Group")
                ) {
                    default(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            }
        }
        _ => {}
    }
}

/// HorizontalPodAutoscalers as upstream defaults them: at least one
/// replica; in autoscaling/v2 also 80% of the CPU requested when no metric
/// is named, and each direction of a given `behavior` completed with
/// upstream's rules (scale-down's window is left to the controller).
fn autoscaler(version: &str, spec: &mut Map<String, Value>) {
    default(spec, "minReplicas", json!(1));
    if version != "v2" {
        return;
    }
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else {
        return;
    };
    let policy =
        |kind: &str, value: i64| json!({"type": kind, "value": value, "periodSeconds": 15});
    for (key, policies) in [
        (
            "scaleUp",
            json!([policy("Pods", 4), policy("Percent", 100)]),
        ),
        ("scaleDown", json!([policy("Percent", 100)])),
    ] {
        if !behavior.get(key).is_some_and(Value::is_object) {
            behavior.insert(key.into(), json!({}));
        }
        if let Some(rules) = child(behavior, key) {
            default(rules, "selectPolicy", json!("Max"));
            default(rules, "policies", policies);
            if key == "scaleUp" {
                default(rules, "stabilizationWindowSeconds", json!(0));
            }
        }
    }
}

/// The objects in the array at `key` of `map`.
fn array_items<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// A NetworkPolicy's ports speak TCP unless they say otherwise, and a
/// policy without types governs ingress (and egress when it has egress
/// rules).
fn network_policy(spec: &mut Map<String, Value>) {
    for dir in ["ingress", "egress"] {
        for rule in array_items(spec, dir) {
            for p in array_items(rule, "ports") {
                default(p, "protocol", json!("TCP"));
            }
        }
    }
    let typed = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !typed {
        let egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

/// A Secret's `stringData` is write-only, as upstream converts it: each
/// value goes into `data` base64-encoded (over a `data` key of the same
/// name) and `stringData` itself is never stored.
fn string_data(root: &mut Map<String, Value>) {
    use base64::Engine;
    let Some(Value::Object(strings)) = root.remove("stringData") else {
        return;
    };
    let data = root.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in strings {
            if let Some(s) = v.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(s);
                data.insert(k, Value::String(encoded));
            }
        }
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    let indexed = spec.get("completionMode").and_then(Value::as_str) == Some("Indexed");
    default(spec, "parallelism", json!(1));
    if !indexed || spec.contains_key("completions") {
        default(spec, "completions", json!(1));
    }
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template(spec);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn pods_and_deployments_get_upstream_defaults() {
        let reg = Registry::with_builtins();
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]}, {"name": "b", "image": "nginx:1.27"}]}});
        apply(&reg.get("", "v1", "pods").expect("pods"), &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        let mut limited = json!({"spec": {"containers": [{"name": "a", "image": "x:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m"}}}]}});
        apply(&reg.get("", "v1", "pods").expect("pods"), &mut limited);
        assert_eq!(
            limited["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "250m", "memory": "1Gi"}),
            "a limit without a request is the request too"
        );
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply(
            &reg.get("apps", "v1", "deployments").expect("deploy"),
            &mut d,
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        let mut r = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply(
            &reg.get("apps", "v1", "deployments").expect("deploy"),
            &mut r,
        );
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn autoscalers_get_upstream_defaults() {
        let reg = Registry::with_builtins();
        let info = |version: &str| {
            reg.get("autoscaling", version, "horizontalpodautoscalers")
                .expect("hpa resource")
        };
        let mut hpa =
            json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"selectPolicy": "Min"}}}});
        apply(&info("v2"), &mut hpa);
        let spec = &hpa["spec"];
        assert_eq!(spec["minReplicas"], 1);
        assert_eq!(
            spec["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(spec["behavior"]["scaleUp"]["policies"][0]["value"], 4);
        assert_eq!(spec["behavior"]["scaleDown"]["selectPolicy"], "Min");
        assert_eq!(
            spec["behavior"]["scaleDown"]["policies"][0]["type"],
            "Percent"
        );
        assert!(
            spec["behavior"]["scaleDown"]
                .get("stabilizationWindowSeconds")
                .is_none()
        );
        let mut v1 = json!({"spec": {"maxReplicas": 3}});
        apply(&info("v1"), &mut v1);
        assert_eq!(v1["spec"], json!({"maxReplicas": 3, "minReplicas": 1}));
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn services_default_target_ports() {
        let reg = Registry::with_builtins();
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply(&reg.get("", "v1", "services").expect("svc"), &mut s);
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let reg = crate::registry::Registry::with_builtins();
        let info = reg.get("", "v1", "secrets").expect("secrets");
        let mut s =
            json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "yes", "c": "no"}});
        apply(&info, &mut s);
        assert_eq!(s["data"], json!({"a": "eA==", "b": "eWVz", "c": "bm8="}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }
}
