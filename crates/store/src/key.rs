//! Key and value rules shared by every backend.

use crate::error::StoreError;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 2048;

/// Largest value accepted, in bytes: 1.5 MiB, etcd's default request limit and so
/// Kubernetes' object size limit.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

fn invalid(key: &str, reason: &'static str) -> StoreError {
    let shown: String = key.chars().take(80).collect();
    StoreError::InvalidKey { key: shown, reason }
}

/// Checks a key: it must start with `/`, be at most [`MAX_KEY_BYTES`] long, and
/// hold no control characters, and it must not end with `/` (that is a prefix).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    validate_prefix(key)?;
    if key.ends_with('/') {
        return Err(invalid(key, "a key must not end with '/'"));
    }
    Ok(())
}

/// Checks a prefix for a range or a watch: the rules of [`validate_key`], except
/// that it may end with `/` (and `/` alone names every key).
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Err(invalid(prefix, "must not be empty"));
    }
    if !prefix.starts_with('/') {
        return Err(invalid(prefix, "must start with '/'"));
    }
    if prefix.len() > MAX_KEY_BYTES {
        return Err(invalid(prefix, "longer than 2048 bytes"));
    }
    if prefix.chars().any(char::is_control) {
        return Err(invalid(prefix, "must not contain control characters"));
    }
    Ok(())
}

/// Checks a value's size.
pub fn validate_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge {
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// The exclusive end of the key range `[prefix, end)` holding every key that
/// starts with `prefix`. Keys are UTF-8, which never contains the byte 0xFF, so
/// appending it bounds the range exactly.
pub fn prefix_range_end(prefix: &str) -> Vec<u8> {
    let mut end = Vec::with_capacity(prefix.len() + 1);
    end.extend_from_slice(prefix.as_bytes());
    end.push(0xFF);
    end
}

/// The first key strictly after `key`: `key` followed by a NUL byte.
pub fn key_successor(key: &str) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key.as_bytes());
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_registry_keys() {
        assert!(validate_key("/registry/pods/default/web-0").is_ok());
        assert!(validate_key("/a").is_ok());
        assert!(validate_key("/registry/ñame/日本").is_ok());
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in ["", "registry/pods", "/a\0b", "/a\nb", "/dir/"] {
            assert!(
                matches!(validate_key(bad), Err(StoreError::InvalidKey { .. })),
                "{bad:?} should be rejected"
            );
        }
        let long = format!("/{}", "x".repeat(MAX_KEY_BYTES));
        assert!(validate_key(&long).is_err());
    }

    #[test]
    fn prefixes_may_end_with_slash() {
        assert!(validate_prefix("/").is_ok());
        assert!(validate_prefix("/registry/pods/").is_ok());
        assert!(validate_prefix("").is_err());
    }

    #[test]
    fn value_limit_is_inclusive() {
        assert!(validate_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(matches!(
            validate_value(&vec![0; MAX_VALUE_BYTES + 1]),
            Err(StoreError::ValueTooLarge { .. })
        ));
    }

    #[test]
    fn prefix_end_bounds_every_extension() {
        let end = prefix_range_end("/a/");
        for key in ["/a/", "/a/b", "/a/\u{10FFFF}\u{10FFFF}"] {
            assert!(key.as_bytes() < end.as_slice(), "{key:?}");
        }
        assert!("/a0".as_bytes() > end.as_slice() || !"/a0".starts_with("/a/"));
        assert!(b"/b".as_slice() > end.as_slice());
    }
}
