//! Protobuf to JSON: walks a message by the schema and builds the object
//! upstream's JSON encoding of the same Go struct would be.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::ProtoError;
use super::schema::{Card, Field, SCHEMA, Type};
use super::special;
use super::wire::{self, Reader};

/// Nesting limit, as for JSON bodies.
const MAX_DEPTH: usize = 100;

/// Decodes `buf` as message `msg` into its JSON form.
pub fn message(msg: usize, buf: &[u8], depth: usize) -> Result<Value, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::Malformed("nested too deeply"));
    }
    let m = SCHEMA
        .messages
        .get(msg)
        .ok_or(ProtoError::Malformed("unknown message"))?;
    if let Some(s) = m.special {
        return special::decode(s, m, buf, depth);
    }
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (tag, wt) = r.key()?;
        let Some(field) = m.field(tag) else {
            r.skip(wt)?;
            continue;
        };
        match field.card {
            Card::One => {
                let v = value(field.ty, &mut r, wt, depth)?;
                // Go encodes unset non-pointer strings and times; its JSON omits them.
                if v.is_null() || v.as_str() == Some("") {
                    continue;
                }
                match &field.json {
                    Some(name) => {
                        out.insert(name.to_string(), v);
                    }
                    // An inline struct: its fields are ours.
                    None => {
                        if let Value::Object(inner) = v {
                            out.extend(inner);
                        }
                    }
                }
            }
            Card::Repeated => {
                let name = field.json.as_deref().unwrap_or("items").to_string();
                let slot = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = slot else {
                    return Err(ProtoError::Malformed("field repeated and single"));
                };
                if wt == wire::LEN && is_packable(field.ty) {
                    let packed = r.bytes()?;
                    let mut pr = Reader::new(packed);
                    let scalar_wt = if field.ty == Type::Double {
                        wire::FIXED64
                    } else {
                        wire::VARINT
                    };
                    while !pr.done() {
                        list.push(value(field.ty, &mut pr, scalar_wt, depth)?);
                    }
                } else {
                    list.push(value(field.ty, &mut r, wt, depth)?);
                }
            }
            Card::Map => {
                let (k, v) = map_entry(field, r.bytes()?, depth)?;
                let name = field.json.as_deref().unwrap_or("").to_string();
                let slot = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = slot {
                    map.insert(k, v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

fn is_packable(ty: Type) -> bool {
    matches!(ty, Type::Bool | Type::Int32 | Type::Int64 | Type::Double)
}

fn map_entry(field: &Field, buf: &[u8], depth: usize) -> Result<(String, Value), ProtoError> {
    let mut r = Reader::new(buf);
    let mut key = String::new();
    let mut val = None;
    while !r.done() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => key = string(r.bytes()?)?,
            2 => val = Some(value(field.ty, &mut r, wt, depth)?),
            _ => r.skip(wt)?,
        }
    }
    let val = match val {
        Some(v) => v,
        // A missing value is the type's zero value.
        None => match field.ty {
            Type::String | Type::Bytes => Value::String(String::new()),
            Type::Message(m) => message(m, &[], depth + 1)?,
            _ => Value::Null,
        },
    };
    Ok((key, val))
}

fn string(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
}

fn expect(wt: u8, want: u8) -> Result<(), ProtoError> {
    if wt == want {
        Ok(())
    } else {
        Err(ProtoError::Malformed("wire type does not match the field"))
    }
}

fn value(ty: Type, r: &mut Reader<'_>, wt: u8, depth: usize) -> Result<Value, ProtoError> {
    Ok(match ty {
        Type::String => {
            expect(wt, wire::LEN)?;
            Value::String(string(r.bytes()?)?)
        }
        Type::Bytes => {
            expect(wt, wire::LEN)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
        }
        Type::Bool => {
            expect(wt, wire::VARINT)?;
            Value::Bool(r.varint()? != 0)
        }
        // int32 travels sign-extended to 64 bits.
        Type::Int32 => {
            expect(wt, wire::VARINT)?;
            Value::Number(Number::from(r.varint()? as i64 as i32))
        }
        Type::Int64 => {
            expect(wt, wire::VARINT)?;
            Value::Number(Number::from(r.varint()? as i64))
        }
        Type::Double => {
            expect(wt, wire::FIXED64)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(r.fixed(8)?);
            Number::from_f64(f64::from_le_bytes(b)).map_or(Value::Null, Value::Number)
        }
        Type::Message(m) => {
            expect(wt, wire::LEN)?;
            message(m, r.bytes()?, depth + 1)?
        }
    })
}
