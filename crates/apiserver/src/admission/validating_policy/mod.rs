//! ValidatingAdmissionPolicy: CEL validations that policies declare and
//! bindings put into force (Deny, Warn, Audit), evaluated in the server as
//! upstream does, with its messages and failure policy.

use std::sync::Arc;

use kybern_apimachinery::{ApiError, Cause, StatusReason};
use serde_json::{Value, json};

use super::match_rules::{AdmissionAttempt, matches, namespace_object};
use crate::audit::AuditContext;
use crate::auth::UserInfo;
pub use crate::cel_env::compile_error;
use crate::cel_env::{env, program};
use crate::server::ApiState;

/// The group whose objects no policy applies to, so that a bad policy can
/// always be fixed or removed.
use super::ADMISSION_GROUP as GROUP;

/// What one validation concluded.
struct Violation {
    policy: String,
    binding: String,
    message: String,
    reason: StatusReason,
    index: usize,
}

/// The variables of one evaluation.
struct Inputs<'a> {
    object: &'a Value,
    old_object: &'a Value,
    request: &'a Value,
    params: &'a Value,
    namespace_object: &'a Value,
}

/// Evaluates `expression` to a value.
/// The inputs as CEL values, converted once for all of a policy's
/// expressions.
fn base_context<'v>(
    env: &Arc<cel::Env>,
    inputs: &Inputs<'_>,
) -> Result<cel::Context<'static, 'v>, String> {
    let mut context = cel::Context::with_env(env.clone());
    for (name, value) in [
        ("object", inputs.object),
        ("oldObject", inputs.old_object),
        ("request", inputs.request),
        ("params", inputs.params),
        ("namespaceObject", inputs.namespace_object),
    ] {
        context
            .add_variable(name, value)
            .map_err(|e| e.to_string())?;
    }
    Ok(context)
}

/// Evaluates `expression` in `base` with the variables computed so far.
fn eval(
    env: &cel::Env,
    base: &cel::Context<'_, '_>,
    variables: &serde_json::Map<String, Value>,
    expression: &str,
) -> Result<Value, String> {
    let program = program(env, expression).map_err(|e| format!("compilation failed: {e}"))?;
    let mut context = base.new_inner_scope();
    context
        .add_variable("variables", variables)
        .map_err(|e| e.to_string())?;
    let value = program.execute(&context).map_err(|e| e.to_string())?;
    cel_to_json(&value)
}

fn cel_to_json(value: &cel::Value) -> Result<Value, String> {
    Ok(match value {
        cel::Value::Bool(b) => json!(b),
        cel::Value::Int(i) => json!(i),
        cel::Value::UInt(u) => json!(u),
        cel::Value::Float(f) => json!(f),
        cel::Value::String(s) => json!(s.as_str()),
        cel::Value::Null => Value::Null,
        cel::Value::List(items) => {
            Value::Array(items.iter().map(cel_to_json).collect::<Result<_, _>>()?)
        }
        other => return Err(format!("unsupported result type {:?}", other.type_of())),
    })
}

/// `request` as upstream's CEL sees it (an `AdmissionRequest`).
fn request_value(a: &AdmissionAttempt<'_>, user: &UserInfo) -> Value {
    json!({
        "kind": {"group": a.group, "version": a.version, "kind": a.kind},
        "resource": {"group": a.group, "version": a.version, "resource": a.resource},
        "subResource": a.subresource,
        "requestKind": {"group": a.group, "version": a.version, "kind": a.kind},
        "requestResource": {"group": a.group, "version": a.version, "resource": a.resource},
        "name": a.name,
        "namespace": a.namespace,
        "operation": a.operation,
        "userInfo": {"username": user.name, "uid": user.uid, "groups": user.groups},
        "dryRun": a.dry_run,
    })
}

/// Evaluates an admission webhook's `matchConditions` (over `object`,
/// `oldObject` and `request`): false as soon as one is false; an error (or
/// a non-bool) is the webhook's failure, for its failure policy to decide.
pub fn match_conditions(
    conditions: &Value,
    a: &AdmissionAttempt<'_>,
    user: &UserInfo,
) -> Result<bool, String> {
    let env = env()?;
    let request = request_value(a, user);
    let inputs = Inputs {
        object: a.object.unwrap_or(&Value::Null),
        old_object: a.old_object.unwrap_or(&Value::Null),
        request: &request,
        params: &Value::Null,
        namespace_object: &Value::Null,
    };
    let base = base_context(&env, &inputs)?;
    let none = serde_json::Map::new();
    for condition in conditions.as_array().into_iter().flatten() {
        let expr = condition["expression"].as_str().unwrap_or("");
        match eval(&env, &base, &none, expr) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => return Ok(false),
            Ok(_) => {
                return Err(format!(
                    "matchCondition '{}' must evaluate to bool",
                    condition["name"].as_str().unwrap_or("")
                ));
            }
            Err(e) => {
                return Err(format!(
                    "matchCondition '{}' resulted in error: {e}",
                    condition["name"].as_str().unwrap_or("")
                ));
            }
        }
    }
    Ok(true)
}

fn reason_of(validation: &Value) -> StatusReason {
    match validation["reason"].as_str() {
        Some("Unauthorized") => StatusReason::Unauthorized,
        Some("Forbidden") => StatusReason::Forbidden,
        Some("RequestEntityTooLarge") => StatusReason::RequestEntityTooLarge,
        _ => StatusReason::Invalid,
    }
}

/// The parameter objects a binding names (`[Null]` for a policy without
/// `paramKind`); `None` when none exist and the binding allows that.
async fn params_of(
    state: &ApiState,
    policy: &Value,
    binding: &Value,
    a: &AdmissionAttempt<'_>,
) -> Result<Option<Vec<Value>>, String> {
    let kind = &policy["spec"]["paramKind"];
    if kind.is_null() {
        return Ok(Some(vec![Value::Null]));
    }
    let param_ref = &binding["spec"]["paramRef"];
    if param_ref.is_null() {
        return Err("failed to configure binding: paramRef is required by the policy".into());
    }
    let (group, version) = match kind["apiVersion"].as_str().unwrap_or("").split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (
            String::new(),
            kind["apiVersion"].as_str().unwrap_or("").to_owned(),
        ),
    };
    let kind_name = kind["kind"].as_str().unwrap_or("");
    let Some(info) = state
        .registry
        .all()
        .into_iter()
        .find(|i| i.group == group && i.version == version && i.kind == kind_name)
    else {
        return Err(format!(
            "failed to configure binding: paramKind {}/{kind_name} is not served",
            kind["apiVersion"].as_str().unwrap_or("")
        ));
    };
    let namespace = match param_ref["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => ns,
        _ if info.namespaced() => a.namespace,
        _ => "",
    };
    let mut found = Vec::new();
    if let Some(name) = param_ref["name"].as_str().filter(|n| !n.is_empty()) {
        if let Ok(obj) = state.objects.get(&info, namespace, name).await {
            found.push(obj);
        }
    } else {
        let selector =
            kybern_apimachinery::labels::Selector::from_label_selector(&param_ref["selector"])
                .map_err(|e| format!("failed to configure binding: {e}"))?;
        let ns = (!namespace.is_empty()).then_some(namespace);
        for cached in state
            .cached_objects(&info.group, &info.plural, ns)
            .await
            .map_err(|e| e.message)?
        {
            if let Ok(obj) = serde_json::from_slice::<Value>(&cached.json())
                && selector.matches_labels(obj.pointer("/metadata/labels"))
            {
                found.push(obj);
            }
        }
    }
    if !found.is_empty() {
        return Ok(Some(found));
    }
    match param_ref["parameterNotFoundAction"].as_str() {
        Some("Deny") => Err(
            "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
                .into(),
        ),
        _ => Ok(None),
    }
}

/// Runs one policy's validations for one parameter object; violations and
/// evaluation errors (under `failurePolicy: Fail`) are pushed.
fn evaluate(
    policy: &Value,
    binding: &Value,
    inputs: &Inputs<'_>,
    out: &mut Vec<Violation>,
) -> Result<(), String> {
    let env = env()?;
    let base = base_context(&env, inputs)?;
    let spec = &policy["spec"];
    let fail_closed = spec["failurePolicy"].as_str() != Some("Ignore");
    let name = |v: &Value| v["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let violation = |message: String, reason: StatusReason, index: usize| Violation {
        policy: name(policy),
        binding: name(binding),
        message,
        reason,
        index,
    };
    // Variables are evaluated in order, each seeing those before it; one
    // that fails is left out, so only expressions that use it fail.
    let mut variables = serde_json::Map::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        let (Some(n), Some(expr)) = (v["name"].as_str(), v["expression"].as_str()) else {
            continue;
        };
        if let Ok(value) = eval(&env, &base, &variables, expr) {
            variables.insert(n.to_owned(), value);
        }
    }
    for condition in spec["matchConditions"].as_array().into_iter().flatten() {
        let expr = condition["expression"].as_str().unwrap_or("");
        match eval(&env, &base, &variables, expr) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => return Ok(()),
            Ok(_) | Err(_) if !fail_closed => return Ok(()),
            Ok(_) => {
                out.push(violation(
                    format!(
                        "matchCondition '{}' must evaluate to bool",
                        condition["name"]
                    ),
                    StatusReason::Invalid,
                    0,
                ));
                return Ok(());
            }
            Err(e) => {
                out.push(violation(
                    format!("expression '{expr}' resulted in error: {e}"),
                    StatusReason::Invalid,
                    0,
                ));
                return Ok(());
            }
        }
    }
    for (index, validation) in spec["validations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let expr = validation["expression"].as_str().unwrap_or("");
        let failed = match eval(&env, &base, &variables, expr) {
            Ok(Value::Bool(true)) => continue,
            Ok(Value::Bool(false)) => None,
            Ok(_) => Some("validation expression must evaluate to bool".to_owned()),
            Err(e) => Some(e),
        };
        let message = match failed {
            Some(_) if !fail_closed => continue,
            Some(e) => format!("expression '{expr}' resulted in error: {e}"),
            None => match validation["message"].as_str().filter(|m| !m.is_empty()) {
                Some(m) => m.to_owned(),
                None => validation["messageExpression"]
                    .as_str()
                    .and_then(|m| match eval(&env, &base, &variables, m) {
                        Ok(Value::String(s)) if !s.trim().is_empty() => Some(s),
                        _ => None,
                    })
                    .unwrap_or_else(|| format!("failed expression: {expr}")),
            },
        };
        out.push(violation(message, reason_of(validation), index));
    }
    Ok(())
}

/// Admits a request against every bound policy that matches it: a `Deny`
/// binding's violation refuses it (upstream's message and reason), `Warn`
/// adds a warning, `Audit` an audit annotation.
pub async fn admit(
    state: &ApiState,
    user: &UserInfo,
    a: &AdmissionAttempt<'_>,
    warnings: &mut Vec<String>,
    audit: &AuditContext,
) -> Result<(), ApiError> {
    if super::exempt(a) {
        return Ok(());
    }
    let bindings = super::configurations(state, "validatingadmissionpolicybindings").await?;
    if bindings.is_empty() {
        return Ok(());
    }
    let policies = super::cached_values(state, GROUP, "validatingadmissionpolicies", None).await?;
    let mut namespace: Option<Value> = None;
    let mut audited = Vec::new();
    let mut denied: Option<Violation> = None;
    let request = request_value(a, user);
    for binding in &bindings {
        let policy_name = binding["spec"]["policyName"].as_str().unwrap_or("");
        let Some(policy) = policies
            .iter()
            .find(|p| p["metadata"]["name"].as_str() == Some(policy_name))
        else {
            continue;
        };
        let constraints = &policy["spec"]["matchConstraints"];
        if !matches(state, constraints, a, true).await? {
            continue;
        }
        let narrowed = &binding["spec"]["matchResources"];
        if !narrowed.is_null() && !matches(state, narrowed, a, false).await? {
            continue;
        }
        if namespace.is_none() {
            namespace = Some(
                namespace_object(state, a.namespace)
                    .await?
                    .unwrap_or(Value::Null),
            );
        }
        let fail_closed = policy["spec"]["failurePolicy"].as_str() != Some("Ignore");
        let mut violations = Vec::new();
        match params_of(state, policy, binding, a).await {
            Ok(Some(params)) => {
                for p in &params {
                    let inputs = Inputs {
                        object: a.object.unwrap_or(&Value::Null),
                        old_object: a.old_object.unwrap_or(&Value::Null),
                        request: &request,
                        params: p,
                        namespace_object: namespace.as_ref().unwrap_or(&Value::Null),
                    };
                    if let Err(e) = evaluate(policy, binding, &inputs, &mut violations)
                        && fail_closed
                    {
                        return Err(ApiError::internal(e));
                    }
                }
            }
            Ok(None) => continue,
            Err(_) if !fail_closed => continue,
            Err(message) => violations.push(Violation {
                policy: policy_name.to_owned(),
                binding: binding["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                message,
                reason: StatusReason::Invalid,
                index: 0,
            }),
        }
        let actions = crate::object::str_items(&binding["spec"]["validationActions"]);
        for v in violations {
            if actions.contains(&"Warn") {
                warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                    v.policy, v.binding, v.message
                ));
            }
            if actions.contains(&"Audit") {
                audited.push(json!({
                    "message": v.message, "policy": v.policy, "binding": v.binding,
                    "expressionIndex": v.index, "validationActions": actions,
                }));
            }
            if actions.contains(&"Deny") && denied.is_none() {
                denied = Some(v);
            }
        }
    }
    if !audited.is_empty() {
        audit.annotate(
            "validation.policy.admission.k8s.io/validation_failure",
            Value::Array(audited).to_string(),
        );
    }
    match denied {
        None => Ok(()),
        Some(v) => Err(denial(a, &v)),
    }
}

/// Upstream's refusal: `admission.NewForbidden` with the validation's
/// reason and code, and the message as a cause.
fn denial(a: &AdmissionAttempt<'_>, v: &Violation) -> ApiError {
    let message = format!(
        "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
        v.policy, v.binding, v.message
    );
    let qualified = if a.group.is_empty() {
        a.resource.to_owned()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let mut err = ApiError::new(
        v.reason,
        format!("{qualified} {:?} is forbidden: {message}", a.name),
    );
    err.group = Some(a.group.to_owned());
    err.kind = Some(a.resource.to_owned());
    err.name = Some(a.name.to_owned());
    err.causes.push(Cause {
        reason: "",
        field: String::new(),
        message,
    });
    err
}

pub mod validation;

#[cfg(test)]
mod tests;
