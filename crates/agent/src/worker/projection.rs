//! Writes a volume's files (ConfigMap, Secret, downward API) so that an
//! update replaces them all at once, as the kubelet's atomic writer does:
//! the files live in a timestamped `..<time>` directory, `..data` is a
//! symlink to it, swapped by rename, and each top-level name is a symlink
//! through `..data`. A container never sees half an update.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::KeyToPath;

use crate::AgentError;

const DATA: &str = "..data";

/// A file to write: path relative to the volume, content, mode.
type File<'a> = (String, &'a Vec<u8>, u32);

/// The files to write: relative path, content, mode.
fn files<'a>(
    data: &'a BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: Option<i32>,
) -> Result<Vec<File<'a>>, AgentError> {
    let mode_of = |m: Option<i32>| u32::try_from(m.unwrap_or(0o644)).unwrap_or(0o644) & 0o777;
    let files: Vec<File<'a>> = match items {
        Some(items) => items
            .iter()
            .filter_map(|i| Some((i.path.clone(), data.get(&i.key)?, mode_of(i.mode.or(mode)))))
            .collect(),
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v, mode_of(mode)))
            .collect(),
    };
    for (rel, _, _) in &files {
        let bad = rel.is_empty()
            || rel.starts_with('/')
            || rel.starts_with("..")
            || rel.split('/').any(|p| p == ".." || p.is_empty());
        if bad {
            return Err(AgentError::Config(format!(
                "volume path {rel:?} leaves its volume"
            )));
        }
    }
    Ok(files)
}

/// Whether `current` already holds exactly these files.
fn unchanged(current: &Path, files: &[File<'_>]) -> bool {
    if !current.is_dir() {
        return false;
    }
    let tops: BTreeSet<String> = files.iter().map(|(rel, _, _)| top(rel)).collect();
    let present: BTreeSet<String> = std::fs::read_dir(current)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tops == present
        && files.iter().all(|(rel, bytes, mode)| {
            let path = current.join(rel);
            let same_mode = std::fs::metadata(&path).is_ok_and(|m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777 == *mode
            });
            same_mode && std::fs::read(&path).is_ok_and(|b| &b == *bytes)
        })
}

fn top(rel: &str) -> String {
    rel.split('/').next().unwrap_or(rel).to_owned()
}

/// Writes `data` (all keys, or only `items` at their paths) into `dir`.
/// Returns whether anything changed.
pub fn project(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: Option<i32>,
) -> Result<bool, AgentError> {
    std::fs::create_dir_all(dir)?;
    let files = files(data, items, mode)?;
    if unchanged(&dir.join(DATA), &files) {
        return Ok(false);
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh)?;
    for (rel, bytes, mode) in &files {
        let path = fresh.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(*mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    let tops: BTreeSet<String> = files.iter().map(|(rel, _, _)| top(rel)).collect();
    for t in &tops {
        let link = dir.join(t);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("{DATA}/{t}"), &link)?;
        }
    }
    // What the new data no longer has: old timestamped directories and
    // top-level links to names that are gone.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_data = name.starts_with("..") && name != DATA && name != stamp;
        let stale_link = !name.starts_with("..") && !tops.contains(&name);
        if stale_data && entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(entry.path())?;
        } else if stale_link && entry.file_type().is_ok_and(|t| t.is_symlink()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn updates_swap_all_files_at_once_and_drop_removed_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        assert!(project(d, &data(&[("a", "1"), ("b", "2")]), None, None).expect("first"));
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "1");
        assert!(!project(d, &data(&[("a", "1"), ("b", "2")]), None, None).expect("same"));
        assert!(project(d, &data(&[("a", "3")]), None, None).expect("update"));
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "3");
        assert!(
            d.join("b").symlink_metadata().is_err(),
            "a removed key stays visible"
        );
        let dirs = std::fs::read_dir(d)
            .expect("list")
            .flatten()
            .filter(|e| {
                e.file_type().is_ok_and(|t| t.is_dir())
                    && !e.file_type().is_ok_and(|t| t.is_symlink())
            })
            .count();
        assert_eq!(dirs, 1, "old data directories are removed");
    }

    #[test]
    fn items_choose_keys_paths_and_modes_and_escapes_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: Some(0o600),
        }];
        project(
            dir.path(),
            &data(&[("a", "1"), ("b", "2")]),
            Some(&items),
            None,
        )
        .expect("project");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/x")).expect("x"),
            "1"
        );
        assert!(!dir.path().join("b").exists());
        for bad in ["../x", "/etc/x", "..data/x", "a//b"] {
            let items = vec![KeyToPath {
                key: "a".into(),
                path: bad.into(),
                mode: None,
            }];
            assert!(
                project(dir.path(), &data(&[("a", "1")]), Some(&items), None).is_err(),
                "{bad}"
            );
        }
    }
}
