//! Upstream's validation of a pod's volumes (`ValidateVolumes`): one
//! source each, the source's required fields, file modes and item paths.

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::container_rules::{self, RESOURCE_FIELDS};
use crate::field_rules::{items, local_descending_path, one_of, set, text};

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

/// The pod's volumes; returns the names of those without problems, which
/// mounts may name (as upstream keeps only those).
pub(crate) fn volumes<'a>(spec: &'a Value, path: &str, causes: &mut Vec<Cause>) -> Vec<&'a str> {
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
