//! The API server driven by kube-rs, as an operator would: CRUD, optimistic
//! concurrency, patches, selectors, pagination, watch, finalizers, dry run, and
//! upstream's `Status` errors.

use crate::common;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::ObjectMeta;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..Default::default()
    }
}

fn status_code(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_with_optimistic_concurrency() {
    let server = common::Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");

    let created = api
        .create(&PostParams::default(), &cm("one", &[("app", "web")]))
        .await
        .expect("create");
    let rv1 = created.metadata.resource_version.clone().expect("rv");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        status_code(
            api.create(&PostParams::default(), &cm("one", &[]))
                .await
                .expect_err("duplicate")
        ),
        (409, "AlreadyExists".into())
    );

    let mut changed = created.clone();
    changed.data = Some([("k".to_owned(), "v2".to_owned())].into());
    let replaced = api
        .replace("one", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    // The first version is stale now.
    assert_eq!(
        status_code(
            api.replace("one", &PostParams::default(), &changed)
                .await
                .expect_err("stale")
        ),
        (409, "Conflict".into())
    );

    let got = api.get("one").await.expect("get");
    assert_eq!(
        got.data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(String::as_str),
        Some("v2")
    );
    assert_eq!(
        got.metadata.uid, created.metadata.uid,
        "uid survives updates"
    );

    api.delete("one", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        status_code(api.get("one").await.expect_err("gone")),
        (404, "NotFound".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_and_json_patches() {
    let server = common::Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &cm("p", &[("a", "1")]))
        .await
        .expect("create");

    let merged = api
        .patch("p", &PatchParams::default(), &Patch::Merge(serde_json::json!({"metadata": {"labels": {"b": "2", "a": null}}, "data": {"x": "y"}})))
        .await
        .expect("merge patch");
    let labels = merged.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        (labels.get("a"), labels.get("b").map(String::as_str)),
        (None, Some("2"))
    );
    assert_eq!(merged.data.as_ref().map(|d| d.len()), Some(2));

    let ops: json_patch_ops::Ops = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/data/x", "value": "y"},
        {"op": "replace", "path": "/data/x", "value": "z"}
    ]))
    .expect("ops");
    let patched = api
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(ops.0))
        .await
        .expect("json patch");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("x"))
            .map(String::as_str),
        Some("z")
    );

    let failing: json_patch_ops::Ops = serde_json::from_value(
        serde_json::json!([{"op": "test", "path": "/data/x", "value": "nope"}]),
    )
    .expect("ops");
    assert_eq!(
        status_code(
            api.patch("p", &PatchParams::default(), &Patch::<()>::Json(failing.0))
                .await
                .expect_err("test fails")
        )
        .0,
        422
    );
}

/// JSON patch documents, as kube-rs sends them.
mod json_patch_ops {
    #[derive(serde::Deserialize)]
    pub struct Ops(pub json_patch::Patch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_pagination() {
    let server = common::Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), &[("tier", tier)]),
        )
        .await
        .expect("create");
    }
    let front = api
        .list(&ListParams::default().labels("tier=front"))
        .await
        .expect("list");
    assert_eq!(front.items.len(), 4);
    let not_front = api
        .list(&ListParams::default().labels("tier notin (front)"))
        .await
        .expect("list");
    assert_eq!(not_front.items.len(), 3);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .expect("list");
    assert_eq!(by_name.items.len(), 1);
    let bad = api
        .list(&ListParams::default().fields("spec.nothing=x"))
        .await
        .expect_err("unsupported field");
    assert_eq!(status_code(bad).0, 400);

    let first = api
        .list(&ListParams::default().limit(3))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(second.items.len(), 3);
    let third = api
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(second.metadata.continue_.as_deref().expect("token")),
        )
        .await
        .expect("page 3");
    assert_eq!(third.items.len(), 1);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());
    let mut names: Vec<String> = first
        .items
        .iter()
        .chain(&second.items)
        .chain(&third.items)
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());

    // A selector with a limit smaller than the store's page still finds
    // matches beyond the first page, and continues after the last one.
    let back = api
        .list(&ListParams::default().labels("tier=back").limit(2))
        .await
        .expect("filtered page");
    assert_eq!(back.items.len(), 2);
    assert!(back.metadata.continue_.is_some());

    // deletecollection removes exactly what the selector matches and returns it.
    let gone = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=back"),
        )
        .await
        .expect("delete collection")
        .left()
        .expect("the deleted objects");
    let mut gone: Vec<String> = gone
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    gone.sort();
    assert_eq!(gone, ["c1", "c3", "c5"]);
    let left: Vec<String> = api
        .list(&ListParams::default().labels("tier"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["c0", "c2", "c4", "c6"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_changes_and_resumes() {
    let server = common::Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let start = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");

    let mut stream = api
        .watch(&WatchParams::default().labels("app=w").timeout(60), &start)
        .await
        .expect("watch")
        .boxed();
    api.create(&PostParams::default(), &cm("w1", &[("app", "w")]))
        .await
        .expect("create");
    api.create(&PostParams::default(), &cm("other", &[("app", "x")]))
        .await
        .expect("create");
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"k": "changed"}})),
    )
    .await
    .expect("patch");
    // Relabelling moves the object out of the watched set: seen as DELETED.
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .expect("patch");

    let mut kinds = Vec::new();
    let mut last_rv = String::new();
    while kinds.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("event in time")
            .expect("ok")
            .expect("open");
        let (kind, obj) = match ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        };
        assert_eq!(obj.metadata.name.as_deref(), Some("w1"));
        last_rv = obj.metadata.resource_version.clone().expect("rv");
        kinds.push(kind);
    }
    assert_eq!(kinds, vec!["ADDED", "MODIFIED", "DELETED"]);

    // Resume from the last event: only later changes arrive.
    api.create(&PostParams::default(), &cm("w2", &[("app", "w")]))
        .await
        .expect("create");
    let mut resumed = api
        .watch(
            &WatchParams::default().labels("app=w").timeout(60),
            &last_rv,
        )
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), resumed.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open")
    {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("w2")),
        other => panic!("expected ADDED w2, got {other:?}"),
    }

    // A watch with bookmarks from "now" with the whole state first (watch-list).
    let wp = WatchParams::streaming_lists().timeout(60);
    let mut list_stream = api.watch(&wp, "0").await.expect("watch-list").boxed();
    let mut added = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), list_stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open")
        {
            WatchEvent::Added(_) => added += 1,
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, 3, "w1, other and w2 exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_dry_run_and_errors() {
    let server = common::Server::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held)
        .await
        .expect("create");
    api.delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = api.get("held").await.expect("still there");
    assert!(
        pending.metadata.deletion_timestamp.is_some(),
        "marked for deletion"
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("clear finalizers");
    assert_eq!(status_code(api.get("held").await.expect_err("gone")).0, 404);

    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &cm("dry", &[]))
        .await
        .expect("dry-run create");
    assert_eq!(
        status_code(api.get("dry").await.expect_err("not stored")).0,
        404
    );

    let invalid = api
        .create(&PostParams::default(), &cm("Not_Valid", &[]))
        .await
        .expect_err("invalid");
    match invalid {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("metadata.name"), "{}", s.message);
        }
        other => panic!("{other}"),
    }
    let missing_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    assert_eq!(
        status_code(
            missing_ns
                .create(&PostParams::default(), &cm("x", &[]))
                .await
                .expect_err("no namespace")
        ),
        (404, "NotFound".into())
    );

    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        assert!(names.iter().any(|n| n == ns), "{ns} bootstrapped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cache_serves_many_watchers_and_any_version_lists() {
    let server = common::Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut revs = Vec::new();
    for i in 0..20 {
        let c = api
            .create(
                &PostParams::default(),
                &cm(&format!("m{i:02}"), &[("batch", "one")]),
            )
            .await
            .expect("create");
        revs.push(c.metadata.resource_version.expect("rv"));
    }
    // resourceVersion=0 lists may be served from the cache: they must converge on
    // the same items as a consistent list.
    let consistent = api.list(&ListParams::default()).await.expect("list");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let any = api
            .list(&ListParams::default().match_any())
            .await
            .expect("rv=0 list");
        if any.items.len() == consistent.items.len() {
            let paged = api
                .list(&ListParams::default().match_any().limit(7))
                .await
                .expect("paged");
            assert_eq!(paged.items.len(), 7);
            assert_eq!(paged.metadata.remaining_item_count, Some(13));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rv=0 list never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Resuming from the middle replays exactly the later creates.
    let mut resumed = api
        .watch(&WatchParams::default().timeout(60), &revs[9])
        .await
        .expect("watch")
        .boxed();
    for i in 10..20 {
        match tokio::time::timeout(Duration::from_secs(10), resumed.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open")
        {
            WatchEvent::Added(o) => assert_eq!(o.metadata.name, Some(format!("m{i:02}"))),
            other => panic!("expected ADDED m{i:02}, got {other:?}"),
        }
    }

    // Many watchers, one change: every watcher sees it.
    let now = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut watchers = Vec::new();
    for _ in 0..200 {
        watchers.push(
            api.watch(
                &WatchParams::default().labels("batch=two").timeout(60),
                &now,
            )
            .await
            .expect("watch")
            .boxed(),
        );
    }
    api.create(&PostParams::default(), &cm("fanout", &[("batch", "two")]))
        .await
        .expect("create");
    for mut w in watchers {
        match tokio::time::timeout(Duration::from_secs(20), w.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open")
        {
            WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("fanout")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation_and_typed_decoding() {
    let server = common::Server::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("fv", &[]))
        .await
        .expect("create");

    let unknown = Patch::Merge(serde_json::json!({"data": {"a": "b"}, "bogus": {"x": 1}}));
    match api
        .patch("fv", &PatchParams::default().validation_strict(), &unknown)
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert!(
                s.message
                    .contains(r#"strict decoding error: unknown field "bogus""#),
                "{}",
                s.message
            );
        }
        other => panic!("expected 400, got {other:?}"),
    }
    // Warn (the default) and Ignore accept the patch and drop the field.
    let patched = api
        .patch("fv", &PatchParams::default(), &unknown)
        .await
        .expect("warn");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("b")
    );
    let raw = client
        .request_text(
            http::Request::get("/api/v1/namespaces/default/configmaps/fv")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("raw get");
    assert!(
        !raw.contains("bogus"),
        "unknown fields are not stored: {raw}"
    );

    // A field of the wrong type is refused whatever the validation level.
    let wrong = Patch::Merge(serde_json::json!({"data": {"a": 5}}));
    match api
        .patch("fv", &PatchParams::default().validation_ignore(), &wrong)
        .await
    {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 400 && s.message.contains("cannot be handled as a ConfigMap"),
            "{}",
            s.message
        ),
        other => panic!("expected 400, got {other:?}"),
    }
}
