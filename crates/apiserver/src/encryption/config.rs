//! Reading an `EncryptionConfiguration` and sealing and opening values
//! with its providers, in upstream's stored formats
//! (`k8s:enc:aesgcm:v1:<key name>:<12-byte nonce><ciphertext and tag>`, the
//! store key as authenticated data; `k8s:enc:secretbox:v1:<key name>:<24-byte
//! nonce><tag and ciphertext>`, NaCl's layout).

use std::path::Path;

use base64::Engine;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// Why a configuration cannot be used, or a value cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The file could not be read or parsed.
    #[error("encryption configuration: {0}")]
    Config(String),
    /// A stored value names no key or provider this configuration has.
    #[error("no provider of the encryption configuration can read {0}")]
    NoProvider(String),
    /// A sealed value failed to open (wrong key, or tampered with).
    #[error("decrypting {0} failed")]
    Open(String),
    /// Sealing failed (the system's random source).
    #[error("encrypting {0} failed")]
    Seal(String),
}

#[derive(Deserialize)]
struct File {
    kind: Option<String>,
    #[serde(default)]
    resources: Vec<ResourceEntry>,
}

#[derive(Deserialize)]
struct ResourceEntry {
    resources: Vec<String>,
    providers: Vec<ProviderEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderEntry {
    aesgcm: Option<KeysEntry>,
    identity: Option<serde_yaml_ng::Value>,
    aescbc: Option<serde_yaml_ng::Value>,
    secretbox: Option<KeysEntry>,
    kms: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
struct KeysEntry {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    name: String,
    secret: String,
}

/// One key of a sealing provider.
enum Cipher {
    /// AES-GCM (128 or 256 bit), the store key as authenticated data.
    AesGcm(Box<LessSafeKey>),
    /// NaCl secretbox (XSalsa20-Poly1305); upstream binds no data to it.
    SecretBox(XSalsa20Poly1305),
}

/// Nonce length of secretbox.
const SECRETBOX_NONCE_LEN: usize = 24;
/// Tag length of secretbox.
const SECRETBOX_TAG_LEN: usize = 16;

impl Cipher {
    /// The provider name in the stored prefix.
    fn kind(&self) -> &'static str {
        match self {
            Cipher::AesGcm(_) => "aesgcm",
            Cipher::SecretBox(_) => "secretbox",
        }
    }

    /// `<nonce><sealed>` for `plain` stored under `key`.
    fn seal(&self, random: &SystemRandom, key: &str, plain: &[u8]) -> Option<Vec<u8>> {
        match self {
            Cipher::AesGcm(k) => {
                let mut nonce = [0u8; NONCE_LEN];
                random.fill(&mut nonce).ok()?;
                let mut body = plain.to_vec();
                k.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key.as_bytes()),
                    &mut body,
                )
                .ok()?;
                Some([&nonce[..], &body].concat())
            }
            Cipher::SecretBox(k) => {
                let mut nonce = [0u8; SECRETBOX_NONCE_LEN];
                random.fill(&mut nonce).ok()?;
                let mut body = plain.to_vec();
                let tag = k
                    .encrypt_in_place_detached(&nonce.into(), b"", &mut body)
                    .ok()?;
                Some([&nonce[..], tag.as_slice(), &body].concat())
            }
        }
    }

    /// The plain bytes of `<nonce><sealed>` stored under `key`.
    fn open(&self, key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        match self {
            Cipher::AesGcm(k) => {
                let nonce: [u8; NONCE_LEN] = sealed.get(..NONCE_LEN)?.try_into().ok()?;
                let mut body = sealed[NONCE_LEN..].to_vec();
                let plain = k
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(key.as_bytes()),
                        &mut body,
                    )
                    .ok()?;
                Some(plain.to_vec())
            }
            Cipher::SecretBox(k) => {
                let head = SECRETBOX_NONCE_LEN + SECRETBOX_TAG_LEN;
                let nonce: [u8; SECRETBOX_NONCE_LEN] =
                    sealed.get(..SECRETBOX_NONCE_LEN)?.try_into().ok()?;
                let tag: [u8; SECRETBOX_TAG_LEN] =
                    sealed.get(SECRETBOX_NONCE_LEN..head)?.try_into().ok()?;
                let mut body = sealed[head..].to_vec();
                k.decrypt_in_place_detached(&nonce.into(), b"", &mut body, &tag.into())
                    .ok()?;
                Some(body)
            }
        }
    }
}

/// One provider of a resource rule.
enum Provider {
    /// Named keys of one cipher, the first of which seals.
    Keys(Vec<(String, Cipher)>),
    /// Plain bytes, unsealed.
    Identity,
}

/// One rule: the resources it covers and their providers in order.
struct Rule {
    /// `plural` (core), `plural.group`, `*.group`, `*.` (all core) or `*.*`.
    resources: Vec<String>,
    providers: Vec<Provider>,
}

/// A loaded `EncryptionConfiguration`.
pub struct EncryptionConfig {
    rules: Vec<Rule>,
    random: SystemRandom,
}

const PREFIX: &str = "k8s:enc:";

fn config_err(why: impl std::fmt::Display) -> EncryptionError {
    EncryptionError::Config(why.to_string())
}

impl EncryptionConfig {
    /// Reads a configuration file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Self, EncryptionError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_err(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses a configuration; refuses providers this server cannot use,
    /// rather than storing plain what the user asked to be sealed.
    pub fn parse(text: &str) -> Result<Self, EncryptionError> {
        let file: File = serde_yaml_ng::from_str(text).map_err(config_err)?;
        if file.kind.as_deref() != Some("EncryptionConfiguration") {
            return Err(config_err("kind must be EncryptionConfiguration"));
        }
        let mut rules = Vec::new();
        for entry in file.resources {
            let mut providers = Vec::new();
            for p in entry.providers {
                providers.push(Self::provider(p)?);
            }
            if providers.is_empty() {
                return Err(config_err("a resource rule needs at least one provider"));
            }
            rules.push(Rule {
                resources: entry.resources,
                providers,
            });
        }
        Ok(EncryptionConfig {
            rules,
            random: SystemRandom::new(),
        })
    }

    fn provider(p: ProviderEntry) -> Result<Provider, EncryptionError> {
        if let Some(aes) = p.aesgcm {
            return Self::keys(aes, |name, secret| {
                let algorithm = match secret.len() {
                    16 => &AES_128_GCM,
                    32 => &AES_256_GCM,
                    n => {
                        return Err(config_err(format!(
                            "key {name:?} is {n} bytes; aesgcm takes 16 or 32"
                        )));
                    }
                };
                let key = UnboundKey::new(algorithm, secret)
                    .map_err(|_| config_err(format!("key {name:?} is not usable")))?;
                Ok(Cipher::AesGcm(Box::new(LessSafeKey::new(key))))
            });
        }
        if let Some(boxes) = p.secretbox {
            return Self::keys(boxes, |name, secret| {
                let key = XSalsa20Poly1305::new_from_slice(secret).map_err(|_| {
                    config_err(format!(
                        "key {name:?} is {} bytes; secretbox takes 32",
                        secret.len()
                    ))
                })?;
                Ok(Cipher::SecretBox(key))
            });
        }
        if p.identity.is_some() {
            return Ok(Provider::Identity);
        }
        let unsupported = [("aescbc", p.aescbc.is_some()), ("kms", p.kms.is_some())];
        match unsupported.iter().find(|(_, set)| *set) {
            Some((name, _)) => Err(config_err(format!(
                "the {name} provider is not supported; use aesgcm, secretbox or identity"
            ))),
            None => Err(config_err("a provider entry names no provider")),
        }
    }

    /// The named keys of a sealing provider, each decoded from base64 and
    /// made a cipher by `make`.
    fn keys(
        entry: KeysEntry,
        make: impl Fn(&str, &[u8]) -> Result<Cipher, EncryptionError>,
    ) -> Result<Provider, EncryptionError> {
        let mut keys = Vec::new();
        for k in entry.keys {
            let secret = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .map_err(|e| config_err(format!("key {:?}: {e}", k.name)))?;
            if keys.iter().any(|(n, _): &(String, Cipher)| *n == k.name) {
                return Err(config_err(format!("key name {:?} is used twice", k.name)));
            }
            let cipher = make(&k.name, &secret)?;
            keys.push((k.name, cipher));
        }
        if keys.is_empty() {
            return Err(config_err("a provider needs at least one key"));
        }
        Ok(Provider::Keys(keys))
    }

    /// The providers for the resource a store key belongs to
    /// (`/registry/<group or core>/<plural>/...`); `None` when no rule covers it.
    fn providers_for(&self, key: &str) -> Option<&[Provider]> {
        let mut parts = key.strip_prefix("/registry/")?.splitn(3, '/');
        let group = match parts.next()? {
            "core" => "",
            g => g,
        };
        let plural = parts.next()?;
        self.rules
            .iter()
            .find(|r| r.resources.iter().any(|m| covers(m, group, plural)))
            .map(|r| r.providers.as_slice())
    }

    /// Whether new writes under a resource's key prefix
    /// (`/registry/<group>/<plural>/`) are sealed.
    pub fn seals(&self, prefix: &str) -> bool {
        self.providers_for(prefix)
            .and_then(|p| p.first())
            .is_some_and(|p| matches!(p, Provider::Keys(_)))
    }

    /// Seals `plain` for `key` with the first provider of its rule.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Result<Option<Vec<u8>>, EncryptionError> {
        let Some(Provider::Keys(keys)) = self.providers_for(key).and_then(|p| p.first()) else {
            return Ok(None);
        };
        let Some((name, cipher)) = keys.first() else {
            return Ok(None);
        };
        let body = cipher
            .seal(&self.random, key, plain)
            .ok_or_else(|| EncryptionError::Seal(key.to_owned()))?;
        let head = format!("{PREFIX}{}:v1:{name}:", cipher.kind());
        Ok(Some([head.as_bytes(), &body].concat()))
    }

    /// Opens what the store holds under `key`; `None` when it is plain and
    /// may be read as it is.
    pub fn open(&self, key: &str, stored: &[u8]) -> Result<Option<Vec<u8>>, EncryptionError> {
        let providers = self.providers_for(key).unwrap_or(&[]);
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
            // Plain data is read only where the rule lists identity (or no
            // rule covers the resource), as upstream.
            if providers.is_empty() || providers.iter().any(|p| matches!(p, Provider::Identity)) {
                return Ok(None);
            }
            return Err(EncryptionError::NoProvider(key.to_owned()));
        };
        let no_provider = || EncryptionError::NoProvider(key.to_owned());
        // `<kind>:v1:<name>:<sealed>`; the sealed bytes may hold colons.
        let mut parts = rest.splitn(4, |b| *b == b':');
        let (Some(kind), Some(b"v1"), Some(name), Some(sealed)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(no_provider());
        };
        // Every rule's keys may open it: a resource moved between rules
        // stays readable.
        let cipher = self
            .rules
            .iter()
            .flat_map(|r| &r.providers)
            .filter_map(|p| match p {
                Provider::Keys(keys) => Some(keys),
                Provider::Identity => None,
            })
            .flatten()
            .find(|(n, c)| n.as_bytes() == name && c.kind().as_bytes() == kind)
            .map(|(_, c)| c)
            .ok_or_else(no_provider)?;
        cipher
            .open(key, sealed)
            .map(Some)
            .ok_or_else(|| EncryptionError::Open(key.to_owned()))
    }
}

/// Whether a rule's resource pattern covers `plural` in `group`.
fn covers(pattern: &str, group: &str, plural: &str) -> bool {
    match pattern.split_once('.') {
        None => group.is_empty() && pattern == plural,
        Some(("*", "*")) => true,
        Some(("*", g)) => g == group,
        Some((p, g)) => p == plural && g == group,
    }
}

#[cfg(test)]
mod tests;
