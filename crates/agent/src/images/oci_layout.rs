//! Imports images from an OCI image layout (a directory, or a tar archive of
//! one, as `skopeo copy ... oci-archive:` and `umoci` write them) into the
//! node's store.

use std::path::Path;

use serde::Deserialize;

use super::{Descriptor, ImageStore, Manifest, digest_hex, normalize};
use crate::AgentError;

const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// Imports every tagged image of the OCI layout at `path` (a directory or a
/// tar archive of one). A tag that is a bare tag (`latest`) is named
/// `NAME:tag` after `name`; a full reference is kept as it is. Returns the
/// names imported.
pub fn import_archive(
    store: &ImageStore,
    path: &Path,
    name: Option<&str>,
) -> Result<Vec<String>, AgentError> {
    let _writing = store.begin_write();
    if path.is_dir() {
        return import_layout(store, path, name);
    }
    let staging = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(store.root.join("tmp"))?;
    let file = std::fs::File::open(path)?;
    tar::Archive::new(file)
        .unpack(staging.path())
        .map_err(|e| AgentError::Image(format!("reading {}: {e}", path.display())))?;
    import_layout(store, staging.path(), name)
}

fn import_layout(
    store: &ImageStore,
    layout: &Path,
    name: Option<&str>,
) -> Result<Vec<String>, AgentError> {
    let index: Index = read_json(&layout.join("index.json"))?;
    let mut imported = Vec::new();
    for desc in &index.manifests {
        if !desc.media_type.is_empty() && !MANIFEST_TYPES.contains(&desc.media_type.as_str()) {
            continue;
        }
        let reference = desc
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| desc.annotations.get("org.opencontainers.image.ref.name"));
        let full = match (reference, name) {
            (Some(r), _) if r.contains('/') || r.contains(':') => normalize(r),
            (Some(tag), Some(n)) => normalize(&format!("{}:{tag}", n.trim_end_matches(":latest"))),
            (None, Some(n)) => normalize(n),
            (Some(tag), None) => {
                return Err(AgentError::Image(format!(
                    "the archive names its image only by the tag {tag:?}; give a name with --name"
                )));
            }
            (None, None) => {
                return Err(AgentError::Image(
                    "the archive's image has no name; give one with --name".into(),
                ));
            }
        };
        copy_blob(store, layout, &desc.digest)?;
        let manifest: Manifest = read_json(&store.blob_path(&desc.digest)?)?;
        copy_blob(store, layout, &manifest.config.digest)?;
        for l in &manifest.layers {
            copy_blob(store, layout, &l.digest)?;
        }
        store.unpack_layers(&manifest)?;
        store.tag(&full, &desc.digest)?;
        store.pin(&full, true)?;
        tracing::info!(image = %full, digest = %desc.digest, "imported image");
        imported.push(full);
    }
    if imported.is_empty() {
        return Err(AgentError::Image(
            "the archive holds no image manifest".into(),
        ));
    }
    Ok(imported)
}

/// Copies a blob into the store, checking its digest; a blob already there is
/// kept.
fn copy_blob(store: &ImageStore, layout: &Path, digest: &str) -> Result<(), AgentError> {
    let dest = store.blob_path(digest)?;
    if dest.exists() {
        return Ok(());
    }
    let src = layout.join("blobs/sha256").join(digest_hex(digest)?);
    let mut input =
        std::fs::File::open(&src).map_err(|e| AgentError::Image(format!("blob {digest}: {e}")))?;
    let tmp = store
        .root
        .join("tmp")
        .join(format!("blob-{}", digest_hex(digest)?));
    let mut output = std::fs::File::create(&tmp)?;
    std::io::copy(&mut input, &mut output)?;
    output.sync_all()?;
    store.commit_blob(&tmp, digest)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, AgentError> {
    let bytes = std::fs::read(path)
        .map_err(|e| AgentError::Image(format!("reading {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AgentError::Image(format!("parsing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn put_blob(layout: &Path, data: &[u8]) -> String {
        let hex = format!("{:x}", Sha256::digest(data));
        std::fs::create_dir_all(layout.join("blobs/sha256")).expect("test setup");
        std::fs::write(layout.join("blobs/sha256").join(&hex), data).expect("test setup");
        format!("sha256:{hex}")
    }

    /// An OCI layout with one image of one layer holding `hello`.
    fn layout(tag: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("test setup");
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "hello", &b"hi"[..])
            .expect("test setup");
        let layer = put_blob(dir.path(), &tar.into_inner().expect("test setup"));
        let config = put_blob(
            dir.path(),
            br#"{"config":{"Cmd":["/hello"],"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let manifest = serde_json::json!({"schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 2}]});
        let manifest = put_blob(dir.path(), manifest.to_string().as_bytes());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": MANIFEST_TYPES[0], "digest": manifest, "size": 1,
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        std::fs::write(dir.path().join("index.json"), index.to_string()).expect("test setup");
        dir
    }

    #[test]
    fn imports_a_layout_and_resolves_it_by_short_name() {
        let layout = layout("latest");
        let root = tempfile::tempdir().expect("test setup");
        let store = ImageStore::open(root.path()).expect("test setup");
        let names = import_archive(&store, layout.path(), Some("busybox")).expect("test setup");
        assert_eq!(names, ["docker.io/library/busybox:latest"]);
        let image = store
            .resolve("busybox")
            .expect("test setup")
            .expect("test setup");
        assert_eq!(
            image.config.cmd.as_deref(),
            Some(&["/hello".to_owned()][..])
        );
        assert_eq!(
            std::fs::read(image.layers[0].join("hello")).expect("test setup"),
            b"hi"
        );
        assert_eq!(store.list().expect("test setup").len(), 1);
        // Importing again reuses what is there.
        import_archive(&store, layout.path(), Some("busybox")).expect("test setup");
    }

    #[test]
    fn a_bare_tag_without_a_name_is_refused() {
        let layout = layout("v1");
        let root = tempfile::tempdir().expect("test setup");
        let store = ImageStore::open(root.path()).expect("test setup");
        let err = import_archive(&store, layout.path(), None).expect_err("must fail");
        assert!(err.to_string().contains("--name"), "{err}");
    }

    #[test]
    fn a_blob_whose_content_does_not_match_its_digest_is_refused() {
        let layout = layout("latest");
        for entry in std::fs::read_dir(layout.path().join("blobs/sha256")).expect("test setup") {
            let path = entry.expect("test setup").path();
            let data = std::fs::read(&path).expect("test setup");
            if data.starts_with(b"{\"config\"") {
                std::fs::write(&path, b"{\"config\":{}}").expect("test setup");
            }
        }
        let root = tempfile::tempdir().expect("test setup");
        let store = ImageStore::open(root.path()).expect("test setup");
        let err = import_archive(&store, layout.path(), Some("x")).expect_err("must fail");
        assert!(err.to_string().contains("has digest"), "{err}");
    }
}
