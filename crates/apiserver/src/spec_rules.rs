//! Per-kind validation of specs, as upstream's: required fields of pods and
//! workloads, selectors that must match their templates, and the fields that
//! cannot change on update (a pod's spec, a workload's or Job's selector).

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{immutable, one_of, text};
use crate::object::Object;
use crate::registry::ResourceInfo;

fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|x| !x.is_null())
}

/// Checks the pod spec at `pointer` of `obj` (reported at `path`), unless
/// an update leaves it as it was: what was stored before these rules
/// existed keeps working (its status can still be written), as upstream
/// ratchets its newer rules.
fn pod_spec_at(
    obj: &Value,
    old: Option<&Value>,
    pointer: &str,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let spec = obj.pointer(pointer);
    if old.is_some_and(|o| o.pointer(pointer) == spec) {
        return;
    }
    crate::pod_rules::pod_spec(spec, path, causes);
}

/// The pod template of a replicated workload (ReplicationController,
/// ReplicaSet, Deployment, StatefulSet, DaemonSet).
fn replicated_template(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    pod_spec_at(
        obj,
        old,
        "/spec/template/spec",
        "spec.template.spec",
        causes,
    );
    restarting_template(obj, causes);
}

/// A StatefulSet with each of its `volumeClaimTemplates` as a volume of its
/// pod template, which its containers may mount (each pod gets that claim).
fn with_claim_volumes(obj: &Value) -> Value {
    let mut set = obj.clone();
    let claims: Vec<Value> = obj
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/metadata/name")?.as_str())
        .map(|name| json!({"name": name, "persistentVolumeClaim": {"claimName": name}}))
        .collect();
    if let Some(spec) = set
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    {
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(volumes) => volumes.extend(claims),
            None => {
                spec.insert("volumes".into(), Value::Array(claims));
            }
        }
    }
    set
}

/// A ReplicaSet's, Deployment's, StatefulSet's or DaemonSet's template:
/// its pods always restart and have no deadline.
fn restarting_template(obj: &Value, causes: &mut Vec<Cause>) {
    let policy = obj.pointer("/spec/template/spec/restartPolicy");
    if let Some(p) = policy.and_then(Value::as_str)
        && p != "Always"
    {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(p),
            &["Always"],
        ));
    }
    if at(obj, "/spec/template/spec/activeDeadlineSeconds").is_some() {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
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

/// The per-kind causes for `obj` (and against `old` on an update through
/// `subresource`).
pub fn validate(
    info: &ResourceInfo,
    obj: &Object,
    old: Option<&Object>,
    subresource: Option<&str>,
) -> Vec<Cause> {
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
            pod_spec_at(obj, old, "/spec", "spec", &mut causes);
            // Ephemeral containers come only through their own subresource.
            if old.is_none()
                && obj
                    .pointer("/spec/ephemeralContainers")
                    .and_then(Value::as_array)
                    .is_some_and(|e| !e.is_empty())
            {
                causes.push(Cause::forbidden(
                    "spec.ephemeralContainers",
                    "cannot be set on create",
                ));
            }
            if let Some(old) = old
                && subresource == Some(crate::strategy::EPHEMERAL_CONTAINERS)
            {
                causes.extend(crate::ephemeral_rules::update(obj, old));
            } else if let Some(old) = old {
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
            pod_spec_at(obj, old, "/template/spec", "template.spec", &mut causes)
        }
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            selector_matches_template(obj, &mut causes, &info.singular);
            if info.plural == "statefulsets" {
                let old = old.map(with_claim_volumes);
                replicated_template(&with_claim_volumes(obj), old.as_ref(), &mut causes);
            } else {
                replicated_template(obj, old, &mut causes);
            }
            match info.plural.as_str() {
                "deployments" => crate::workload_rules::deployment(obj, &mut causes),
                "statefulsets" => crate::workload_rules::stateful_set(obj, &mut causes),
                "daemonsets" => crate::workload_rules::daemon_set(obj, &mut causes),
                _ => {}
            }
            if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
                && r < 0
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &json!(r),
                    "must be greater than or equal to 0",
                ));
            }
            immutable(obj, old, "/spec/selector", "spec.selector", &mut causes);
        }
        ("batch", "jobs") => {
            pod_spec_at(
                obj,
                old,
                "/spec/template/spec",
                "spec.template.spec",
                &mut causes,
            );
            crate::workload_rules::job(obj, &mut causes);
            job_restart_policy(
                obj.pointer("/spec/template/spec/restartPolicy"),
                "spec.template.spec.restartPolicy",
                &mut causes,
            );
            immutable(obj, old, "/spec/selector", "spec.selector", &mut causes);
            immutable(
                obj,
                old,
                "/spec/successPolicy",
                "spec.successPolicy",
                &mut causes,
            );
        }
        ("batch", "cronjobs") => {
            crate::workload_rules::cron_job(obj, &mut causes);
            if obj
                .pointer("/spec/schedule")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required("spec.schedule", ""));
            }
            let spec = "/spec/jobTemplate/spec/template/spec";
            pod_spec_at(
                obj,
                old,
                spec,
                "spec.jobTemplate.spec.template.spec",
                &mut causes,
            );
            job_restart_policy(
                obj.pointer(&format!("{spec}/restartPolicy")),
                "spec.jobTemplate.spec.template.spec.restartPolicy",
                &mut causes,
            );
        }
        // As for pod specs: an update that leaves the spec alone is not
        // held to rules newer than the object.
        ("", "services") if old.is_none_or(|o| o.get("spec") != obj.get("spec")) => {
            service(obj, &mut causes);
        }
        ("", "replicationcontrollers") => replicated_template(obj, old, &mut causes),
        ("", "configmaps") => crate::kind_rules::config_map(obj, &mut causes),
        ("", "secrets") => crate::kind_rules::secret(obj, old, &mut causes),
        ("scheduling.k8s.io", "priorityclasses") => {
            crate::kind_rules::priority_class(obj, old, &mut causes);
        }
        ("", "persistentvolumeclaims") if old.is_some_and(|o| o.get("spec") != obj.get("spec")) => {
            crate::kind_rules::claim(obj, &mut causes);
            if let Some(old) = old {
                crate::kind_rules::claim_update(obj, old, &mut causes);
            }
        }
        // Written by controllers after creation (binding, status): held to
        // these rules only when their spec changes, as pod specs are.
        ("", "persistentvolumeclaims" | "persistentvolumes")
        | ("autoscaling", "horizontalpodautoscalers")
        | ("policy", "poddisruptionbudgets")
        | ("networking.k8s.io", "ingresses" | "networkpolicies")
            if old.is_none_or(|o| o.get("spec") != obj.get("spec")) =>
        {
            match info.plural.as_str() {
                "persistentvolumeclaims" => crate::kind_rules::claim(obj, &mut causes),
                "persistentvolumes" => crate::kind_rules::volume(obj, &mut causes),
                "poddisruptionbudgets" => {
                    crate::workload_rules::disruption_budget(obj, &mut causes);
                }
                "ingresses" => crate::network_rules::ingress(obj, &mut causes),
                "networkpolicies" => crate::network_rules::network_policy(obj, &mut causes),
                _ => crate::kind_rules::autoscaler(obj, &mut causes),
            }
        }
        ("", "resourcequotas") if old.is_none_or(|o| o.get("spec") != obj.get("spec")) => {
            crate::quota_rules::resource_quota(obj, &mut causes);
        }
        ("", "limitranges") => crate::quota_rules::limit_range(obj, &mut causes),
        ("", "nodes") if old.is_none_or(|o| o.get("spec") != obj.get("spec")) => {
            crate::cluster_rules::node(obj, &mut causes);
        }
        ("storage.k8s.io", "storageclasses") => {
            crate::cluster_rules::storage_class(obj, old, &mut causes);
        }
        ("node.k8s.io", "runtimeclasses") => {
            crate::cluster_rules::runtime_class(obj, old, &mut causes);
        }
        ("coordination.k8s.io", "leases") => crate::cluster_rules::lease(obj, &mut causes),
        ("storage.k8s.io", "csidrivers") => crate::csi_rules::csi_driver(obj, old, &mut causes),
        ("storage.k8s.io", "csinodes") => crate::csi_rules::csi_node(obj, old, &mut causes),
        ("", "events") => crate::event_rules::event(obj, false, &mut causes),
        ("events.k8s.io", "events") => crate::event_rules::event(obj, true, &mut causes),
        ("", "namespaces") => crate::cluster_rules::namespace_finalizers(obj, &mut causes),
        ("networking.k8s.io", "ingressclasses") => {
            crate::network_rules::ingress_class(obj, old, &mut causes);
        }
        ("", "endpoints") => crate::endpoint_rules::endpoints(obj, &mut causes),
        ("discovery.k8s.io", "endpointslices") => {
            crate::endpoint_rules::endpoint_slice(obj, old, &mut causes);
        }
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            crate::rbac_rules::role(obj, info.plural == "roles", &mut causes);
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let namespaced = info.plural == "rolebindings";
            crate::rbac_rules::binding(obj, old, namespaced, &mut causes);
        }
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
    service_ports(ports.map(Vec::as_slice).unwrap_or_default(), causes);
    crate::scheduling_rules::labels(obj.pointer("/spec/selector"), "spec.selector", causes);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    one_of(
        spec,
        "sessionAffinity",
        "spec",
        &["ClientIP", "None"],
        causes,
    );
    for key in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        one_of(spec, key, "spec", &["Cluster", "Local"], causes);
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

/// A Service's ports: named when there are several, each name once, each
/// (protocol, port) once, target ports valid.
fn service_ports(ports: &[Value], causes: &mut Vec<Cause>) {
    let mut names_seen: Vec<&str> = Vec::new();
    let mut keys: Vec<(&str, i64)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match text(p, "name").filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => causes.push(Cause::required(format!("{at}.name"), "")),
            None => {}
            Some(name) => {
                for msg in names::dns1123_label(name) {
                    causes.push(Cause::invalid(format!("{at}.name"), &json!(name), msg));
                }
                if names_seen.contains(&name) {
                    causes.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
                }
                names_seen.push(name);
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("{at}.port"),
                &json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
        one_of(p, "protocol", &at, crate::field_rules::PROTOCOLS, causes);
        if let Some(target) = p.get("targetPort").filter(|t| !t.is_null()) {
            crate::field_rules::port_num_or_name(Some(target), &format!("{at}.targetPort"), causes);
        }
        let protocol = text(p, "protocol").unwrap_or("TCP");
        if keys.contains(&(protocol, port)) {
            // Upstream prints the Go struct it keyed on.
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: at,
                message: format!(
                    "Duplicate value: core.ServicePort{{Name:\"\", Protocol:\"{protocol}\", AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
                ),
            });
        }
        keys.push((protocol, port));
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
            fields(&validate(&pods, &empty, None, None)),
            vec!["spec.containers"]
        );
        let bad = json!({"spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x"}]}});
        assert_eq!(
            fields(&validate(&pods, &bad, None, None)),
            vec!["spec.containers[0].image", "spec.containers[1].name"]
        );
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "restartPolicy": "Always"}});
        let new_image = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}], "restartPolicy": "Always"}});
        assert!(validate(&pods, &new_image, Some(&old), None).is_empty());
        let other = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "restartPolicy": "Never"}});
        assert_eq!(
            fields(&validate(&pods, &other, Some(&old), None)),
            vec!["spec"]
        );
        let bound = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "restartPolicy": "Always", "nodeName": "n1"}});
        assert!(
            validate(&pods, &bound, Some(&old), None).is_empty(),
            "binding sets nodeName once"
        );
    }

    #[test]
    fn workloads_match_selectors_and_keep_them() {
        let d = info("apps", "v1", "deployments");
        let ok = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(validate(&d, &ok, None, None).is_empty());
        let mut mismatch = ok.clone();
        mismatch["spec"]["template"]["metadata"]["labels"]["app"] = json!("b");
        assert_eq!(
            fields(&validate(&d, &mismatch, None, None)),
            vec!["spec.template.metadata.labels"]
        );
        let mut moved = ok.clone();
        moved["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        assert_eq!(
            fields(&validate(&d, &moved, Some(&ok), None)),
            vec!["spec.selector"]
        );
        let j = info("batch", "v1", "jobs");
        let job = json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            fields(&validate(&j, &job, None, None)),
            vec!["spec.template.spec.restartPolicy"]
        );
    }

    #[test]
    fn stateful_sets_mount_their_claim_templates() {
        let s = info("apps", "v1", "statefulsets");
        let set = json!({"spec": {"selector": {"matchLabels": {"app": "db"}},
            "podManagementPolicy": "OrderedReady", "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
        assert!(validate(&s, &set, None, None).is_empty());
        let mut unclaimed = set.clone();
        unclaimed["spec"]["volumeClaimTemplates"] = json!([]);
        assert_eq!(
            fields(&validate(&s, &unclaimed, None, None)),
            vec!["spec.template.spec.containers[0].volumeMounts[0].name"]
        );
    }

    #[test]
    fn services_name_their_ports_and_keep_them_apart() {
        let s = info("", "v1", "services");
        let two = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"name": "b", "port": 80, "protocol": "TCP", "targetPort": "no--pe"}]}});
        assert_eq!(
            fields(&validate(&s, &two, None, None)),
            vec![
                "spec.ports[0].name",
                "spec.ports[1].targetPort",
                "spec.ports[1]"
            ]
        );
    }

    #[test]
    fn services_need_ports_unless_headless_or_external() {
        let s = info("", "v1", "services");
        assert_eq!(
            fields(&validate(&s, &json!({"spec": {}}), None, None)),
            vec!["spec.ports"]
        );
        assert!(validate(&s, &json!({"spec": {"clusterIP": "None"}}), None, None).is_empty());
        assert!(
            validate(
                &s,
                &json!({"spec": {"type": "ExternalName", "externalName": "x.example"}}),
                None,
                None
            )
            .is_empty()
        );
        let bad = json!({"spec": {"ports": [{"port": 70000}]}});
        assert_eq!(
            fields(&validate(&s, &bad, None, None)),
            vec!["spec.ports[0].port"]
        );
    }
}
