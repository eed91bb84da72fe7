//! CEL validation rules of CRD schemas (`x-kubernetes-validations`): each rule
//! runs with `self` bound to the value at its node, and `oldSelf` to the value
//! it replaces for transition rules, with upstream's messages and reasons.
//!
//! As upstream: a rule runs only where its value is present; a transition rule
//! (one naming `oldSelf`) only on update and where the old value correlates
//! (object fields by name, `x-kubernetes-list-type: map` items by their keys),
//! unless `optionalOldSelf` makes `oldSelf` an optional; and, since validation
//! ratcheting (GA in 1.33), a rule that does not name `oldSelf` is not run
//! again on a value the update leaves unchanged.

use std::sync::Arc;

use kybern_apimachinery::Cause;
use serde_json::{Map, Value, json};

/// Schemas nest no deeper than this many levels for validation.
const MAX_DEPTH: usize = 64;

/// The work one rule may do, in visits of `self`'s values: upstream's
/// runtime budget per expression is 10^7 cost units.
const COST_LIMIT: usize = 10_000_000;

/// The macros that visit every element of a list or map.
const COMPREHENSIONS: [&str; 5] = [".all(", ".exists(", ".exists_one(", ".map(", ".filter("];

/// Whether `expr` could visit more than [`COST_LIMIT`] values of `v`: with k
/// comprehensions (nested at most k deep), each over a list or map of at
/// most m elements, m^k. The CEL interpreter has no cost accounting of its
/// own, and upstream refuses such rules when the CRD is written unless
/// `maxItems` bounds their lists; this bounds them when the object is.
fn over_budget(expr: &str, v: &Value) -> bool {
    let k = comprehension_depth(expr);
    if k < 2 {
        return false; // one pass over a body of at most 3 MiB is affordable
    }
    // The largest m with m^k within the limit.
    let root = (COST_LIMIT as f64).powf(1.0 / f64::from(k)) as usize;
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        match x {
            Value::Array(a) if a.len() > root => return true,
            Value::Object(m) if m.len() > root => return true,
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    false
}

/// How deep comprehension macros nest in `expr` (string literals skipped).
fn comprehension_depth(expr: &str) -> u32 {
    let bytes = expr.as_bytes();
    // Per open parenthesis: whether it opened a comprehension.
    let mut open: Vec<bool> = Vec::new();
    let (mut depth, mut deepest) = (0u32, 0u32);
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1, // skip the escaped byte
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' => {
                    let head = &expr[..=i];
                    let comprehension = COMPREHENSIONS.iter().any(|c| head.ends_with(c));
                    if comprehension {
                        depth += 1;
                        deepest = deepest.max(depth);
                    }
                    open.push(comprehension);
                }
                // The guard pops at every `)`; only a comprehension's lowers the depth.
                b')' if open.pop() == Some(true) => depth -= 1,
                _ => {}
            },
        }
        i += 1;
    }
    deepest
}

/// The rule violations of a custom object against its schema; `old` is the
/// stored object on update.
pub fn validate(obj: &Value, old: Option<&Value>, schema: &Value) -> Vec<Cause> {
    let env = match crate::cel_env::env() {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!(error = %e, "no CEL environment; CRD validation rules skipped");
            return Vec::new();
        }
    };
    let mut walk = Walk {
        env,
        causes: Vec::new(),
    };
    let Some(fields) = obj.as_object() else {
        return Vec::new();
    };
    if has_rules(schema) {
        // At the root `self` sees the object with only the metadata upstream
        // exposes: name and generateName.
        let root = |o: &Map<String, Value>| {
            let mut view = o.clone();
            let mut shown = Map::new();
            for k in ["name", "generateName"] {
                if let Some(v) = o.get("metadata").and_then(|m| m.get(k)) {
                    shown.insert(k.into(), v.clone());
                }
            }
            view.insert("metadata".into(), Value::Object(shown));
            Value::Object(view)
        };
        let old_root = old.and_then(Value::as_object).map(root);
        walk.rules(&root(fields), old_root.as_ref(), schema, "");
    }
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, v) in fields {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            walk.node(v, old.and_then(|o| o.get(k)), sub, k, 0);
        }
    }
    walk.causes
}

/// What upstream refuses a CRD version's schema for, as causes under `path`
/// (the schema's own field path): rules that do not compile or give an
/// unknown reason, and `uniqueItems: true` (quadratic to check).
pub fn schema_errors(schema: &Value, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    check_schema(schema, path, &mut causes, 0);
    causes
}

fn check_schema(schema: &Value, path: &str, causes: &mut Vec<Cause>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        causes.push(Cause::forbidden(
            format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    for (i, rule) in rules_of(schema).enumerate() {
        let field = format!("{path}.x-kubernetes-validations[{i}].rule");
        match rule.get("rule").and_then(Value::as_str).map(str::trim) {
            None | Some("") => causes.push(Cause::required(field, "")),
            Some(expr) => {
                if let Some(why) = crate::cel_env::compile_error(expr) {
                    causes.push(Cause::invalid(
                        field,
                        &json!(expr),
                        format!("compilation failed: {why}"),
                    ));
                }
            }
        }
        if let Some(r) = rule.get("reason").and_then(Value::as_str)
            && !matches!(
                r,
                "FieldValueInvalid"
                    | "FieldValueForbidden"
                    | "FieldValueRequired"
                    | "FieldValueDuplicate"
            )
        {
            causes.push(Cause::not_supported(
                format!("{path}.x-kubernetes-validations[{i}].reason"),
                &json!(r),
                &[
                    "FieldValueDuplicate",
                    "FieldValueForbidden",
                    "FieldValueInvalid",
                    "FieldValueRequired",
                ],
            ));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            check_schema(sub, &format!("{path}.properties[{k}]"), causes, depth + 1);
        }
    }
    if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        check_schema(
            sub,
            &format!("{path}.additionalProperties"),
            causes,
            depth + 1,
        );
    }
    if let Some(sub) = schema.get("items").filter(|s| s.is_object()) {
        check_schema(sub, &format!("{path}.items"), causes, depth + 1);
    }
}

/// Whether a schema declares validation rules at any depth.
pub fn declared(schema: &Value) -> bool {
    has_rules(schema)
        || ["additionalProperties", "items"]
            .iter()
            .filter_map(|k| schema.get(*k))
            .chain(
                schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|p| p.values()),
            )
            .any(|sub| sub.is_object() && declared(sub))
}

fn rules_of(schema: &Value) -> impl Iterator<Item = &Value> {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn has_rules(schema: &Value) -> bool {
    rules_of(schema).next().is_some()
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// The schema's type for messages (`Invalid value: "object": ...`).
fn schema_type(schema: &Value, v: &Value) -> &'static str {
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => "object",
        Some("array") => "array",
        Some("string") => "string",
        Some("integer") => "integer",
        Some("number") => "number",
        Some("boolean") => "boolean",
        _ => super::schema::type_name(v),
    }
}

/// The old item a list-map item replaces: the one with the same keys.
fn correlate<'a>(old: Option<&'a Value>, item: &Value, schema: &Value) -> Option<&'a Value> {
    let keys = super::schema::list_map_keys(schema)?;
    old?.as_array()?
        .iter()
        .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
}

struct Walk {
    env: Arc<cel::Env>,
    causes: Vec<Cause>,
}

impl Walk {
    fn node(&mut self, v: &Value, old: Option<&Value>, schema: &Value, path: &str, depth: usize) {
        if depth > MAX_DEPTH || v.is_null() {
            return;
        }
        self.rules(v, old, schema, path);
        match v {
            Value::Object(m) => {
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (k, child) in m {
                        if let Some(sub) = props.get(k) {
                            let o = old.and_then(|o| o.get(k));
                            self.node(child, o, sub, &join(path, k), depth + 1);
                        }
                    }
                } else if let Some(sub) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    for (k, child) in m {
                        let o = old.and_then(|o| o.get(k));
                        self.node(child, o, sub, &format!("{path}[{k}]"), depth + 1);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = schema.get("items").filter(|s| s.is_object()) {
                    for (i, item) in items.iter().enumerate() {
                        let o = correlate(old, item, schema);
                        self.node(item, o, sub, &format!("{path}[{i}]"), depth + 1);
                    }
                }
            }
            _ => {}
        }
    }

    fn rules(&mut self, v: &Value, old: Option<&Value>, schema: &Value, path: &str) {
        for rule in rules_of(schema) {
            let Some(expr) = rule.get("rule").and_then(Value::as_str).map(str::trim) else {
                continue;
            };
            let transition = expr.contains("oldSelf");
            let optional_old = rule.get("optionalOldSelf").and_then(Value::as_bool) == Some(true);
            if transition && old.is_none() && !optional_old {
                continue;
            }
            if !transition && old == Some(v) {
                continue;
            }
            let ty = schema_type(schema, v);
            let message = rule
                .get("message")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|m| !m.is_empty());
            let shown_rule = message.unwrap_or(expr);
            let field = match rule.get("fieldPath").and_then(Value::as_str) {
                Some(p) if !p.trim().is_empty() => join(path, p.trim().trim_start_matches('.')),
                _ => path.to_owned(),
            };
            let old_self = transition.then_some((old, optional_old));
            if over_budget(expr, v) {
                self.causes.push(Cause::invalid(
                    field,
                    &json!(ty),
                    format!("operation cancelled: actual cost limit exceeded: {shown_rule}"),
                ));
                continue;
            }
            match self.eval(expr, v, old_self) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    let detail = rule
                        .get("messageExpression")
                        .and_then(Value::as_str)
                        .and_then(|e| match self.eval(e, v, old_self) {
                            Ok(Value::String(s)) if !s.trim().is_empty() && !s.contains('\n') => {
                                Some(s)
                            }
                            _ => None,
                        })
                        .unwrap_or_else(|| match message {
                            Some(m) => m.to_owned(),
                            None => format!("failed rule: {expr}"),
                        });
                    let cause = match rule.get("reason").and_then(Value::as_str) {
                        Some("FieldValueForbidden") => Cause::forbidden(field, detail),
                        Some("FieldValueRequired") => Cause::required(field, detail),
                        Some("FieldValueDuplicate") => Cause::duplicate(field, &json!(ty)),
                        _ => Cause::invalid(field, &json!(ty), detail),
                    };
                    self.causes.push(cause);
                }
                Ok(other) => self.causes.push(Cause::invalid(
                    field,
                    &json!(ty),
                    format!("rule did not evaluate to a bool ({other}): {shown_rule}"),
                )),
                Err(e) => self.causes.push(Cause::invalid(
                    field,
                    &json!(ty),
                    format!("{e} evaluating rule: {shown_rule}"),
                )),
            }
        }
    }

    /// Runs `expr` with `self` and, for transition rules, `oldSelf` (an
    /// optional when `optionalOldSelf` asks for it).
    fn eval(
        &self,
        expr: &str,
        v: &Value,
        old_self: Option<(Option<&Value>, bool)>,
    ) -> Result<Value, String> {
        let program = crate::cel_env::program(&self.env, expr)?;
        let mut context = cel::Context::with_env(self.env.clone());
        context.add_variable("self", v).map_err(|e| e.to_string())?;
        match old_self {
            None => {}
            Some((Some(old), false)) => {
                context
                    .add_variable("oldSelf", old)
                    .map_err(|e| e.to_string())?;
            }
            Some((old, _)) => {
                let optional = match old {
                    Some(o) => cel::objects::OptionalValue::of(
                        cel::to_value(o).map_err(|e| e.to_string())?,
                    ),
                    None => cel::objects::OptionalValue::none(),
                };
                context.add_variable_from_value("oldSelf", cel::Value::Opaque(Arc::new(optional)));
            }
        }
        let result = program.execute(&context).map_err(|e| e.to_string())?;
        Ok(match result {
            cel::Value::Bool(b) => Value::Bool(b),
            cel::Value::String(s) => Value::String(s.to_string()),
            other => Value::String(format!("{:?}", other.type_of())),
        })
    }
}

#[cfg(test)]
mod tests;
