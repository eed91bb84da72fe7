//! The node's image store: blobs by digest, layers unpacked once and shared
//! read-only by every container that uses them, and the names that point at
//! manifests.
//!
//! Layout under `DATA/images`: `blobs/sha256/<hex>` (content, verified on
//! import), `layers/sha256/<hex>/` (a layer unpacked, named by its blob
//! digest), `refs/<escaped name>` (the manifest digest a name points at).

pub mod gc;
mod layer;
mod oci_layout;
pub mod pull;
mod reference;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use oci_layout::import_archive;
pub use reference::normalize;

use crate::AgentError;

/// An image ready to run: its unpacked layers (bottom first) and its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The normalized name the image was asked for.
    pub name: String,
    /// `sha256:<hex>` of its manifest: the image ID reported in pod status.
    pub manifest_digest: String,
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// The image's run defaults.
    pub config: RunDefaults,
    /// Compressed size of its layers, reported in the Node's `images`.
    pub size: u64,
}

/// The part of an OCI image config that says how to run it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunDefaults {
    /// Default executable and arguments.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments (or command when there is no entrypoint).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` environment.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `uid[:gid]` (numeric; names are resolved from the rootfs).
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<RunDefaults>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) digest: String,
    #[serde(default)]
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) media_type: String,
    #[serde(default)]
    pub(crate) annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub(crate) struct Manifest {
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

/// The content store of one node.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    gate: std::sync::Arc<gc::WriteGate>,
}

impl ImageStore {
    /// The store under `root` (created as needed).
    pub fn open(root: &Path) -> Result<Self, AgentError> {
        for dir in ["blobs/sha256", "layers/sha256", "refs", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(ImageStore {
            root: root.to_owned(),
            gate: Default::default(),
        })
    }

    /// Path of a blob by digest, after checking the digest's form (it comes
    /// from files a user hands us).
    fn blob_path(&self, digest: &str) -> Result<PathBuf, AgentError> {
        let hex = digest_hex(digest)?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        let escaped: String = name
            .chars()
            .map(|c| if c == '/' { '+' } else { c })
            .collect();
        self.root.join("refs").join(escaped)
    }

    /// The image a pod's `image` field names, if this node holds it.
    pub fn resolve(&self, image: &str) -> Result<Option<Image>, AgentError> {
        let name = normalize(image);
        let digest = match std::fs::read_to_string(self.ref_path(&name)) {
            Ok(d) => d.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(self.blob_path(&digest)?)?)
            .map_err(|e| AgentError::Image(format!("manifest {digest}: {e}")))?;
        let config: ImageConfig =
            serde_json::from_slice(&std::fs::read(self.blob_path(&manifest.config.digest)?)?)
                .map_err(|e| AgentError::Image(format!("config of {name}: {e}")))?;
        let mut layers = Vec::new();
        for l in &manifest.layers {
            let dir = self.root.join("layers/sha256").join(digest_hex(&l.digest)?);
            if !dir.is_dir() {
                return Err(AgentError::Image(format!(
                    "layer {} of {name} is not unpacked",
                    l.digest
                )));
            }
            layers.push(dir);
        }
        Ok(Some(Image {
            name,
            manifest_digest: digest,
            layers,
            config: config.config.unwrap_or_default(),
            size: manifest.layers.iter().map(|l| l.size).sum(),
        }))
    }

    /// Every name this node holds, from the names alone (no manifest read).
    pub fn names(&self) -> Result<Vec<String>, AgentError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.root.join("refs"))? {
            let name = entry?.file_name().to_string_lossy().replace('+', "/");
            out.push(name);
        }
        out.sort();
        Ok(out)
    }

    /// Every name this node holds and its image's size, for the Node's `images`.
    pub fn list(&self) -> Result<Vec<(String, u64)>, AgentError> {
        let mut out = Vec::new();
        for name in self.names()? {
            if let Ok(Some(image)) = self.resolve(&name) {
                out.push((name, image.size));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Moves a downloaded or copied blob at `tmp` into the store if its
    /// content has `digest`; removes it otherwise.
    pub(crate) fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<(), AgentError> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        std::io::copy(&mut std::fs::File::open(tmp)?, &mut hasher)?;
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != digest {
            let _ = std::fs::remove_file(tmp);
            return Err(AgentError::Image(format!(
                "blob {digest} has digest {actual}"
            )));
        }
        std::fs::rename(tmp, self.blob_path(digest)?)?;
        Ok(())
    }

    /// Whether the store holds the blob `digest`.
    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Unpacks each layer of `manifest` not unpacked yet.
    pub(crate) fn unpack_layers(&self, manifest: &Manifest) -> Result<(), AgentError> {
        for l in &manifest.layers {
            let dir = self.root.join("layers/sha256").join(digest_hex(&l.digest)?);
            if !dir.is_dir() {
                layer::unpack(&self.blob_path(&l.digest)?, &dir)?;
            }
        }
        Ok(())
    }

    /// Marks `name` as imported by hand: the node uses it as it is, even
    /// for `imagePullPolicy: Always` (an offline node has nowhere to pull
    /// from). A pull of the name lifts the mark.
    pub fn pin(&self, name: &str, pinned: bool) -> Result<(), AgentError> {
        let mark = self
            .root
            .join("pinned")
            .join(self.ref_path(name).file_name().unwrap_or_default());
        if pinned {
            std::fs::create_dir_all(self.root.join("pinned"))?;
            std::fs::write(mark, b"")?;
        } else if mark.exists() {
            std::fs::remove_file(mark)?;
        }
        Ok(())
    }

    /// Whether `name` was imported by hand (see [`ImageStore::pin`]).
    pub fn is_pinned(&self, name: &str) -> bool {
        let name = normalize(name);
        self.root
            .join("pinned")
            .join(self.ref_path(&name).file_name().unwrap_or_default())
            .exists()
    }

    /// Points `name` at the manifest `digest` (written atomically).
    pub(crate) fn tag(&self, name: &str, digest: &str) -> Result<(), AgentError> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("ref-{}", std::process::id()));
        std::fs::write(&tmp, digest)?;
        std::fs::rename(&tmp, self.ref_path(name))?;
        Ok(())
    }
}

/// The hex part of a `sha256:<hex>` digest, refusing anything else (a digest
/// becomes a file name).
pub(crate) fn digest_hex(digest: &str) -> Result<&str, AgentError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| AgentError::Image(format!("unsupported digest {digest:?}")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AgentError::Image(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_must_be_sha256_hex() {
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(digest_hex("sha256:../../etc/passwd").is_err());
        assert!(digest_hex(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(digest_hex("sha256:abc").is_err());
    }

    #[test]
    fn unknown_images_resolve_to_none() {
        let dir = tempfile::tempdir().expect("test setup");
        let store = ImageStore::open(dir.path()).expect("test setup");
        assert!(store.resolve("busybox").expect("test setup").is_none());
        assert!(store.list().expect("test setup").is_empty());
    }
}
