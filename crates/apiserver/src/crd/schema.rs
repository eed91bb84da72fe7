//! A custom resource's OpenAPI v3 schema applied to its objects, as upstream's
//! structural schemas are: pruning of unknown fields (unless
//! `x-kubernetes-preserve-unknown-fields`), defaulting, and validation with
//! upstream's field paths and messages.

use kybern_apimachinery::Cause;
use serde_json::{Map, Value, json};

/// Deepest schema recursion followed (schemas are user input).
const MAX_DEPTH: usize = 64;

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn embedded(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Removes fields the schema does not declare; returns their paths.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Some(m) = obj.as_object_mut() {
        for (k, v) in m.iter_mut() {
            // apiVersion, kind and metadata belong to the API, not the schema.
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(sub) = schema.pointer(&format!("/properties/{}", escape(k))) {
                prune_value(v, sub, k, &mut pruned, 0);
            }
        }
        if !preserves(schema) {
            let props = schema.get("properties").and_then(Value::as_object);
            m.retain(|k, _| {
                let keep = matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                    || props.is_some_and(|p| p.contains_key(k));
                if !keep {
                    pruned.push(k.clone());
                }
                keep
            });
        }
    }
    pruned
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn prune_value(v: &mut Value, schema: &Value, path: &str, pruned: &mut Vec<String>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keep_unknown = preserves(schema)
                || additional.is_some()
                || schema.get("additionalProperties") == Some(&Value::Bool(true));
            let mut remove = Vec::new();
            for (k, child) in m.iter_mut() {
                let sub = props.and_then(|p| p.get(k)).or(additional);
                match sub {
                    Some(sub) => prune_value(child, sub, &format!("{path}.{k}"), pruned, depth + 1),
                    None if keep_unknown => {}
                    // An embedded object keeps its apiVersion, kind and metadata.
                    None if embedded(schema)
                        && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {}
                    None => remove.push(k.clone()),
                }
            }
            for k in remove {
                m.remove(&k);
                pruned.push(format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(item, sub, &format!("{path}[{i}]"), pruned, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of absent fields, recursively (defaults inside a
/// defaulted value apply too, as upstream).
pub fn default(obj: &mut Value, schema: &Value) {
    default_value(obj, schema, 0);
}

fn default_value(v: &mut Value, schema: &Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    if !m.contains_key(k)
                        && let Some(d) = sub.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = m.get_mut(k) {
                        default_value(child, sub, depth + 1);
                    }
                }
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let declared = schema.get("properties").and_then(Value::as_object);
                for (k, child) in m.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(k)) {
                        default_value(child, additional, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                items
                    .iter_mut()
                    .for_each(|i| default_value(i, sub, depth + 1));
            }
        }
        _ => {}
    }
}

/// The JSON type of a value as OpenAPI names it.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates an object against its schema; every violation is a cause.
pub fn validate(obj: &Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(m) = obj.as_object() else {
        return causes;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, v) in m {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            check(v, sub, k, &mut causes, 0);
        }
    }
    required(m, schema, "", &mut causes);
    causes
}

fn required(m: &Map<String, Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = r.as_str()
            && !m.contains_key(r)
        {
            let field = if path.is_empty() {
                r.to_string()
            } else {
                format!("{path}.{r}")
            };
            causes.push(Cause::required(field, ""));
        }
    }
}

fn invalid(causes: &mut Vec<Cause>, path: &str, v: &Value, detail: String) {
    causes.push(Cause::invalid(path, v, detail));
}

/// The `x-kubernetes-list-map-keys` of a list schema whose
/// `x-kubernetes-list-type` is `map`, if it names any.
pub(crate) fn list_map_keys(schema: &Value) -> Option<Vec<&str>> {
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!keys.is_empty()).then_some(keys)
}

/// `x-kubernetes-list-type`: a `set` holds no item twice, a `map` no two
/// items with the same `x-kubernetes-list-map-keys` (linear, unlike
/// `uniqueItems`, which CRDs may not set).
fn list_type(items: &[Value], schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut seen = std::collections::HashSet::new();
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    causes.push(Cause::duplicate(format!("{path}[{i}]"), item));
                }
            }
        }
        Some("map") => {
            let Some(keys) = list_map_keys(schema) else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                let key: Map<String, Value> = keys
                    .iter()
                    .filter_map(|k| Some(((*k).to_owned(), item.get(*k)?.clone())))
                    .collect();
                let key = Value::Object(key);
                if !seen.insert(key.to_string()) {
                    causes.push(Cause::duplicate(format!("{path}[{i}]"), &key));
                }
            }
        }
        _ => {}
    }
}

fn check(v: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true)
            && schema.get("type").is_some()
        {
            let ty = schema["type"].as_str().unwrap_or("");
            invalid(
                causes,
                path,
                v,
                format!("{path} in body must be of type {ty}: \"null\""),
            );
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            invalid(
                causes,
                path,
                v,
                format!(
                    "{path} in body must be of type integer or string: {:?}",
                    type_name(v)
                ),
            );
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            invalid(
                causes,
                path,
                v,
                format!("{path} in body must be of type {ty}: {actual:?}"),
            );
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            message: format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        });
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl = |k: &str| schema.get(k).and_then(Value::as_bool) == Some(true);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && (x < min || (excl("exclusiveMinimum") && x == min))
            {
                let op = if excl("exclusiveMinimum") {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should be {op} {min}"),
                );
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && (x > max || (excl("exclusiveMaximum") && x == max))
            {
                let op = if excl("exclusiveMaximum") {
                    "less than"
                } else {
                    "less than or equal to"
                };
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should be {op} {max}"),
                );
            }
            if let Some(mult) = schema.get("multipleOf").and_then(Value::as_f64)
                && mult > 0.0
                && (x / mult).fract() != 0.0
            {
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should be a multiple of {mult}"),
                );
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should be at least {min} chars long"),
                );
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: path.to_string(),
                    message: format!("Too long: may not be more than {max} bytes"),
                });
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => {
                        invalid(
                            causes,
                            path,
                            v,
                            format!("{path} in body should match '{pattern}'"),
                        );
                    }
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should have at least {min} items"),
                );
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                causes.push(Cause {
                    reason: "FieldValueTooMany",
                    field: path.to_string(),
                    message: format!("Too many: {n}: must have at most {max} items"),
                });
            }
            if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        causes.push(Cause {
                            reason: "FieldValueDuplicate",
                            field: format!("{path}[{i}]"),
                            message: format!("Duplicate value: {item}"),
                        });
                    }
                }
            }
            list_type(items, schema, path, causes);
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, sub, &format!("{path}[{i}]"), causes, depth + 1);
                }
            }
        }
        Value::Object(m) => {
            let n = m.len() as u64;
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
                && n < min
            {
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should have at least {min} properties"),
                );
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && n > max
            {
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should have at most {max} properties"),
                );
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if let Some(sub) = props.and_then(|p| p.get(k)).or(additional) {
                    check(child, sub, &format!("{path}.{k}"), causes, depth + 1);
                }
            }
            required(m, schema, path, causes);
        }
        _ => {}
    }
    for sub in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(v, sub, path, causes, depth + 1);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| {
            let mut c = Vec::new();
            check(v, s, path, &mut c, depth + 1);
            c.is_empty()
        })
    {
        invalid(
            causes,
            path,
            v,
            format!("{path} in body must match at least one schema in anyOf"),
        );
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = one
            .iter()
            .filter(|s| {
                let mut c = Vec::new();
                check(v, s, path, &mut c, depth + 1);
                c.is_empty()
            })
            .count();
        if matching != 1 {
            invalid(
                causes,
                path,
                v,
                format!("{path} in body must match exactly one schema in oneOf"),
            );
        }
    }
    if let Some(not) = schema.get("not") {
        let mut c = Vec::new();
        check(v, not, path, &mut c, depth + 1);
        if c.is_empty() {
            invalid(
                causes,
                path,
                v,
                format!("{path} in body must not validate the schema (not)"),
            );
        }
    }
}

/// A schema that accepts anything, for versions without one.
pub fn permissive() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
