//! Upstream's validation of a pod's ephemeral containers: the containers
//! themselves (`validateEphemeralContainers`) and what a write through the
//! `ephemeralcontainers` subresource may change
//! (`ValidatePodEphemeralContainersUpdate`).

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::container_rules::{self, PodFacts};
use crate::field_rules::{items, text};

/// What an ephemeral container may not set: it must not become part of the
/// pod's service (upstream lists the fields it allows; these are the rest).
const FORBIDDEN_FIELDS: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "restartPolicyRules",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

const FORBIDDEN: &str = "cannot be set for an Ephemeral Container";

/// Whether `v` holds something: Go's zero values (absent, null, an empty
/// struct or list) do not count.
fn non_zero(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// Checks the `ephemeralContainers` of pod spec `spec` at `path`; `taken`
/// holds the names of the app and init containers.
pub(crate) fn containers(
    spec: &Value,
    path: &str,
    taken: &[&str],
    pod: &PodFacts,
    causes: &mut Vec<Cause>,
) {
    let mut names_seen: Vec<&str> = taken.to_vec();
    for (i, ec) in items(Some(spec), "ephemeralContainers").enumerate() {
        let field = format!("{path}.ephemeralContainers[{i}]");
        match text(ec, "name") {
            None | Some("") => causes.push(Cause::required(format!("{field}.name"), "")),
            Some(name) => {
                for msg in names::dns1123_label(name) {
                    causes.push(Cause::invalid(format!("{field}.name"), &json!(name), msg));
                }
                if names_seen.contains(&name) {
                    causes.push(Cause::duplicate(format!("{field}.name"), &json!(name)));
                }
                names_seen.push(name);
            }
        }
        if text(ec, "image").is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("{field}.image"), ""));
        }
        if let Some(target) = text(ec, "targetContainerName").filter(|t| !t.is_empty())
            && !taken.contains(&target)
        {
            causes.push(Cause::not_found(
                format!("{field}.targetContainerName"),
                &json!(target),
            ));
        }
        let mut common = ec.clone();
        if let Some(m) = common.as_object_mut() {
            m.remove("targetContainerName");
            for f in FORBIDDEN_FIELDS {
                if non_zero(m.remove(*f).as_ref()) {
                    causes.push(Cause::forbidden(format!("{field}.{f}"), FORBIDDEN));
                }
            }
        }
        container_rules::container(&common, &field, false, pod, causes);
        // Subpaths are bind mounts that outlive the container until the
        // pod ends, so upstream refuses them outright.
        for (m, mount) in items(Some(ec), "volumeMounts").enumerate() {
            for key in ["subPath", "subPathExpr"] {
                if text(mount, key).is_some_and(|p| !p.is_empty()) {
                    causes.push(Cause::forbidden(
                        format!("{field}.volumeMounts[{m}].{key}"),
                        FORBIDDEN,
                    ));
                }
            }
        }
    }
}

/// What a write through `pods/ephemeralcontainers` may not do: touch a
/// static pod, or remove or change an ephemeral container that exists.
pub fn update(new: &Value, old: &Value) -> Vec<Cause> {
    if old
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return vec![Cause::forbidden(
            "",
            "static pods do not support ephemeral containers",
        )];
    }
    let path = "spec.ephemeralContainers";
    let mut causes = Vec::new();
    let spec = |o: &'_ Value| o.get("spec").cloned().unwrap_or(Value::Null);
    let (new_spec, old_spec) = (spec(new), spec(old));
    for existing in items(Some(&old_spec), "ephemeralContainers") {
        let name = text(existing, "name").unwrap_or_default();
        match items(Some(&new_spec), "ephemeralContainers").find(|c| text(c, "name") == Some(name))
        {
            None => causes.push(Cause::forbidden(
                path,
                format!("existing ephemeral containers {name:?} may not be removed\n"),
            )),
            Some(c) if c != existing => causes.push(Cause::forbidden(
                path,
                format!("existing ephemeral containers {name:?} may not be changed\n"),
            )),
            Some(_) => {}
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        crate::pod_rules::pod_spec(Some(&spec), "spec", &mut causes);
        causes.iter().map(|c| c.field.clone()).collect()
    }

    fn pod_with(ephemeral: Value) -> Value {
        json!({"containers": [{"name": "app", "image": "i"}],
            "initContainers": [{"name": "setup", "image": "i"}],
            "ephemeralContainers": ephemeral})
    }

    #[test]
    fn a_debug_container_passes() {
        let spec = pod_with(json!([{"name": "debugger", "image": "busybox",
            "targetContainerName": "app", "stdin": true, "tty": true,
            "resources": {}, "terminationMessagePolicy": "File"}]));
        assert!(check(spec).is_empty());
    }

    #[test]
    fn names_targets_and_service_fields_are_checked() {
        let spec = pod_with(json!([
            {"name": "app", "image": "i"},
            {"name": "d", "image": "i", "targetContainerName": "nope"},
            {"name": "p", "image": "i", "ports": [{"containerPort": 80}],
             "resources": {"limits": {"cpu": "1"}}, "readinessProbe": {"exec": {"command": ["x"]}},
             "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "s"}]},
            {"name": "", "image": ""}]));
        let fields = check(spec);
        for want in [
            "spec.ephemeralContainers[0].name",
            "spec.ephemeralContainers[1].targetContainerName",
            "spec.ephemeralContainers[2].ports",
            "spec.ephemeralContainers[2].resources",
            "spec.ephemeralContainers[2].readinessProbe",
            "spec.ephemeralContainers[2].volumeMounts[0].subPath",
            "spec.ephemeralContainers[3].name",
            "spec.ephemeralContainers[3].image",
        ] {
            assert!(fields.iter().any(|f| f == want), "{want} not in {fields:?}");
        }
    }

    #[test]
    fn existing_containers_stay_as_they_are() {
        let pod = |e: Value| json!({"metadata": {"name": "p"}, "spec": pod_with(e)});
        let one = json!([{"name": "d", "image": "a"}]);
        let added = json!([{"name": "d", "image": "a"}, {"name": "e", "image": "a"}]);
        assert!(update(&pod(added.clone()), &pod(one.clone())).is_empty());
        let changed = update(
            &pod(json!([{"name": "d", "image": "b"}])),
            &pod(one.clone()),
        );
        assert!(changed[0].message.contains("may not be changed"));
        let removed = update(&pod(json!([])), &pod(one));
        assert!(removed[0].message.contains("\"d\" may not be removed"));
        let mut mirror = pod(json!([]));
        mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
        assert_eq!(update(&pod(added), &mirror).len(), 1);
    }
}
