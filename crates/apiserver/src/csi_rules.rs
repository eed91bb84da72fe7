//! Upstream's validation of the CSI objects of `storage.k8s.io`: CSIDrivers
//! (`ValidateCSIDriver`, `ValidateCSIDriverUpdate`) and CSINodes
//! (`ValidateCSINode`, `ValidateCSINodeUpdate`), with their defaults.

use kybern_apimachinery::{Cause, names};
use serde_json::{Map, Value, json};

use crate::field_rules::{items, text};

/// Longest CSI driver name.
const DRIVER_NAME_MAX: usize = 63;
/// Longest node ID a driver may report.
const NODE_ID_MAX: usize = 192;
/// Shortest and longest service account token a driver may ask for.
const TOKEN_MIN_SECONDS: i64 = 600;
const TOKEN_MAX_SECONDS: i64 = 1 << 32;
/// The fields of a CSIDriver's spec that upstream's `SetDefaults_CSIDriver`
/// fills in.
const DEFAULTED: [&str; 7] = [
    "attachRequired",
    "podInfoOnMount",
    "storageCapacity",
    "requiresRepublish",
    "seLinuxMount",
    "fsGroupPolicy",
    "volumeLifecycleModes",
];

/// The default of a CSIDriver spec field.
fn driver_default(key: &str) -> Option<Value> {
    Some(match key {
        "attachRequired" => json!(true),
        "podInfoOnMount" | "storageCapacity" | "requiresRepublish" | "seLinuxMount" => json!(false),
        "fsGroupPolicy" => json!("ReadWriteOnceWithFSType"),
        "volumeLifecycleModes" => json!(["Persistent"]),
        _ => return None,
    })
}

/// Fills in a CSIDriver's defaults.
pub(crate) fn driver_defaults(root: &mut Map<String, Value>) {
    if !root.get("spec").is_some_and(Value::is_object) {
        root.insert("spec".into(), json!({}));
    }
    let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for key in DEFAULTED {
        if spec.get(key).is_none_or(Value::is_null)
            && let Some(value) = driver_default(key)
        {
            spec.insert(key.into(), value);
        }
    }
}

/// A CSI driver's name (`ValidateCSIDriverName`): a DNS subdomain of any
/// case, at most 63 characters.
pub(crate) fn driver_name(name: &str, at: &str, causes: &mut Vec<Cause>) {
    if name.is_empty() {
        causes.push(Cause::required(at, ""));
    }
    if name.len() > DRIVER_NAME_MAX {
        causes.push(Cause::too_long(at, DRIVER_NAME_MAX));
    }
    for msg in names::dns1123_subdomain(&name.to_lowercase()) {
        causes.push(Cause::invalid(at, &json!(name), msg));
    }
}

/// A CSIDriver: its name, the spec's required flags, known policies and
/// lifecycle modes, token requests; some fields fixed once made.
pub fn csi_driver(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > DRIVER_NAME_MAX {
        causes.push(Cause::too_long("name", DRIVER_NAME_MAX));
    }
    let empty = json!({});
    let spec = obj.get("spec").filter(|s| s.is_object()).unwrap_or(&empty);
    // Upstream's path spells it so.
    for (key, field) in [
        ("attachRequired", "spec.attachedRequired"),
        ("podInfoOnMount", "spec.podInfoOnMount"),
        ("storageCapacity", "spec.storageCapacity"),
        ("seLinuxMount", "spec.seLinuxMount"),
        ("fsGroupPolicy", "spec.fsGroupPolicy"),
    ] {
        if spec.get(key).is_none_or(Value::is_null) {
            causes.push(Cause::required(field, ""));
        }
    }
    if let Some(p) = text(spec, "fsGroupPolicy")
        && !matches!(p, "File" | "None" | "ReadWriteOnceWithFSType")
    {
        causes.push(Cause::not_supported(
            "spec.fsGroupPolicy",
            &json!(p),
            &["File", "None", "ReadWriteOnceWithFSType"],
        ));
    }
    for mode in items(Some(spec), "volumeLifecycleModes") {
        if !matches!(mode.as_str(), Some("Persistent" | "Ephemeral")) {
            causes.push(Cause::not_supported(
                "spec.volumeLifecycleModes",
                mode,
                &["Ephemeral", "Persistent"],
            ));
        }
    }
    let mut audiences: Vec<&str> = Vec::new();
    for (i, request) in items(Some(spec), "tokenRequests").enumerate() {
        let at = format!("spec.tokenRequests[{i}]");
        let audience = text(request, "audience").unwrap_or("");
        if audiences.contains(&audience) {
            causes.push(Cause::invalid(
                format!("{at}.audience"),
                &json!(audience),
                "must be unique",
            ));
        }
        audiences.push(audience);
        if let Some(s) = request.get("expirationSeconds").and_then(Value::as_i64) {
            let why = if s < TOKEN_MIN_SECONDS {
                Some("may not specify a duration less than 10 minutes")
            } else if s > TOKEN_MAX_SECONDS {
                Some("may not specify a duration larger than 2^32 seconds")
            } else {
                None
            };
            if let Some(why) = why {
                causes.push(Cause::invalid(
                    format!("{at}.expirationSeconds"),
                    &json!(s),
                    why,
                ));
            }
        }
    }
    if let Some(s) = spec
        .get("nodeAllocatableUpdatePeriodSeconds")
        .and_then(Value::as_i64)
        && s < 10
    {
        causes.push(Cause::invalid(
            "spec.nodeAllocatableUpdatePeriodSeconds",
            &json!(s),
            "must be greater than or equal to 10 seconds",
        ));
    }
    let Some(old) = old else { return };
    // A driver stored before its spec was defaulted holds the defaults.
    let fixed = |v: &Value, key: &str| {
        v.pointer(&format!("/spec/{key}"))
            .filter(|x| !x.is_null())
            .cloned()
            .or_else(|| driver_default(key))
    };
    for (key, field) in [
        ("attachRequired", "spec.attachedRequired"),
        ("fsGroupPolicy", "spec.fsGroupPolicy"),
        ("volumeLifecycleModes", "spec.volumeLifecycleModes"),
    ] {
        if fixed(obj, key) != fixed(old, key) {
            causes.push(Cause::invalid(
                field,
                &fixed(obj, key).unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    }
}

/// A CSINode: each driver once, by a valid name, with a node ID, unique
/// qualified topology keys and a non-negative volume count; a driver's node
/// ID and topology keys fixed once registered.
pub fn csi_node(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec");
    let mut seen: Vec<&str> = Vec::new();
    for (i, d) in items(spec, "drivers").enumerate() {
        let at = format!("spec.drivers[{i}]");
        let name = text(d, "name").unwrap_or("");
        driver_name(name, &format!("{at}.name"), causes);
        let node_id = text(d, "nodeID").unwrap_or("");
        if node_id.is_empty() {
            causes.push(Cause::required(format!("{at}.nodeID"), ""));
        }
        if node_id.len() > NODE_ID_MAX {
            causes.push(Cause::invalid(
                format!("{at}.nodeID"),
                &json!(node_id),
                format!("must be {NODE_ID_MAX} characters or less"),
            ));
        }
        if let Some(count) = d.pointer("/allocatable/count").and_then(Value::as_i64)
            && count < 0
        {
            causes.push(Cause::invalid(
                format!("{at}.allocatable.count"),
                &json!(count),
                crate::field_rules::NEGATIVE,
            ));
        }
        if seen.contains(&name) {
            causes.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
        }
        seen.push(name);
        let mut keys: Vec<&str> = Vec::new();
        for key in items(Some(d), "topologyKeys") {
            let key = key.as_str().unwrap_or("");
            if key.is_empty() {
                causes.push(Cause::required(&at, ""));
            }
            if keys.contains(&key) {
                causes.push(Cause::duplicate(&at, &json!(key)));
            }
            keys.push(key);
            for msg in names::qualified_name(key) {
                causes.push(Cause::invalid(&at, &json!(key), msg));
            }
        }
    }
    let Some(old) = old else { return };
    for (i, d) in items(spec, "drivers").enumerate() {
        let name = text(d, "name");
        let Some(before) = items(old.get("spec"), "drivers").find(|o| text(o, "name") == name)
        else {
            continue;
        };
        for key in ["nodeID", "topologyKeys"] {
            let value = |v: &Value| v.get(key).filter(|x| !x.is_null()).cloned();
            if value(d) != value(before) {
                causes.push(Cause::invalid(
                    format!("spec.drivers[{i}].{key}"),
                    &value(d).unwrap_or(Value::Null),
                    "field is immutable",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines;

    fn driver(spec: Value) -> Value {
        let mut obj = json!({"metadata": {"name": "csi.example.com"}, "spec": spec});
        if let Some(root) = obj.as_object_mut() {
            driver_defaults(root);
        }
        obj
    }

    #[test]
    fn drivers_are_defaulted_and_checked() {
        let good =
            driver(json!({"tokenRequests": [{"audience": "vault", "expirationSeconds": 3600}]}));
        assert_eq!(good["spec"]["attachRequired"], json!(true));
        assert_eq!(good["spec"]["volumeLifecycleModes"], json!(["Persistent"]));
        let mut causes = Vec::new();
        csi_driver(&good, None, &mut causes);
        assert!(causes.is_empty(), "{:?}", cause_lines(&causes));
        let bad = driver(json!({
            "fsGroupPolicy": "Sometimes", "volumeLifecycleModes": ["Forever"],
            "tokenRequests": [{"audience": "a"}, {"audience": "a", "expirationSeconds": 60}],
        }));
        csi_driver(&bad, None, &mut causes);
        // Upstream refuses a change of what attaching needs.
        let mut changed = good.clone();
        changed["spec"]["attachRequired"] = json!(false);
        changed["spec"]["podInfoOnMount"] = json!(true);
        csi_driver(&changed, Some(&good), &mut causes);
        assert_eq!(
            cause_lines(&causes),
            vec![
                "spec.fsGroupPolicy: Unsupported value: \"Sometimes\": supported values: \"File\", \"None\", \"ReadWriteOnceWithFSType\"",
                "spec.volumeLifecycleModes: Unsupported value: \"Forever\": supported values: \"Ephemeral\", \"Persistent\"",
                "spec.tokenRequests[1].audience: Invalid value: \"a\": must be unique",
                "spec.tokenRequests[1].expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
                "spec.attachedRequired: Invalid value: false: field is immutable",
            ]
        );
    }

    #[test]
    fn nodes_list_each_driver_once_with_fixed_ids() {
        let node = |id: &str| {
            json!({"spec": {"drivers": [
                {"name": "csi.example.com", "nodeID": id, "topologyKeys": ["topology.example.com/zone"]},
            ]}})
        };
        let mut causes = Vec::new();
        csi_node(&node("n1"), None, &mut causes);
        assert!(causes.is_empty());
        let bad = json!({"spec": {"drivers": [
            {"name": "a.example.com", "nodeID": "", "allocatable": {"count": -1}, "topologyKeys": ["k", "k"]},
            {"name": "a.example.com", "nodeID": "x".repeat(193)},
        ]}});
        csi_node(&bad, None, &mut causes);
        csi_node(&node("n2"), Some(&node("n1")), &mut causes);
        assert_eq!(
            cause_lines(&causes),
            vec![
                "spec.drivers[0].nodeID: Required value",
                "spec.drivers[0].allocatable.count: Invalid value: -1: must be greater than or equal to 0",
                "spec.drivers[0]: Duplicate value: \"k\"",
                format!(
                    "spec.drivers[1].nodeID: Invalid value: \"{}\": must be 192 characters or less",
                    "x".repeat(193)
                )
                .as_str(),
                "spec.drivers[1].name: Duplicate value: \"a.example.com\"",
                "spec.drivers[0].nodeID: Invalid value: \"n2\": field is immutable",
            ]
        );
    }
}
