//! What every create and update does to an object before it is stored, as
//! upstream's generic registry and per-kind strategies do: type and namespace
//! checks, generated names, system metadata, status separation, generation,
//! and validation of metadata and of the kinds' own rules.

use kybern_apimachinery::names;
use kybern_apimachinery::{ApiError, Cause};
use serde_json::{Value, json};

use crate::object::{self, Object};
use crate::registry::ResourceInfo;

/// The characters of generated name suffixes (no vowels, no look-alikes).
pub const GENERATED_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kinds whose names follow the path-segment rule only (RBAC objects).
fn name_rule(info: &ResourceInfo) -> fn(&str) -> Vec<String> {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => names::dns1123_label,
        ("", "services") => names::dns1035_label,
        ("rbac.authorization.k8s.io", _) => names::path_segment,
        // Driver names are DNS subdomains of any case.
        ("storage.k8s.io", "csidrivers") => |n| names::dns1123_subdomain(&n.to_lowercase()),
        _ => names::dns1123_subdomain,
    }
}

/// Whether a write to the main resource leaves `status` alone (and the status
/// subresource writes only `status`). Nodes set their status on create, as upstream.
pub fn separates_status(info: &ResourceInfo) -> bool {
    info.has_subresource("status")
}

/// Checks `apiVersion` and `kind` of a request body against the URL, filling them in if absent.
pub fn check_type(info: &ResourceInfo, obj: &mut Object) -> Result<(), ApiError> {
    let want_version = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_version),
        Some(v) if v == want_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(info.kind),
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    Ok(())
}

/// Checks and fills `metadata.namespace` against the URL's namespace.
pub fn check_namespace(
    info: &ResourceInfo,
    obj: &mut Object,
    url_ns: Option<&str>,
) -> Result<(), ApiError> {
    let body_ns = object::namespace(obj).to_owned();
    if !info.namespaced() {
        if !body_ns.is_empty() {
            object::remove_meta(obj, "namespace");
        }
        return Ok(());
    }
    let Some(url_ns) = url_ns else {
        return Err(ApiError::bad_request(
            "the namespace of the object must be given in the URL",
        ));
    };
    if !body_ns.is_empty() && body_ns != url_ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    object::set_meta(obj, "namespace", json!(url_ns));
    Ok(())
}

/// Names the object from its `generateName` and a random suffix (nothing
/// without one). The create path calls it again when the name is taken, as
/// upstream retries a generated name.
pub fn generate_name(obj: &mut Object) {
    let base = object::meta_str(obj, "generateName").to_owned();
    if base.is_empty() {
        return;
    }
    // Upstream keeps the base at most 58 characters so the name stays a label.
    let base: String = base.chars().take(58).collect();
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| GENERATED_CHARS[*b as usize % GENERATED_CHARS.len()] as char)
        .collect();
    object::set_meta(obj, "name", json!(format!("{base}{suffix}")));
}

/// Prepares a new object: generated name, uid, creation time, generation, cleared
/// status and system fields, kind defaults.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Object) -> Result<(), ApiError> {
    if !object::meta_str(obj, "resourceVersion").is_empty() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if object::name(obj).is_empty() {
        generate_name(obj);
    }
    object::set_meta(obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
    object::set_meta(obj, "creationTimestamp", json!(object::now_rfc3339()));
    for field in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        object::remove_meta(obj, field);
    }
    if obj.get("spec").is_some()
        || info.group.contains('.') && !info.group.ends_with("k8s.io")
        || generation_field(info) == "webhooks"
    {
        object::set_meta(obj, "generation", json!(1));
    } else {
        object::remove_meta(obj, "generation");
    }
    if separates_status(info)
        && info.plural != "nodes"
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    kind_defaults(info, obj);
    crate::defaults::apply(info, obj);
    if info.group.is_empty() && info.plural == "pods" {
        // A new pod is Pending, with the QoS class its resources give it.
        let qos = crate::defaults::qos_class(obj.get("spec").unwrap_or(&Value::Null));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    Ok(())
}

/// Defaults upstream fills in for a few kinds.
fn kind_defaults(info: &ResourceInfo, obj: &mut Object) {
    if info.group == "batch" && info.plural == "jobs" {
        job_selector(obj);
    }
    if info.group.is_empty() && info.plural == "namespaces" {
        let has_finalizers = obj.pointer("/spec/finalizers").is_some();
        if !has_finalizers {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        if obj.pointer("/status/phase").is_none() {
            obj["status"] = json!({"phase": "Active"});
        }
        // Upstream labels every namespace with its own name.
        let name = object::name(obj).to_owned();
        let labels = object::meta_mut(obj)
            .entry("labels")
            .or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
}

/// Gives `new` the stored object's `key` (or none, if it had none): a part
/// this write may not change.
/// The pods subresource through which ephemeral containers are added.
pub const EPHEMERAL_CONTAINERS: &str = "ephemeralcontainers";

/// Makes `new` the stored object again, keeping only its resourceVersion
/// and managedFields (a subresource write then puts back what it changes).
fn keep_stored_but(new: &mut Object, old: &Object) {
    let rv = object::meta_str(new, "resourceVersion").to_owned();
    let managed = new.pointer("/metadata/managedFields").cloned();
    *new = old.clone();
    match managed {
        Some(m) => object::set_meta(new, "managedFields", m),
        None => {
            object::remove_meta(new, "managedFields");
        }
    }
    object::set_meta(new, "resourceVersion", json!(rv));
}

fn keep_stored(new: &mut Object, old: &Object, key: &str) {
    match old.get(key) {
        Some(v) => new[key] = v.clone(),
        None => {
            if let Some(o) = new.as_object_mut() {
                o.remove(key);
            }
        }
    }
}

/// Upstream's generated Job selector: unless `spec.manualSelector` is set,
/// the pods are labelled with the Job's uid and name (new and legacy keys)
/// and selected by the uid; the Job takes its template's labels when it has
/// none of its own.
fn job_selector(obj: &mut Object) {
    if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = object::meta_str(obj, "uid").to_owned();
    let name = object::name(obj).to_owned();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        let meta = t.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", &uid),
                    ("batch.kubernetes.io/job-name", &name),
                    ("controller-uid", &uid),
                    ("job-name", &name),
                ] {
                    l.insert(k.into(), json!(v));
                }
            }
        }
    }
    if spec.get("selector").is_none_or(Value::is_null) {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    let meta = object::meta_mut(obj);
    let empty = meta
        .get("labels")
        .and_then(Value::as_object)
        .is_none_or(|l| l.is_empty());
    if empty && let Some(l) = template_labels {
        meta.insert("labels".into(), l);
    }
}

/// Carries what an update may not change from the stored object into the new
/// one, separates status, and bumps `generation` when the spec changed.
pub fn prepare_update(
    info: &ResourceInfo,
    new: &mut Object,
    old: &Object,
    subresource: Option<&str>,
) {
    if crate::certificates::is_csr(&info.group, &info.plural) {
        crate::certificates::prepare_update(new, old, subresource);
        if subresource == Some("approval") {
            return;
        }
    }
    if subresource != Some("status") {
        crate::defaults::apply(info, new);
    }
    if subresource == Some("status") {
        // A status write changes status only, and the ownership of its
        // fields (an apply through status has recorded them in `new`).
        let status = new.get("status").cloned();
        keep_stored_but(new, old);
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        return;
    }
    if subresource == Some(EPHEMERAL_CONTAINERS) {
        // As upstream's dropNonEphemeralContainerUpdates: the write adds
        // ephemeral containers and changes nothing else; the generation is
        // bumped below, as for any spec change.
        let ephemeral = new.pointer("/spec/ephemeralContainers").cloned();
        keep_stored_but(new, old);
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            match ephemeral {
                Some(e) => spec.insert("ephemeralContainers".into(), e),
                None => spec.remove("ephemeralContainers"),
            };
        }
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(v) => object::set_meta(new, field, v.clone()),
            None => {
                object::remove_meta(new, field);
            }
        }
    }
    // A binding writes the PodScheduled condition along with spec.nodeName.
    if separates_status(info) && subresource != Some("binding") {
        keep_stored(new, old, "status");
    }
    if info.plural == "services" && info.group.is_empty() {
        crate::service_ips::keep_allocated(new, old);
    }
    if info.plural == "namespaces" && info.group.is_empty() {
        // Only `finalize` changes the spec (the finalizers), as upstream.
        if subresource != Some("finalize") {
            keep_stored(new, old, "spec");
        }
        // The namespace's own-name label cannot be removed.
        let name = object::name(new).to_owned();
        let labels = object::meta_mut(new)
            .entry("labels")
            .or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    let field = generation_field(info);
    let spec_changed = new.get(field) != old.get(field);
    if let Some(generation) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
        object::set_meta(
            new,
            "generation",
            json!(if spec_changed {
                generation + 1
            } else {
                generation
            }),
        );
    }
}

/// The top-level field whose changes bump `generation`: a webhook
/// configuration has `webhooks` where other kinds have `spec`.
fn generation_field(info: &ResourceInfo) -> &'static str {
    match (info.group.as_str(), info.plural.as_str()) {
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations" | "validatingwebhookconfigurations",
        ) => "webhooks",
        _ => "spec",
    }
}

/// Validates an object (and, on update, what it may not change through
/// `subresource`), returning upstream-style causes; empty means valid.
pub fn validate(
    info: &ResourceInfo,
    obj: &Object,
    old: Option<&Object>,
    subresource: Option<&str>,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(custom) = &info.custom
        && let Some(schema) = &custom.schema
    {
        causes.extend(crate::crd::schema::validate(obj, schema));
        if custom.has_rules {
            causes.extend(crate::crd::rules::validate(obj, old, schema));
        }
    }
    causes.extend(crate::spec_rules::validate(info, obj, old, subresource));
    if info.plural == "services"
        && info.group.is_empty()
        && let Some(old) = old
    {
        causes.extend(crate::service_ips::validate_update(obj, old));
    }
    let name = object::name(obj);
    if name.is_empty() {
        causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in names::path_segment(name)
            .into_iter()
            .chain(name_rule(info)(name))
        {
            causes.push(Cause::invalid("metadata.name", &json!(name), msg));
        }
    }
    if info.namespaced() {
        let ns = object::namespace(obj);
        for msg in names::dns1123_label(ns) {
            causes.push(Cause::invalid("metadata.namespace", &json!(ns), msg));
        }
    }
    let meta = obj.get("metadata");
    if let Some(labels) = meta.and_then(|m| m.get("labels")) {
        match labels.as_object() {
            Some(map) => {
                for (k, v) in map {
                    for msg in names::qualified_name(k) {
                        causes.push(Cause::invalid("metadata.labels", &json!(k), msg));
                    }
                    match v.as_str() {
                        Some(s) => {
                            for msg in names::label_value(s) {
                                causes.push(Cause::invalid(
                                    format!("metadata.labels[{k}]"),
                                    v,
                                    msg,
                                ));
                            }
                        }
                        None => causes.push(Cause::type_invalid(
                            format!("metadata.labels[{k}]"),
                            "must be a string",
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => causes.push(Cause::type_invalid("metadata.labels", "must be an object")),
        }
    }
    if let Some(ann) = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in ann {
            for msg in names::qualified_name(&k.to_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", &json!(k), msg));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > names::ANNOTATIONS_MAX_BYTES {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!(
                    "Too long: may not be more than {} bytes",
                    names::ANNOTATIONS_MAX_BYTES
                ),
            });
        }
    }
    crate::cluster_rules::metadata_finalizers(
        &object::finalizers(obj),
        info.custom.is_none(),
        &mut causes,
    );
    if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
        causes.extend(crate::crd::validate(obj, old));
    }
    if let Some(old) = old {
        kind_update_rules(info, obj, old, &mut causes);
    }
    causes
}

/// Rules that compare an update with the stored object.
fn kind_update_rules(info: &ResourceInfo, new: &Object, old: &Object, causes: &mut Vec<Cause>) {
    let immutable = |v: &Object| v.get("immutable").and_then(Value::as_bool).unwrap_or(false);
    if info.group.is_empty()
        && matches!(info.plural.as_str(), "configmaps" | "secrets")
        && immutable(old)
    {
        if !immutable(new) {
            causes.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        for field in ["data", "binaryData", "stringData"] {
            if new.get(field) != old.get(field) {
                causes.push(Cause::forbidden(
                    field,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn create_fills_system_fields() {
        let reg = Registry::with_builtins();
        let info = reg.get("", "v1", "configmaps").expect("cm");
        let mut o = json!({"metadata": {"generateName": "web-"}});
        check_type(&info, &mut o).expect("type");
        check_namespace(&info, &mut o, Some("default")).expect("ns");
        prepare_create(&info, &mut o).expect("prepare");
        assert_eq!(o["kind"], "ConfigMap");
        assert!(object::name(&o).starts_with("web-") && object::name(&o).len() == 9);
        assert_eq!(object::namespace(&o), "default");
        assert!(!object::meta_str(&o, "uid").is_empty());
        assert!(validate(&info, &o, None, None).is_empty());
    }

    #[test]
    fn jobs_get_a_generated_selector() {
        let reg = crate::registry::Registry::with_builtins();
        let info = reg.get("batch", "v1", "jobs").expect("jobs");
        let mut job =
            json!({"metadata": {"name": "pi"}, "spec": {"template": {"spec": {"containers": []}}}});
        prepare_create(&info, &mut job).expect("create");
        let uid = object::meta_str(&job, "uid").to_owned();
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            uid.as_str()
        );
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], uid.as_str());
        assert_eq!(job["metadata"]["labels"]["job-name"], "pi");
        let mut manual = json!({"metadata": {"name": "m"}, "spec": {"manualSelector": true,
            "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}});
        prepare_create(&info, &mut manual).expect("create");
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
        assert_eq!(
            manual["spec"]["template"]["metadata"]["labels"],
            json!({"a": "b"})
        );
    }

    #[test]
    fn wrong_type_and_namespace_are_refused() {
        let reg = Registry::with_builtins();
        let info = reg.get("", "v1", "configmaps").expect("cm");
        assert!(check_type(&info, &mut json!({"kind": "Secret"})).is_err());
        assert!(check_type(&info, &mut json!({"apiVersion": "apps/v1"})).is_err());
        let mut o = json!({"metadata": {"namespace": "a"}});
        assert!(check_namespace(&info, &mut o, Some("b")).is_err());
    }

    #[test]
    fn validation_names_each_field() {
        let reg = Registry::with_builtins();
        let info = reg.get("", "v1", "configmaps").expect("cm");
        let o = json!({"metadata": {"name": "Bad_Name", "namespace": "default", "labels": {"ok": "-bad"}}});
        let causes = validate(&info, &o, None, None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.name", "metadata.labels[ok]"]);
        let svc = reg.get("", "v1", "services").expect("svc");
        let o = json!({"metadata": {"name": "1web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
        assert_eq!(validate(&svc, &o, None, None).len(), 1);
    }

    #[test]
    fn update_keeps_system_fields_and_bumps_generation() {
        let reg = Registry::with_builtins();
        let info = reg.get("apps", "v1", "deployments").expect("deploy");
        let old = json!({"metadata": {"name": "d", "uid": "u1", "generation": 3, "creationTimestamp": "t"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "d", "uid": "forged"}, "spec": {"replicas": 2}, "status": {"replicas": 9}});
        prepare_update(&info, &mut new, &old, None);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["generation"], 4);
        assert_eq!(
            new["status"]["replicas"], 1,
            "status is not written through the main resource"
        );
        let mut st = json!({"metadata": {"name": "d", "resourceVersion": "5"}, "spec": {"replicas": 7}, "status": {"replicas": 2}});
        prepare_update(&info, &mut st, &old, Some("status"));
        assert_eq!(
            (
                st["spec"]["replicas"].as_i64(),
                st["status"]["replicas"].as_i64()
            ),
            (Some(1), Some(2))
        );
    }
}
