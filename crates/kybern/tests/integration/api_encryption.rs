//! Encryption at rest through the real server and kubectl: with an
//! `EncryptionConfiguration`, Secrets reach the SQLite files sealed (no
//! plaintext on disk, upstream's `k8s:enc:aesgcm:v1:<key>:` prefix), other
//! resources stay plain, a rotated key list (to a `secretbox` key) reads old
//! data and re-sealing by rewrite moves it to the new key, and a server
//! without the key refuses to serve the secret rather than serve garbage.

use crate::common;
use std::path::{Path, PathBuf};

use crate::common::cli::Cli;

/// 32 and 16 random-looking bytes, base64.
const KEY1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY2: &str = "MTYgYnl0ZXMga2V5ISEhIQ==";

/// Writes a configuration sealing Secrets with `keys`, each `(provider,
/// name, secret)` (the first seals), reading plain data too when `identity`.
fn config(dir: &Path, file: &str, keys: &[(&str, &str, &str)], identity: bool) -> PathBuf {
    let mut text = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers:\n",
    );
    for (provider, name, secret) in keys {
        text.push_str(&format!(
            "  - {provider}:\n      keys:\n      - name: {name}\n        secret: {secret}\n"
        ));
    }
    if identity {
        text.push_str("  - identity: {}\n");
    }
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Every byte the store keeps on disk: the database and its write-ahead log.
fn on_disk(data_dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["store.db", "store.db-wal"] {
        if let Ok(b) = std::fs::read(data_dir.join(name)) {
            bytes.extend(b);
        }
    }
    assert!(
        !bytes.is_empty(),
        "no store files in {}",
        data_dir.display()
    );
    bytes
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_are_sealed_on_disk_and_survive_key_rotation() {
    let configs = tempfile::tempdir().expect("tempdir");
    let first = config(
        configs.path(),
        "first.yaml",
        &[("aesgcm", "key1", KEY1)],
        true,
    );
    let first = first.to_string_lossy().into_owned();
    let mut server = common::Server::start_with(&["--encryption-provider-config", &first]);
    let kubectl = Cli::kubectl(&server);
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=SealedMarker-7f3a",
    ]);
    kubectl.ok(&[
        "create",
        "configmap",
        "notes",
        "--from-literal=note=PlainMarker-51c2",
    ]);
    let encoded = kubectl.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(
        encoded.trim(),
        "U2VhbGVkTWFya2VyLTdmM2E=",
        "served as written"
    );

    let disk = on_disk(server.dir.path());
    assert!(holds(&disk, "k8s:enc:aesgcm:v1:key1:"), "sealed with key1");
    assert!(
        !holds(&disk, "U2VhbGVkTWFya2VyLTdmM2E="),
        "the secret's value is not on disk"
    );
    assert!(!holds(&disk, "SealedMarker-7f3a"));
    assert!(
        holds(&disk, "PlainMarker-51c2"),
        "config maps are not sealed"
    );

    // Rotation: the new key (of the other provider) first, the old one
    // still listed, then a rewrite of every secret seals it with the new key.
    let rotated = config(
        configs.path(),
        "rotated.yaml",
        &[("secretbox", "box1", KEY1), ("aesgcm", "key1", KEY1)],
        false,
    );
    server.restart_with(&["--encryption-provider-config", &rotated.to_string_lossy()]);
    let encoded = kubectl.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(encoded.trim(), "U2VhbGVkTWFya2VyLTdmM2E=");
    let all = kubectl.ok(&["get", "secrets", "-A", "-o", "json"]);
    // A List: kubectl validates it against OpenAPI v2, which is not served.
    kubectl.ok_stdin(&["replace", "--validate=false", "-f", "-"], &all);
    assert!(holds(
        &on_disk(server.dir.path()),
        "k8s:enc:secretbox:v1:box1:"
    ));

    // Now key1 can go; a server that only has key1 cannot read the secret
    // and says so with a 500 instead of serving what it cannot open.
    let only_new = config(
        configs.path(),
        "new.yaml",
        &[("secretbox", "box1", KEY1)],
        false,
    );
    server.restart_with(&["--encryption-provider-config", &only_new.to_string_lossy()]);
    assert_eq!(
        kubectl
            .ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"])
            .trim(),
        "U2VhbGVkTWFya2VyLTdmM2E="
    );
    let only_old = config(
        configs.path(),
        "old.yaml",
        &[("aesgcm", "key1", KEY1), ("aesgcm", "key2", KEY2)],
        false,
    );
    server.restart_with(&["--encryption-provider-config", &only_old.to_string_lossy()]);
    let err = kubectl.fails(&["get", "secret", "db"]);
    assert!(err.contains("InternalError"), "{err}");
    assert!(
        err.contains("no provider of the encryption configuration can read"),
        "{err}"
    );
}

#[test]
fn a_configuration_the_server_cannot_honour_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms:\n      apiVersion: v2\n      name: vault\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--encryption-provider-config")
        .arg(&path)
        .output()
        .expect("run kybern server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the kms provider is not supported"), "{err}");
}
