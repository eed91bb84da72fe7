//! Auditing: every request the policy selects becomes `audit.k8s.io/v1`
//! events (who, what, when, the decision and the outcome; at higher levels
//! the bodies) in the audit log, at upstream's stages.

pub mod log;
pub mod policy;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Map, Value, json};

pub use log::{AuditLog, LogOptions};
pub use policy::{Level, Policy, Stage};
pub use webhook::{AuditWebhook, Destination, WebhookOptions};

use crate::auth::UserInfo;
use crate::authz::Attributes;
use crate::response::ErrorResponse;
use crate::server::ApiState;

/// The audit policy and the log it writes to.
pub struct Auditor {
    policy: Policy,
    log: AuditLog,
}

/// The remote address of a connection, put in each request's extensions by
/// the TLS server (the first source IP of an event when no proxy header
/// names others).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// What later layers (authorization, admission) add to a request's event:
/// annotations and the impersonated user. A no-op when the request is not
/// audited.
#[derive(Clone, Default)]
pub struct AuditContext(Option<Arc<Mutex<Recorded>>>);

#[derive(Default)]
struct Recorded {
    annotations: Map<String, Value>,
    impersonated: Option<UserInfo>,
}

impl AuditContext {
    /// Adds an annotation to the request's event (the first value of a key wins).
    pub fn annotate(&self, key: &str, value: impl Into<String>) {
        if let Some(r) = &self.0
            && let Ok(mut r) = r.lock()
        {
            r.annotations
                .entry(key.to_owned())
                .or_insert_with(|| Value::String(value.into()));
        }
    }

    /// Records whom the request acts as, when impersonating.
    pub fn impersonated(&self, user: &UserInfo) {
        if let Some(r) = &self.0
            && let Ok(mut r) = r.lock()
        {
            r.impersonated = Some(user.clone());
        }
    }
}

/// Largest error body read for the event's `responseStatus`.
const MAX_STATUS_BYTES: usize = 64 * 1024;
/// Largest response body recorded at `RequestResponse`.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

fn user_json(user: &UserInfo) -> Value {
    let mut u = json!({ "username": user.name, "groups": user.groups });
    if !user.uid.is_empty() {
        u["uid"] = json!(user.uid);
    }
    u
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Requests whose response streams for long (upstream's long-running check):
/// they also get a `ResponseStarted` event.
fn long_running(attrs: &Attributes) -> bool {
    attrs.verb == "watch"
        || matches!(
            attrs.subresource.as_str(),
            "exec" | "attach" | "portforward" | "proxy" | "log"
        )
}

fn object_ref(attrs: &Attributes, api_version: &str) -> Option<Value> {
    if !attrs.resource_request {
        return None;
    }
    let mut r = Map::new();
    for (k, v) in [
        ("resource", &attrs.resource),
        ("namespace", &attrs.namespace),
        ("name", &attrs.name),
        ("apiGroup", &attrs.api_group),
        ("apiVersion", &api_version.to_owned()),
        ("subresource", &attrs.subresource),
    ] {
        if !v.is_empty() || k == "apiGroup" {
            r.insert(k.into(), json!(v));
        }
    }
    Some(Value::Object(r))
}

/// The IPs a request came from: proxy headers first, then the peer.
fn source_ips(req: &Request) -> Vec<String> {
    let mut ips: Vec<String> = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(ip) = req
        .headers()
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
    {
        ips.push(ip.to_owned());
    }
    if let Some(ClientAddr(addr)) = req.extensions().get::<ClientAddr>() {
        ips.push(addr.ip().to_string());
    }
    ips.dedup();
    ips
}

fn without_managed_fields(mut v: Value, omit: bool) -> Value {
    if omit {
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                if let Some(m) = item.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                }
            }
        }
    }
    v
}

/// The `responseStatus` of an event: the code, and for a `Status` body its
/// bounded fields, as upstream copies them.
fn response_status(code: StatusCode, body: Option<&Value>) -> Value {
    let mut s = json!({ "metadata": {}, "code": code.as_u16() });
    if let Some(b) = body.filter(|b| b["kind"] == "Status") {
        for k in ["status", "message", "reason", "details"] {
            if let Some(v) = b.get(k).filter(|v| !v.is_null()) {
                s[k] = v.clone();
            }
        }
    }
    s
}

/// One request's event as it is filled in.
struct Event {
    base: Value,
    omit: Vec<Stage>,
    context: Arc<Mutex<Recorded>>,
    log: AuditLog,
}

impl Event {
    fn emit(&self, stage: Stage) {
        if self.omit.contains(&stage) {
            return;
        }
        let mut ev = self.base.clone();
        ev["stage"] = json!(stage.as_str());
        ev["stageTimestamp"] = json!(now());
        if let Ok(r) = self.context.lock() {
            if let Some(u) = &r.impersonated {
                ev["impersonatedUser"] = user_json(u);
            }
            if !r.annotations.is_empty() {
                ev["annotations"] = Value::Object(r.annotations.clone());
            }
        }
        self.log.write(&ev);
    }
}

/// Writes `ResponseComplete` when a streamed response ends or its client goes.
struct CompleteOnDrop(Event);

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        self.0.emit(Stage::ResponseComplete);
    }
}

impl Auditor {
    /// An auditor writing what `policy` selects to `log`.
    pub fn new(policy: Policy, log: AuditLog) -> Self {
        Auditor { policy, log }
    }

    /// Records a request refused by authentication (upstream's
    /// failed-authentication event: no user, stage `ResponseStarted`, 401).
    pub fn failed_authentication(&self, req: &Request) {
        let attrs = crate::authz::request_attributes(req.method(), req.uri());
        let anonymous = UserInfo {
            name: String::new(),
            uid: String::new(),
            groups: Vec::new(),
        };
        let decision = self.policy.decide(&anonymous, &attrs);
        if decision.level == Level::None || decision.omit_stages.contains(&Stage::ResponseStarted) {
            return;
        }
        let mut ev = self.base_event(req, &attrs, decision.level, &anonymous);
        ev["stage"] = json!(Stage::ResponseStarted.as_str());
        ev["stageTimestamp"] = ev["requestReceivedTimestamp"].clone();
        ev["responseStatus"] = json!({
            "metadata": {},
            "code": 401,
            "message": "Authentication failed",
        });
        self.log.write(&ev);
    }

    fn base_event(
        &self,
        req: &Request,
        attrs: &Attributes,
        level: Level,
        user: &UserInfo,
    ) -> Value {
        let path = crate::request::ResourcePath::parse(req.uri().path());
        let api_version = match &path {
            Some(p) if p.group.is_empty() => p.version.clone(),
            Some(p) => format!("{}/{}", p.group, p.version),
            None => String::new(),
        };
        let mut ev = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": level.as_str(),
            "auditID": uuid::Uuid::new_v4().to_string(),
            "requestURI": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "verb": attrs.verb,
            "user": user_json(user),
            "sourceIPs": source_ips(req),
            "requestReceivedTimestamp": now(),
        });
        if let Some(ua) = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            ev["userAgent"] = json!(ua);
        }
        if let Some(r) = object_ref(attrs, &api_version) {
            ev["objectRef"] = r;
        }
        ev
    }
}

/// A write's body as JSON: an object in any media type the API takes
/// (protobuf included), or a patch as sent.
fn request_body(headers: &axum::http::HeaderMap, bytes: &[u8]) -> Option<Value> {
    if let Ok(obj) = crate::handlers::body::decode_object(headers, bytes) {
        return Some(obj);
    }
    serde_json::from_slice(bytes)
        .ok()
        .or_else(|| serde_yaml_ng::from_slice(bytes).ok())
}

/// A response body as JSON, whichever encoding was negotiated.
fn response_body(headers: &axum::http::HeaderMap, bytes: &[u8]) -> Option<Value> {
    let protobuf = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(crate::proto::MEDIA_TYPE.as_bytes())
    });
    if protobuf {
        crate::proto::decode_body(bytes).ok()
    } else {
        serde_json::from_slice(bytes).ok()
    }
}

fn carries_object(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Middleware, after authentication: writes the events of each request the
/// policy selects and sets the `Audit-Id` response header.
pub async fn audit(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(auditor) = state.audit.get() else {
        return next.run(req).await;
    };
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return next.run(req).await;
    };
    let attrs = crate::authz::request_attributes(req.method(), req.uri());
    let decision = auditor.policy.decide(&user, &attrs);
    if decision.level == Level::None {
        return next.run(req).await;
    }
    let mut base = auditor.base_event(&req, &attrs, decision.level, &user);
    let audit_id = base["auditID"].as_str().unwrap_or_default().to_owned();
    let (mut parts, body) = req.into_parts();
    // Bodies of writes are read here, within the same limit the handlers
    // apply, for the object's name and (from `Request` up) the body itself.
    let body = if carries_object(&parts.method) {
        let bytes = match crate::handlers::body::read(body).await {
            Ok(b) => b,
            Err(e) => return ErrorResponse(e).into_response(),
        };
        if let Some(obj) = request_body(&parts.headers, &bytes) {
            if let Some(r) = base.get_mut("objectRef").filter(|_| obj.is_object()) {
                for k in ["name", "namespace"] {
                    let v = &obj["metadata"][k];
                    if r.get(k).is_none() && v.as_str().is_some_and(|s| !s.is_empty()) {
                        r[k] = v.clone();
                    }
                }
            }
            if decision.level >= Level::Request {
                base["requestObject"] = without_managed_fields(obj, decision.omit_managed_fields);
            }
        }
        Body::from(bytes)
    } else {
        body
    };
    let context = Arc::new(Mutex::new(Recorded::default()));
    parts.extensions.insert(AuditContext(Some(context.clone())));
    let mut event = Event {
        base,
        omit: decision.omit_stages.clone(),
        context,
        log: auditor.log.clone(),
    };
    event.emit(Stage::RequestReceived);
    let resp = next.run(Request::from_parts(parts, body)).await;
    let (mut parts, body) = resp.into_parts();
    if let Ok(id) = HeaderValue::from_str(&audit_id) {
        parts.headers.insert("audit-id", id);
    }
    let code = parts.status;
    if long_running(&attrs) && code.is_success() || code == StatusCode::SWITCHING_PROTOCOLS {
        event.base["responseStatus"] = response_status(code, None);
        event.emit(Stage::ResponseStarted);
        let guard = CompleteOnDrop(event);
        let stream = body.into_data_stream().map(move |chunk| {
            let _ = &guard;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let keep_body = decision.level == Level::RequestResponse || !code.is_success();
    let limit = if code.is_success() {
        MAX_RESPONSE_BYTES
    } else {
        MAX_STATUS_BYTES
    };
    let (body, recorded) = if keep_body {
        match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => {
                let value = response_body(&parts.headers, &bytes);
                (Body::from(bytes), value)
            }
            Err(e) => {
                tracing::warn!(error = %e, "response too large to audit");
                event.base["responseStatus"] = response_status(code, None);
                event.emit(Stage::ResponseComplete);
                return (StatusCode::INTERNAL_SERVER_ERROR, "response too large").into_response();
            }
        }
    } else {
        (body, None)
    };
    event.base["responseStatus"] = response_status(code, recorded.as_ref());
    if decision.level == Level::RequestResponse
        && let Some(v) = recorded.filter(|v| v.is_object())
    {
        event.base["responseObject"] = without_managed_fields(v, decision.omit_managed_fields);
    }
    event.emit(Stage::ResponseComplete);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_status_copies_a_status_body() {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "pods \"x\" not found", "reason": "NotFound",
            "details": {"name": "x", "kind": "pods"}, "code": 404
        });
        let s = response_status(StatusCode::NOT_FOUND, Some(&status));
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["details"]["name"], "x");
        let s = response_status(StatusCode::OK, Some(&json!({"kind": "Pod"})));
        assert_eq!(s, json!({"metadata": {}, "code": 200}));
    }

    #[test]
    fn managed_fields_are_left_out_when_asked() {
        let obj = json!({"metadata": {"name": "a", "managedFields": [{}]}});
        assert!(
            without_managed_fields(obj.clone(), true)["metadata"]
                .get("managedFields")
                .is_none()
        );
        assert!(
            without_managed_fields(obj, false)["metadata"]
                .get("managedFields")
                .is_some()
        );
        let list = json!({"items": [{"metadata": {"managedFields": []}}]});
        assert!(
            without_managed_fields(list, true)["items"][0]["metadata"]
                .get("managedFields")
                .is_none()
        );
    }

    #[test]
    fn object_refs_name_the_resource() {
        let a = crate::authz::request_attributes(
            &Method::GET,
            &"/apis/apps/v1/namespaces/dev/deployments/web/scale"
                .parse()
                .expect("uri"),
        );
        let r = object_ref(&a, "apps/v1").expect("ref");
        assert_eq!(
            r,
            json!({"resource": "deployments", "namespace": "dev", "name": "web",
                   "apiGroup": "apps", "apiVersion": "apps/v1", "subresource": "scale"})
        );
        let a = crate::authz::request_attributes(&Method::GET, &"/version".parse().expect("uri"));
        assert!(object_ref(&a, "").is_none());
    }
}
