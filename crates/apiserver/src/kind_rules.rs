//! Upstream's validation of the data and storage kinds and of a few
//! cluster kinds: ConfigMap and Secret keys, sizes and Secret types,
//! PersistentVolume and PersistentVolumeClaim specs, PriorityClasses and
//! HorizontalPodAutoscalers, with upstream's paths and messages.

use base64::Engine;
use kybern_apimachinery::Cause;
use kybern_apimachinery::quantity::parse_value;
use serde_json::{Value, json};

use crate::container_rules::config_key;
use crate::field_rules::{items, one_of, text};

/// The most a ConfigMap's or Secret's data may hold (upstream's
/// `MaxSecretSize`).
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// The size of a base64 value once decoded.
fn decoded_len(b64: &str) -> usize {
    let padding = b64.bytes().rev().take_while(|&b| b == b'=').count();
    (b64.len() / 4 * 3).saturating_sub(padding)
}

/// A ConfigMap: valid keys, none in both `data` and `binaryData`, at most
/// 1 MiB in all.
pub fn config_map(obj: &Value, causes: &mut Vec<Cause>) {
    let data = obj.get("data").and_then(Value::as_object);
    let binary = obj.get("binaryData").and_then(Value::as_object);
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        let at = format!("data[{key}]");
        config_key(key, &at, causes);
        if binary.is_some_and(|b| b.contains_key(key)) {
            causes.push(Cause::invalid(
                &at,
                &json!(key),
                "duplicate of key present in binaryData",
            ));
        }
        total += value.as_str().map_or(0, str::len);
    }
    for (key, value) in binary.into_iter().flatten() {
        config_key(key, &format!("binaryData[{key}]"), causes);
        total += value.as_str().map_or(0, decoded_len);
    }
    if total > MAX_DATA_BYTES {
        causes.push(Cause::too_long("", MAX_DATA_BYTES));
    }
}

/// A Secret: valid keys, at most 1 MiB, the keys its type requires, and a
/// type that does not change.
pub fn secret(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let data = obj.get("data").and_then(Value::as_object);
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        config_key(key, &format!("data[{key}]"), causes);
        total += value.as_str().map_or(0, decoded_len);
    }
    if total > MAX_DATA_BYTES {
        causes.push(Cause::too_long("data", MAX_DATA_BYTES));
    }
    let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
    let value = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
    };
    let ty = text(obj, "type").unwrap_or("Opaque");
    match ty {
        "kubernetes.io/service-account-token" => {
            let named = obj
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !named {
                causes.push(Cause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if ty == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            let at = format!("data[{key}]");
            if !has(key) {
                causes.push(Cause::required(at, ""));
            } else if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(
                &value(key).unwrap_or_default(),
            ) {
                causes.push(Cause::invalid(
                    at,
                    &json!("<secret contents redacted>"),
                    e.to_string(),
                ));
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            causes.push(Cause::required("data[username]", ""));
            causes.push(Cause::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if value("ssh-privatekey").is_none_or(|v| v.is_empty()) => {
            causes.push(Cause::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    causes.push(Cause::required(format!("data[{key}]"), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let old_ty = text(old, "type").unwrap_or("Opaque");
        if old_ty != ty {
            causes.push(Cause::invalid("type", &json!(ty), "field is immutable"));
        }
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn access_modes(spec: &Value, required: &str, causes: &mut Vec<Cause>) {
    let modes: Vec<&Value> = items(Some(spec), "accessModes").collect();
    if modes.is_empty() {
        causes.push(Cause::required("spec.accessModes", required));
    }
    for mode in modes {
        let m = mode.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            causes.push(Cause::not_supported(
                "spec.accessModes",
                &json!(m),
                ACCESS_MODES,
            ));
        }
    }
    one_of(spec, "volumeMode", "spec", &["Block", "Filesystem"], causes);
}

fn positive_storage(q: &Value, at: &str, causes: &mut Vec<Cause>) {
    let parsed = q
        .as_str()
        .and_then(|s| kybern_apimachinery::quantity::parse_milli(s).ok());
    if parsed.is_some_and(|m| m <= 0) {
        causes.push(Cause::invalid(at, q, "must be greater than zero"));
    }
}

/// A PersistentVolumeClaim's spec: access modes and a storage request.
pub fn claim(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    access_modes(spec, "at least 1 access mode is required", causes);
    match spec.pointer("/resources/requests/storage") {
        None => causes.push(Cause::required("spec.resources[storage]", "")),
        Some(q) => positive_storage(q, "spec.resources[storage]", causes),
    }
}

/// The beta class annotation, which wins over `storageClassName` and may
/// not change once set.
pub(crate) const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// What an update may change of a claim (`ValidatePersistentVolumeClaimUpdate`):
/// its `volumeName` once, while it has none; for a bound claim its storage
/// request and `volumeAttributesClassName`; `storageClassName` only to the
/// class its beta annotation named. A request may shrink only while it stays
/// above the capacity in its status (recovery from a failed expansion).
pub fn claim_update(obj: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let annotation = |v: &Value| v.pointer("/metadata/annotations")?.get(BETA_CLASS).cloned();
    let (mut spec, mut was) = (
        obj.get("spec").cloned().unwrap_or(Value::Null),
        old.get("spec").cloned().unwrap_or(Value::Null),
    );
    let unset = |v: &Value, key: &str| v.get(key).is_none_or(|x| x.is_null() || x == "");
    if unset(&was, "volumeName") {
        was["volumeName"] = spec.get("volumeName").cloned().unwrap_or(Value::Null);
    }
    // The upgrade from the beta annotation to the field.
    let old_class = annotation(old);
    if unset(&was, "storageClassName")
        && old_class.is_some()
        && spec.get("storageClassName") == old_class.as_ref()
        && annotation(obj) == old_class
    {
        was["storageClassName"] = spec["storageClassName"].clone();
    } else if annotation(obj) != old_class {
        causes.push(Cause::invalid(
            format!("metadata.annotations[{BETA_CLASS}]"),
            &annotation(obj).unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
    if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Bound") {
        for s in [&mut spec, &mut was] {
            if let Some(requests) = s
                .pointer_mut("/resources/requests")
                .and_then(Value::as_object_mut)
            {
                requests.remove("storage");
            }
            if let Some(o) = s.as_object_mut() {
                o.remove("volumeAttributesClassName");
            }
        }
    }
    let strip_nulls = |v: &Value| -> Value {
        match v {
            Value::Object(m) => m
                .iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), x.clone()))
                .collect(),
            other => other.clone(),
        }
    };
    if strip_nulls(&spec) != strip_nulls(&was) {
        causes.push(Cause::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let size = |v: &Value, pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .and_then(|q| parse_value(q).ok())
    };
    let (new_size, old_size) = (
        size(obj, "/spec/resources/requests/storage"),
        size(old, "/spec/resources/requests/storage"),
    );
    if let (Some(n), Some(o)) = (new_size, old_size)
        && n < o
        && size(old, "/status/capacity/storage").is_some_and(|c| n <= c)
    {
        causes.push(Cause::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    }
    crate::field_rules::immutable(obj, Some(old), "/spec/volumeMode", "volumeMode", causes);
}

/// The volume sources a PersistentVolume may have, exactly one.
const PV_SOURCES: &[&str] = &[
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "hostPath",
    "glusterfs",
    "nfs",
    "rbd",
    "quobyte",
    "cinder",
    "cephfs",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
    "iscsi",
];

/// A PersistentVolume's spec: access modes, a storage capacity and one
/// volume source; a local volume needs node affinity.
pub fn volume(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    access_modes(spec, "must specify at least 1 access mode", causes);
    match spec.get("capacity").and_then(Value::as_object) {
        None => causes.push(Cause::required("spec.capacity", "")),
        Some(c) if c.is_empty() => causes.push(Cause::required("spec.capacity", "")),
        Some(c) => match c.get("storage") {
            Some(q) if c.len() == 1 => positive_storage(q, "spec.capacity[storage]", causes),
            _ => causes.push(Cause::not_supported(
                "spec.capacity",
                &Value::Object(c.clone()),
                &["storage"],
            )),
        },
    }
    one_of(
        spec,
        "persistentVolumeReclaimPolicy",
        "spec",
        &["Delete", "Recycle", "Retain"],
        causes,
    );
    let sources: Vec<&&str> = PV_SOURCES
        .iter()
        .filter(|s| spec.get(**s).is_some_and(|v| !v.is_null()))
        .collect();
    match sources.as_slice() {
        [] => causes.push(Cause::required("spec", "must specify a volume type")),
        [one] => {
            let at = format!("spec.{one}");
            let source = &spec[**one];
            match **one {
                "hostPath" | "local" if text(source, "path").is_none_or(str::is_empty) => {
                    causes.push(Cause::required(format!("{at}.path"), ""));
                }
                "local" if spec.get("nodeAffinity").is_none_or(Value::is_null) => {
                    causes.push(Cause::required(
                        "spec.nodeAffinity",
                        "Local volumes require node affinity",
                    ));
                }
                _ => {}
            }
        }
        [_, rest @ ..] => {
            for kind in rest {
                causes.push(Cause::forbidden(
                    format!("spec.{kind}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
}

/// Upstream's highest priority a user-defined class may have.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// A PriorityClass: user classes stay below the system ones, whose names
/// are reserved; its value does not change.
pub fn priority_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = obj.get("value").and_then(Value::as_i64).unwrap_or(0);
    let system = crate::priority::SYSTEM_CLASSES
        .iter()
        .any(|(n, v, _)| *n == name && *v == value);
    if !system {
        if name.starts_with("system-") {
            causes.push(Cause::forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved",
            ));
        }
        if value > HIGHEST_USER_PRIORITY {
            causes.push(Cause::forbidden(
                "value",
                format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"
                ),
            ));
        }
    }
    one_of(
        obj,
        "preemptionPolicy",
        "",
        &["PreemptLowerPriority", "Never"],
        causes,
    );
    crate::field_rules::immutable(obj, old, "/value", "value", causes);
}

/// A HorizontalPodAutoscaler: a target, and replica bounds in order.
pub fn autoscaler(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    for key in ["kind", "name"] {
        if spec
            .pointer(&format!("/scaleTargetRef/{key}"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(format!("spec.scaleTargetRef.{key}"), ""));
        }
    }
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if max < 1 {
        causes.push(Cause::invalid(
            "spec.maxReplicas",
            &json!(max),
            "must be greater than 0",
        ));
    }
    if let Some(min) = spec.get("minReplicas").and_then(Value::as_i64) {
        if min < 1 {
            causes.push(Cause::invalid(
                "spec.minReplicas",
                &json!(min),
                "must be greater than or equal to 1",
            ));
        }
        if max < min {
            causes.push(Cause::invalid(
                "spec.maxReplicas",
                &json!(max),
                "must be greater than or equal to `minReplicas`",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_changes_only_what_binding_and_expansion_need() {
        let claim = |phase: &str, spec: Value| {
            let mut base = json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                "storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}});
            json_patch_merge(&mut base, &spec);
            json!({"spec": base, "status": {"phase": phase, "capacity": {"storage": "1Gi"}}})
        };
        let check = |old: &Value, new: &Value| messages(|c| claim_update(new, old, c));
        // The volume controller names the volume once.
        let pending = claim("Pending", json!({}));
        let named = claim("Pending", json!({"volumeName": "pv1"}));
        assert!(check(&pending, &named).is_empty());
        let renamed = claim("Pending", json!({"volumeName": "pv2"}));
        assert_eq!(
            check(&named, &renamed),
            [
                "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
            ]
        );
        // A bound claim may grow, and shrink back to its capacity no further.
        let bound = claim("Bound", json!({"volumeName": "pv1"}));
        let grown = claim(
            "Bound",
            json!({"volumeName": "pv1",
            "resources": {"requests": {"storage": "2Gi"}}}),
        );
        assert!(check(&bound, &grown).is_empty());
        assert_eq!(
            check(&grown, &bound),
            [
                "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
            ]
        );
        // A pending claim's request is as fixed as the rest.
        let bigger = claim(
            "Pending",
            json!({"resources": {"requests": {"storage": "2Gi"}}}),
        );
        assert_eq!(check(&pending, &bigger).len(), 1);
        let block = claim("Pending", json!({"volumeMode": "Block"}));
        assert_eq!(
            check(&pending, &block),
            [
                "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                "volumeMode: Invalid value: \"Block\": field is immutable"
            ]
        );
    }

    fn json_patch_merge(base: &mut Value, patch: &Value) {
        if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                match (b.get_mut(k), v) {
                    (Some(inner), Value::Object(_)) if inner.is_object() => {
                        json_patch_merge(inner, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }

    fn messages(f: impl FnOnce(&mut Vec<Cause>)) -> Vec<String> {
        let mut causes = Vec::new();
        f(&mut causes);
        // As kubectl shows them: a cause about the whole object has no field.
        causes
            .iter()
            .map(|c| match c.field.as_str() {
                "" => c.message.clone(),
                field => format!("{field}: {}", c.message),
            })
            .collect()
    }

    #[test]
    fn config_maps_and_secrets_check_keys_sizes_and_types() {
        let cm = json!({"data": {"a b": "x", "k": "v"}, "binaryData": {"k": "AAAA"}});
        assert_eq!(
            messages(|c| config_map(&cm, c)),
            vec![
                "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                "data[k]: Invalid value: \"k\": duplicate of key present in binaryData",
            ]
        );
        let big = json!({"data": {"k": "x".repeat(MAX_DATA_BYTES + 1)}});
        assert_eq!(
            messages(|c| config_map(&big, c)),
            vec!["Too long: may not be more than 1048576 bytes"]
        );
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "AAAA"}});
        assert_eq!(
            messages(|c| secret(&tls, None, c)),
            vec!["data[tls.key]: Required value"]
        );
        let opaque = json!({"type": "Opaque", "data": {}});
        assert_eq!(
            messages(|c| secret(&opaque, Some(&tls), c)),
            vec!["type: Invalid value: \"Opaque\": field is immutable"]
        );
        let docker = json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "bm90IGpzb24="}});
        let said = messages(|c| secret(&docker, None, c));
        assert_eq!(said.len(), 1);
        assert!(
            said[0].starts_with(
                "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\""
            ),
            "{said:?}"
        );
    }

    #[test]
    fn claims_and_volumes_need_modes_storage_and_one_source() {
        let claim_spec = json!({"spec": {"accessModes": ["ReadWriteSometimes"], "resources": {}}});
        assert_eq!(
            messages(|c| claim(&claim_spec, c)),
            vec![
                "spec.accessModes: Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.resources[storage]: Required value",
            ]
        );
        let pv = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "local": {"path": "/mnt"}}});
        assert_eq!(
            messages(|c| volume(&pv, c)),
            vec!["spec.nodeAffinity: Required value: Local volumes require node affinity"]
        );
        let none =
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "0"}}});
        assert_eq!(
            messages(|c| volume(&none, c)),
            vec![
                "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
                "spec: Required value: must specify a volume type",
            ]
        );
    }

    #[test]
    fn priority_classes_and_autoscalers_keep_their_bounds() {
        let high = json!({"metadata": {"name": "system-mine"}, "value": 2_000_000_000_i64});
        assert_eq!(
            messages(|c| priority_class(&high, None, c)),
            vec![
                "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved",
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000",
            ]
        );
        let builtin =
            json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000_i64});
        assert!(messages(|c| priority_class(&builtin, None, c)).is_empty());
        let hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 5, "maxReplicas": 2}});
        assert_eq!(
            messages(|c| autoscaler(&hpa, c)),
            vec![
                "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
            ]
        );
    }
}
