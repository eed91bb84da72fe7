//! Bootstrap tokens as upstream defines them: the Secret that holds one, the
//! token's shape, and when it has expired. The authenticator and the token
//! cleaner both read them through here.

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The namespace their Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// The name of a token's Secret is this followed by its id.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The group every bootstrap token is in.
pub const GROUP: &str = "system:bootstrappers";

/// `<id>.<secret>`: six and sixteen of `[a-z0-9]`.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Whether a token whose Secret says `expiration` (RFC 3339, decoded) has
/// expired at `now`; an unreadable expiration counts as expired, as upstream.
pub fn expired(expiration: Option<&str>, now: std::time::SystemTime) -> bool {
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    match expiration {
        None => false,
        Some(at) => chrono::DateTime::parse_from_rfc3339(at).map_or(true, |at| at <= now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_upstream_s_shape_and_expire() {
        assert_eq!(
            split("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
        let now = std::time::SystemTime::now();
        assert!(!expired(None, now));
        assert!(expired(Some("2020-01-01T00:00:00Z"), now));
        assert!(!expired(Some("2999-01-01T00:00:00Z"), now));
        assert!(expired(Some("tomorrow"), now));
    }
}
