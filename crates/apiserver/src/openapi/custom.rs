//! Schemas of custom resources, from their CRDs' `openAPIV3Schema`.

use serde_json::{Map, Value, json};

use super::builtin::{REF_PREFIX, list_schema};
use crate::server::ApiState;
use kybern_apimachinery::ApiError;

/// Upstream's definition name of a custom kind: the group reversed, then
/// version and kind (`com.example.v1.Widget`).
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// Every CRD in the store.
pub async fn crds(state: &ApiState) -> Result<Vec<Value>, ApiError> {
    let Some(info) = state
        .registry
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return Ok(Vec::new());
    };
    Ok(state
        .objects
        .list_page(&info, None, None, 0, 0)
        .await?
        .items)
}

/// The definitions (kind and list) of the custom resources in `crds` served
/// in a group and version that `wanted` accepts.
pub fn definitions(crds: &[Value], wanted: impl Fn(&str, &str) -> bool) -> Map<String, Value> {
    let mut out = Map::new();
    for crd in crds {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = crd
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
        for v in versions.into_iter().flatten() {
            let version = v.get("name").and_then(Value::as_str).unwrap_or_default();
            if !wanted(group, version) {
                continue;
            }
            let schema = v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or_else(crate::crd::schema::permissive);
            add(&mut out, group, version, kind, schema);
        }
    }
    out
}

fn add(out: &mut Map<String, Value>, group: &str, version: &str, kind: &str, mut schema: Value) {
    if let Some(obj) = schema.as_object_mut() {
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert(
                    "metadata".into(),
                    json!({"allOf": [{"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")}]}),
                );
        }
        obj.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": group, "version": version, "kind": kind}]),
        );
    }
    let name = definition_name(group, version, kind);
    let list_gvk = json!([{"group": group, "version": version, "kind": format!("{kind}List")}]);
    out.insert(format!("{name}List"), list_schema(kind, &name, list_gvk));
    out.insert(name, schema);
}
