//! API errors and the `Status` object they are sent as, with upstream's codes,
//! reasons, messages and details.

use serde_json::{Value, json};

/// Upstream's `StatusReason` values that Kybern sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusReason {
    /// 400
    BadRequest,
    /// 401
    Unauthorized,
    /// 403
    Forbidden,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 406
    NotAcceptable,
    /// 409, create of an existing object
    AlreadyExists,
    /// 409, stale update
    Conflict,
    /// 410, resource version too old
    Expired,
    /// 410, gone for another reason
    Gone,
    /// 413
    RequestEntityTooLarge,
    /// 415
    UnsupportedMediaType,
    /// 422
    Invalid,
    /// 429
    TooManyRequests,
    /// 500
    InternalError,
    /// 503
    ServiceUnavailable,
    /// 504
    Timeout,
}

impl StatusReason {
    /// The reason as it appears in `Status.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusReason::BadRequest => "BadRequest",
            StatusReason::Unauthorized => "Unauthorized",
            StatusReason::Forbidden => "Forbidden",
            StatusReason::NotFound => "NotFound",
            StatusReason::MethodNotAllowed => "MethodNotAllowed",
            StatusReason::NotAcceptable => "NotAcceptable",
            StatusReason::AlreadyExists => "AlreadyExists",
            StatusReason::Conflict => "Conflict",
            StatusReason::Expired => "Expired",
            StatusReason::Gone => "Gone",
            StatusReason::RequestEntityTooLarge => "RequestEntityTooLarge",
            StatusReason::UnsupportedMediaType => "UnsupportedMediaType",
            StatusReason::Invalid => "Invalid",
            StatusReason::TooManyRequests => "TooManyRequests",
            StatusReason::InternalError => "InternalError",
            StatusReason::ServiceUnavailable => "ServiceUnavailable",
            StatusReason::Timeout => "Timeout",
        }
    }

    /// The HTTP status code upstream sends with this reason.
    pub fn code(self) -> u16 {
        match self {
            StatusReason::BadRequest => 400,
            StatusReason::Unauthorized => 401,
            StatusReason::Forbidden => 403,
            StatusReason::NotFound => 404,
            StatusReason::MethodNotAllowed => 405,
            StatusReason::NotAcceptable => 406,
            StatusReason::AlreadyExists | StatusReason::Conflict => 409,
            StatusReason::Expired | StatusReason::Gone => 410,
            StatusReason::RequestEntityTooLarge => 413,
            StatusReason::UnsupportedMediaType => 415,
            StatusReason::Invalid => 422,
            StatusReason::TooManyRequests => 429,
            StatusReason::InternalError => 500,
            StatusReason::ServiceUnavailable => 503,
            StatusReason::Timeout => 504,
        }
    }
}

/// One field-level problem in an `Invalid` error (`details.causes[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Upstream's cause type, e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: &'static str,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
    /// The message, e.g. `Invalid value: "X": must be lowercase`.
    pub message: String,
}

/// A field's value as upstream's messages show it: strings quoted.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl Cause {
    /// `FieldValueInvalid`: the value breaks a rule.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        let shown = shown(value);
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {shown}: {}", detail.as_ref()),
        }
    }

    /// `FieldValueRequired`: the field is missing.
    pub fn required(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        let detail = detail.as_ref();
        let message = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    /// `FieldValueForbidden`: the field may not be set (or changed).
    pub fn forbidden(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {}", detail.as_ref()),
        }
    }

    /// `FieldValueNotSupported`: the value is not one of the allowed ones.
    pub fn not_supported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Self {
        let shown = shown(value);
        let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {shown}: supported values: {}",
                allowed.join(", ")
            ),
        }
    }

    /// `FieldValueNotFound`: the value names something that does not exist.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        let shown = shown(value);
        Cause {
            reason: "FieldValueNotFound",
            field: field.into(),
            message: format!("Not found: {shown}"),
        }
    }

    /// `FieldValueDuplicate`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// `FieldValueTooLong`: the value is longer than `max` bytes.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Cause {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }

    /// `FieldValueTooMany`: a list of `actual` items holds more than `max`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Cause {
            reason: "FieldValueTooMany",
            field: field.into(),
            message: format!("Too many: {actual}: must have at most {max} items"),
        }
    }

    /// `FieldValueTypeInvalid`: wrong JSON type for the field.
    pub fn type_invalid(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        Cause {
            reason: "FieldValueTypeInvalid",
            field: field.into(),
            message: format!("Invalid value: {}", detail.as_ref()),
        }
    }

    fn line(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// An error answered to an API client as a `Status` object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Machine-readable reason; fixes the HTTP code.
    pub reason: StatusReason,
    /// Human-readable message, upstream's wording.
    pub message: String,
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind` (upstream puts the resource plural here for most errors
    /// and the Kind for `Invalid`).
    pub kind: Option<String>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
    /// `details.retryAfterSeconds`.
    pub retry_after_seconds: Option<u32>,
    /// A code and reason another party chose (an admission webhook's
    /// `Status`), sent instead of `reason`'s.
    pub foreign: Option<ForeignStatus>,
}

/// The code and reason of a `Status` that came from outside the server: an
/// admission webhook may answer with any code of 400 or more and any reason
/// (or none), and upstream passes them through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignStatus {
    /// HTTP status code.
    pub code: u16,
    /// `reason`, left out of the `Status` when empty.
    pub reason: String,
}

impl ApiError {
    /// The 404 for a URL that names no resource, subresource or API:
    /// upstream's message, with empty `details`.
    pub fn no_such_path() -> Self {
        let mut err = ApiError::new(
            StatusReason::NotFound,
            "the server could not find the requested resource",
        );
        err.kind = Some(String::new());
        err
    }

    /// An error with a reason and message and no details.
    pub fn new(reason: StatusReason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            name: None,
            group: None,
            kind: None,
            causes: Vec::new(),
            retry_after_seconds: None,
            foreign: None,
        }
    }

    /// An error carrying another party's code and reason (an admission
    /// webhook's `Status`); `reason` is the nearest known reason, for the
    /// server's own decisions about the error.
    pub fn foreign(code: u16, reason: impl Into<String>, message: impl Into<String>) -> Self {
        let known = match code {
            401 => StatusReason::Unauthorized,
            403 => StatusReason::Forbidden,
            404 => StatusReason::NotFound,
            405 => StatusReason::MethodNotAllowed,
            406 => StatusReason::NotAcceptable,
            409 => StatusReason::Conflict,
            410 => StatusReason::Gone,
            413 => StatusReason::RequestEntityTooLarge,
            415 => StatusReason::UnsupportedMediaType,
            422 => StatusReason::Invalid,
            429 => StatusReason::TooManyRequests,
            503 => StatusReason::ServiceUnavailable,
            504 => StatusReason::Timeout,
            500..=599 => StatusReason::InternalError,
            _ => StatusReason::BadRequest,
        };
        let mut err = ApiError::new(known, message);
        err.foreign = Some(ForeignStatus {
            code,
            reason: reason.into(),
        });
        err
    }

    fn qualified(resource: &str, group: &str) -> String {
        if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        if !group.is_empty() {
            self.group = Some(group.to_owned());
        }
        self.kind = Some(kind.to_owned());
        if !name.is_empty() {
            self.name = Some(name.to_owned());
        }
        self
    }

    /// 404: `configmaps "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} {name:?} not found", Self::qualified(resource, group));
        ApiError::new(StatusReason::NotFound, msg).with_details(group, resource, name)
    }

    /// 409: `configmaps "x" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!(
            "{} {name:?} already exists",
            Self::qualified(resource, group)
        );
        ApiError::new(StatusReason::AlreadyExists, msg).with_details(group, resource, name)
    }

    /// 409: the object was modified since the client read it.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            Self::qualified(resource, group)
        );
        ApiError::new(StatusReason::Conflict, msg).with_details(group, resource, name)
    }

    /// 409 for a stale `resourceVersion`, with upstream's wording.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: `ConfigMap "x" is invalid: [field: message, ...]`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let lines: Vec<String> = causes.iter().map(Cause::line).collect();
        let joined = match lines.len() {
            0 => String::new(),
            1 => lines[0].clone(),
            _ => format!("[{}]", lines.join(", ")),
        };
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let msg = format!("{qualified} {name:?} is invalid: {joined}");
        let mut err = ApiError::new(StatusReason::Invalid, msg).with_details(group, kind, name);
        err.causes = causes;
        err
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusReason::BadRequest, message)
    }

    /// 405: the verb is not supported on this resource.
    pub fn method_not_allowed(verb: &str, group: &str, resource: &str) -> Self {
        let msg = format!(
            "{verb} is not supported on resources of kind {:?}",
            Self::qualified(resource, group)
        );
        ApiError::new(StatusReason::MethodNotAllowed, msg)
    }

    /// 410 Expired: the requested resource version was compacted away.
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(StatusReason::Expired, message)
    }

    /// 500 with upstream's prefix.
    pub fn internal(message: impl AsRef<str>) -> Self {
        let mut err = ApiError::new(
            StatusReason::InternalError,
            format!("Internal error occurred: {}", message.as_ref()),
        );
        err.causes.push(Cause {
            reason: "",
            field: String::new(),
            message: message.as_ref().to_owned(),
        });
        err
    }

    /// 503, retry after a second.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut err = ApiError::new(StatusReason::ServiceUnavailable, message);
        err.retry_after_seconds = Some(1);
        err
    }

    /// 403 with a message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusReason::Forbidden, message)
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match &self.foreign {
            Some(f) => f.code,
            None => self.reason.code(),
        }
    }

    /// The `Status` object (`kind: Status`, `apiVersion: v1`).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code(),
        });
        if let Some(f) = &self.foreign
            && let Some(m) = status.as_object_mut()
        {
            match f.reason.as_str() {
                "" => m.remove("reason"),
                r => m.insert("reason".into(), json!(r)),
            };
        }
        // As upstream's `StatusDetails`: empty fields are left out, but a
        // named field makes the (possibly empty) `details` present, which
        // clients such as `kubectl debug` read without checking for null.
        let mut details = serde_json::Map::new();
        let mut has_details = false;
        for (key, field) in [
            ("name", &self.name),
            ("group", &self.group),
            ("kind", &self.kind),
        ] {
            if let Some(v) = field {
                has_details = true;
                if !v.is_empty() {
                    details.insert(key.into(), json!(v));
                }
            }
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    if !c.reason.is_empty() {
                        m.insert("reason".into(), json!(c.reason));
                    }
                    m.insert("message".into(), json!(c.message));
                    if !c.field.is_empty() {
                        m.insert("field".into(), json!(c.field));
                    }
                    Value::Object(m)
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(secs) = self.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(secs));
        }
        if has_details || !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The `Status` a successful delete of an object returns when no object is
/// returned (e.g. for `deletecollection` with no body).
pub fn success_status(details: Option<Value>) -> Value {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_upstream() {
        let s = ApiError::not_found("", "configmaps", "x").to_status();
        assert_eq!(s["message"], "configmaps \"x\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"], json!({"name": "x", "kind": "configmaps"}));
        let s = ApiError::not_found("apps", "deployments", "web").to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_each_cause() {
        let causes = vec![
            Cause::invalid("metadata.name", &json!("Bad"), "must be lowercase"),
            Cause::required("data", ""),
        ];
        let s = ApiError::invalid("", "ConfigMap", "Bad", causes).to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "ConfigMap \"Bad\" is invalid: [metadata.name: Invalid value: \"Bad\": must be lowercase, data: Required value]"
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(s["details"]["kind"], "ConfigMap");
    }

    #[test]
    fn conflict_wording() {
        let s = ApiError::stale("", "configmaps", "x").to_status();
        assert_eq!(
            s["message"],
            "Operation cannot be fulfilled on configmaps \"x\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(
            (s["code"].as_u64(), s["reason"].as_str()),
            (Some(409), Some("Conflict"))
        );
    }

    #[test]
    fn foreign_status_keeps_its_code_and_reason() {
        let s = ApiError::foreign(418, "", "no tea").to_status();
        assert_eq!(s["code"], 418);
        assert!(s.get("reason").is_none(), "{s}");
        let e = ApiError::foreign(403, "Forbidden", "no");
        assert_eq!(e.reason, StatusReason::Forbidden);
        assert_eq!(e.to_status()["reason"], "Forbidden");
        assert_eq!(
            ApiError::foreign(429, "Busy", "x").to_status()["reason"],
            "Busy"
        );
    }
}
