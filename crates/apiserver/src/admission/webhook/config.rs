//! Defaulting and validation of `MutatingWebhookConfiguration` and
//! `ValidatingWebhookConfiguration` objects, with upstream's defaults and
//! messages (`admissionregistration/v1` defaults, `validation.go`).

use std::collections::HashSet;

use kybern_apimachinery::{Cause, names};
use serde_json::{Map, Value, json};

use crate::object::str_items as strings;

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

/// Upstream's v1 defaults for every webhook of a configuration; `mutating`
/// adds `reinvocationPolicy`.
pub fn apply_defaults(obj: &mut Map<String, Value>, mutating: bool) {
    let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) else {
        return;
    };
    for hook in hooks.iter_mut().filter_map(Value::as_object_mut) {
        default(hook, "failurePolicy", json!("Fail"));
        default(hook, "matchPolicy", json!("Equivalent"));
        default(hook, "namespaceSelector", json!({}));
        default(hook, "objectSelector", json!({}));
        default(hook, "timeoutSeconds", json!(10));
        if mutating {
            default(hook, "reinvocationPolicy", json!("Never"));
        }
        if let Some(rules) = hook.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                default(rule, "scope", json!("*"));
            }
        }
        if let Some(service) = hook
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            default(service, "port", json!(443));
        }
    }
}

fn not_supported(hook: &Value, key: &str, field: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    if let Some(v) = hook.get(key).filter(|v| !v.is_null())
        && !v.as_str().is_some_and(|s| allowed.contains(&s))
    {
        causes.push(Cause::not_supported(format!("{field}.{key}"), v, allowed));
    }
}

/// Upstream's `IsFullyQualifiedName`: a DNS subdomain of three or more labels.
fn fully_qualified(name: &str, field: &str, causes: &mut Vec<Cause>) {
    if name.is_empty() {
        causes.push(Cause::required(field, ""));
        return;
    }
    for why in names::dns1123_subdomain(name) {
        causes.push(Cause::invalid(field, &json!(name), why));
    }
    if name.split('.').count() < 3 {
        causes.push(Cause::invalid(
            field,
            &json!(name),
            "should be a domain with at least three segments separated by dots",
        ));
    }
}

/// Upstream's `ValidateWebhookURL` with https forced.
fn url(value: &str, field: &str, causes: &mut Vec<Cause>) {
    const FORM: &str = "; desired format: https://host[/path]";
    let (scheme, rest) = value.split_once("://").unwrap_or(("", value));
    if scheme != "https" {
        causes.push(Cause::invalid(
            field,
            &json!(scheme),
            format!("'https' is the only allowed URL scheme{FORM}"),
        ));
    }
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if let Some((user, _)) = authority.rsplit_once('@') {
        causes.push(Cause::invalid(
            field,
            &json!(user),
            "user information is not permitted in the URL",
        ));
    }
    if authority.rsplit('@').next().unwrap_or("").is_empty() {
        causes.push(Cause::invalid(
            field,
            &json!(""),
            format!("host must be specified{FORM}"),
        ));
    }
    let (before_fragment, fragment) = tail.split_once('#').unwrap_or((tail, ""));
    if !fragment.is_empty() {
        causes.push(Cause::invalid(
            field,
            &json!(fragment),
            "fragments are not permitted in the URL",
        ));
    }
    if let Some((_, query)) = before_fragment.split_once('?')
        && !query.is_empty()
    {
        causes.push(Cause::invalid(
            field,
            &json!(query),
            "query parameters are not permitted in the URL",
        ));
    }
}

/// Upstream's `ValidateWebhookService`.
fn service(svc: &Value, field: &str, causes: &mut Vec<Cause>) {
    if svc["name"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required(
            format!("{field}.name"),
            "service name is required",
        ));
    }
    if svc["namespace"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required(
            format!("{field}.namespace"),
            "service namespace is required",
        ));
    }
    let port = svc["port"].as_i64().unwrap_or(443);
    if !(1..=65535).contains(&port) {
        causes.push(Cause::invalid(
            format!("{field}.port"),
            &json!(port),
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    let path = svc["path"].as_str().unwrap_or("");
    if path.is_empty() || path == "/" {
        return;
    }
    if !path.starts_with('/') {
        causes.push(Cause::invalid(
            format!("{field}.path"),
            &json!(path),
            "must start with a '/'",
        ));
        return;
    }
    let segments = path.trim_end_matches('/').trim_start_matches('/');
    for (i, segment) in segments.split('/').enumerate() {
        if segment.is_empty() {
            causes.push(Cause::invalid(
                format!("{field}.path"),
                &json!(path),
                format!("segment[{i}] may not be empty"),
            ));
        } else if !names::dns1123_subdomain(segment).is_empty() {
            causes.push(Cause::invalid(
                format!("{field}.path"),
                &json!(path),
                format!("segment[{i}]: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
            ));
        }
    }
}

const OPERATIONS: [&str; 5] = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];

fn rule(rule: &Value, field: &str, causes: &mut Vec<Cause>) {
    let operations = strings(&rule["operations"]);
    if operations.is_empty() {
        causes.push(Cause::required(format!("{field}.operations"), ""));
    }
    if operations.contains(&"*") && operations.len() > 1 {
        causes.push(Cause::invalid(
            format!("{field}.operations"),
            &rule["operations"],
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, op) in operations.iter().enumerate() {
        if !OPERATIONS.contains(op) {
            causes.push(Cause::not_supported(
                format!("{field}.operations[{i}]"),
                &json!(op),
                &OPERATIONS,
            ));
        }
    }
    for key in ["apiGroups", "apiVersions", "resources"] {
        if strings(&rule[key]).is_empty() {
            causes.push(Cause::required(format!("{field}.{key}"), ""));
        }
    }
    not_supported(
        rule,
        "scope",
        field,
        &["*", "Cluster", "Namespaced"],
        causes,
    );
}

fn selector(hook: &Value, key: &str, field: &str, causes: &mut Vec<Cause>) {
    if let Err(e) = kybern_apimachinery::labels::Selector::from_label_selector(&hook[key]) {
        causes.push(Cause::invalid(
            format!("{field}.{key}"),
            &hook[key],
            e.to_string(),
        ));
    }
}

fn match_conditions(hook: &Value, field: &str, causes: &mut Vec<Cause>) {
    let mut seen = HashSet::new();
    let conditions = hook["matchConditions"].as_array().map_or(&[][..], |v| v);
    if conditions.len() > 64 {
        causes.push(Cause {
            reason: "FieldValueTooMany",
            field: format!("{field}.matchConditions"),
            message: format!("Too many: {}: must have at most 64 items", conditions.len()),
        });
    }
    for (i, c) in conditions.iter().enumerate() {
        let at = format!("{field}.matchConditions[{i}]");
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("{at}.name"), ""));
        } else {
            for why in names::qualified_name(name) {
                causes.push(Cause::invalid(format!("{at}.name"), &json!(name), why));
            }
            if !seen.insert(name) {
                causes.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
            }
        }
        match c["expression"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{at}.expression"), "")),
            Some(e) => {
                if let Some(why) = crate::admission::validating_policy::compile_error(e) {
                    causes.push(Cause::invalid(
                        format!("{at}.expression"),
                        &json!(e),
                        format!("compilation failed: {why}"),
                    ));
                }
            }
        }
    }
}

/// Causes against a webhook configuration (`mutating` for the mutating kind).
pub fn validate(obj: &Value, mutating: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut names_seen = HashSet::new();
    for (i, hook) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
        let field = format!("webhooks[{i}]");
        let name = hook["name"].as_str().unwrap_or("");
        fully_qualified(name, &format!("{field}.name"), &mut causes);
        if !name.is_empty() && !names_seen.insert(name) {
            causes.push(Cause::duplicate(format!("{field}.name"), &json!(name)));
        }
        for (j, r) in hook["rules"].as_array().into_iter().flatten().enumerate() {
            rule(r, &format!("{field}.rules[{j}]"), &mut causes);
        }
        not_supported(
            hook,
            "failurePolicy",
            &field,
            &["Fail", "Ignore"],
            &mut causes,
        );
        not_supported(
            hook,
            "matchPolicy",
            &field,
            &["Equivalent", "Exact"],
            &mut causes,
        );
        if mutating {
            not_supported(
                hook,
                "reinvocationPolicy",
                &field,
                &["IfNeeded", "Never"],
                &mut causes,
            );
        }
        match hook["sideEffects"].as_str() {
            None => causes.push(Cause::required(
                format!("{field}.sideEffects"),
                "must specify one of None, NoneOnDryRun",
            )),
            Some(_) => not_supported(
                hook,
                "sideEffects",
                &field,
                &["None", "NoneOnDryRun"],
                &mut causes,
            ),
        }
        let versions = strings(&hook["admissionReviewVersions"]);
        if versions.is_empty() {
            causes.push(Cause::required(
                format!("{field}.admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            ));
        } else if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
            causes.push(Cause::invalid(
                format!("{field}.admissionReviewVersions"),
                &hook["admissionReviewVersions"],
                "must include at least one of v1, v1beta1",
            ));
        }
        if let Some(t) = hook["timeoutSeconds"].as_i64()
            && !(1..=30).contains(&t)
        {
            causes.push(Cause::invalid(
                format!("{field}.timeoutSeconds"),
                &json!(t),
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
        selector(hook, "namespaceSelector", &field, &mut causes);
        selector(hook, "objectSelector", &field, &mut causes);
        match_conditions(hook, &field, &mut causes);
        let client = &hook["clientConfig"];
        let (has_url, has_service) = (!client["url"].is_null(), !client["service"].is_null());
        if has_url == has_service {
            causes.push(Cause::required(
                format!("{field}.clientConfig"),
                "exactly one of url or service is required",
            ));
        } else if let Some(u) = client["url"].as_str() {
            url(u, &format!("{field}.clientConfig.url"), &mut causes);
        } else if has_service {
            service(
                &client["service"],
                &format!("{field}.clientConfig.service"),
                &mut causes,
            );
        }
        if let Some(ca) = client["caBundle"].as_str().filter(|c| !c.is_empty())
            && super::client::ca_certificates(ca).is_err()
        {
            causes.push(Cause::invalid(
                format!("{field}.clientConfig.caBundle"),
                &json!("<bytes>"),
                "must be PEM-encoded certificates",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(extra: Value) -> Value {
        let mut h = json!({"name": "deny.example.com", "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1:9443/validate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["configmaps"]}]});
        for (k, v) in extra.as_object().into_iter().flatten() {
            h[k] = v.clone();
        }
        json!({"webhooks": [h]})
    }

    fn messages(obj: &Value) -> Vec<String> {
        validate(obj, true)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_follow_upstream_v1() {
        let mut obj = hook(json!({"clientConfig": {"service": {"name": "s", "namespace": "n"}}}));
        apply_defaults(obj.as_object_mut().expect("object"), true);
        let h = &obj["webhooks"][0];
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["matchPolicy"], "Equivalent");
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["reinvocationPolicy"], "Never");
        assert_eq!(h["namespaceSelector"], json!({}));
        assert_eq!(h["rules"][0]["scope"], "*");
        assert_eq!(h["clientConfig"]["service"]["port"], 443);
        assert!(messages(&obj).is_empty(), "{:?}", messages(&obj));
    }

    #[test]
    fn refuses_what_upstream_refuses() {
        assert_eq!(
            messages(&hook(json!({"name": "deny"}))),
            [
                "webhooks[0].name: Invalid value: \"deny\": should be a domain with at least three segments separated by dots"
            ]
        );
        let both = hook(json!({"clientConfig": {"url": "https://a", "service": {"name": "s"}}}));
        assert_eq!(
            messages(&both),
            ["webhooks[0].clientConfig: Required value: exactly one of url or service is required"]
        );
        let plain = messages(&hook(json!({"clientConfig": {"url": "http://h/x?a=b"}})));
        assert!(
            plain[0].contains("'https' is the only allowed URL scheme"),
            "{plain:?}"
        );
        assert!(
            plain[1].contains("query parameters are not permitted"),
            "{plain:?}"
        );
        let odd = messages(&hook(json!({"sideEffects": "Some", "timeoutSeconds": 31,
            "admissionReviewVersions": ["v2"]})));
        assert_eq!(odd.len(), 3, "{odd:?}");
        assert!(odd[0].contains("supported values: \"None\", \"NoneOnDryRun\""));
        assert!(odd[1].contains("must include at least one of v1, v1beta1"));
        assert!(odd[2].contains("between 1 and 30 seconds"));
        let rules = messages(&hook(json!({"rules": [{"operations": ["*", "PATCH"]}]})));
        assert!(
            rules
                .iter()
                .any(|m| m.contains("must not specify other operations"))
        );
        assert!(
            rules
                .iter()
                .any(|m| m.contains("rules[0].operations[1]: Unsupported value: \"PATCH\""))
        );
        assert!(
            rules
                .iter()
                .any(|m| m == "webhooks[0].rules[0].resources: Required value")
        );
        let two =
            json!({"webhooks": [hook(json!({}))["webhooks"][0], hook(json!({}))["webhooks"][0]]});
        assert_eq!(
            messages(&two),
            ["webhooks[1].name: Duplicate value: \"deny.example.com\""]
        );
    }
}
