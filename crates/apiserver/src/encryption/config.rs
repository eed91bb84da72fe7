//! Reading an `EncryptionConfiguration` and sealing and opening values
//! with its providers, in upstream's stored format
//! (`k8s:enc:aesgcm:v1:<key name>:<12-byte nonce><ciphertext and tag>`,
//! the store key as authenticated data).

use std::path::Path;

use base64::Engine;
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
    secretbox: Option<serde_yaml_ng::Value>,
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

/// One provider of a resource rule.
enum Provider {
    /// AES-GCM with named keys, the first of which seals.
    AesGcm(Vec<(String, LessSafeKey)>),
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
            let mut keys = Vec::new();
            for k in aes.keys {
                let secret = base64::engine::general_purpose::STANDARD
                    .decode(k.secret.trim())
                    .map_err(|e| config_err(format!("key {:?}: {e}", k.name)))?;
                let algorithm = match secret.len() {
                    16 => &AES_128_GCM,
                    32 => &AES_256_GCM,
                    n => {
                        return Err(config_err(format!(
                            "key {:?} is {n} bytes; aesgcm takes 16 or 32",
                            k.name
                        )));
                    }
                };
                let key = UnboundKey::new(algorithm, &secret)
                    .map_err(|_| config_err(format!("key {:?} is not usable", k.name)))?;
                keys.push((k.name, LessSafeKey::new(key)));
            }
            if keys.is_empty() {
                return Err(config_err("aesgcm needs at least one key"));
            }
            return Ok(Provider::AesGcm(keys));
        }
        if p.identity.is_some() {
            return Ok(Provider::Identity);
        }
        let unsupported = [
            ("aescbc", p.aescbc.is_some()),
            ("secretbox", p.secretbox.is_some()),
            ("kms", p.kms.is_some()),
        ];
        match unsupported.iter().find(|(_, set)| *set) {
            Some((name, _)) => Err(config_err(format!(
                "the {name} provider is not supported; use aesgcm or identity"
            ))),
            None => Err(config_err("a provider entry names no provider")),
        }
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
            .is_some_and(|p| matches!(p, Provider::AesGcm(_)))
    }

    /// Seals `plain` for `key` with the first provider of its rule.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Result<Option<Vec<u8>>, EncryptionError> {
        let Some(first) = self.providers_for(key).and_then(|p| p.first()) else {
            return Ok(None);
        };
        let Provider::AesGcm(keys) = first else {
            return Ok(None);
        };
        let Some((name, sealing)) = keys.first() else {
            return Ok(None);
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| EncryptionError::Seal(key.to_owned()))?;
        let mut body = plain.to_vec();
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .map_err(|_| EncryptionError::Seal(key.to_owned()))?;
        let head = format!("{PREFIX}aesgcm:v1:{name}:");
        let mut out = Vec::with_capacity(head.len() + NONCE_LEN + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(Some(out))
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
        let rest = rest.strip_prefix(b"aesgcm:v1:").ok_or_else(no_provider)?;
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(no_provider)?;
        let (name, sealed) = (&rest[..colon], &rest[colon + 1..]);
        // Every rule's keys may open it: a resource moved between rules
        // stays readable.
        let opening = self
            .rules
            .iter()
            .flat_map(|r| &r.providers)
            .filter_map(|p| match p {
                Provider::AesGcm(keys) => Some(keys),
                Provider::Identity => None,
            })
            .flatten()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, k)| k)
            .ok_or_else(no_provider)?;
        if sealed.len() < NONCE_LEN {
            return Err(EncryptionError::Open(key.to_owned()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut body = sealed[NONCE_LEN..].to_vec();
        let plain = opening
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .map_err(|_| EncryptionError::Open(key.to_owned()))?;
        Ok(Some(plain.to_vec()))
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
