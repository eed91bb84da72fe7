//! The `paths` of `/openapi/v2`: the same operations as the group-version
//! documents of v3 (`paths.rs`), recast in Swagger 2.0's form — parameters
//! with their type inline, the request body as an `in: body` parameter,
//! one response schema per code, and the media types as `consumes` and
//! `produces` lists, as upstream's v2 document has them.

use serde_json::{Map, Value, json};

/// What every operation answers in, as upstream's v2 document lists it.
const PRODUCES: [&str; 3] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
/// The HTTP methods of a path item, as Swagger 2.0 names them.
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// A v3 parameter (`schema` holding its type) as a v2 one (type inline).
fn parameter(p: &Value) -> Value {
    let mut out = Map::new();
    for key in ["name", "in", "description", "required"] {
        if let Some(v) = p.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(schema) = p.get("schema").and_then(Value::as_object) {
        for key in ["type", "uniqueItems"] {
            if let Some(v) = schema.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn parameters(list: Option<&Value>) -> Vec<Value> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(parameter)
        .collect()
}

/// A v3 operation as a v2 one.
fn operation(op: &Value) -> Value {
    let Some(src) = op.as_object() else {
        return op.clone();
    };
    let mut out = Map::new();
    for (k, v) in src {
        if k.starts_with("x-") || matches!(k.as_str(), "operationId" | "description" | "tags") {
            out.insert(k.clone(), v.clone());
        }
    }
    let mut params = parameters(src.get("parameters"));
    let content = src
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object);
    let mut consumes = vec![json!("*/*")];
    if let Some(content) = content {
        let types: Vec<&String> = content.keys().filter(|t| *t != "*/*").collect();
        if !types.is_empty() {
            consumes = types.into_iter().map(|t| json!(t)).collect();
        }
        if let Some(schema) = content.values().find_map(|m| m.get("schema")) {
            params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
        }
    }
    out.insert("consumes".into(), Value::Array(consumes));
    out.insert("produces".into(), json!(PRODUCES));
    out.insert("schemes".into(), json!(["https"]));
    out.insert("parameters".into(), Value::Array(params));
    let mut responses = Map::new();
    for (code, r) in src
        .get("responses")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut response =
            json!({"description": r.get("description").cloned().unwrap_or(json!(""))});
        if let Some(schema) = r.pointer("/content/application~1json/schema") {
            response["schema"] = schema.clone();
        }
        responses.insert(code.clone(), response);
    }
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

/// The v2 form of v3 `paths` (references still in v3's spelling).
pub fn from_v3(paths: &Map<String, Value>) -> Map<String, Value> {
    paths
        .iter()
        .map(|(path, item)| {
            let mut out = Map::new();
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.insert(method.into(), operation(op));
                }
            }
            let shared = parameters(item.get("parameters"));
            if !shared.is_empty() {
                out.insert("parameters".into(), Value::Array(shared));
            }
            (path.clone(), Value::Object(out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_take_swagger_2_form() {
        let v3 = json!({"/api/v1/namespaces/{namespace}/configmaps/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": true,
                            "schema": {"type": "string", "uniqueItems": true}}],
            "patch": {
                "operationId": "patchConfigMap", "x-kubernetes-action": "patch",
                "parameters": [{"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                "requestBody": {"content": {
                    "application/merge-patch+json": {"schema": {"$ref": "#/x/Patch"}},
                    "application/json-patch+json": {"schema": {"$ref": "#/x/Patch"}}}},
                "responses": {"200": {"description": "OK",
                    "content": {"application/json": {"schema": {"$ref": "#/x/ConfigMap"}}}}},
            },
        }});
        let v2 = from_v3(v3.as_object().expect("object"));
        let item = &v2["/api/v1/namespaces/{namespace}/configmaps/{name}"];
        assert_eq!(
            item["parameters"][0],
            json!({"name": "name", "in": "path", "required": true, "type": "string", "uniqueItems": true})
        );
        let patch = &item["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        let mut consumes: Vec<&str> = patch["consumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        consumes.sort_unstable();
        assert_eq!(
            consumes,
            [
                "application/json-patch+json",
                "application/merge-patch+json"
            ]
        );
        assert_eq!(
            patch["parameters"][0],
            json!({"name": "force", "in": "query", "type": "boolean"})
        );
        assert_eq!(
            patch["parameters"][1],
            json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/x/Patch"}})
        );
        assert_eq!(
            patch["responses"]["200"],
            json!({"description": "OK", "schema": {"$ref": "#/x/ConfigMap"}})
        );
    }
}
