//! Pulls images from OCI and Docker registries into the store with
//! `oci-client`: the manifest (one platform's, out of an index), the config
//! and the layers, each checked against its digest; then the layers are
//! unpacked and the name points at the manifest.
//!
//! Registries may be mirrored or plain HTTP, configured as k3s's
//! `registries.yaml` does it:
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//! ```
//!
//! Each mirror endpoint is tried in order, then the registry itself (over
//! HTTPS unless an endpoint for it says `http://`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kybern_apimachinery::go_arch;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use serde_json::Value;

use super::{ImageStore, Manifest, normalize};
use crate::AgentError;

/// Manifest media types accepted, single images and indexes.
const ACCEPTED: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// One place to pull a registry's images from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP rather than HTTPS.
    pub plain_http: bool,
}

impl Endpoint {
    fn parse(url: &str) -> Endpoint {
        let (plain_http, rest) = match url.split_once("://") {
            Some(("http", rest)) => (true, rest),
            Some((_, rest)) => (false, rest),
            None => (false, url),
        };
        Endpoint {
            host: rest.trim_end_matches('/').to_owned(),
            plain_http,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct MirrorFile {
    #[serde(default)]
    mirrors: BTreeMap<String, MirrorEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct MirrorEntry {
    #[serde(default)]
    endpoint: Vec<String>,
}

/// Where each registry's images come from.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    mirrors: BTreeMap<String, Vec<Endpoint>>,
}

impl Registries {
    /// Reads a `registries.yaml` (only `mirrors` is used).
    pub fn from_yaml(text: &str) -> Result<Registries, AgentError> {
        let file: MirrorFile = serde_yaml_ng::from_str(text)
            .map_err(|e| AgentError::Image(format!("registries file: {e}")))?;
        Ok(Registries {
            mirrors: file
                .mirrors
                .into_iter()
                .map(|(k, v)| (k, v.endpoint.iter().map(|e| Endpoint::parse(e)).collect()))
                .collect(),
        })
    }

    /// Reads the file at `path`.
    pub fn load(path: &Path) -> Result<Registries, AgentError> {
        Registries::from_yaml(&std::fs::read_to_string(path)?)
    }

    /// The endpoints to try for `registry`, in order.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mirrors = self.mirrors.get(registry).cloned().unwrap_or_default();
        let plain = mirrors.iter().any(|e| e.host == registry && e.plain_http);
        let mut out: Vec<Endpoint> = mirrors;
        if !out.iter().any(|e| e.host == registry) {
            out.push(Endpoint {
                host: registry.to_owned(),
                plain_http: plain,
            });
        }
        out
    }
}

/// Credentials by registry host, from `imagePullSecrets`
/// (`kubernetes.io/dockerconfigjson`, `.dockerconfigjson` decoded).
pub fn credentials_from_docker_config(json: &[u8]) -> HashMap<String, (String, String)> {
    let Ok(config) = serde_json::from_slice::<Value>(json) else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for (server, entry) in config["auths"].as_object().into_iter().flatten() {
        let host = server
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let pair = match (entry["username"].as_str(), entry["password"].as_str()) {
            (Some(u), Some(p)) => Some((u.to_owned(), p.to_owned())),
            _ => entry["auth"]
                .as_str()
                .and_then(|a| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(a).ok()
                })
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))),
        };
        if let Some(pair) = pair {
            // Docker Hub's credentials are keyed by its index's URL.
            let host = if host == "index.docker.io" {
                "docker.io".to_owned()
            } else {
                host
            };
            out.insert(host, pair);
        }
    }
    out
}

fn image_error(e: impl std::fmt::Display) -> AgentError {
    AgentError::Image(e.to_string())
}

/// Pulls `image` into `store`; `credentials` are by registry host. Returns
/// the canonical name.
pub async fn pull(
    store: &ImageStore,
    registries: &Registries,
    image: &str,
    credentials: &HashMap<String, (String, String)>,
) -> Result<String, AgentError> {
    let name = normalize(image);
    let _writing = store.begin_write();
    let (registry, repo_ref) = name
        .split_once('/')
        .ok_or_else(|| image_error(format!("invalid image name {image:?}")))?;
    let mut errors = Vec::new();
    for endpoint in registries.endpoints(registry) {
        let auth = credentials
            .get(&endpoint.host)
            .or_else(|| credentials.get(registry))
            .map_or(RegistryAuth::Anonymous, |(u, p)| {
                RegistryAuth::Basic(u.clone(), p.clone())
            });
        match pull_from(store, &endpoint, repo_ref, &auth).await {
            Ok(digest) => {
                store.tag(&name, &digest)?;
                store.pin(&name, false)?;
                tracing::info!(image = %name, %digest, from = %endpoint.host, "pulled image");
                return Ok(name);
            }
            Err(e) => errors.push(format!("{}: {e}", endpoint.host)),
        }
    }
    Err(image_error(format!(
        "pulling {name}: {}",
        errors.join("; ")
    )))
}

async fn pull_from(
    store: &ImageStore,
    endpoint: &Endpoint,
    repo_ref: &str,
    auth: &RegistryAuth,
) -> Result<String, AgentError> {
    let reference: Reference = format!("{}/{repo_ref}", endpoint.host)
        .parse()
        .map_err(image_error)?;
    let client = Client::new(ClientConfig {
        protocol: if endpoint.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    });
    let (mut raw, mut digest) = client
        .pull_manifest_raw(&reference, auth, &ACCEPTED)
        .await
        .map_err(image_error)?;
    let doc: Value = serde_json::from_slice(&raw).map_err(image_error)?;
    if let Some(list) = doc["manifests"].as_array() {
        let chosen = list
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == go_arch())
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| image_error(format!("no linux/{} image in the index", go_arch())))?;
        let one = Reference::with_digest(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            chosen.to_owned(),
        );
        (raw, digest) = client
            .pull_manifest_raw(&one, auth, &ACCEPTED)
            .await
            .map_err(image_error)?;
    }
    put_blob(store, &digest, &raw)?;
    let manifest: Manifest = serde_json::from_slice(&raw).map_err(image_error)?;
    for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if store.has_blob(&desc.digest) {
            continue;
        }
        let tmp = download_path(store, &desc.digest)?;
        let file = tokio::fs::File::create(&tmp).await?;
        if let Err(e) = client
            .pull_blob(&reference, desc.digest.as_str(), file)
            .await
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(image_error(e));
        }
        store.commit_blob(&tmp, &desc.digest)?;
    }
    store.unpack_layers(&manifest)?;
    Ok(digest)
}

/// Where a blob is written while it downloads.
fn download_path(store: &ImageStore, digest: &str) -> Result<std::path::PathBuf, AgentError> {
    Ok(store
        .root
        .join("tmp")
        .join(format!("pull-{}", super::digest_hex(digest)?)))
}

fn put_blob(store: &ImageStore, digest: &str, bytes: &[u8]) -> Result<(), AgentError> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let tmp = download_path(store, digest)?;
    std::fs::write(&tmp, bytes)?;
    store.commit_blob(&tmp, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let r = Registries::from_yaml(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\", \"https://mirror.example\"]\n  \"10.0.0.1:5000\":\n    endpoint: [\"http://10.0.0.1:5000\"]\n",
        )
        .expect("parse");
        assert_eq!(
            r.endpoints("docker.io"),
            vec![
                Endpoint {
                    host: "127.0.0.1:5000".into(),
                    plain_http: true
                },
                Endpoint {
                    host: "mirror.example".into(),
                    plain_http: false
                },
                Endpoint {
                    host: "docker.io".into(),
                    plain_http: false
                },
            ]
        );
        // A registry listed as its own plain-HTTP endpoint is not tried twice.
        assert_eq!(
            r.endpoints("10.0.0.1:5000"),
            vec![Endpoint {
                host: "10.0.0.1:5000".into(),
                plain_http: true
            }]
        );
        assert_eq!(r.endpoints("quay.io").len(), 1);
        assert!(Registries::from_yaml("mirrors: [1, 2]").is_err());
    }

    #[test]
    fn docker_config_credentials_by_host() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "127.0.0.1:5000": {"username": "a", "password": "b"},
            "broken": {"auth": "!!"}}}"#;
        let creds = credentials_from_docker_config(json);
        assert_eq!(creds["docker.io"], ("user".into(), "pass".into()));
        assert_eq!(creds["127.0.0.1:5000"], ("a".into(), "b".into()));
        assert!(!creds.contains_key("broken"));
        assert!(credentials_from_docker_config(b"not json").is_empty());
    }
}
