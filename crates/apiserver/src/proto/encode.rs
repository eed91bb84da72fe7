//! JSON to protobuf: writes an object's fields by the schema, as upstream's
//! generated marshallers would for the same Go struct.

use base64::Engine as _;
use serde_json::Value;

use super::ProtoError;
use super::schema::{Card, SCHEMA, Type};
use super::special;
use super::wire::{self, Writer};

/// Nesting limit, as for decoding.
const MAX_DEPTH: usize = 100;

fn bad() -> ProtoError {
    ProtoError::Malformed("value does not fit its protobuf type")
}

/// Encodes `v` as message `msg`.
pub fn message(msg: usize, v: &Value, depth: usize) -> Result<Vec<u8>, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::Malformed("nested too deeply"));
    }
    let m = SCHEMA
        .messages
        .get(msg)
        .ok_or(ProtoError::Malformed("unknown message"))?;
    let mut w = Writer::default();
    if let Some(s) = m.special {
        special::encode(s, m, v, &mut w, depth)?;
        return Ok(w.buf);
    }
    let Value::Object(obj) = v else {
        return Err(bad());
    };
    for field in &m.fields {
        let value = match &field.json {
            Some(name) => match obj.get(name.as_ref()) {
                None | Some(Value::Null) => continue,
                Some(v) => v,
            },
            // An inline struct reads its fields from this same object.
            None => v,
        };
        match field.card {
            Card::One => scalar(&mut w, field.tag, field.ty, value, depth)?,
            Card::Repeated => {
                for item in value.as_array().ok_or_else(bad)? {
                    scalar(&mut w, field.tag, field.ty, item, depth)?;
                }
            }
            Card::Map => {
                for (k, item) in value.as_object().ok_or_else(bad)? {
                    let mut entry = Writer::default();
                    entry.bytes(1, k.as_bytes());
                    if !item.is_null() {
                        scalar(&mut entry, 2, field.ty, item, depth)?;
                    }
                    w.bytes(field.tag, &entry.buf);
                }
            }
        }
    }
    Ok(w.buf)
}

fn scalar(w: &mut Writer, tag: u32, ty: Type, v: &Value, depth: usize) -> Result<(), ProtoError> {
    match ty {
        Type::String => w.bytes(tag, v.as_str().ok_or_else(bad)?.as_bytes()),
        Type::Bytes => {
            let text = v.as_str().ok_or_else(bad)?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| bad())?;
            w.bytes(tag, &raw);
        }
        Type::Bool => {
            w.key(tag, wire::VARINT);
            w.varint(u64::from(v.as_bool().ok_or_else(bad)?));
        }
        Type::Int32 | Type::Int64 => {
            let n = v
                .as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .ok_or_else(bad)?;
            w.key(tag, wire::VARINT);
            w.varint(n as u64);
        }
        Type::Double => w.double(tag, v.as_f64().ok_or_else(bad)?),
        Type::Message(m) => {
            let inner = message(m, v, depth + 1)?;
            w.bytes(tag, &inner);
        }
    }
    Ok(())
}
