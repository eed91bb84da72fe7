//! Bootstrap tokens as upstream defines them: the Secret that holds one, the
//! token's shape, when it has expired, and token discovery (the signed
//! `kube-public/cluster-info` ConfigMap and the CA public-key pin a joining
//! node checks it with). The authenticator, the token cleaner, the bootstrap
//! signer and the joining agent all read them through here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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

/// The namespace of the cluster-info ConfigMap, readable by anyone.
pub const PUBLIC_NAMESPACE: &str = "kube-public";
/// The ConfigMap holding a kubeconfig (no users) that names the cluster's CA.
pub const CLUSTER_INFO: &str = "cluster-info";
/// Its key holding the kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// Its keys holding the signatures: this followed by a token id.
pub const JWS_PREFIX: &str = "jws-kubeconfig-";

/// The detached JWS (`header..signature`, HS256 keyed with the token's
/// secret, `kid` its id) over `content`, as upstream's bootstrap signer
/// writes into cluster-info: proof that whoever wrote `content` holds the
/// token, which a joining node checks before trusting the CA it names.
pub fn detached_signature(content: &str, token_id: &str, token_secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(content);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Whether `signature` is the detached JWS of `content` for the token.
pub fn signature_valid(signature: &str, content: &str, token_id: &str, token_secret: &str) -> bool {
    let Some((header, tag)) = signature.split_once("..") else {
        return false;
    };
    let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
        return false;
    };
    let payload = URL_SAFE_NO_PAD.encode(content);
    let expected = detached_signature(content, token_id, token_secret);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    // The header must be the one we sign with: no algorithm choice for an
    // attacker to play with.
    expected.split_once("..").is_some_and(|(h, _)| h == header)
        && ring::hmac::verify(&key, format!("{header}.{payload}").as_bytes(), &tag).is_ok()
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo (DER), the pin
/// `--discovery-token-ca-cert-hash` names, as kubeadm computes it.
pub fn ca_cert_hash(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("sha256:{hex}"))
}

/// The pins of every certificate in a PEM bundle.
pub fn ca_pem_hashes(pem: &str) -> Vec<String> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|block| ca_cert_hash(&block.contents))
        .collect()
}

/// Whether `pin` has the one shape upstream accepts: `sha256:` and 64 hex
/// digits.
pub fn valid_pin(pin: &str) -> bool {
    pin.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
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

    #[test]
    fn signatures_verify_only_for_their_content_and_token() {
        let sig = detached_signature("kubeconfig text", "abcdef", "0123456789abcdef");
        let (header, tag) = sig.split_once("..").expect("detached");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).expect("b64"),
            br#"{"alg":"HS256","kid":"abcdef"}"#
        );
        assert_eq!(tag.len(), 43, "a SHA-256 tag");
        assert!(signature_valid(
            &sig,
            "kubeconfig text",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!signature_valid(
            &sig,
            "kubeconfig text!",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!signature_valid(
            &sig,
            "kubeconfig text",
            "abcdef",
            "0123456789abcdeg"
        ));
        assert!(!signature_valid(
            &sig,
            "kubeconfig text",
            "abcdeg",
            "0123456789abcdef"
        ));
        let none = format!("{}..", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert!(!signature_valid(
            &none,
            "kubeconfig text",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!signature_valid(
            "garbage",
            "kubeconfig text",
            "abcdef",
            "0123456789abcdef"
        ));
    }

    #[test]
    fn garbage_has_no_ca_hash() {
        assert_eq!(ca_cert_hash(b"not a certificate"), None);
        assert!(
            ca_pem_hashes("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_empty()
        );
        assert!(valid_pin(&format!("sha256:{}", "ab".repeat(32))));
        assert!(!valid_pin(&format!("sha1:{}", "ab".repeat(32))));
        assert!(!valid_pin("sha256:abc"));
    }
}
