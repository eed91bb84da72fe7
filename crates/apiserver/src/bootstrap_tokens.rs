//! Bootstrap token authentication: a bearer token `<id>.<secret>` stands for
//! `system:bootstrap:<id>` (in `system:bootstrappers` and the token's extra
//! groups) while the `kube-system/bootstrap-token-<id>` Secret of type
//! `bootstrap.kubernetes.io/token` holds that secret, allows authentication
//! and has not expired, as upstream's authenticator.

use base64::Engine;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::server::ApiState;

use kybern_apimachinery::bootstrap_token::{GROUP, NAMESPACE, SECRET_PREFIX, SECRET_TYPE, split};

/// A data field of a Secret, decoded.
fn field(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user `token` stands for according to `secret` (the Secret its id
/// names), if it is a live bootstrap token that allows authentication.
pub fn user_from_secret(
    token: &str,
    secret: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<UserInfo> {
    let (id, token_secret) = split(token)?;
    if secret["type"].as_str() != Some(SECRET_TYPE)
        || secret.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    let stored_id = field(secret, "token-id")?;
    let stored_secret = field(secret, "token-secret")?;
    if stored_id != id || !same(stored_secret.as_bytes(), token_secret.as_bytes()) {
        return None;
    }
    if field(secret, "usage-bootstrap-authentication").as_deref() != Some("true")
        || kybern_apimachinery::bootstrap_token::expired(
            field(secret, "expiration").as_deref(),
            now.into(),
        )
    {
        return None;
    }
    let mut groups = vec![GROUP.to_owned()];
    for g in field(secret, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        // Only groups under system:bootstrappers: may be added, as upstream
        // validates them.
        if !g.starts_with("system:bootstrappers:") {
            return None;
        }
        groups.push(g.to_owned());
    }
    groups.push("system:authenticated".to_owned());
    Some(UserInfo {
        name: format!("system:bootstrap:{id}"),
        uid: String::new(),
        groups,
    })
}

/// The user a bootstrap token stands for, reading its Secret from the
/// watch cache, or from the store when the cache has not seen it yet (a
/// token made a moment ago works at once).
pub async fn authenticate(state: &ApiState, token: &str) -> Option<UserInfo> {
    let (id, _) = split(token)?;
    let name = format!("{SECRET_PREFIX}{id}");
    let secret = state
        .cached_or_stored("", "secrets", NAMESPACE, &name)
        .await
        .ok()?;
    user_from_secret(token, &secret, chrono::Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(extra: &[(&str, &str)]) -> Value {
        let mut data = json!({
            "token-id": b64("abcdef"),
            "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-authentication": b64("true"),
        });
        for (k, v) in extra {
            data[*k] = json!(b64(v));
        }
        json!({"metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": SECRET_TYPE, "data": data})
    }

    #[test]
    fn live_tokens_authenticate_with_their_groups() {
        let now = chrono::Utc::now();
        let s = secret(&[(
            "auth-extra-groups",
            "system:bootstrappers:kybern:default-node-token",
        )]);
        let u = user_from_secret("abcdef.0123456789abcdef", &s, now).expect("user");
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            vec![
                "system:bootstrappers",
                "system:bootstrappers:kybern:default-node-token",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn wrong_expired_unusable_or_malformed_tokens_do_not() {
        let now = chrono::Utc::now();
        let s = secret(&[]);
        assert!(user_from_secret("abcdef.0123456789abcdeX", &s, now).is_none());
        assert!(user_from_secret("abcdef.0123456789abcdee", &s, now).is_none());
        assert!(user_from_secret("abcdef.0123456789", &s, now).is_none());
        assert!(user_from_secret("ABCDEF.0123456789abcdef", &s, now).is_none());
        let past = (now - chrono::Duration::hours(1)).to_rfc3339();
        assert!(
            user_from_secret(
                "abcdef.0123456789abcdef",
                &secret(&[("expiration", &past)]),
                now
            )
            .is_none()
        );
        let future = (now + chrono::Duration::hours(1)).to_rfc3339();
        assert!(
            user_from_secret(
                "abcdef.0123456789abcdef",
                &secret(&[("expiration", &future)]),
                now
            )
            .is_some()
        );
        assert!(
            user_from_secret(
                "abcdef.0123456789abcdef",
                &secret(&[("expiration", "soon")]),
                now
            )
            .is_none()
        );
        let mut no_auth = secret(&[]);
        no_auth["data"]["usage-bootstrap-authentication"] = json!(b64("false"));
        assert!(user_from_secret("abcdef.0123456789abcdef", &no_auth, now).is_none());
        let mut opaque = secret(&[]);
        opaque["type"] = json!("Opaque");
        assert!(user_from_secret("abcdef.0123456789abcdef", &opaque, now).is_none());
        let admin = secret(&[("auth-extra-groups", "system:masters")]);
        assert!(user_from_secret("abcdef.0123456789abcdef", &admin, now).is_none());
        let mut deleting = secret(&[]);
        deleting["metadata"]["deletionTimestamp"] = json!(now.to_rfc3339());
        assert!(user_from_secret("abcdef.0123456789abcdef", &deleting, now).is_none());
    }
}
