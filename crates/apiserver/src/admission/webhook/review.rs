//! The `AdmissionReview` a webhook is sent, and what its answer means:
//! allowed (with a JSON patch, warnings and audit annotations), denied with
//! the webhook's `Status`, or a malformed answer (upstream's checks).

use base64::Engine;
use kybern_apimachinery::ApiError;
use serde_json::{Value, json};

use crate::admission::match_rules::AdmissionAttempt;
use crate::auth::UserInfo;

/// The `AdmissionReview` API group and version sent and expected back.
pub const REVIEW_GROUP: &str = "admission.k8s.io";

/// The review version to speak with a webhook: the first of its
/// `admissionReviewVersions` this server knows (both have one shape).
pub fn review_version(hook: &Value) -> &'static str {
    let first = crate::object::str_items(&hook["admissionReviewVersions"])
        .into_iter()
        .find(|v| matches!(*v, "v1" | "v1beta1"));
    match first {
        Some("v1beta1") => "v1beta1",
        _ => "v1",
    }
}

fn options(operation: &str) -> Value {
    let kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        _ => return Value::Null,
    };
    json!({"apiVersion": "meta.k8s.io/v1", "kind": kind})
}

/// The `AdmissionReview` for one call of one webhook.
pub fn request_body(version: &str, uid: &str, a: &AdmissionAttempt<'_>, user: &UserInfo) -> Value {
    let kind = json!({"group": a.group, "version": a.version, "kind": a.kind});
    let resource = json!({"group": a.group, "version": a.version, "resource": a.resource});
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "operation": a.operation,
        "userInfo": {"username": user.name, "groups": user.groups},
        "object": a.object,
        "oldObject": a.old_object,
        "dryRun": a.dry_run,
        "options": options(a.operation),
    });
    for (key, value) in [
        ("subResource", a.subresource),
        ("requestSubResource", a.subresource),
        ("name", a.name),
        ("namespace", a.namespace),
    ] {
        if !value.is_empty() {
            request[key] = json!(value);
        }
    }
    if !user.uid.is_empty() {
        request["userInfo"]["uid"] = json!(user.uid);
    }
    json!({
        "apiVersion": format!("{REVIEW_GROUP}/{version}"),
        "kind": "AdmissionReview",
        "request": request,
    })
}

/// What a webhook allowed.
#[derive(Debug, Default)]
pub struct Allowed {
    /// The JSON patch to apply to the object (mutating webhooks only).
    pub patch: Option<json_patch::Patch>,
    /// `Warning` headers to pass on.
    pub warnings: Vec<String>,
    /// Audit annotations, keys not yet prefixed with the webhook's name.
    pub audit_annotations: Vec<(String, String)>,
}

/// A webhook's verdict.
#[derive(Debug)]
pub enum Verdict {
    /// The request may go on.
    Allowed(Allowed),
    /// The request is refused with this error (upstream's `ToStatusErr`).
    Denied(Box<ApiError>),
}

/// Reads a webhook's answer to the review `uid` (sent as `version`); an
/// answer that breaks the protocol is an error, worded as upstream's
/// `received invalid webhook response: ...`.
pub fn parse_response(
    body: &[u8],
    version: &str,
    uid: &str,
    hook_name: &str,
    mutating: bool,
) -> Result<Verdict, String> {
    let invalid = |why: String| format!("received invalid webhook response: {why}");
    let review: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("couldn't decode the response: {e}")))?;
    let want = format!("{REVIEW_GROUP}/{version}");
    let (api_version, kind) = (
        review["apiVersion"].as_str().unwrap_or(""),
        review["kind"].as_str().unwrap_or(""),
    );
    if api_version != want || kind != "AdmissionReview" {
        return Err(invalid(format!(
            "expected webhook response of {want}, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        )));
    }
    let response = &review["response"];
    if !response.is_object() {
        return Err(invalid("webhook response was absent".into()));
    }
    let got_uid = response["uid"].as_str().unwrap_or("");
    if got_uid != uid {
        return Err(invalid(format!(
            "expected response.uid={uid:?}, got {got_uid:?}"
        )));
    }
    let patch = response["patch"].as_str().filter(|p| !p.is_empty());
    let patch_type = response["patchType"].as_str().filter(|p| !p.is_empty());
    let warnings = response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if response["allowed"].as_bool() != Some(true) {
        return Ok(Verdict::Denied(Box::new(denial(
            hook_name,
            &response["status"],
        ))));
    }
    let patch = match (patch, patch_type, mutating) {
        (None, None, _) => None,
        (Some(_), _, false) | (None, Some(_), false) => {
            return Err(invalid("validating webhooks may not return patches".into()));
        }
        (Some(_), None, true) => {
            return Err(invalid(
                "webhook returned response.patch but not response.patchType".into(),
            ));
        }
        (None, Some(_), true) => {
            return Err(invalid(
                "webhook returned response.patchType but not response.patch".into(),
            ));
        }
        (Some(p), Some("JSONPatch"), true) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| invalid(format!("the patch is not base64: {e}")))?;
            Some(
                serde_json::from_slice::<json_patch::Patch>(&bytes)
                    .map_err(|e| invalid(format!("the patch is not a JSON patch: {e}")))?,
            )
        }
        (Some(_), Some(t), true) => {
            return Err(invalid(format!(
                "webhook returned invalid response.patchType of {t:?}"
            )));
        }
    };
    let audit_annotations = response["auditAnnotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    Ok(Verdict::Allowed(Allowed {
        patch,
        warnings,
        audit_annotations,
    }))
}

/// Upstream's `ToStatusErr`: the webhook's `Status` with its code (at least
/// 400) and reason, and a message naming the webhook.
fn denial(hook_name: &str, status: &Value) -> ApiError {
    let denied_by = format!("admission webhook {hook_name:?} denied the request");
    let message = status["message"].as_str().filter(|m| !m.is_empty());
    let reason = status["reason"].as_str().unwrap_or("");
    let message = match (message, reason) {
        (Some(m), _) => format!("{denied_by}: {m}"),
        (None, r) if !r.is_empty() => format!("{denied_by}: {r}"),
        _ => format!("{denied_by} without explanation"),
    };
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(400);
    let mut err = ApiError::foreign(code, reason, message);
    if let Some(causes) = status.pointer("/details/causes").and_then(Value::as_array) {
        for c in causes {
            err.causes.push(kybern_apimachinery::Cause {
                reason: "",
                field: c["field"].as_str().unwrap_or("").to_owned(),
                message: c["message"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> AdmissionAttempt<'static> {
        AdmissionAttempt {
            operation: "CREATE",
            group: "",
            version: "v1",
            kind: "ConfigMap",
            resource: "configmaps",
            subresource: "",
            namespace: "dev",
            name: "cm",
            object: None,
            old_object: None,
            dry_run: true,
        }
    }

    fn answer(response: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_request_carries_what_upstream_sends() {
        let user = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into()],
        };
        let obj = json!({"metadata": {"name": "cm"}});
        let review = request_body(
            "v1",
            "u-1",
            &AdmissionAttempt {
                object: Some(&obj),
                ..attempt()
            },
            &user,
        );
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        let r = &review["request"];
        assert_eq!(r["uid"], "u-1");
        assert_eq!(
            r["resource"],
            json!({"group": "", "version": "v1", "resource": "configmaps"})
        );
        assert_eq!(r["namespace"], "dev");
        assert_eq!(r["object"], obj);
        assert_eq!(r["oldObject"], Value::Null);
        assert_eq!(r["dryRun"], true);
        assert_eq!(r["options"]["kind"], "CreateOptions");
        assert_eq!(
            r["userInfo"],
            json!({"username": "alice", "groups": ["dev"]})
        );
        assert!(r.get("subResource").is_none());
    }

    #[test]
    fn answers_are_checked_and_read() {
        let ok = answer(json!({"uid": "u", "allowed": true, "warnings": ["careful"],
            "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD
                .encode(r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#)}));
        match parse_response(&ok, "v1", "u", "m.example.com", true) {
            Ok(Verdict::Allowed(a)) => {
                assert_eq!(a.warnings, ["careful"]);
                assert_eq!(a.patch.map(|p| p.0.len()), Some(1));
            }
            other => panic!("{other:?}"),
        }
        let err = parse_response(&ok, "v1", "u", "v.example.com", false).expect_err("refused");
        assert_eq!(
            err,
            "received invalid webhook response: validating webhooks may not return patches"
        );
        let err = parse_response(&ok, "v1", "other", "m", true).expect_err("refused");
        assert!(
            err.ends_with("expected response.uid=\"other\", got \"u\""),
            "{err}"
        );
        let err = parse_response(b"{}", "v1", "u", "m", true).expect_err("refused");
        assert!(
            err.contains("expected webhook response of admission.k8s.io/v1"),
            "{err}"
        );
    }

    #[test]
    fn denials_keep_the_webhooks_status() {
        let no = answer(json!({"uid": "u", "allowed": false,
            "status": {"code": 403, "reason": "Forbidden", "message": "labels required"}}));
        let Ok(Verdict::Denied(err)) = parse_response(&no, "v1", "u", "v.example.com", false)
        else {
            panic!("not denied");
        };
        let status = err.to_status();
        assert_eq!(
            status["message"],
            "admission webhook \"v.example.com\" denied the request: labels required"
        );
        assert_eq!(
            (status["code"].as_u64(), status["reason"].as_str()),
            (Some(403), Some("Forbidden"))
        );
        let bare = answer(json!({"uid": "u", "allowed": false}));
        let Ok(Verdict::Denied(err)) = parse_response(&bare, "v1", "u", "v.example.com", false)
        else {
            panic!("not denied");
        };
        assert_eq!(err.code(), 400);
        assert_eq!(
            err.message,
            "admission webhook \"v.example.com\" denied the request without explanation"
        );
    }
}
