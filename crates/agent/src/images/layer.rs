//! Unpacks one image layer (a tar archive, gzipped or not) into a directory
//! that overlayfs can use as a lower layer: OCI whiteouts become overlayfs
//! whiteouts (a 0/0 character device) and opaque directories.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::AgentError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Unpacks `blob` into `dest` (which must not exist). The layer is unpacked
/// beside `dest` first and renamed into place, so a crash never leaves a
/// half-unpacked layer under its final name.
pub fn unpack(blob: &Path, dest: &Path) -> Result<(), AgentError> {
    let parent = dest
        .parent()
        .ok_or_else(|| AgentError::Image(format!("no parent for {}", dest.display())))?;
    let staging = parent.join(format!(
        ".unpack-{}-{}",
        std::process::id(),
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    let result = unpack_into(blob, &staging);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    std::fs::rename(&staging, dest)?;
    Ok(())
}

fn open_maybe_gzip(blob: &Path) -> Result<Box<dyn Read>, AgentError> {
    let mut file = std::fs::File::open(blob)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = std::fs::File::open(blob)?;
    let reader = std::io::BufReader::new(file);
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

fn unpack_into(blob: &Path, dir: &Path) -> Result<(), AgentError> {
    let mut archive = tar::Archive::new(open_maybe_gzip(blob)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let bad = |e: std::io::Error| AgentError::Image(format!("layer {}: {e:?}", blob.display()));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(rel) = safe_relative(&path) else {
            // The layer's root (`.` or `/`) needs nothing; `..` is hostile.
            if path.components().any(|c| c == Component::ParentDir) {
                tracing::warn!(path = %path.display(), "skipping a layer entry outside the layer");
            }
            continue;
        };
        let file_name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name == OPAQUE_MARKER {
            let target = dir.join(rel.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&target)?;
            xattr::set(&target, "trusted.overlay.opaque", b"y")?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            let parent = dir.join(rel.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent)?;
            whiteout(&parent.join(hidden))?;
            continue;
        }
        // `unpack_in` refuses paths that escape `dir`, through `..` or a symlink.
        entry.unpack_in(dir).map_err(bad)?;
    }
    Ok(())
}

/// An overlayfs whiteout: a character device with device number 0/0.
fn whiteout(path: &Path) -> Result<(), AgentError> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).or_else(|_| std::fs::remove_dir_all(path))?;
    }
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(|e| AgentError::Image(format!("whiteout {}: {e}", path.display())))
}

/// `path` without a leading `/` or `./`, or `None` if it climbs out with `..`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("test setup");
        let gz =
            flate2::write::GzEncoder::new(file.reopen().expect("test setup"), Default::default());
        let mut builder = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            builder
                .append_data(&mut header, path, *data)
                .expect("test setup");
        }
        builder
            .into_inner()
            .expect("test setup")
            .finish()
            .expect("test setup");
        file
    }

    #[test]
    fn unpacks_gzipped_layers_atomically() {
        let blob = layer(&[("bin/hello", b"hi"), ("./etc/motd", b"welcome")]);
        let root = tempfile::tempdir().expect("test setup");
        let dest = root.path().join("abc");
        unpack(blob.path(), &dest).expect("test setup");
        assert_eq!(
            std::fs::read(dest.join("bin/hello")).expect("test setup"),
            b"hi"
        );
        assert_eq!(
            std::fs::read(dest.join("etc/motd")).expect("test setup"),
            b"welcome"
        );
        // Nothing but the layer is left beside it.
        assert_eq!(
            std::fs::read_dir(root.path()).expect("test setup").count(),
            1
        );
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        assert_eq!(safe_relative(Path::new("../etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("a/../../b")), None);
        assert_eq!(
            safe_relative(Path::new("/usr/bin")),
            Some(PathBuf::from("usr/bin"))
        );
    }

    #[test]
    fn a_corrupt_layer_is_an_error_and_leaves_nothing() {
        let blob = tempfile::NamedTempFile::new().expect("test setup");
        std::fs::write(blob.path(), [0x1f, 0x8b, 1, 2, 3]).expect("test setup");
        let root = tempfile::tempdir().expect("test setup");
        assert!(unpack(blob.path(), &root.path().join("x")).is_err());
        assert_eq!(
            std::fs::read_dir(root.path()).expect("test setup").count(),
            0
        );
    }
}
