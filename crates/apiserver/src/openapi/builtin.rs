//! Schemas of the built-in kinds, generated once from k8s-openapi's JSON
//! schemas and completed with what kubectl reads from upstream's documents:
//! `x-kubernetes-group-version-kind` and the strategic-merge patch keys.

use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// Where definitions live in an OpenAPI v3 document.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// Every built-in definition, and which of them is a served kind.
pub struct Builtin {
    /// Definitions by name (`io.k8s.api.core.v1.ConfigMap`), refs in v3 form.
    pub definitions: Map<String, Value>,
    /// (group, version, kind, definition name) of every served built-in kind.
    pub kinds: Vec<(String, String, String, String)>,
}

/// The meta types every group-version document refers to.
pub const META: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
];

macro_rules! schema_kinds {
    ($gen:expr, $kinds:expr; $( ($g:literal, $v:literal, $k:literal) => $t:ty ),* $(,)?) => {{
        $(
            $gen.subschema_for::<$t>();
            $kinds.push((
                $g.to_string(),
                $v.to_string(),
                $k.to_string(),
                <$t as schemars::JsonSchema>::schema_name().into_owned(),
            ));
        )*
    }};
}

fn generate() -> Builtin {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    crate::kinds::with_builtin_kinds!(schema_kinds!(generator, kinds));
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent<()>>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    let mut definitions = generator.take_definitions(true);
    for (name, schema) in definitions.iter_mut() {
        add_merge_keys(name, schema);
        drop_required_metadata(name, schema);
    }
    for (group, version, kind, def) in &kinds {
        let gvk = json!([{"group": group, "version": version, "kind": kind}]);
        if let Some(Value::Object(schema)) = definitions.get_mut(def) {
            schema.insert("x-kubernetes-group-version-kind".into(), gvk);
        }
        let list_gvk = json!([{"group": group, "version": version, "kind": format!("{kind}List")}]);
        definitions.insert(format!("{def}List"), list_schema(kind, def, list_gvk));
    }
    Builtin { definitions, kinds }
}

/// The schema of `<Kind>List`, which k8s-openapi does not model as a type.
pub fn list_schema(kind: &str, item_def: &str, gvk: Value) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "items": {"type": "array", "description": format!("List of {kind} objects."),
                      "items": {"$ref": format!("{REF_PREFIX}{item_def}")}},
            "metadata": {"allOf": [{"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}],
                         "description": "Standard list metadata."}
        },
        "x-kubernetes-group-version-kind": gvk,
    })
}

/// Marks list properties that strategic merge patch merges by key, as
/// upstream's schemas do, so that client-side `kubectl apply` merges them too.
fn add_merge_keys(def: &str, schema: &mut Value) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, prop) in props.iter_mut() {
        let Some(obj) = prop.as_object_mut() else {
            continue;
        };
        if obj.get("type").and_then(Value::as_str) != Some("array") {
            continue;
        }
        let key = match (def.rsplit('.').next().unwrap_or(def), field.as_str()) {
            ("Container" | "EphemeralContainer", "ports") => Some("containerPort"),
            ("ServiceSpec", "ports") => Some("port"),
            ("NodeStatus", "addresses") => Some("type"),
            (_, "ports" | "addresses") => None,
            (_, "finalizers") => {
                obj.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                None
            }
            (_, f) => crate::smp::merge_key(f, &[]),
        };
        if let Some(key) = key {
            obj.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            obj.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
        }
    }
}

/// k8s-openapi types `metadata` as a plain `ObjectMeta`, so its schemas list
/// it as required; upstream's do not (only core/v1 Event's, whose Go field
/// has no `omitempty`). kubectl's client-side validation, which runs for
/// kinds without a PATCH operation (the access reviews), would refuse a body
/// without `metadata`, and `kubectl explain` would mark it required.
fn drop_required_metadata(def: &str, schema: &mut Value) {
    if def == "io.k8s.api.core.v1.Event" {
        return;
    }
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let Some(Value::Array(required)) = obj.get_mut("required") else {
        return;
    };
    required.retain(|r| r != "metadata");
    if required.is_empty() {
        obj.remove("required");
    }
}

/// The built-in definitions, generated on first use.
pub static BUILTIN: LazyLock<Builtin> = LazyLock::new(generate);

/// Adds `name` and every definition it refers to, transitively, to `out`.
pub fn collect(name: &str, all: &Map<String, Value>, out: &mut Map<String, Value>) {
    if out.contains_key(name) {
        return;
    }
    let Some(schema) = all.get(name) else { return };
    out.insert(name.to_string(), schema.clone());
    let mut refs = Vec::new();
    refs_in(schema, &mut refs);
    for r in refs {
        collect(&r, all, out);
    }
}

fn refs_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.strip_prefix(REF_PREFIX)
            {
                out.push(name.to_string());
            }
            m.values().for_each(|x| refs_in(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs_in(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_their_gvk_and_merge_keys() {
        let b = &*BUILTIN;
        let cm = &b.definitions["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(
            cm["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "ConfigMap"}])
        );
        let spec = &b.definitions["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(
            spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        let container = &b.definitions["io.k8s.api.core.v1.Container"];
        assert_eq!(
            container["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        let mut out = Map::new();
        collect("io.k8s.api.apps.v1.Deployment", &b.definitions, &mut out);
        assert!(out.contains_key("io.k8s.api.core.v1.PodSpec"));
        assert!(out.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    }

    #[test]
    fn metadata_is_required_only_where_upstream_requires_it() {
        let d = &BUILTIN.definitions;
        assert!(d["io.k8s.api.apps.v1.Deployment"].get("required").is_none());
        assert_eq!(
            d["io.k8s.api.authorization.v1.SubjectAccessReview"]["required"],
            json!(["spec"])
        );
        let event = d["io.k8s.api.core.v1.Event"]["required"]
            .as_array()
            .expect("required");
        assert!(event.contains(&json!("metadata")) && event.contains(&json!("involvedObject")));
    }
}
