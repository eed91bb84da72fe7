//! The field readers and single-field checks the per-kind rule modules
//! share: typed reads of JSON fields, enumerations, port numbers and
//! names, relative paths, and upstream's common messages.

use kybern_apimachinery::Cause;
use serde_json::{Value, json};
/// `apimachinery`'s message for a negative number.
pub(crate) const NEGATIVE: &str = "must be greater than or equal to 0";
/// The message for a port number out of range.
pub(crate) const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
/// Supported port protocols, as upstream lists them (sorted).
pub(crate) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// The items of the array at `key` of `v`, if any.
pub(crate) fn items<'a>(v: Option<&'a Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    v.and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The string at `key` of `v`, if set (not null).
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `key` of `v` holds a value (not null).
pub(crate) fn set(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// An enumerated string field: when present, one of `allowed` (`path`
/// empty for a top-level field).
pub(crate) fn one_of(v: &Value, key: &str, path: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    if let Some(s) = text(v, key)
        && !allowed.contains(&s)
    {
        let field = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        causes.push(Cause::not_supported(field, &json!(s), allowed));
    }
}

/// An integer field: when present, at least 0.
pub(crate) fn non_negative(v: &Value, key: &str, path: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = v.get(key).and_then(Value::as_i64)
        && n < 0
    {
        causes.push(Cause::invalid(format!("{path}.{key}"), &json!(n), NEGATIVE));
    }
}

/// Upstream's `IsValidPortName` (an IANA service name).
pub(crate) fn port_name(name: &str) -> Vec<&'static str> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.is_empty()
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen");
    }
    errs
}

/// A port given as a number (1–65535) or a port name (`ValidatePortNumOrName`).
pub(crate) fn port_num_or_name(port: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    match port {
        Some(Value::String(s)) => {
            for msg in port_name(s) {
                causes.push(Cause::invalid(path, &json!(s), msg));
            }
        }
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                causes.push(Cause::invalid(path, &json!(n), PORT_RANGE));
            }
        }
        _ => causes.push(Cause::invalid(path, &json!(0), PORT_RANGE)),
    }
}

/// A path that stays inside its volume: relative, without `..` elements.
pub(crate) fn local_descending_path(p: &str, path: &str, causes: &mut Vec<Cause>) {
    if p.starts_with('/') {
        causes.push(Cause::invalid(path, &json!(p), "must be a relative path"));
    }
    if p.split('/').any(|e| e == "..") {
        causes.push(Cause::invalid(path, &json!(p), "must not contain '..'"));
    }
}

/// The message for a malformed CIDR.
pub(crate) const CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// A CIDR's network address and prefix length, if it is one.
pub(crate) fn cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// A field an update may not change (`ValidateImmutableField`): the value
/// at `pointer` of `obj` against the stored `old`'s, reported at `field`.
pub(crate) fn immutable(
    obj: &Value,
    old: Option<&Value>,
    pointer: &str,
    field: &str,
    causes: &mut Vec<Cause>,
) {
    let at = |v: &Value| v.pointer(pointer).filter(|x| !x.is_null()).cloned();
    if let Some(old) = old
        && at(obj) != at(old)
    {
        causes.push(Cause::invalid(
            field,
            &at(obj).unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
}

/// Causes as kubectl prints them (`field: message`), for tests.
#[cfg(test)]
pub(crate) fn cause_lines(causes: &[Cause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}
