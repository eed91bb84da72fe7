//! Request bodies: size limit, content type, and decoding to a JSON object.

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, header};
use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::Value;

use crate::proto::{self, ProtoError};

/// Largest request body accepted (upstream's limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Deepest nesting accepted in a JSON body.
const MAX_DEPTH: usize = 100;

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with 413.
pub async fn read(body: Body) -> Result<bytes::Bytes, ApiError> {
    to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        if e.to_string().contains("length limit") {
            ApiError::new(
                StatusReason::RequestEntityTooLarge,
                "Request entity too large: limit is 3145728",
            )
        } else {
            ApiError::bad_request(format!("unable to read the request body: {e}"))
        }
    })
}

/// The media type of the body, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Decodes a body that must be an object (create, update, delete options):
/// JSON, YAML or Kubernetes protobuf.
pub fn decode_object(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let value = match content_type(headers).as_str() {
        "" | "application/json" => parse_json(bytes)?,
        "application/yaml" => parse_yaml(bytes)?,
        proto::MEDIA_TYPE => proto::decode_body(bytes).map_err(|e| match e {
            ProtoError::UnknownKind { .. } => ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!("the body of the request was in an unknown format - {e}"),
            ),
            other => ApiError::bad_request(format!(
                "the body of the request could not be decoded: {other}"
            )),
        })?,
        other => {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
                ),
            ));
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(value)
}

/// Parses YAML (one document) into JSON, with the same nesting limit.
pub fn parse_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    // The YAML parser bounds alias expansion and recursion itself.
    within_depth(serde_yaml_ng::from_slice(bytes).map_err(undecodable)?)
}

/// Parses JSON with a nesting limit, as a `BadRequest` on failure.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    // serde_json itself refuses nesting past 128 levels without recursing further.
    within_depth(serde_json::from_slice(bytes).map_err(undecodable)?)
}

fn undecodable(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
}

/// Refuses a decoded body nested deeper than [`MAX_DEPTH`].
fn within_depth(value: Value) -> Result<Value, ApiError> {
    if depth(&value) > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "the body of the request is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(value)
}
