//! Messages whose JSON form is not an object of their fields: times,
//! quantities, int-or-string, raw JSON, durations, the JSON-schema unions and
//! Go named slices. Both directions live here, read and written by field number.

use chrono::{DateTime, SecondsFormat};
use kybern_apimachinery::go_text::parse_duration as parse_go_duration;
use serde_json::{Number, Value};

use super::schema::{Message, Special, Type};
use super::wire::{self, Reader, Writer};
use super::{ProtoError, decode, encode};

/// Seconds of Go's zero `time.Time`, which some encoders send for "unset".
const GO_ZERO_SECONDS: i64 = -62_135_596_800;

fn message_of(m: &Message, tag: u32) -> Option<usize> {
    match m.field(tag)?.ty {
        Type::Message(i) => Some(i),
        _ => None,
    }
}

fn string(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
}

/// Decodes a special message to its JSON form.
pub fn decode(s: Special, m: &Message, buf: &[u8], depth: usize) -> Result<Value, ProtoError> {
    let mut r = Reader::new(buf);
    let mut ints = [0i64; 4];
    let mut text: Option<String> = None;
    let mut raw: Option<&[u8]> = None;
    let mut schema: Option<Value> = None;
    let mut list: Vec<Value> = Vec::new();
    while !r.done() {
        let (tag, wt) = r.key()?;
        match (s, tag, wt) {
            (Special::Quantity, 1, wire::LEN) | (Special::IntOrString, 3, wire::LEN) => {
                text = Some(string(r.bytes()?)?);
            }
            (Special::RawJson, 1, wire::LEN) => raw = Some(r.bytes()?),
            (
                Special::SchemaOrBool | Special::SchemaOrArray | Special::SchemaOrStringArray,
                _,
                wire::LEN,
            ) if (s == Special::SchemaOrBool && tag == 2)
                || (s != Special::SchemaOrBool && tag == 1) =>
            {
                let target = message_of(m, tag).ok_or(ProtoError::Malformed("schema field"))?;
                schema = Some(decode::message(target, r.bytes()?, depth + 1)?);
            }
            (Special::SchemaOrArray, 2, wire::LEN) => {
                let target = message_of(m, 2).ok_or(ProtoError::Malformed("schema field"))?;
                list.push(decode::message(target, r.bytes()?, depth + 1)?);
            }
            (Special::SchemaOrStringArray | Special::Wrapper, _, wire::LEN)
                if tag == if s == Special::Wrapper { 1 } else { 2 } =>
            {
                list.push(Value::String(string(r.bytes()?)?));
            }
            (_, 1..=3, wire::VARINT) => ints[tag as usize] = r.varint()? as i64,
            _ => r.skip(wt)?,
        }
    }
    Ok(match s {
        Special::Time | Special::MicroTime => {
            let (secs, nanos) = (ints[1], ints[2]);
            if (secs == 0 && nanos == 0) || secs == GO_ZERO_SECONDS {
                return Ok(Value::Null);
            }
            let t = DateTime::from_timestamp(secs, nanos as u32)
                .ok_or(ProtoError::Malformed("time out of range"))?;
            let fmt = if s == Special::Time {
                SecondsFormat::Secs
            } else {
                SecondsFormat::Micros
            };
            Value::String(t.to_rfc3339_opts(fmt, true))
        }
        Special::Quantity => Value::String(text.unwrap_or_default()),
        Special::IntOrString => {
            if ints[1] == 1 {
                Value::String(text.unwrap_or_default())
            } else {
                Value::Number(Number::from(ints[2] as i32))
            }
        }
        Special::RawJson => match raw {
            None | Some([]) => Value::Null,
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|_| ProtoError::Malformed("raw field is not JSON"))?,
        },
        Special::Duration => Value::String(go_duration(ints[1])),
        Special::SchemaOrBool => schema.unwrap_or(Value::Bool(ints[1] != 0)),
        Special::SchemaOrArray => {
            if list.is_empty() {
                schema.unwrap_or(Value::Null)
            } else {
                Value::Array(list)
            }
        }
        Special::SchemaOrStringArray => schema.unwrap_or(Value::Array(list)),
        Special::Wrapper => Value::Array(list),
    })
}

/// Encodes the JSON form of a special message.
pub fn encode(
    s: Special,
    m: &Message,
    v: &Value,
    w: &mut Writer,
    depth: usize,
) -> Result<(), ProtoError> {
    let bad = || ProtoError::Malformed("value does not fit its protobuf type");
    match s {
        Special::Time | Special::MicroTime => {
            let text = v.as_str().ok_or_else(bad)?;
            let t = DateTime::parse_from_rfc3339(text).map_err(|_| bad())?;
            w.key(1, wire::VARINT);
            w.varint(t.timestamp() as u64);
            if t.timestamp_subsec_nanos() != 0 {
                w.key(2, wire::VARINT);
                w.varint(u64::from(t.timestamp_subsec_nanos()));
            }
        }
        Special::Quantity => match v {
            Value::String(text) => w.bytes(1, text.as_bytes()),
            Value::Number(n) => w.bytes(1, n.to_string().as_bytes()),
            _ => return Err(bad()),
        },
        Special::IntOrString => match v {
            Value::Number(n) => {
                w.key(1, wire::VARINT);
                w.varint(0);
                w.key(2, wire::VARINT);
                w.varint(n.as_i64().ok_or_else(bad)? as u64);
            }
            Value::String(text) => {
                w.key(1, wire::VARINT);
                w.varint(1);
                w.bytes(3, text.as_bytes());
            }
            _ => return Err(bad()),
        },
        Special::RawJson => {
            let bytes = serde_json::to_vec(v).map_err(|_| bad())?;
            w.bytes(1, &bytes);
        }
        Special::Duration => {
            let nanos = parse_go_duration(v.as_str().ok_or_else(bad)?).ok_or_else(bad)?;
            w.key(1, wire::VARINT);
            w.varint(nanos as u64);
        }
        Special::SchemaOrBool => match v {
            Value::Bool(b) => {
                w.key(1, wire::VARINT);
                w.varint(u64::from(*b));
            }
            _ => {
                w.key(1, wire::VARINT);
                w.varint(1);
                let target = message_of(m, 2).ok_or_else(bad)?;
                w.bytes(2, &encode::message(target, v, depth + 1)?);
            }
        },
        Special::SchemaOrArray => match v {
            Value::Array(items) => {
                let target = message_of(m, 2).ok_or_else(bad)?;
                for item in items {
                    w.bytes(2, &encode::message(target, item, depth + 1)?);
                }
            }
            _ => {
                let target = message_of(m, 1).ok_or_else(bad)?;
                w.bytes(1, &encode::message(target, v, depth + 1)?);
            }
        },
        Special::SchemaOrStringArray | Special::Wrapper => match v {
            Value::Array(items) => {
                let tag = if s == Special::Wrapper { 1 } else { 2 };
                for item in items {
                    w.bytes(tag, item.as_str().ok_or_else(bad)?.as_bytes());
                }
            }
            _ if s == Special::SchemaOrStringArray => {
                let target = message_of(m, 1).ok_or_else(bad)?;
                w.bytes(1, &encode::message(target, v, depth + 1)?);
            }
            _ => return Err(bad()),
        },
    }
    Ok(())
}

/// Formats nanoseconds as Go's `time.Duration.String` does (`1h2m3.5s`).
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = match n {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", trim_fraction(n, div));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let secs = trim_fraction(rest, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

fn trim_fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(-90_000_000_000), "-1m30s");
        for d in ["1h2m3s", "1.5s", "300ms", "-1m30s", "0s"] {
            assert_eq!(parse_go_duration(d).map(go_duration).as_deref(), Some(d));
        }
        assert_eq!(parse_go_duration("bogus"), None);
    }
}
