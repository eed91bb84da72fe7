//! Upstream's validation of a pod spec (`ValidatePodSpec`): volumes, the
//! containers (see `container_rules`), and the scheduling and DNS fields,
//! with upstream's field paths and messages.

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::container_rules::{
    self, PodFacts, RESOURCE_FIELDS, items, local_descending_path, one_of, set, text,
};

/// Every volume source a volume may name, exactly one at a time.
const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
];

const FILE_MODE: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// The downward API fields a volume file may name.
const VOLUME_FIELDS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

/// Checks a pod spec at `path` (`spec`, `spec.template.spec`, …).
pub fn pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        causes.push(Cause::required(format!("{path}.containers"), ""));
        return;
    };
    let volumes = self::volumes(spec, path, causes);
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
    host_port_conflicts(spec, path, causes);
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
        self::affinity(affinity, &format!("{path}.affinity"), causes);
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
        container_rules::resources(
            &json!({ "limits": overhead }),
            &format!("{path}.overhead"),
            causes,
        );
    }
}

/// The pod's volumes; returns the names of those without problems, which
/// mounts may name (as upstream keeps only those).
fn volumes<'a>(spec: &'a Value, path: &str, causes: &mut Vec<Cause>) -> Vec<&'a str> {
    let mut valid = Vec::new();
    let mut all: Vec<&str> = Vec::new();
    for (i, v) in items(Some(spec), "volumes").enumerate() {
        let at = format!("{path}.volumes[{i}]");
        let mut own = Vec::new();
        let mut kinds = 0;
        for kind in VOLUME_SOURCES {
            let Some(source) = v.get(*kind).filter(|s| !s.is_null()) else {
                continue;
            };
            if kinds > 0 {
                own.push(Cause::forbidden(
                    format!("{at}.{kind}"),
                    "may not specify more than 1 volume type",
                ));
                continue;
            }
            kinds += 1;
            volume_source(kind, source, &format!("{at}.{kind}"), &mut own);
        }
        if kinds == 0 {
            own.push(Cause::required(&at, "must specify a volume type"));
        }
        let name = text(v, "name").unwrap_or("");
        if name.is_empty() {
            own.push(Cause::required(format!("{at}.name"), ""));
        } else {
            for msg in names::dns1123_label(name) {
                own.push(Cause::invalid(format!("{at}.name"), &json!(name), msg));
            }
        }
        if all.contains(&name) {
            own.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
        }
        if own.is_empty() {
            all.push(name);
            valid.push(name);
        }
        causes.extend(own);
    }
    valid
}

fn required_text(v: &Value, key: &str, at: &str, causes: &mut Vec<Cause>) {
    if text(v, key).is_none_or(str::is_empty) {
        causes.push(Cause::required(format!("{at}.{key}"), ""));
    }
}

fn file_mode(v: &Value, key: &str, at: &str, causes: &mut Vec<Cause>) {
    if let Some(m) = v.get(key).and_then(Value::as_i64)
        && !(0..=0o777).contains(&m)
    {
        causes.push(Cause::invalid(format!("{at}.{key}"), &json!(m), FILE_MODE));
    }
}

/// `items` of a configMap or secret source: keys to relative paths.
fn key_paths(source: &Value, at: &str, causes: &mut Vec<Cause>) {
    for (i, kp) in items(Some(source), "items").enumerate() {
        let at = format!("{at}.items[{i}]");
        required_text(kp, "key", &at, causes);
        required_text(kp, "path", &at, causes);
        if let Some(p) = text(kp, "path") {
            local_non_reserved_path(p, &format!("{at}.path"), causes);
        }
        file_mode(kp, "mode", &at, causes);
    }
}

/// A file path inside a volume that does not begin with `..`.
fn local_non_reserved_path(p: &str, at: &str, causes: &mut Vec<Cause>) {
    local_descending_path(p, at, causes);
    if p.starts_with("..") {
        causes.push(Cause::invalid(at, &json!(p), "must not start with '..'"));
    }
}

fn volume_source(kind: &str, source: &Value, at: &str, causes: &mut Vec<Cause>) {
    match kind {
        "emptyDir" => {
            if let Some(limit) = source.get("sizeLimit").and_then(Value::as_str)
                && kybern_apimachinery::quantity::parse_milli(limit).is_ok_and(|m| m < 0)
            {
                causes.push(Cause::forbidden(
                    format!("{at}.sizeLimit"),
                    "SizeLimit field must be a valid resource quantity",
                ));
            }
        }
        "hostPath" => match text(source, "path").filter(|p| !p.is_empty()) {
            None => causes.push(Cause::required(format!("{at}.path"), "")),
            Some(p) => {
                if p.split('/').any(|e| e == "..") {
                    causes.push(Cause::invalid(
                        format!("{at}.path"),
                        &json!(p),
                        "must not contain '..'",
                    ));
                }
                one_of(
                    source,
                    "type",
                    at,
                    &[
                        "",
                        "BlockDevice",
                        "CharDevice",
                        "Directory",
                        "DirectoryOrCreate",
                        "File",
                        "FileOrCreate",
                        "Socket",
                    ],
                    causes,
                );
            }
        },
        "secret" => {
            required_text(source, "secretName", at, causes);
            file_mode(source, "defaultMode", at, causes);
            key_paths(source, at, causes);
        }
        "configMap" => {
            required_text(source, "name", at, causes);
            file_mode(source, "defaultMode", at, causes);
            key_paths(source, at, causes);
        }
        "persistentVolumeClaim" => required_text(source, "claimName", at, causes),
        "nfs" => {
            required_text(source, "server", at, causes);
            required_text(source, "path", at, causes);
            if !text(source, "path").unwrap_or("").starts_with('/') {
                causes.push(Cause::invalid(
                    format!("{at}.path"),
                    &json!(text(source, "path").unwrap_or("")),
                    "must be an absolute path",
                ));
            }
        }
        "downwardAPI" => {
            file_mode(source, "defaultMode", at, causes);
            for file in items(Some(source), "items") {
                downward_file(file, at, causes);
            }
        }
        "projected" => {
            file_mode(source, "defaultMode", at, causes);
            for (i, s) in items(Some(source), "sources").enumerate() {
                let at = format!("{at}.sources[{i}]");
                for kind in ["secret", "configMap"] {
                    if let Some(src) = s.get(kind).filter(|x| !x.is_null()) {
                        required_text(src, "name", &format!("{at}.{kind}"), causes);
                        key_paths(src, &format!("{at}.{kind}"), causes);
                    }
                }
                if let Some(token) = s.get("serviceAccountToken").filter(|x| !x.is_null()) {
                    required_text(token, "path", &format!("{at}.serviceAccountToken"), causes);
                }
            }
        }
        _ => {}
    }
}

/// One file of a downwardAPI volume (upstream reports at the volume's path).
fn downward_file(file: &Value, at: &str, causes: &mut Vec<Cause>) {
    required_text(file, "path", at, causes);
    if let Some(p) = text(file, "path") {
        local_non_reserved_path(p, &format!("{at}.path"), causes);
    }
    match (set(file, "fieldRef"), set(file, "resourceFieldRef")) {
        (true, false) => container_rules::field_ref(
            &file["fieldRef"],
            &format!("{at}.fieldRef"),
            VOLUME_FIELDS,
            causes,
        ),
        (true, true) => causes.push(Cause::invalid(
            at,
            &json!("resource"),
            "fieldRef and resourceFieldRef can not be specified simultaneously",
        )),
        (false, true) => {
            let r = &file["resourceFieldRef"];
            if text(r, "containerName").is_none_or(str::is_empty) {
                causes.push(Cause::required(
                    format!("{at}.resourceFieldRef.containerName"),
                    "",
                ));
            } else if let Some(res) = text(r, "resource")
                && !RESOURCE_FIELDS.contains(&res)
                && !res.contains(".hugepages-")
            {
                causes.push(Cause::not_supported(
                    format!("{at}.resourceFieldRef.resource"),
                    &json!(res),
                    RESOURCE_FIELDS,
                ));
            }
        }
        (false, false) => causes.push(Cause::required(
            at,
            "one of fieldRef and resourceFieldRef is required",
        )),
    }
    file_mode(file, "mode", at, causes);
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

/// A label map: qualified-name keys and label values.
pub(crate) fn labels(map: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    for (k, v) in map.and_then(Value::as_object).into_iter().flatten() {
        for msg in names::qualified_name(k) {
            causes.push(Cause::invalid(path, &json!(k), msg));
        }
        for msg in names::label_value(v.as_str().unwrap_or("")) {
            causes.push(Cause::invalid(format!("{path}[{k}]"), v, msg));
        }
    }
}

fn node_selector_term(term: &Value, at: &str, required: bool, causes: &mut Vec<Cause>) {
    for (j, rq) in items(Some(term), "matchExpressions").enumerate() {
        let at = format!("{at}.matchExpressions[{j}]");
        let values: Vec<&Value> = items(Some(rq), "values").collect();
        match text(rq, "operator").unwrap_or("") {
            "In" | "NotIn" if values.is_empty() => causes.push(Cause::required(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "Gt" | "Lt" if values.len() != 1 => causes.push(Cause::required(
                format!("{at}.values"),
                "must be specified single value when `operator` is 'Lt' or 'Gt'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
            other => causes.push(Cause::invalid(
                format!("{at}.operator"),
                &json!(other),
                "not a valid selector operator",
            )),
        }
        let key = text(rq, "key").unwrap_or("");
        for msg in names::qualified_name(key) {
            causes.push(Cause::invalid(format!("{at}.key"), &json!(key), msg));
        }
        if required {
            for (k, v) in values.iter().enumerate() {
                for msg in names::label_value(v.as_str().unwrap_or("")) {
                    causes.push(Cause::invalid(format!("{at}.values[{k}]"), v, msg));
                }
            }
        }
    }
}

fn weight(term: &Value, at: &str, causes: &mut Vec<Cause>) {
    let w = term.get("weight").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=100).contains(&w) {
        causes.push(Cause::invalid(
            format!("{at}.weight"),
            &json!(w),
            "must be in the range 1-100",
        ));
    }
}

fn pod_affinity_term(term: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(sel) = term.get("labelSelector").filter(|s| !s.is_null())
        && kybern_apimachinery::labels::Selector::from_label_selector(sel).is_err()
    {
        causes.push(Cause::invalid(
            format!("{at}.labelSelector"),
            sel,
            "invalid label selector",
        ));
    }
    match text(term, "topologyKey").filter(|k| !k.is_empty()) {
        None => causes.push(Cause::required(
            format!("{at}.topologyKey"),
            "can not be empty",
        )),
        Some(key) => {
            for msg in names::qualified_name(key) {
                causes.push(Cause::invalid(
                    format!("{at}.topologyKey"),
                    &json!(key),
                    msg,
                ));
            }
        }
    }
}

fn affinity(affinity: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(na) = affinity.get("nodeAffinity").filter(|n| !n.is_null()) {
        let at = format!("{path}.nodeAffinity");
        if let Some(req) = na
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .filter(|r| !r.is_null())
        {
            let at =
                format!("{at}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
            let terms: Vec<&Value> = items(Some(req), "nodeSelectorTerms").collect();
            if terms.is_empty() {
                causes.push(Cause::required(
                    &at,
                    "must have at least one node selector term",
                ));
            }
            for (i, term) in terms.iter().enumerate() {
                node_selector_term(term, &format!("{at}[{i}]"), true, causes);
            }
        }
        let at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution");
        for (i, term) in
            items(Some(na), "preferredDuringSchedulingIgnoredDuringExecution").enumerate()
        {
            let at = format!("{at}[{i}]");
            weight(term, &at, causes);
            if let Some(pref) = term.get("preference") {
                node_selector_term(pref, &format!("{at}.preference"), false, causes);
            }
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = affinity.get(kind).filter(|p| !p.is_null()) else {
            continue;
        };
        let at = format!("{path}.{kind}");
        let required = "requiredDuringSchedulingIgnoredDuringExecution";
        for (i, term) in items(Some(pa), required).enumerate() {
            pod_affinity_term(term, &format!("{at}.{required}[{i}]"), causes);
        }
        let preferred = "preferredDuringSchedulingIgnoredDuringExecution";
        for (i, term) in items(Some(pa), preferred).enumerate() {
            let at = format!("{at}.{preferred}[{i}]");
            weight(term, &at, causes);
            if let Some(t) = term.get("podAffinityTerm") {
                pod_affinity_term(t, &format!("{at}.podAffinityTerm"), causes);
            }
        }
    }
}

fn tolerations(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, t) in items(Some(spec), "tolerations").enumerate() {
        let at = format!("{path}.tolerations[{i}]");
        let key = text(t, "key").unwrap_or("");
        let operator = text(t, "operator").unwrap_or("");
        let value = text(t, "value").unwrap_or("");
        let effect = text(t, "effect").unwrap_or("");
        if !key.is_empty() {
            for msg in names::qualified_name(key) {
                causes.push(Cause::invalid(format!("{at}.key"), &json!(key), msg));
            }
        }
        if key.is_empty() && operator != "Exists" {
            causes.push(Cause::invalid(
                format!("{at}.operator"),
                &json!(operator),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if set(t, "tolerationSeconds") && effect != "NoExecute" {
            causes.push(Cause::invalid(
                format!("{at}.effect"),
                &json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "" | "Equal" => {
                let errs = names::label_value(value);
                if !errs.is_empty() {
                    causes.push(Cause::invalid(
                        format!("{at}.operator"),
                        &json!(value),
                        errs.join(";"),
                    ));
                }
            }
            "Exists" if !value.is_empty() => causes.push(Cause::invalid(
                format!("{at}.operator"),
                &json!(value),
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => causes.push(Cause::not_supported(
                format!("{at}.operator"),
                &json!(other),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            causes.push(Cause::not_supported(
                format!("{at}.effect"),
                &json!(effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
}

fn spread_constraints(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let all: Vec<&Value> = items(Some(spec), "topologySpreadConstraints").collect();
    for (i, c) in all.iter().enumerate() {
        let at = format!("{path}.topologySpreadConstraints[{i}]");
        let skew = c.get("maxSkew").and_then(Value::as_i64).unwrap_or(0);
        if skew <= 0 {
            causes.push(Cause::invalid(
                format!("{at}.maxSkew"),
                &json!(skew),
                "must be greater than zero",
            ));
        }
        let key = text(c, "topologyKey").unwrap_or("");
        if key.is_empty() {
            causes.push(Cause::required(
                format!("{at}.topologyKey"),
                "can not be empty",
            ));
        } else {
            for msg in names::qualified_name(key) {
                causes.push(Cause::invalid(
                    format!("{at}.topologyKey"),
                    &json!(key),
                    msg,
                ));
            }
        }
        let action = text(c, "whenUnsatisfiable").unwrap_or("");
        if !matches!(action, "DoNotSchedule" | "ScheduleAnyway") {
            causes.push(Cause::not_supported(
                format!("{at}.whenUnsatisfiable"),
                &json!(action),
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        let repeated = all[i + 1..].iter().any(|o| {
            text(o, "topologyKey") == Some(key) && text(o, "whenUnsatisfiable") == Some(action)
        });
        if repeated {
            causes.push(Cause::duplicate(
                format!("{at}.{{topologyKey, whenUnsatisfiable}}"),
                &json!(format!("{{{key}, {action}}}")),
            ));
        }
        if let Some(min) = c.get("minDomains").and_then(Value::as_i64) {
            if min <= 0 {
                causes.push(Cause::invalid(
                    format!("{at}.minDomains"),
                    &json!(min),
                    "must be greater than zero",
                ));
            } else if action != "DoNotSchedule" {
                causes.push(Cause::invalid(
                    format!("{at}.minDomains"),
                    &json!(min),
                    format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"
                    ),
                ));
            }
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
