//! The conformance cases: each takes a fresh store and asserts etcd's semantics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub use crate::history::past_counts_follow_creates_and_deletes;
use bytes::Bytes;
use futures::StreamExt;
use kybern_store::{
    EventKind, MAX_VALUE_BYTES, Precondition, RangeRequest, Revision, Store, StoreError,
    WatchStream,
};

pub type S = Arc<dyn Store>;

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Takes `n` events from a watch, failing the test if they do not come in time.
async fn take(stream: &mut WatchStream, n: usize) -> Vec<kybern_store::Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(event))) => out.push(event),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", out.len()),
            Ok(None) => panic!("watch ended after {} events", out.len()),
            Err(_) => panic!("timed out after {} of {n} events", out.len()),
        }
    }
    out
}

/// Asserts that no further event arrives within a short wait.
async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("unexpected event {event:?}");
    }
}

pub async fn create_get_update_delete(s: S) {
    let r1 = s.create("/c/a", b("one")).await.expect("create");
    assert!(r1 > 0);
    let got = s.get("/c/a", 0).await.expect("get").kv.expect("present");
    assert_eq!(
        (got.value.as_ref(), got.create_revision, got.mod_revision),
        (b"one".as_ref(), r1, r1)
    );

    assert!(matches!(
        s.create("/c/a", b("again")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    match s.update("/c/a", b("stale"), r1 - 1).await {
        Err(StoreError::Conflict {
            expected,
            current: Some(current),
            ..
        }) => {
            assert_eq!(expected, r1 - 1);
            assert_eq!(current.mod_revision, r1);
            assert_eq!(current.value, b("one"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let r2 = s.update("/c/a", b("two"), r1).await.expect("update");
    assert!(r2 > r1);
    let got = s.get("/c/a", 0).await.expect("get").kv.expect("present");
    assert_eq!(
        (got.value, got.create_revision, got.mod_revision),
        (b("two"), r1, r2)
    );

    assert!(matches!(
        s.delete("/c/a", Precondition::ModRevision(r1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.delete("/c/a", Precondition::Absent).await,
        Err(StoreError::Conflict { .. })
    ));
    let del = s
        .delete("/c/a", Precondition::ModRevision(r2))
        .await
        .expect("delete");
    assert!(del.revision > r2);
    assert_eq!((del.prev.value, del.prev.mod_revision), (b("two"), r2));
    assert_eq!(s.get("/c/a", 0).await.expect("get").kv, None);
    assert!(matches!(
        s.delete("/c/a", Precondition::None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.update("/c/a", b("x"), r2).await,
        Err(StoreError::NotFound { .. })
    ));

    // A key created again after a delete starts a new life.
    let r3 = s.create("/c/a", b("three")).await.expect("re-create");
    let got = s.get("/c/a", 0).await.expect("get").kv.expect("present");
    assert_eq!((got.create_revision, got.mod_revision), (r3, r3));
    // Nothing that failed changed the revision.
    assert_eq!(s.current_revision().await.expect("rev"), r3);
}

pub async fn revisions_strictly_increase(s: S) {
    let mut last: Revision = s.current_revision().await.expect("rev");
    for i in 0..50 {
        let rev = s
            .put(&format!("/r/{}", i % 7), b("v"), Precondition::None)
            .await
            .expect("put");
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
    }
    assert_eq!(s.current_revision().await.expect("rev"), last);
    let got = s.get("/r/0", 0).await.expect("get");
    assert_eq!(
        got.revision, last,
        "a read reports the revision it was served at"
    );
}

pub async fn unconditional_put_keeps_create_revision(s: S) {
    let r1 = s
        .put("/u/k", b("1"), Precondition::None)
        .await
        .expect("put creates");
    let r2 = s
        .put("/u/k", b("2"), Precondition::None)
        .await
        .expect("put overwrites");
    let kv = s.get("/u/k", 0).await.expect("get").kv.expect("present");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.value),
        (r1, r2, b("2"))
    );
    s.delete("/u/k", Precondition::None)
        .await
        .expect("unconditional delete");
}

pub async fn range_pages_with_continue_and_count(s: S) {
    for i in 0..25 {
        s.create(&format!("/p/{i:02}"), b(&format!("v{i}")))
            .await
            .expect("create");
    }
    let mut req = RangeRequest {
        prefix: "/p/".into(),
        limit: 10,
        ..Default::default()
    };
    let page1 = s.range(req.clone()).await.expect("page 1");
    assert_eq!(page1.kvs.len(), 10);
    assert!(page1.more);
    assert_eq!(page1.count, 25);
    assert_eq!(page1.kvs[0].key, "/p/00");
    assert_eq!(page1.kvs[9].key, "/p/09");

    req.start_after = Some(page1.kvs[9].key.clone());
    req.revision = page1.revision;
    let page2 = s.range(req.clone()).await.expect("page 2");
    assert_eq!(page2.kvs.first().map(|kv| kv.key.as_str()), Some("/p/10"));
    assert!(page2.more);
    assert_eq!(
        page2.count, 15,
        "count covers the range from the continue key"
    );
    assert_eq!(page2.revision, page1.revision);

    req.start_after = Some(page2.kvs[9].key.clone());
    let page3 = s.range(req).await.expect("page 3");
    assert_eq!(page3.kvs.len(), 5);
    assert!(!page3.more);
    assert_eq!(page3.count, 5);
    assert_eq!(page3.kvs[4].key, "/p/24");

    let all = s.range(RangeRequest::prefix("/p/")).await.expect("all");
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys come in order");
    assert_eq!((all.kvs.len(), all.more, all.count), (25, false, 25));
}

pub async fn range_is_limited_to_its_prefix(s: S) {
    for key in [
        "/a",
        "/a/1",
        "/a/2",
        "/a/2/x",
        "/ab",
        "/a0",
        "/b/1",
        "/a/\u{00e9}",
    ] {
        s.create(key, b("v")).await.expect("create");
    }
    let keys =
        |r: kybern_store::RangeResponse| r.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.range(RangeRequest::prefix("/a/")).await.expect("range")),
        vec!["/a/1", "/a/2", "/a/2/x", "/a/\u{00e9}"]
    );
    assert_eq!(
        keys(s.range(RangeRequest::prefix("/b/")).await.expect("range")),
        vec!["/b/1"]
    );
    assert!(keys(s.range(RangeRequest::prefix("/c/")).await.expect("range")).is_empty());
    assert_eq!(
        s.range(RangeRequest::prefix("/"))
            .await
            .expect("range")
            .kvs
            .len(),
        8
    );
}

pub async fn reads_at_past_revisions(s: S) {
    let r1 = s.create("/h/a", b("a1")).await.expect("create");
    let r2 = s.create("/h/b", b("b1")).await.expect("create");
    let r3 = s.update("/h/a", b("a2"), r1).await.expect("update");
    s.delete("/h/b", Precondition::None).await.expect("delete");
    s.create("/h/c", b("c1")).await.expect("create");

    let at_r2 = s
        .range(RangeRequest {
            prefix: "/h/".into(),
            revision: r2,
            ..Default::default()
        })
        .await
        .expect("range at r2");
    let view: Vec<_> = at_r2
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone()))
        .collect();
    assert_eq!(view, vec![("/h/a", b("a1")), ("/h/b", b("b1"))]);
    assert_eq!(at_r2.revision, r2);

    let at_r3 = s
        .range(RangeRequest {
            prefix: "/h/".into(),
            revision: r3,
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("range at r3");
    assert_eq!((at_r3.kvs.len(), at_r3.more, at_r3.count), (1, true, 2));

    assert_eq!(
        s.get("/h/a", r1).await.expect("get").kv.map(|kv| kv.value),
        Some(b("a1"))
    );
    assert_eq!(
        s.get("/h/a", r3).await.expect("get").kv.map(|kv| kv.value),
        Some(b("a2"))
    );
    assert_eq!(
        s.get("/h/b", r3)
            .await
            .expect("get")
            .kv
            .map(|kv| kv.mod_revision),
        Some(r2)
    );
    assert_eq!(s.get("/h/b", 0).await.expect("get").kv, None);
    assert_eq!(s.get("/h/c", r3).await.expect("get").kv, None);
}

pub async fn future_revision_is_refused(s: S) {
    let rev = s.create("/f/a", b("v")).await.expect("create");
    assert!(matches!(
        s.get("/f/a", rev + 100).await,
        Err(StoreError::FutureRevision { .. })
    ));
    let req = RangeRequest {
        prefix: "/f/".into(),
        revision: rev + 100,
        ..Default::default()
    };
    assert!(matches!(
        s.range(req).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

pub async fn watch_replays_from_an_old_revision(s: S) {
    let r1 = s.create("/w/a", b("1")).await.expect("create");
    let r2 = s.update("/w/a", b("2"), r1).await.expect("update");
    let r3 = s.create("/w/b", b("b")).await.expect("create");
    let r4 = s
        .delete("/w/a", Precondition::None)
        .await
        .expect("delete")
        .revision;

    let mut stream = s.watch("/w/", r1).await.expect("watch");
    let events = take(&mut stream, 4).await;
    let revs: Vec<_> = events.iter().map(|e| e.revision()).collect();
    assert_eq!(revs, vec![r1, r2, r3, r4]);

    assert_eq!(events[0].kind, EventKind::Put);
    assert!(events[0].is_create());
    assert_eq!(events[0].prev, None);
    assert_eq!(events[1].kv.value, b("2"));
    assert!(!events[1].is_create());
    assert_eq!(
        events[1]
            .prev
            .as_ref()
            .map(|p| (p.value.clone(), p.mod_revision)),
        Some((b("1"), r1))
    );
    assert_eq!(events[1].kv.create_revision, r1);
    assert_eq!(events[3].kind, EventKind::Delete);
    assert_eq!(events[3].kv.key, "/w/a");
    assert_eq!(
        events[3].prev.as_ref().map(|p| p.value.clone()),
        Some(b("2"))
    );

    // And it goes on with live events.
    let r5 = s.create("/w/c", b("c")).await.expect("create");
    let live = take(&mut stream, 1).await;
    assert_eq!(live[0].revision(), r5);
    assert_quiet(&mut stream).await;

    // A watch from a middle revision starts exactly there.
    let mut from_r3 = s.watch("/w/", r3).await.expect("watch");
    let revs: Vec<_> = take(&mut from_r3, 3)
        .await
        .iter()
        .map(|e| e.revision())
        .collect();
    assert_eq!(revs, vec![r3, r4, r5]);
}

pub async fn watch_from_now_sees_only_later_events(s: S) {
    s.create("/n/old", b("v")).await.expect("create");
    let mut stream = s.watch("/n/", 0).await.expect("watch");
    assert_quiet(&mut stream).await;
    let rev = s.create("/n/new", b("v")).await.expect("create");
    let events = take(&mut stream, 1).await;
    assert_eq!(
        (events[0].kv.key.as_str(), events[0].revision()),
        ("/n/new", rev)
    );
}

pub async fn watch_filters_by_prefix(s: S) {
    let mut stream = s.watch("/x/", 0).await.expect("watch");
    for key in ["/xy", "/x", "/y/1", "/x/1", "/x0", "/x/2/3"] {
        s.create(key, b("v")).await.expect("create");
    }
    let keys: Vec<_> = take(&mut stream, 2)
        .await
        .into_iter()
        .map(|e| e.kv.key)
        .collect();
    assert_eq!(keys, vec!["/x/1", "/x/2/3"]);
    assert_quiet(&mut stream).await;
}

pub async fn watch_under_concurrent_writers_has_no_gap_or_duplicate(s: S) {
    let start = s.current_revision().await.expect("rev") + 1;
    let mut stream = s.watch("/cw/", start).await.expect("watch");
    let writers = 8;
    let per_writer = 100;
    let mut handles = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_writer {
                let key = format!("/cw/{w}/{}", i % 10);
                let rev = s
                    .put(&key, b(&format!("{i}")), Precondition::None)
                    .await
                    .expect("put");
                acked.push(rev);
                if i % 25 == 24 {
                    acked.push(
                        s.delete(&key, Precondition::None)
                            .await
                            .expect("delete")
                            .revision,
                    );
                }
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for h in handles {
        acked.extend(h.await.expect("writer"));
    }
    let events = take(&mut stream, acked.len()).await;
    let seen: Vec<Revision> = events.iter().map(|e| e.revision()).collect();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "events in strictly increasing order"
    );
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        acked,
        "every acknowledged write seen once"
    );
    // Each event's prev is the previous event for that key.
    let mut last_by_key = std::collections::HashMap::new();
    for e in &events {
        let prev_rev = e.prev.as_ref().map(|p| p.mod_revision);
        if let Some(&(last_rev, last_kind)) = last_by_key.get(&e.kv.key) {
            let expected = if last_kind == EventKind::Delete {
                None
            } else {
                Some(last_rev)
            };
            assert_eq!(prev_rev, expected, "prev of {:?}", e.kv.key);
        }
        last_by_key.insert(e.kv.key.clone(), (e.revision(), e.kind));
    }
    assert_quiet(&mut stream).await;
}

pub async fn compaction_refuses_older_reads_and_watches(s: S) {
    let r1 = s.create("/k/a", b("1")).await.expect("create");
    s.create("/k/gone", b("x")).await.expect("create");
    s.delete("/k/gone", Precondition::None)
        .await
        .expect("delete");
    let mut rev = r1;
    for i in 0..20 {
        rev = s
            .update("/k/a", b(&format!("v{i}")), rev)
            .await
            .expect("update");
    }
    let mid = rev;
    for i in 0..5 {
        rev = s
            .update("/k/a", b(&format!("w{i}")), rev)
            .await
            .expect("update");
    }
    s.compact(mid).await.expect("compact");

    assert!(matches!(
        s.get("/k/a", r1).await,
        Err(StoreError::Compacted { .. })
    ));
    let old = RangeRequest {
        prefix: "/k/".into(),
        revision: mid - 1,
        ..Default::default()
    };
    assert!(matches!(
        s.range(old).await,
        Err(StoreError::Compacted { .. })
    ));
    match s.watch("/k/", r1).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(mut stream) => {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Err(StoreError::Compacted { .. }))) => {}
                other => panic!("expected a Compacted error in the stream, got {other:?}"),
            }
        }
    }
    assert!(
        matches!(s.compact(mid).await, Err(StoreError::Compacted { .. })),
        "compacting again to the same revision"
    );

    // The compaction point itself and everything after it stay readable.
    let at_mid = s
        .get("/k/a", mid)
        .await
        .expect("read at the compaction point")
        .kv
        .expect("present");
    assert_eq!(at_mid.mod_revision, mid);
    assert_eq!(s.get("/k/gone", mid).await.expect("get").kv, None);
    let now = s.get("/k/a", 0).await.expect("get").kv.expect("present");
    assert_eq!((now.mod_revision, now.create_revision), (rev, r1));
    let mut stream = s
        .watch("/k/", mid + 1)
        .await
        .expect("watch after the compaction point");
    let revs: Vec<_> = take(&mut stream, 5)
        .await
        .iter()
        .map(|e| e.revision())
        .collect();
    assert_eq!(revs.last(), Some(&rev));
    assert!(revs.windows(2).all(|w| w[0] < w[1]));
    assert!(matches!(
        s.compact(rev + 1000).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

pub async fn values_up_to_the_limit_and_a_clear_error_above(s: S) {
    let big: Bytes = (0..MAX_VALUE_BYTES)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let rev = s
        .create("/big/ok", big.clone())
        .await
        .expect("1.5 MiB value is accepted");
    let got = s.get("/big/ok", 0).await.expect("get").kv.expect("present");
    assert_eq!(got.value, big);
    assert_eq!(got.mod_revision, rev);
    let too_big = Bytes::from(vec![0u8; MAX_VALUE_BYTES + 1]);
    match s.create("/big/no", too_big.clone()).await {
        Err(StoreError::ValueTooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES))
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert!(matches!(
        s.update("/big/ok", too_big, rev).await,
        Err(StoreError::ValueTooLarge { .. })
    ));
    assert_eq!(s.get("/big/no", 0).await.expect("get").kv, None);
    assert_eq!(
        s.current_revision().await.expect("rev"),
        rev,
        "refused writes leave no trace"
    );
    assert_eq!(
        s.create("/big/empty", Bytes::new()).await.map(|_| ()).ok(),
        Some(()),
        "an empty value is fine"
    );
}

pub async fn empty_and_invalid_keys_are_rejected(s: S) {
    for bad in [
        "",
        "no-leading-slash",
        "/nul\0byte",
        "/new\nline",
        "/trailing/",
    ] {
        let invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey { .. }));
        assert!(
            invalid(s.create(bad, b("v")).await.map(|_| ())),
            "create {bad:?}"
        );
        assert!(invalid(s.get(bad, 0).await.map(|_| ())), "get {bad:?}");
        assert!(
            invalid(s.delete(bad, Precondition::None).await.map(|_| ())),
            "delete {bad:?}"
        );
    }
    let long = format!("/{}", "k".repeat(kybern_store::MAX_KEY_BYTES));
    assert!(matches!(
        s.create(&long, b("v")).await,
        Err(StoreError::InvalidKey { .. })
    ));
    for bad in ["", "x", "/a\0"] {
        assert!(
            matches!(
                s.range(RangeRequest::prefix(bad)).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "range {bad:?}"
        );
        assert!(
            matches!(s.watch(bad, 0).await, Err(StoreError::InvalidKey { .. })),
            "watch {bad:?}"
        );
    }
    assert_eq!(
        s.range(RangeRequest::prefix("/"))
            .await
            .expect("range")
            .kvs
            .len(),
        0,
        "nothing was written"
    );
}

pub async fn conflicting_writers_exactly_one_wins(s: S) {
    let base = s.create("/cas/k", b("0")).await.expect("create");
    let mut handles = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.update("/cas/k", b(&format!("w{i}")), base).await
        }));
    }
    let mut won = 0;
    for h in handles {
        match h.await.expect("task") {
            Ok(_) => won += 1,
            Err(StoreError::Conflict {
                current: Some(kv), ..
            }) => assert_ne!(kv.mod_revision, base),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won, 1, "exactly one compare-and-swap wins");
    let mut handles = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.create("/cas/new", b("v")).await.is_ok()
        }));
    }
    let mut created = 0;
    for h in handles {
        created += usize::from(h.await.expect("task"));
    }
    assert_eq!(created, 1, "exactly one create wins");
}
