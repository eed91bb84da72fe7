//! Upstream's validation of the cluster's own objects: StorageClasses
//! (fixed once made), RuntimeClasses, Leases and Nodes' taints and pod
//! CIDRs, with upstream's paths and messages.

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{CIDR, cidr, immutable, items, one_of, text};

/// A StorageClass: a provisioner, known reclaim policy and binding mode,
/// none of which (nor the parameters) change once it is made.
pub fn storage_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    match text(obj, "provisioner").filter(|p| !p.is_empty()) {
        None => causes.push(Cause::required("provisioner", "")),
        Some(p) => {
            for msg in names::qualified_name(&p.to_lowercase()) {
                causes.push(Cause::invalid("provisioner", &json!(p), msg));
            }
        }
    }
    for key in obj
        .get("parameters")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.keys())
    {
        if key.is_empty() {
            causes.push(Cause::invalid(
                "parameters",
                &json!(key),
                "field can not be empty.",
            ));
        }
    }
    one_of(obj, "reclaimPolicy", "", &["Delete", "Retain"], causes);
    match text(obj, "volumeBindingMode") {
        None => causes.push(Cause::required("volumeBindingMode", "")),
        Some(_) => one_of(
            obj,
            "volumeBindingMode",
            "",
            &["Immediate", "WaitForFirstConsumer"],
            causes,
        ),
    }
    let Some(old) = old else { return };
    // A class stored before its policies were defaulted holds the defaults.
    let policy =
        |v: &Value, key: &str, default: &'static str| text(v, key).unwrap_or(default).to_owned();
    let empty = Value::Object(serde_json::Map::new());
    let parameters = |v: &Value| {
        v.get("parameters")
            .filter(|p| !p.is_null())
            .unwrap_or(&empty)
            .clone()
    };
    for (key, changed) in [
        ("parameters", parameters(obj) != parameters(old)),
        (
            "provisioner",
            obj.get("provisioner") != old.get("provisioner"),
        ),
        (
            "reclaimPolicy",
            policy(obj, "reclaimPolicy", "Delete") != policy(old, "reclaimPolicy", "Delete"),
        ),
    ] {
        if changed {
            causes.push(Cause::forbidden(
                key,
                format!("updates to {key} are forbidden."),
            ));
        }
    }
    if policy(obj, "volumeBindingMode", "Immediate")
        != policy(old, "volumeBindingMode", "Immediate")
    {
        causes.push(Cause::invalid(
            "volumeBindingMode",
            obj.get("volumeBindingMode").unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

/// A RuntimeClass: a handler that is a DNS label and does not change, and
/// scheduling constraints in the pod spec's own form.
pub fn runtime_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let handler = text(obj, "handler").unwrap_or("");
    for msg in names::dns1123_label(handler) {
        causes.push(Cause::invalid("handler", &json!(handler), msg));
    }
    immutable(obj, old, "/handler", "handler", causes);
    if let Some(fixed) = obj.pointer("/overhead/podFixed").filter(|f| !f.is_null()) {
        crate::resource_rules::resources(&json!({ "limits": fixed }), "overhead.podFixed", causes);
    }
    if let Some(s) = obj.get("scheduling").filter(|s| !s.is_null()) {
        crate::scheduling_rules::labels(s.get("nodeSelector"), "scheduling.nodeSelector", causes);
        crate::scheduling_rules::tolerations(s, "scheduling", causes);
    }
}

/// A Lease: a positive duration and a non-negative transition count.
pub fn lease(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec") else { return };
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        causes.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            &json!(d),
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.get("leaseTransitions").and_then(Value::as_i64)
        && t < 0
    {
        causes.push(Cause::invalid(
            "spec.leaseTransitions",
            &json!(t),
            "must be greater than or equal to 0",
        ));
    }
}

/// A Node's spec: taints with a valid key, value and effect, each (key,
/// effect) once, and pod CIDRs that parse, at most one per family.
pub fn node(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec") else { return };
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in items(Some(spec), "taints").enumerate() {
        let at = format!("spec.taints[{i}]");
        let key = text(t, "key").unwrap_or("");
        for msg in names::qualified_name(key) {
            causes.push(Cause::invalid(format!("{at}.key"), &json!(key), msg));
        }
        if let Some(v) = text(t, "value") {
            for msg in names::label_value(v) {
                causes.push(Cause::invalid(format!("{at}.value"), &json!(v), msg));
            }
        }
        let effect = text(t, "effect").unwrap_or("");
        match effect {
            "" => causes.push(Cause::required(format!("{at}.effect"), "")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => causes.push(Cause::not_supported(
                format!("{at}.effect"),
                &json!(other),
                &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            )),
        }
        if seen.contains(&(key, effect)) {
            causes.push(Cause::duplicate(&at, &json!(format!("{key}:{effect}"))));
        }
        seen.push((key, effect));
    }
    let cidrs: Vec<&str> = items(Some(spec), "podCIDRs")
        .filter_map(Value::as_str)
        .collect();
    for (i, c) in cidrs.iter().enumerate() {
        if cidr(c).is_none() {
            causes.push(Cause::invalid(
                format!("spec.podCIDRs[{i}]"),
                &json!(c),
                CIDR,
            ));
        }
    }
    let same_family = cidrs.len() == 2 && cidrs[0].contains(':') == cidrs[1].contains(':');
    if cidrs.len() > 2 || same_family {
        causes.push(Cause::invalid(
            "spec.podCIDRs",
            &spec["podCIDRs"],
            "may specify no more than one CIDR for each IP family",
        ));
    }
}

/// Finalizers upstream knows by a bare name; any other must be fully
/// qualified (`example.com/cleanup`).
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// One finalizer name (`validateFinalizerName`): a qualified name
/// (reported at `list`) and, when `item` is given (built-in kinds), a
/// standard one if it has no domain (reported at `item`).
fn finalizer_name(name: &str, list: &str, item: Option<&str>, causes: &mut Vec<Cause>) {
    for msg in names::qualified_name(name) {
        causes.push(Cause::invalid(list, &json!(name), msg));
    }
    if let Some(item) = item
        && !name.contains('/')
        && !STANDARD_FINALIZERS.contains(&name)
    {
        causes.push(Cause::invalid(
            item,
            &json!(name),
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
}

/// `metadata.finalizers` (`ValidateFinalizers`): each a valid name, and not
/// both ways of deleting dependents at once; `built_in` for the kinds whose
/// upstream validation also holds bare names to the standard ones.
pub fn metadata_finalizers(finalizers: &[String], built_in: bool, causes: &mut Vec<Cause>) {
    for (i, f) in finalizers.iter().enumerate() {
        let item = built_in.then(|| format!("metadata.finalizers[{i}]"));
        finalizer_name(f, "metadata.finalizers", item.as_deref(), causes);
    }
    let has = |n: &str| finalizers.iter().any(|f| f == n);
    if has("orphan") && has("foregroundDeletion") {
        causes.push(Cause::invalid(
            "metadata.finalizers",
            &json!(finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// A Namespace's `spec.finalizers`, reported at the list as upstream does.
pub fn namespace_finalizers(obj: &Value, causes: &mut Vec<Cause>) {
    for f in crate::field_rules::items(obj.get("spec"), "finalizers") {
        let name = f.as_str().unwrap_or("");
        finalizer_name(name, "spec.finalizers", Some("spec.finalizers"), causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines as lines;

    #[test]
    fn storage_classes_are_fixed_once_made() {
        let old = json!({"provisioner": "example.com/disk", "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate"});
        let mut causes = Vec::new();
        storage_class(&old, None, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut stored = old.clone();
        stored
            .as_object_mut()
            .expect("object")
            .remove("reclaimPolicy");
        storage_class(&old, Some(&stored), &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        storage_class(
            &json!({"provisioner": "example.com/disk", "reclaimPolicy": "Recycle",
                "volumeBindingMode": "WaitForFirstConsumer", "parameters": {"type": "ssd"}}),
            Some(&old),
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
                "parameters: Forbidden: updates to parameters are forbidden.",
                "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
                "volumeBindingMode: Invalid value: \"WaitForFirstConsumer\": field is immutable",
            ]
        );
    }

    #[test]
    fn runtime_classes_keep_their_handler_and_leases_their_bounds() {
        let mut causes = Vec::new();
        runtime_class(
            &json!({"handler": "Kata_2", "scheduling": {"tolerations": [{"key": "k", "operator": "Sometimes"}]}}),
            Some(&json!({"handler": "kata"})),
            &mut causes,
        );
        let got = lines(&causes);
        assert!(
            got[0].starts_with("handler: Invalid value: \"Kata_2\""),
            "{got:?}"
        );
        assert!(got.contains(&"handler: Invalid value: \"Kata_2\": field is immutable".to_owned()));
        assert!(
            got.last()
                .is_some_and(|l| l.starts_with("scheduling.tolerations[0].operator"))
        );
        let mut causes = Vec::new();
        lease(
            &json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}}),
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn node_taints_are_unique_and_cidrs_one_per_family() {
        let mut causes = Vec::new();
        node(
            &json!({"spec": {
                "taints": [{"key": "gpu", "effect": "NoSchedule"}, {"key": "gpu", "effect": "NoSchedule"},
                    {"key": "x", "effect": "Sometimes"}],
                "podCIDRs": ["10.0.0.0/24", "10.1.0.0/24"]}}),
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "spec.taints[1]: Duplicate value: \"gpu:NoSchedule\"",
                "spec.taints[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
                "spec.podCIDRs: Invalid value: [\"10.0.0.0/24\",\"10.1.0.0/24\"]: may specify no more than one CIDR for each IP family",
            ]
        );
    }

    #[test]
    fn finalizers_are_standard_or_qualified() {
        let mut causes = Vec::new();
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        metadata_finalizers(
            &list(&["example.com/cleanup", "kubernetes", "cleanup"]),
            true,
            &mut causes,
        );
        // Custom resources take any qualified name.
        metadata_finalizers(&list(&["cleanup"]), false, &mut causes);
        metadata_finalizers(&list(&["orphan", "foregroundDeletion"]), true, &mut causes);
        namespace_finalizers(
            &json!({"spec": {"finalizers": ["kubernetes", "mine"]}}),
            &mut causes,
        );
        assert_eq!(
            crate::field_rules::cause_lines(&causes),
            vec![
                "metadata.finalizers[2]: Invalid value: \"cleanup\": name is neither a standard finalizer name nor is it fully qualified",
                "metadata.finalizers: Invalid value: [\"orphan\",\"foregroundDeletion\"]: finalizer orphan and foregroundDeletion cannot be both set",
                "spec.finalizers: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified",
            ]
        );
    }
}
