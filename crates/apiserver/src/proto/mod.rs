//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`): the `k8s\0`
//! envelope around a `runtime.Unknown`, and conversion of built-in messages
//! to and from their JSON form, driven by a generated field table.
//!
//! The server keeps JSON inside; protobuf is only a wire encoding. kubectl's
//! `create` subcommands and helm's storage send protobuf bodies and do not fall
//! back to JSON, so decoding bodies is required; encoding serves clients that
//! ask for protobuf responses.

mod decode;
mod encode;
pub mod schema;
mod special;
pub mod wire;

use serde_json::Value;

use schema::SCHEMA;
use wire::{Reader, Writer};

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The four bytes every Kubernetes protobuf body starts with.
const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be converted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The body ended inside a field.
    #[error("protobuf body is truncated")]
    Truncated,
    /// The bytes are not a valid encoding of the message.
    #[error("malformed protobuf body: {0}")]
    Malformed(&'static str),
    /// The body does not start with `k8s\0`.
    #[error("protobuf body does not start with the k8s envelope prefix")]
    NoEnvelope,
    /// No built-in message has this kind (custom resources have no protobuf form).
    #[error("no protobuf message is known for {api_version}, Kind={kind}")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
}

/// The schema's package for an apiVersion.
fn package(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("api.core.{api_version}"),
        Some(("meta.k8s.io", v)) => format!("apimachinery.pkg.apis.meta.{v}"),
        Some(("apiextensions.k8s.io", v)) => {
            format!("apiextensions_apiserver.pkg.apis.apiextensions.{v}")
        }
        Some(("apiregistration.k8s.io", v)) => {
            format!("kube_aggregator.pkg.apis.apiregistration.{v}")
        }
        Some((group, v)) => {
            let head = group.split('.').next().unwrap_or(group);
            format!("api.{head}.{v}")
        }
    }
}

/// The message index for an apiVersion and kind; the meta types (Status,
/// DeleteOptions, …) are found under any group, as upstream registers them.
pub fn message_for(api_version: &str, kind: &str) -> Option<usize> {
    SCHEMA
        .find(&format!("{}.{kind}", package(api_version)))
        .or_else(|| SCHEMA.find(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

/// Decodes an enveloped protobuf body into the object's JSON form, with its
/// `apiVersion` and `kind` from the envelope.
pub fn decode_body(bytes: &[u8]) -> Result<Value, ProtoError> {
    let inner = bytes.strip_prefix(MAGIC).ok_or(ProtoError::NoEnvelope)?;
    let mut r = Reader::new(inner);
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !r.done() {
        match r.key()? {
            (1, wire::LEN) => {
                let mut tm = Reader::new(r.bytes()?);
                while !tm.done() {
                    match tm.key()? {
                        (1, wire::LEN) => api_version = utf8(tm.bytes()?)?,
                        (2, wire::LEN) => kind = utf8(tm.bytes()?)?,
                        (_, wt) => tm.skip(wt)?,
                    }
                }
            }
            (2, wire::LEN) => raw = r.bytes()?,
            (_, wt) => r.skip(wt)?,
        }
    }
    let msg = message_for(&api_version, &kind).ok_or_else(|| ProtoError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let mut value = decode::message(msg, raw, 0)?;
    if let Value::Object(obj) = &mut value {
        obj.insert("apiVersion".into(), Value::String(api_version));
        obj.insert("kind".into(), Value::String(kind));
    }
    Ok(value)
}

/// Encodes an object (with `apiVersion` and `kind`) as an enveloped protobuf body.
pub fn encode_body(obj: &Value) -> Result<Vec<u8>, ProtoError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let msg = message_for(api_version, kind).ok_or_else(|| ProtoError::UnknownKind {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })?;
    let raw = encode::message(msg, obj, 0)?;
    let mut type_meta = Writer::default();
    type_meta.bytes(1, api_version.as_bytes());
    type_meta.bytes(2, kind.as_bytes());
    let mut w = Writer::default();
    w.buf.extend_from_slice(MAGIC);
    w.bytes(1, &type_meta.buf);
    w.bytes(2, &raw);
    Ok(w.buf)
}

fn utf8(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
}

#[cfg(test)]
mod tests;
