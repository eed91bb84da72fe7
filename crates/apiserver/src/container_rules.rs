//! Upstream's validation of one container of a pod spec: ports, env,
//! volume mounts, probes and lifecycle handlers (resources in
//! `resource_rules`), with upstream's paths and messages
//! (`pkg/apis/core/validation`).

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{
    PORT_RANGE, PROTOCOLS, items, local_descending_path, non_negative, one_of, port_name,
    port_num_or_name, set, text,
};

/// What the pod around a container says about it.
pub(crate) struct PodFacts<'a> {
    /// The names of the pod's volumes that passed validation.
    pub volumes: Vec<&'a str>,
}

/// Checks container `c` at `path` (`spec.containers[0]`, …); `init` for an
/// init container (sidecars are init containers with `restartPolicy: Always`).
pub(crate) fn container(
    c: &Value,
    path: &str,
    init: bool,
    pod: &PodFacts,
    causes: &mut Vec<Cause>,
) {
    one_of(
        c,
        "terminationMessagePolicy",
        path,
        &["File", "FallbackToLogsOnError"],
        causes,
    );
    one_of(
        c,
        "imagePullPolicy",
        path,
        &["Always", "IfNotPresent", "Never"],
        causes,
    );
    ports(c, path, causes);
    env(c, path, causes);
    volume_mounts(c, path, pod, causes);
    if let Some(r) = c.get("resources") {
        crate::resource_rules::resources(r, &format!("{path}.resources"), causes);
    }
    let sidecar = init && text(c, "restartPolicy") == Some("Always");
    if init {
        if let Some(p) = text(c, "restartPolicy")
            && p != "Always"
        {
            causes.push(Cause::not_supported(
                format!("{path}.restartPolicy"),
                &json!(p),
                &["Always"],
            ));
        }
    } else if set(c, "restartPolicy") {
        causes.push(Cause::forbidden(
            format!("{path}.restartPolicy"),
            "may not be set for non-init containers",
        ));
    }
    for (kind, one_success) in [
        ("livenessProbe", true),
        ("readinessProbe", false),
        ("startupProbe", true),
    ] {
        let Some(probe) = c.get(kind).filter(|p| !p.is_null()) else {
            continue;
        };
        let at = format!("{path}.{kind}");
        if init && !sidecar {
            causes.push(Cause::forbidden(
                at,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        self::probe(probe, &at, causes);
        if one_success
            && let Some(n) = probe.get("successThreshold").and_then(Value::as_i64)
            && n != 1
        {
            causes.push(Cause::invalid(
                format!("{at}.successThreshold"),
                &json!(n),
                "must be 1",
            ));
        }
        if !one_success && set(probe, "terminationGracePeriodSeconds") {
            causes.push(Cause::invalid(
                format!("{at}.terminationGracePeriodSeconds"),
                &probe["terminationGracePeriodSeconds"],
                "must not be set for readinessProbes",
            ));
        }
    }
    if let Some(lifecycle) = c.get("lifecycle").filter(|l| !l.is_null()) {
        let at = format!("{path}.lifecycle");
        if init && !sidecar {
            causes.push(Cause::forbidden(
                at,
                "may not be set for init containers without restartPolicy=Always",
            ));
        } else {
            for hook in ["postStart", "preStop"] {
                if let Some(h) = lifecycle.get(hook).filter(|h| !h.is_null()) {
                    handler(h, &format!("{at}.{hook}"), causes);
                }
            }
        }
    }
}

fn ports(c: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut names_seen = Vec::new();
    for (i, p) in items(Some(c), "ports").enumerate() {
        let at = format!("{path}.ports[{i}]");
        if let Some(name) = text(p, "name").filter(|n| !n.is_empty()) {
            let errs = port_name(name);
            for msg in &errs {
                causes.push(Cause::invalid(format!("{at}.name"), &json!(name), msg));
            }
            if errs.is_empty() {
                if names_seen.contains(&name) {
                    causes.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
                }
                names_seen.push(name);
            }
        }
        match p.get("containerPort").and_then(Value::as_i64).unwrap_or(0) {
            0 => causes.push(Cause::required(format!("{at}.containerPort"), "")),
            n if !(1..=65535).contains(&n) => {
                causes.push(Cause::invalid(
                    format!("{at}.containerPort"),
                    &json!(n),
                    PORT_RANGE,
                ));
            }
            _ => {}
        }
        if let Some(n) = p.get("hostPort").and_then(Value::as_i64)
            && n != 0
            && !(1..=65535).contains(&n)
        {
            causes.push(Cause::invalid(
                format!("{at}.hostPort"),
                &json!(n),
                PORT_RANGE,
            ));
        }
        one_of(p, "protocol", &at, PROTOCOLS, causes);
    }
}

/// Upstream's relaxed environment variable names (GA in 1.34).
fn env_name(name: &str, at: &str, causes: &mut Vec<Cause>) {
    if name
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || c == '=')
    {
        causes.push(Cause::invalid(
            at,
            &json!(name),
            "a valid environment variable name must consist only of printable ASCII characters other than '='",
        ));
    }
}

/// `IsConfigMapKey` (also the keys of ConfigMaps and Secrets).
pub(crate) fn config_key(key: &str, at: &str, causes: &mut Vec<Cause>) {
    if key.len() > names::DNS1123_SUBDOMAIN_MAX {
        causes.push(Cause::invalid(
            at,
            &json!(key),
            format!(
                "must be no more than {} characters",
                names::DNS1123_SUBDOMAIN_MAX
            ),
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        causes.push(Cause::invalid(at, &json!(key), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
    }
    if key == "." || key == ".." || key.starts_with("..") {
        causes.push(Cause::invalid(at, &json!(key), "must not start with '..'"));
    }
}

/// The downward API fields an env var may name.
const ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// The container resources a `resourceFieldRef` may name.
pub(crate) const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

/// A downward API `fieldRef` at `at`, against the fields `allowed`.
pub(crate) fn field_ref(r: &Value, at: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    let Some(fp) = text(r, "fieldPath").filter(|f| !f.is_empty()) else {
        causes.push(Cause::required(format!("{at}.fieldPath"), ""));
        return;
    };
    let subscripted = ["metadata.labels[", "metadata.annotations["]
        .iter()
        .any(|p| fp.starts_with(p) && fp.ends_with(']'));
    if !subscripted && !allowed.contains(&fp) {
        causes.push(Cause::not_supported(
            format!("{at}.fieldPath"),
            &json!(fp),
            allowed,
        ));
    }
}

fn env(c: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, e) in items(Some(c), "env").enumerate() {
        let at = format!("{path}.env[{i}]");
        match text(e, "name") {
            None | Some("") => causes.push(Cause::required(format!("{at}.name"), "")),
            Some(name) => env_name(name, &format!("{at}.name"), causes),
        }
        let Some(from) = e.get("valueFrom").filter(|v| !v.is_null()) else {
            continue;
        };
        let at = format!("{at}.valueFrom");
        let sources = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ];
        let n = sources.iter().filter(|s| set(from, s)).count();
        if let Some(r) = from.get("fieldRef").filter(|r| !r.is_null()) {
            field_ref(r, &format!("{at}.fieldRef"), ENV_FIELDS, causes);
        }
        if let Some(r) = from.get("resourceFieldRef").filter(|r| !r.is_null()) {
            match text(r, "resource") {
                None | Some("") => causes.push(Cause::required(
                    format!("{at}.resourceFieldRef.resource"),
                    "",
                )),
                Some(res) if !RESOURCE_FIELDS.contains(&res) && !res.contains(".hugepages-") => {
                    causes.push(Cause::not_supported(
                        format!("{at}.resourceFieldRef.resource"),
                        &json!(res),
                        RESOURCE_FIELDS,
                    ));
                }
                Some(_) => {}
            }
        }
        for key_ref in ["configMapKeyRef", "secretKeyRef"] {
            let Some(r) = from.get(key_ref).filter(|r| !r.is_null()) else {
                continue;
            };
            let name = text(r, "name").unwrap_or("");
            for msg in names::dns1123_subdomain(name) {
                causes.push(Cause::invalid(
                    format!("{at}.{key_ref}.name"),
                    &json!(name),
                    msg,
                ));
            }
            match text(r, "key") {
                None | Some("") => causes.push(Cause::required(format!("{at}.{key_ref}.key"), "")),
                Some(key) => config_key(key, &format!("{at}.{key_ref}.key"), causes),
            }
        }
        if n == 0 {
            causes.push(Cause::invalid(
                at,
                &json!(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if text(e, "value").is_some_and(|v| !v.is_empty()) {
            causes.push(Cause::invalid(
                at,
                &json!(""),
                "may not be specified when `value` is not empty",
            ));
        } else if n > 1 {
            causes.push(Cause::invalid(
                at,
                &json!(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
    for (i, e) in items(Some(c), "envFrom").enumerate() {
        let at = format!("{path}.envFrom[{i}]");
        if let Some(prefix) = text(e, "prefix").filter(|p| !p.is_empty()) {
            env_name(prefix, &format!("{at}.prefix"), causes);
        }
        let mut n = 0;
        for source in ["configMapRef", "secretRef"] {
            if let Some(r) = e.get(source).filter(|r| !r.is_null()) {
                n += 1;
                match text(r, "name") {
                    None | Some("") => {
                        causes.push(Cause::required(format!("{at}.{source}.name"), ""))
                    }
                    Some(name) => {
                        for msg in names::dns1123_subdomain(name) {
                            causes.push(Cause::invalid(
                                format!("{at}.{source}.name"),
                                &json!(name),
                                msg,
                            ));
                        }
                    }
                }
            }
        }
        let whole = format!("{path}.envFrom");
        if n == 0 {
            causes.push(Cause::invalid(
                whole,
                &json!(""),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            causes.push(Cause::invalid(
                whole,
                &json!(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn volume_mounts(c: &Value, path: &str, pod: &PodFacts, causes: &mut Vec<Cause>) {
    let mut mount_points: Vec<&str> = Vec::new();
    for (i, m) in items(Some(c), "volumeMounts").enumerate() {
        let at = format!("{path}.volumeMounts[{i}]");
        let name = text(m, "name").unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("{at}.name"), ""));
        }
        if !pod.volumes.contains(&name) {
            causes.push(Cause::not_found(format!("{at}.name"), &json!(name)));
        }
        let mount_path = text(m, "mountPath").unwrap_or("");
        if mount_path.is_empty() {
            causes.push(Cause::required(format!("{at}.mountPath"), ""));
        }
        if mount_points.contains(&mount_path) {
            causes.push(Cause::invalid(
                format!("{at}.mountPath"),
                &json!(mount_path),
                "must be unique",
            ));
        }
        mount_points.push(mount_path);
        let sub_path = text(m, "subPath").filter(|s| !s.is_empty());
        // Upstream reports these at the list's path, not the mount's.
        if let Some(s) = sub_path {
            local_descending_path(s, &format!("{path}.volumeMounts.subPath"), causes);
        }
        if let Some(expr) = text(m, "subPathExpr").filter(|s| !s.is_empty()) {
            if sub_path.is_some() {
                causes.push(Cause::invalid(
                    format!("{at}.subPathExpr"),
                    &json!(expr),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(expr, &format!("{path}.volumeMounts.subPathExpr"), causes);
        }
    }
}

/// A probe: one handler and non-negative timings.
fn probe(p: &Value, path: &str, causes: &mut Vec<Cause>) {
    handler(p, path, causes);
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(p, key, path, causes);
    }
    if let Some(n) = p
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && n <= 0
    {
        causes.push(Cause::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            &json!(n),
            "must be greater than 0",
        ));
    }
}

/// A probe's or hook's handler: exactly one of its kinds.
fn handler(h: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut n = 0;
    for kind in ["exec", "httpGet", "tcpSocket", "grpc", "sleep"] {
        let Some(action) = h.get(kind).filter(|a| !a.is_null()) else {
            continue;
        };
        let at = format!("{path}.{kind}");
        if n > 0 {
            causes.push(Cause::forbidden(
                at,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        n += 1;
        match kind {
            "exec" if items(Some(action), "command").next().is_none() => {
                causes.push(Cause::required(format!("{at}.command"), ""));
            }
            "httpGet" => {
                port_num_or_name(action.get("port"), &format!("{at}.port"), causes);
                one_of(action, "scheme", &at, &["HTTP", "HTTPS"], causes);
            }
            "tcpSocket" => port_num_or_name(action.get("port"), &format!("{at}.port"), causes),
            "grpc" => {
                let port = action.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("{at}.port"),
                        &json!(port),
                        PORT_RANGE,
                    ));
                }
            }
            _ => {}
        }
    }
    if n == 0 {
        causes.push(Cause::required(path, "must specify a handler type"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: Value, init: bool) -> Vec<String> {
        let mut causes = Vec::new();
        let pod = PodFacts {
            volumes: vec!["data"],
        };
        container(&c, "spec.containers[0]", init, &pod, &mut causes);
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_plain_container_passes() {
        let c = json!({"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "A.b-c", "value": "x"}, {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}],
            "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "x/y"}],
            "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
            "livenessProbe": {"httpGet": {"port": "http", "path": "/"}, "successThreshold": 1},
            "readinessProbe": {"tcpSocket": {"port": 80}}});
        assert_eq!(check(c, false), Vec::<String>::new());
    }

    #[test]
    fn requests_above_limits_and_unknown_resources_are_refused() {
        let c =
            json!({"resources": {"requests": {"cpu": "2", "gpu": "1"}, "limits": {"cpu": "1"}}});
        assert_eq!(
            check(c, false),
            vec![
                "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            ]
        );
        let extended = json!({"resources": {"requests": {"example.com/dongle": "1"}, "limits": {"example.com/dongle": "2"}}});
        assert_eq!(
            check(extended, false),
            vec![
                "spec.containers[0].resources.requests: Invalid value: \"1\": must be equal to example.com/dongle limit of 2"
            ]
        );
    }

    #[test]
    fn mounts_name_declared_volumes_once_each() {
        let c = json!({"volumeMounts": [{"name": "data", "mountPath": "/d"}, {"name": "nope", "mountPath": "/d"},
            {"name": "data", "mountPath": "/e", "subPath": "../x"}]});
        assert_eq!(
            check(c, false),
            vec![
                "spec.containers[0].volumeMounts[1].name: Not found: \"nope\"",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique",
                "spec.containers[0].volumeMounts.subPath: Invalid value: \"../x\": must not contain '..'",
            ]
        );
    }

    #[test]
    fn probes_need_one_handler_and_init_containers_none() {
        let c = json!({"livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}, "successThreshold": 2},
            "startupProbe": {"periodSeconds": -1}});
        assert_eq!(
            check(c, false),
            vec![
                "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                "spec.containers[0].startupProbe: Required value: must specify a handler type",
                "spec.containers[0].startupProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        let init = json!({"readinessProbe": {"exec": {"command": ["true"]}}});
        assert_eq!(
            check(init.clone(), true),
            vec![
                "spec.containers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"
            ]
        );
        let mut sidecar = init;
        sidecar["restartPolicy"] = json!("Always");
        assert_eq!(check(sidecar, true), Vec::<String>::new());
    }

    #[test]
    fn env_and_ports_follow_upstream_rules() {
        let c = json!({"env": [{"name": "A=B"}, {"name": "C", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "D", "valueFrom": {}}],
            "ports": [{"name": "HTTP", "containerPort": 80}, {"containerPort": 0, "protocol": "ICMP"}]});
        assert_eq!(
            check(c, false),
            vec![
                "spec.containers[0].ports[0].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].ports[0].name: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
                "spec.containers[0].ports[1].containerPort: Required value",
                "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                "spec.containers[0].env[1].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
                "spec.containers[0].env[2].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ]
        );
    }
}
