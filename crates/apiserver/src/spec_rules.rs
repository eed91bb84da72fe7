//! Per-kind validation of specs, as upstream's: required fields of pods and
//! workloads, selectors that must match their templates, and the fields that
//! cannot change on update (a pod's spec, a workload's or Job's selector).

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::object::Object;
use crate::registry::ResourceInfo;

fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|x| !x.is_null())
}

/// Checks a pod spec at `path` (`spec`, `spec.template.spec`, …).
fn pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push(Cause::required(format!("{path}.containers"), ""));
        return;
    }
    let mut seen = Vec::new();
    for list in ["initContainers", "containers"] {
        let items = spec.and_then(|s| s.get(list)).and_then(Value::as_array);
        for (i, c) in items.into_iter().flatten().enumerate() {
            let field = format!("{path}.{list}[{i}]");
            match c.get("name").and_then(Value::as_str) {
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
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required(format!("{field}.image"), ""));
            }
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("{field}.ports[{j}].containerPort"),
                        &json!(port),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
}

/// A workload's selector: present, non-empty, matching the template's labels.
fn selector_matches_template(obj: &Value, causes: &mut Vec<Cause>, kind: &str) {
    let Some(selector) = at(obj, "/spec/selector") else {
        causes.push(Cause::required("spec.selector", ""));
        return;
    };
    let Ok(sel) = kybern_apimachinery::labels::Selector::from_label_selector(selector) else {
        causes.push(Cause::invalid(
            "spec.selector",
            selector,
            "invalid label selector",
        ));
        return;
    };
    if sel.is_empty() {
        causes.push(Cause::invalid(
            "spec.selector",
            selector,
            format!("empty selector is invalid for {kind}"),
        ));
        return;
    }
    let labels = obj.pointer("/spec/template/metadata/labels");
    if !sel.matches_labels(labels) {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            labels.unwrap_or(&Value::Null),
            "`selector` does not match template `labels`",
        ));
    }
}

fn immutable(obj: &Value, old: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    if at(obj, pointer) != at(old, pointer) {
        causes.push(Cause::invalid(
            field,
            at(obj, pointer).unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

/// A pod's spec with the fields an update may change blanked out.
fn pod_spec_fixed(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        for f in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
            "nodeName",
        ] {
            m.remove(f);
        }
        for list in ["containers", "initContainers"] {
            if let Some(items) = m.get_mut(list).and_then(Value::as_array_mut) {
                for c in items.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    s
}

/// The per-kind causes for `obj` (and against `old` on update).
pub fn validate(info: &ResourceInfo, obj: &Object, old: Option<&Object>) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (info.group.as_str(), info.plural.as_str()) {
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            causes.extend(crate::admission::validating_policy::validation::policy(obj));
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => {
            causes.extend(crate::admission::validating_policy::validation::binding(
                obj,
            ));
        }
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => {
            causes.extend(crate::admission::webhook::config::validate(obj, true));
        }
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            causes.extend(crate::admission::webhook::config::validate(obj, false));
        }
        (crate::certificates::GROUP, "certificatesigningrequests") => {
            causes.extend(crate::certificates::validate(obj));
        }
        ("", "pods") => {
            pod_spec(obj.get("spec"), "spec", &mut causes);
            if let Some(old) = old {
                let (new_spec, old_spec) = (obj.get("spec"), old.get("spec"));
                let node = |s: Option<&Value>| s.and_then(|s| s.get("nodeName")).cloned();
                let node_changed =
                    node(old_spec).is_some_and(|n| n != "") && node(new_spec) != node(old_spec);
                if new_spec.map(pod_spec_fixed) != old_spec.map(pod_spec_fixed) || node_changed {
                    causes.push(Cause::forbidden(
                        "spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                    ));
                }
            }
        }
        ("", "podtemplates") => {
            pod_spec(obj.pointer("/template/spec"), "template.spec", &mut causes)
        }
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            selector_matches_template(obj, &mut causes, &info.singular);
            pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
                && r < 0
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &json!(r),
                    "must be greater than or equal to 0",
                ));
            }
            if let Some(old) = old {
                immutable(obj, old, "/spec/selector", "spec.selector", &mut causes);
            }
        }
        ("batch", "jobs") => {
            pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            job_restart_policy(
                obj.pointer("/spec/template/spec/restartPolicy"),
                "spec.template.spec.restartPolicy",
                &mut causes,
            );
            if let Some(old) = old {
                immutable(obj, old, "/spec/selector", "spec.selector", &mut causes);
            }
        }
        ("batch", "cronjobs") => {
            if obj
                .pointer("/spec/schedule")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required("spec.schedule", ""));
            }
            let spec = "/spec/jobTemplate/spec/template/spec";
            pod_spec(
                obj.pointer(spec),
                "spec.jobTemplate.spec.template.spec",
                &mut causes,
            );
            job_restart_policy(
                obj.pointer(&format!("{spec}/restartPolicy")),
                "spec.jobTemplate.spec.template.spec.restartPolicy",
                &mut causes,
            );
        }
        ("", "services") => service(obj, &mut causes),
        _ => {}
    }
    causes
}

fn job_restart_policy(policy: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    if !matches!(policy.and_then(Value::as_str), Some("OnFailure" | "Never")) {
        causes.push(Cause::required(
            field,
            "valid values: \"OnFailure\", \"Never\"",
        ));
    }
}

fn service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push(Cause::not_supported(
            "spec.type",
            &json!(ty),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    if ty != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
        causes.push(Cause::required("spec.ports", ""));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    if ty == "ExternalName"
        && obj
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        causes.push(Cause::required("spec.externalName", ""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn info(group: &str, version: &str, plural: &str) -> std::sync::Arc<ResourceInfo> {
        Registry::with_builtins()
            .get(group, version, plural)
            .expect("resource")
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn pods_need_containers_with_names_and_images_and_keep_their_spec() {
        let pods = info("", "v1", "pods");
        let empty = json!({"spec": {"containers": []}});
        assert_eq!(
            fields(&validate(&pods, &empty, None)),
            vec!["spec.containers"]
        );
        let bad = json!({"spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x"}]}});
        assert_eq!(
            fields(&validate(&pods, &bad, None)),
            vec!["spec.containers[0].image", "spec.containers[1].name"]
        );
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "restartPolicy": "Always"}});
        let new_image = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}], "restartPolicy": "Always"}});
        assert!(validate(&pods, &new_image, Some(&old)).is_empty());
        let other = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "restartPolicy": "Never"}});
        assert_eq!(fields(&validate(&pods, &other, Some(&old))), vec!["spec"]);
        let bound = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "restartPolicy": "Always", "nodeName": "n1"}});
        assert!(
            validate(&pods, &bound, Some(&old)).is_empty(),
            "binding sets nodeName once"
        );
    }

    #[test]
    fn workloads_match_selectors_and_keep_them() {
        let d = info("apps", "v1", "deployments");
        let ok = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(validate(&d, &ok, None).is_empty());
        let mut mismatch = ok.clone();
        mismatch["spec"]["template"]["metadata"]["labels"]["app"] = json!("b");
        assert_eq!(
            fields(&validate(&d, &mismatch, None)),
            vec!["spec.template.metadata.labels"]
        );
        let mut moved = ok.clone();
        moved["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        assert_eq!(
            fields(&validate(&d, &moved, Some(&ok))),
            vec!["spec.selector"]
        );
        let j = info("batch", "v1", "jobs");
        let job = json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            fields(&validate(&j, &job, None)),
            vec!["spec.template.spec.restartPolicy"]
        );
    }

    #[test]
    fn services_need_ports_unless_headless_or_external() {
        let s = info("", "v1", "services");
        assert_eq!(
            fields(&validate(&s, &json!({"spec": {}}), None)),
            vec!["spec.ports"]
        );
        assert!(validate(&s, &json!({"spec": {"clusterIP": "None"}}), None).is_empty());
        assert!(
            validate(
                &s,
                &json!({"spec": {"type": "ExternalName", "externalName": "x.example"}}),
                None
            )
            .is_empty()
        );
        let bad = json!({"spec": {"ports": [{"port": 70000}]}});
        assert_eq!(
            fields(&validate(&s, &bad, None)),
            vec!["spec.ports[0].port"]
        );
    }
}
