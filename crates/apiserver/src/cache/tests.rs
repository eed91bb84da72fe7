//! Tests of the watch cache's objects and lines.

use std::sync::Arc;

use kybern_store::EventKind;
use serde_json::Value;

use super::*;
use crate::registry::Registry;
use crate::request::ListOptions;

/// A built-in `v1` resource.
fn builtin(plural: &str) -> Arc<crate::registry::ResourceInfo> {
    Registry::with_builtins()
        .get("", "v1", plural)
        .expect("a built-in resource")
}

#[test]
fn cached_pods_match_label_and_field_selectors() {
    let info = builtin("pods");
    let obj = serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": ""}},
        "spec": {"nodeName": "n1", "containers": []},
        "status": {"phase": "Running"},
    });
    let pod = CachedObject::new(&info, "/registry/core/pods/ns/p", &obj, 3);
    assert_eq!(pod.field("spec.nodeName"), Some("n1"));
    assert_eq!(pod.field("status.podIP"), Some(""));
    assert_eq!(pod.field("spec.unknown"), None);
    let opts = |labels: &str, fields: &str| ListOptions {
        labels: kybern_apimachinery::labels::Selector::parse(labels).expect("labels"),
        fields: kybern_apimachinery::fields::FieldSelector::parse(fields).expect("fields"),
        limit: 0,
        continue_from: None,
        revision: crate::request::ListRevision::Latest,
        resource_version: None,
        watch: false,
        bookmarks: false,
        timeout_seconds: None,
        send_initial_events: None,
    };
    for (labels, fields, want) in [
        ("", "", true),
        ("app=web", "spec.nodeName=n1", true),
        ("app in (web,api),tier", "status.phase!=Pending", true),
        ("tier=", "metadata.name=p,metadata.namespace=ns", true),
        ("app=api", "", false),
        ("!tier", "", false),
        ("web", "", false),
        ("", "spec.nodeName=n2", false),
        ("", "status.podIP=10.0.0.1", false),
    ] {
        assert_eq!(
            pod.matches(&opts(labels, fields)),
            want,
            "{labels} / {fields}"
        );
    }
}

#[test]
fn a_live_line_shares_the_cached_objects_bytes() {
    let info = builtin("configmaps");
    let obj = serde_json::json!({"metadata": {"name": "c", "namespace": "ns"}, "data": {"k": "v"}});
    let key = "/registry/core/configmaps/ns/c";
    let mut packer = Packer::default();
    let (object, line) = CachedObject::with_line(&info, key, &obj, 5, "MODIFIED", &mut packer);
    let object = Arc::new(object);
    let json = object.json();
    assert_eq!(
        serde_json::from_slice::<Value>(&json).ok(),
        Some(obj.clone())
    );
    let event = |kind, prev| {
        Arc::new(CachedEvent {
            revision: 5,
            kind,
            object: object.clone(),
            prev,
        })
    };
    let modified = LiveEvent::new(
        event(EventKind::Put, Some(object.clone())),
        line.clone(),
        "MODIFIED",
    );
    let expected = format!(
        "{{\"type\":\"MODIFIED\",\"object\":{}}}\n",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(modified.line(), expected.as_bytes());
    assert_eq!(modified.json(), json);
    // A small object is kept whole: the very bytes of the line, not a copy.
    let offset = modified.line().len() - json.len() - 2;
    assert_eq!(modified.line()[offset..].as_ptr(), json.as_ptr());
    // Another type than the line was made with is encoded apart.
    let added = LiveEvent::new(event(EventKind::Put, None), line, "MODIFIED");
    assert!(
        added
            .line()
            .starts_with(b"{\"type\":\"ADDED\",\"object\":{")
    );
    assert!(!added.line().as_ptr_range().contains(&json.as_ptr()));
    assert_eq!(added.json(), json);
}

#[test]
fn large_siblings_are_held_packed_and_read_back_whole() {
    let info = builtin("configmaps");
    let mut packer = Packer::default();
    let held: Vec<(usize, usize)> = (0..3)
        .map(|i| {
            let obj = serde_json::json!({"metadata": {"name": format!("c{i}"), "namespace": "ns"},
                "data": {"config": "setting = value\n".repeat(40)}});
            let key = format!("/registry/core/configmaps/ns/c{i}");
            let (o, line) = CachedObject::with_line(&info, &key, &obj, 5, "ADDED", &mut packer);
            assert_eq!(serde_json::from_slice::<Value>(&o.json()).ok(), Some(obj));
            (o.held(), line.len())
        })
        .collect();
    // The first is its family's reference; the rest pack against it.
    assert!(held[0].0 > 600, "{held:?}");
    assert!(
        held[1].0 * 10 < held[1].1 && held[2].0 * 10 < held[2].1,
        "{held:?}"
    );
}

#[test]
fn an_object_this_server_wrote_is_cached_as_if_decoded() {
    let info = builtin("pods");
    let mut obj = serde_json::json!({
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running"},
    });
    let key = "/registry/core/pods/ns/p";
    let encoded = crate::storage::ObjectStore::encode(&mut obj).expect("encodes");
    let prepared = crate::written::Prepared::new(&info, &obj, encoded.clone());
    let mut packer = Packer::default();
    let (ours, line) = CachedObject::from_written(&info, key, prepared, 7, "ADDED", &mut packer)
        .expect("metadata");
    let decoded = crate::storage::ObjectStore::decode(&encoded.bytes, 7).expect("decodes");
    let (theirs, _) = CachedObject::with_line(&info, key, &decoded, 7, "ADDED", &mut packer);
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).expect("JSON");
    assert_eq!(parse(&ours.json()), parse(&theirs.json()));
    assert_eq!(parse(&ours.json())["metadata"]["resourceVersion"], "7");
    assert_eq!(ours.field("spec.nodeName"), Some("n1"));
    assert_eq!(ours.index.labels.value_of("app"), Some("web"));
    assert_eq!(parse(&line)["type"], "ADDED");
    assert_eq!(parse(&line)["object"], parse(&ours.json()));
}
