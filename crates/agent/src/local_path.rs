//! The node's half of local-path volumes (the `kybern.dev/local-path`
//! provisioner): a directory under the agent's data directory, published on
//! the Node so that the provisioner can name volumes in it, and the removal
//! of one volume's directory when the provisioner deletes the volume (through
//! `nodes/{name}/proxy/localPath/{dir}`). The directory itself is made by the
//! first pod that mounts the volume (its `hostPath` is `DirectoryOrCreate`).

use std::path::{Path, PathBuf};

use crate::AgentError;

/// The Node annotation naming the directory local-path volumes live in.
pub const ROOT_ANNOTATION: &str = "kybern.dev/local-path-root";

/// The directory local-path volumes live in, under the agent's data dir.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("local-path")
}

/// Whether `dir` may name a volume's directory: one path component, as the
/// provisioner names them (`pvc-<uid>_<namespace>_<claim>`), so that no
/// request can reach outside the root.
pub fn valid_name(dir: &str) -> bool {
    dir.starts_with("pvc-")
        && dir.len() <= 512
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Removes volume directory `dir` under `root` with everything in it; a
/// directory already gone is fine. A symlink is removed, never followed.
pub fn remove(root: &Path, dir: &str) -> Result<(), AgentError> {
    if !valid_name(dir) {
        return Err(AgentError::Config(format!(
            "{dir:?} is not a local-path volume directory"
        )));
    }
    let path = root.join(dir);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
        Ok(m) if m.is_dir() => Ok(std::fs::remove_dir_all(&path)?),
        Ok(_) => Ok(std::fs::remove_file(&path)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_volume_directories_under_the_root_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("local-path");
        let dir = "pvc-1234_default_data";
        std::fs::create_dir_all(root.join(dir).join("sub")).expect("mkdir");
        std::fs::write(root.join(dir).join("sub/file"), b"x").expect("write");
        remove(&root, dir).expect("remove");
        assert!(!root.join(dir).exists());
        remove(&root, dir).expect("already gone");
        for bad in ["..", "pvc-../x", "pvc-a/b", "data", "", "pvc-\u{e9}"] {
            assert!(remove(&root, bad).is_err(), "{bad:?} accepted");
        }
        // A symlink planted in the root goes, not what it points to.
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("keep"), b"x").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("pvc-link")).expect("symlink");
        remove(&root, "pvc-link").expect("remove link");
        assert!(outside.join("keep").exists());
    }
}
