//! Validation of ValidatingAdmissionPolicy and binding objects on write:
//! required fields, allowed values, and CEL that compiles.

use kybern_apimachinery::Cause;
use serde_json::{Value, json};

use super::compile_error;

fn check_expression(expr: &Value, field: &str, causes: &mut Vec<Cause>) {
    match expr.as_str() {
        None | Some("") => causes.push(Cause::required(field, "")),
        Some(e) => {
            if let Some(why) = compile_error(e) {
                causes.push(Cause::invalid(
                    field,
                    expr,
                    format!("compilation failed: {why}"),
                ));
            }
        }
    }
}

fn items(v: &Value) -> impl Iterator<Item = (usize, &Value)> {
    v.as_array().into_iter().flatten().enumerate()
}

/// Causes against a `ValidatingAdmissionPolicy`.
pub fn policy(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &obj["spec"];
    if spec["matchConstraints"].is_null() {
        causes.push(Cause::required("spec.matchConstraints", ""));
    } else if spec["matchConstraints"]["resourceRules"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        causes.push(Cause::required("spec.matchConstraints.resourceRules", ""));
    }
    let validations = spec["validations"].as_array().map_or(0, Vec::len);
    let audits = spec["auditAnnotations"].as_array().map_or(0, Vec::len);
    if validations == 0 && audits == 0 {
        causes.push(Cause::required(
            "spec.validations",
            "validations or auditAnnotations must contain at least one item",
        ));
    }
    if let Some(f) = spec["failurePolicy"].as_str()
        && !matches!(f, "Fail" | "Ignore")
    {
        causes.push(Cause::not_supported(
            "spec.failurePolicy",
            &json!(f),
            &["Fail", "Ignore"],
        ));
    }
    for (i, v) in items(&spec["validations"]) {
        check_expression(
            &v["expression"],
            &format!("spec.validations[{i}].expression"),
            &mut causes,
        );
        if let Some(m) = v.get("messageExpression").filter(|m| !m.is_null()) {
            check_expression(
                m,
                &format!("spec.validations[{i}].messageExpression"),
                &mut causes,
            );
        }
        if let Some(r) = v["reason"].as_str()
            && !matches!(
                r,
                "Unauthorized" | "Forbidden" | "Invalid" | "RequestEntityTooLarge"
            )
        {
            causes.push(Cause::not_supported(
                format!("spec.validations[{i}].reason"),
                &json!(r),
                &[
                    "Unauthorized",
                    "Forbidden",
                    "Invalid",
                    "RequestEntityTooLarge",
                ],
            ));
        }
    }
    for (list, what) in [("matchConditions", "name"), ("variables", "name")] {
        for (i, v) in items(&spec[list]) {
            if v[what].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("spec.{list}[{i}].{what}"), ""));
            }
            check_expression(
                &v["expression"],
                &format!("spec.{list}[{i}].expression"),
                &mut causes,
            );
        }
    }
    causes
}

/// Causes against a `ValidatingAdmissionPolicyBinding`.
pub fn binding(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &obj["spec"];
    if spec["policyName"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.policyName", ""));
    }
    let actions: Vec<&Value> = spec["validationActions"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if actions.is_empty() {
        causes.push(Cause::required(
            "spec.validationActions",
            "at least one validation action is required",
        ));
    }
    for (i, a) in actions.iter().enumerate() {
        let field = format!("spec.validationActions[{i}]");
        match a.as_str() {
            Some("Deny" | "Warn" | "Audit") => {
                if actions[..i].contains(a) {
                    causes.push(Cause::duplicate(&field, a));
                }
            }
            _ => causes.push(Cause::not_supported(&field, a, &["Audit", "Deny", "Warn"])),
        }
    }
    let has = |s: &str| actions.iter().any(|a| *a == s);
    if has("Deny") && has("Warn") {
        causes.push(Cause::invalid(
            "spec.validationActions",
            &spec["validationActions"],
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if let Some(action) = spec["paramRef"]["parameterNotFoundAction"].as_str()
        && !matches!(action, "Allow" | "Deny")
    {
        causes.push(Cause::not_supported(
            "spec.paramRef.parameterNotFoundAction",
            &json!(action),
            &["Allow", "Deny"],
        ));
    }
    causes
}
