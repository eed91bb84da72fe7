//! The `paths` of a group-version document: one entry per resource URL with
//! the operations served, each tagged with its kind and action as upstream's
//! are (kubectl finds `fieldValidation` support by the PATCH parameters).

use serde_json::{Map, Value, json};

use super::builtin::REF_PREFIX;
use crate::registry::ResourceInfo;

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description,
           "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true,
           "description": format!("{name} of the resource"),
           "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted.",
        ),
        query(
            "fieldManager",
            "string",
            "A name associated with the actor or entity that is making these changes.",
        ),
        query(
            "fieldValidation",
            "string",
            "How the server handles unknown or duplicate fields: Ignore, Warn (default) or Strict.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query(n, t, n))
    .collect()
}

fn response(code: &str, def: &str) -> (String, Value) {
    let schema = json!({"$ref": format!("{REF_PREFIX}{def}")});
    (
        code.to_string(),
        json!({"description": "OK", "content": {
            "application/json": {"schema": schema},
            "application/yaml": {"schema": schema},
            "application/vnd.kubernetes.protobuf": {"schema": schema},
        }}),
    )
}

fn op(
    info: &ResourceInfo,
    action: &str,
    id: &str,
    params: Vec<Value>,
    responses: &[(&str, &str)],
) -> Value {
    let responses: Map<String, Value> = responses.iter().map(|(c, d)| response(c, d)).collect();
    json!({
        "operationId": id,
        "description": format!("{action} {}", info.kind),
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
    })
}

fn body(def: &str) -> Value {
    json!({"content": {"*/*": {"schema": {"$ref": format!("{REF_PREFIX}{def}")}}}, "required": true})
}

/// Adds the paths of one resource whose schema is definition `def`.
pub fn add(paths: &mut Map<String, Value>, info: &ResourceInfo, def: &str) {
    let prefix = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    let (collection, mut scope_params) = if info.namespaced() {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", info.plural),
            vec![path_param("namespace")],
        )
    } else {
        (format!("{prefix}/{}", info.plural), vec![])
    };
    let list_def = format!("{def}List");
    let status = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
    let id = |verb: &str| format!("{verb}{}{}", info.kind, info.plural);
    let mut create = op(
        info,
        "post",
        &id("create"),
        write_params(),
        &[("200", def), ("201", def), ("202", def)],
    );
    create["requestBody"] = body(def);
    if info.review() {
        // Reviews are only created: answered, never stored.
        paths.insert(
            collection,
            json!({"post": create, "parameters": scope_params}),
        );
        return;
    }
    paths.insert(
        collection.clone(),
        json!({
            "get": op(info, "list", &id("list"), list_params(), &[("200", &list_def)]),
            "post": create,
            "delete": op(info, "deletecollection", &id("deleteCollection"), list_params(), &[("200", status)]),
            "parameters": scope_params.clone(),
        }),
    );
    if info.namespaced() {
        paths.insert(
            format!("{prefix}/{}", info.plural),
            json!({"get": op(info, "list", &id("listAllNamespaces"), list_params(), &[("200", &list_def)])}),
        );
    }
    scope_params.push(path_param("name"));
    let item = format!("{collection}/{{name}}");
    paths.insert(
        item.clone(),
        item_ops(info, def, &id(""), &scope_params, true),
    );
    for sub in &info.subresources {
        let sub_def = match sub.as_str() {
            "status" | "approval" | "ephemeralcontainers" => def.to_string(),
            "scale" => "io.k8s.api.autoscaling.v1.Scale".to_string(),
            _ => continue,
        };
        paths.insert(
            format!("{item}/{sub}"),
            item_ops(info, &sub_def, &id(sub), &scope_params, false),
        );
    }
}

fn item_ops(info: &ResourceInfo, def: &str, id: &str, params: &[Value], delete: bool) -> Value {
    let mut patch_params = write_params();
    patch_params.push(query(
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests.",
    ));
    let patch_schema =
        json!({"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.Patch")});
    let mut patch = op(
        info,
        "patch",
        &format!("patch{id}"),
        patch_params,
        &[("200", def), ("201", def)],
    );
    patch["requestBody"] = json!({"required": true, "content": {
        "application/apply-patch+yaml": {"schema": patch_schema},
        "application/json-patch+json": {"schema": patch_schema},
        "application/merge-patch+json": {"schema": patch_schema},
        "application/strategic-merge-patch+json": {"schema": patch_schema},
    }});
    let mut put = op(
        info,
        "put",
        &format!("replace{id}"),
        write_params(),
        &[("200", def), ("201", def)],
    );
    put["requestBody"] = body(def);
    let mut ops = json!({
        "get": op(info, "get", &format!("read{id}"), vec![], &[("200", def)]),
        "put": put,
        "patch": patch,
        "parameters": params,
    });
    if delete {
        ops["delete"] = op(
            info,
            "delete",
            &format!("delete{id}"),
            vec![],
            &[("200", def), ("202", def)],
        );
    }
    ops
}
