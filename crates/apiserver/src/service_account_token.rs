//! ServiceAccount tokens: JWTs (ES256) signed by a key the server generates
//! once, bound to a ServiceAccount and optionally a Pod or Secret,
//! time-limited, and verified on every request; plus the OIDC discovery
//! documents that publish the public key.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The issuer and default audience, as a kubeadm cluster has them.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// Reading or writing the key file.
    #[error("service account key {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The key file does not hold a P-256 PKCS#8 key.
    #[error("service account key {0}: not a P-256 PKCS#8 key")]
    BadKey(String),
}

/// What a token binds: `{"name", "uid"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundRef {
    /// Object name.
    pub name: String,
    /// Object UID.
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: BoundRef,
    /// The pod the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundRef>,
    /// The secret the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<BoundRef>,
}

/// A token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Issuer.
    pub iss: String,
    /// Token ID.
    pub jti: String,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// What the token is bound to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Signs and verifies ServiceAccount tokens.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
    /// Claims of tokens whose signature held, by token: a client sends the
    /// same token with every request, and checking its signature each time
    /// is most of what authenticating it costs. Lifetimes are checked anew.
    verified: std::sync::Mutex<std::collections::HashMap<String, Claims>>,
}

/// The most verified tokens remembered; past it the memory starts over.
const VERIFIED_MAX: usize = 4096;

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TokenSigner {
    /// Loads the key at `path`, making it (owner-readable only) if absent.
    pub fn load_or_create(path: &Path) -> Result<Self, SignerError> {
        let io = |source| SignerError::Io {
            path: path.display().to_string(),
            source,
        };
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng)
                    .map_err(|_| SignerError::BadKey(path.display().to_string()))?;
                write_private(path, doc.as_ref()).map_err(io)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let key = EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng)
            .map_err(|_| SignerError::BadKey(path.display().to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64.encode(digest.as_ref());
        Ok(TokenSigner {
            key,
            kid,
            rng,
            verified: Default::default(),
        })
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let body = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        match self.key.sign(&self.rng, body.as_bytes()) {
            Ok(sig) => format!("{body}.{}", B64.encode(sig.as_ref())),
            // Signing with a valid key does not fail; an unusable token is
            // refused at verification all the same.
            Err(_) => body,
        }
    }

    /// The claims of a token this signer made, if its signature holds and
    /// it is within its lifetime. Binding checks are the caller's.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|v| v.get(token).cloned());
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signature(token)?;
                if let Ok(mut verified) = self.verified.lock() {
                    if verified.len() >= VERIFIED_MAX {
                        verified.clear();
                    }
                    verified.insert(token.to_owned(), claims.clone());
                }
                claims
            }
        };
        let t = now();
        (claims.iss == ISSUER && claims.nbf <= t + 60 && t < claims.exp).then_some(claims)
    }

    /// The claims of a token whose signature is this signer's.
    fn verify_signature(&self, token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header["alg"] != "ES256" || header["kid"] != self.kid.as_str() {
            return None;
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let sig = B64.decode(s).ok()?;
        public.verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        serde_json::from_slice(&B64.decode(c).ok()?).ok()
    }

    /// The public key as a JWK set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let public = self.key.public_key().as_ref();
        // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
        let (x, y) = if public.len() == 65 {
            (B64.encode(&public[1..33]), B64.encode(&public[33..]))
        } else {
            (String::new(), String::new())
        };
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256",
            "alg": "ES256", "x": x, "y": y}]})
    }
}

/// The OIDC discovery document (`/.well-known/openid-configuration`).
pub fn openid_configuration() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            aud: vec![ISSUER.into()],
            exp,
            iat: now(),
            nbf: now(),
            iss: ISSUER.into(),
            jti: "j".into(),
            sub: "system:serviceaccount:ns:sa".into(),
            kubernetes: KubernetesClaim {
                namespace: "ns".into(),
                serviceaccount: BoundRef {
                    name: "sa".into(),
                    uid: "u".into(),
                },
                pod: None,
                secret: None,
            },
        }
    }

    #[test]
    fn tokens_verify_until_they_expire_or_are_altered() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sa.key");
        let signer = TokenSigner::load_or_create(&path).expect("key");
        let token = signer.sign(&claims(now() + 600));
        let got = signer.verify(&token).expect("a fresh token verifies");
        assert_eq!(got.sub, "system:serviceaccount:ns:sa");
        assert_eq!(got.kubernetes.serviceaccount.uid, "u");
        assert!(signer.verify(&signer.sign(&claims(now() - 1))).is_none());
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = claims(now() + 600);
        forged.sub = "system:serviceaccount:kube-system:admin".into();
        parts[1] = B64.encode(serde_json::to_vec(&forged).expect("json"));
        assert!(signer.verify(&parts.join(".")).is_none());
        // The same key comes back from disk; another key does not verify.
        let again = TokenSigner::load_or_create(&path).expect("reload");
        assert!(again.verify(&token).is_some());
        let other = TokenSigner::load_or_create(&dir.path().join("other.key")).expect("key");
        assert!(other.verify(&token).is_none());
        assert_eq!(again.jwks()["keys"][0]["crv"], "P-256");
        assert!(signer.verify("a.b").is_none() && signer.verify("").is_none());
    }
}
