use super::*;

const KEY1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
const KEY2: &str = "MTYgYnl0ZXMga2V5ISEhIQ=="; // 16 bytes

fn config(providers: &str) -> EncryptionConfig {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, '*.apps']\n  providers:\n{providers}"
    );
    EncryptionConfig::parse(&text).expect("config")
}

const SECRET: &str = "/registry/core/secrets/default/db";

#[test]
fn sealed_values_carry_upstream_s_prefix_and_open_again() {
    let c = config(&format!(
        "  - aesgcm:\n      keys:\n      - name: key1\n        secret: {KEY1}\n  - identity: {{}}\n"
    ));
    let sealed = c
        .seal(SECRET, b"{\"data\":\"hunter2\"}")
        .expect("seal")
        .expect("sealed");
    assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
    assert_eq!(
        c.open(SECRET, &sealed).expect("open").as_deref(),
        Some(&b"{\"data\":\"hunter2\"}"[..])
    );
    // Bound to its key: moved elsewhere it does not open.
    assert!(matches!(
        c.open("/registry/core/secrets/default/other", &sealed),
        Err(EncryptionError::Open(_))
    ));
    // Plain data of a rule that lists identity is read as it is; other
    // resources are neither sealed nor refused.
    assert_eq!(c.open(SECRET, b"{}").expect("plain"), None);
    assert_eq!(
        c.seal("/registry/core/configmaps/default/x", b"{}")
            .expect("seal"),
        None
    );
    assert!(
        c.seal("/registry/apps/deployments/default/x", b"{}")
            .expect("seal")
            .is_some()
    );
}

#[test]
fn rotation_reads_old_keys_and_writes_with_the_first() {
    let old = config(&format!(
        "  - aesgcm:\n      keys:\n      - name: key1\n        secret: {KEY1}\n"
    ));
    let sealed = old.seal(SECRET, b"{}").expect("seal").expect("sealed");
    // Without identity, plain data is refused.
    assert!(matches!(
        old.open(SECRET, b"{}"),
        Err(EncryptionError::NoProvider(_))
    ));
    let rotated = config(&format!(
        "  - aesgcm:\n      keys:\n      - name: key2\n        secret: {KEY2}\n      - name: key1\n        secret: {KEY1}\n"
    ));
    assert_eq!(
        rotated.open(SECRET, &sealed).expect("open").as_deref(),
        Some(&b"{}"[..])
    );
    let resealed = rotated.seal(SECRET, b"{}").expect("seal").expect("sealed");
    assert!(resealed.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
    assert!(matches!(
        old.open(SECRET, &resealed),
        Err(EncryptionError::NoProvider(_))
    ));
}

#[test]
fn unusable_configurations_are_refused() {
    let bad_key = "  - aesgcm:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n";
    let short_box = "  - secretbox:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n";
    let no_keys = "  - secretbox:\n      keys: []\n";
    let unsupported = "  - kms:\n      name: vault\n";
    for providers in [bad_key, short_box, no_keys, unsupported] {
        let text = format!(
            "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        );
        assert!(EncryptionConfig::parse(&text).is_err(), "{providers}");
    }
    assert!(EncryptionConfig::parse("kind: Other\n").is_err());
}

#[test]
fn secretbox_seals_in_nacl_layout_and_rotates_with_aesgcm() {
    let c = config(&format!(
        "  - secretbox:\n      keys:\n      - name: box1\n        secret: {KEY1}\n  - aesgcm:\n      keys:\n      - name: key1\n        secret: {KEY1}\n"
    ));
    let sealed = c
        .seal(SECRET, b"{\"data\":\"hunter2\"}")
        .expect("seal")
        .expect("sealed");
    let head = b"k8s:enc:secretbox:v1:box1:";
    assert!(sealed.starts_with(head));
    // 24-byte nonce, 16-byte tag, then as many bytes as the plain text.
    assert_eq!(sealed.len(), head.len() + 24 + 16 + 18);
    assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
    assert_eq!(
        c.open(SECRET, &sealed).expect("open").as_deref(),
        Some(&b"{\"data\":\"hunter2\"}"[..])
    );
    // A flipped bit anywhere fails to open.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        c.open(SECRET, &tampered),
        Err(EncryptionError::Open(_))
    ));
    assert!(matches!(
        c.open(SECRET, &sealed[..head.len() + 30]),
        Err(EncryptionError::Open(_))
    ));
    // Values an older aesgcm configuration sealed stay readable.
    let old = config(&format!(
        "  - aesgcm:\n      keys:\n      - name: key1\n        secret: {KEY1}\n"
    ));
    let by_old = old.seal(SECRET, b"{}").expect("seal").expect("sealed");
    assert_eq!(
        c.open(SECRET, &by_old).expect("open").as_deref(),
        Some(&b"{}"[..])
    );
    // A key name of the wrong provider does not open it.
    let mut renamed = b"k8s:enc:aesgcm:v1:box1:".to_vec();
    renamed.extend_from_slice(&sealed[head.len()..]);
    assert!(matches!(
        c.open(SECRET, &renamed),
        Err(EncryptionError::NoProvider(_))
    ));
}

#[test]
fn patterns_cover_their_resources() {
    assert!(covers("secrets", "", "secrets"));
    assert!(!covers("secrets", "apps", "secrets"));
    assert!(covers("deployments.apps", "apps", "deployments"));
    assert!(covers("*.apps", "apps", "statefulsets"));
    assert!(covers("*.", "", "configmaps"));
    assert!(covers("*.*", "batch", "jobs"));
    assert!(!covers("*.apps", "", "pods"));
}
