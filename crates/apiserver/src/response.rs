//! Turning results into HTTP responses: JSON objects and `Status` errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kybern_apimachinery::ApiError;
use serde_json::Value;

/// A JSON response with a status code.
pub fn json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON response with a status code, from JSON already encoded.
pub fn json_bytes(status: StatusCode, body: bytes::Bytes) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An API error, answered as a `Status` object.
#[derive(Debug)]
pub struct ErrorResponse(pub ApiError);

impl From<ApiError> for ErrorResponse {
    fn from(e: ApiError) -> Self {
        ErrorResponse(e)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if code.is_server_error() {
            tracing::warn!(code = code.as_u16(), message = %self.0.message, "request failed");
        }
        let mut resp = json(code, &self.0.to_status());
        if let Some(secs) = self.0.retry_after_seconds
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// The result of a handler.
pub type ApiResult = Result<Response, ErrorResponse>;

/// When the client's first choice is protobuf (client-go's typed clients
/// send `application/vnd.kubernetes.protobuf,application/json`), the kind the
/// body must have to be sent so: any (`None`) for a plain entry, or the
/// metadata-only kind its `as=` names (client-go's metadata client). Tables
/// stay JSON.
fn protobuf_choice(headers: &axum::http::HeaderMap) -> Option<Option<&'static str>> {
    let first = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())?;
    let mut parts = first.split(';').map(str::trim);
    if parts.next() != Some(crate::proto::MEDIA_TYPE) {
        return None;
    }
    let as_kind = parts.find_map(|p| p.strip_prefix("as="));
    match as_kind {
        None => Some(None),
        Some("PartialObjectMetadata") => Some(Some("PartialObjectMetadata")),
        Some("PartialObjectMetadataList") => Some(Some("PartialObjectMetadataList")),
        Some(_) => None,
    }
}

/// Largest JSON response re-encoded as protobuf (lists beyond it stay JSON,
/// which the client accepts too).
const MAX_REENCODE_BYTES: usize = 256 * 1024 * 1024;

/// Middleware: answers in protobuf when the client prefers it and the object is
/// a built-in kind; everything else (watch streams, tables, custom resources,
/// discovery) stays JSON, which such clients also accept.
pub async fn negotiate(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // Watch streams stay JSON (their Accept lists JSON too): re-encoding needs
    // the whole body, and a watch body never ends.
    let watch = crate::request::Query::parse(request.uri().query()).flag("watch");
    let protobuf = protobuf_choice(request.headers()).filter(|_| !watch);
    let resp = next.run(request).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let Some(kind) = protobuf.filter(|_| is_json) else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REENCODE_BYTES).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response too large").into_response();
    };
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(|v| kind.is_none_or(|k| v["kind"] == k))
        .and_then(|v| crate::proto::encode_body(&v).ok());
    match encoded {
        Some(pb) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::proto::MEDIA_TYPE),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(pb))
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}
