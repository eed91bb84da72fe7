//! Behaviour of the embedded sqlite backend beyond the shared conformance suite:
//! persistence, exclusivity, foreign files, bounded size, lagging watchers, full disk.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kybern_store::{
    CompactorOptions, Precondition, RangeRequest, SqliteOptions, SqliteStore, Store, StoreError,
};

fn options(path: &std::path::Path) -> SqliteOptions {
    let mut o = SqliteOptions::new(path);
    o.compaction = None;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let (rev, deleted_rev) = {
        let s = SqliteStore::open(options(&path)).expect("open");
        let r = s
            .create("/a/1", Bytes::from_static(b"one"))
            .await
            .expect("create");
        s.create("/a/2", Bytes::from_static(b"two"))
            .await
            .expect("create");
        let d = s
            .delete("/a/2", Precondition::None)
            .await
            .expect("delete")
            .revision;
        (r, d)
    };
    let s = SqliteStore::open(options(&path)).expect("reopen");
    assert_eq!(s.current_revision().await.expect("rev"), deleted_rev);
    let kv = s.get("/a/1", 0).await.expect("get").kv.expect("present");
    assert_eq!((kv.value.as_ref(), kv.mod_revision), (b"one".as_ref(), rev));
    assert_eq!(s.get("/a/2", 0).await.expect("get").kv, None);
    let next = s
        .create("/a/3", Bytes::from_static(b"3"))
        .await
        .expect("create");
    assert_eq!(next, deleted_rev + 1, "revisions continue after a restart");
    let mut w = s.watch("/a/", 1).await.expect("watch history after reopen");
    let mut revs = Vec::new();
    for _ in 0..4 {
        revs.push(w.next().await.expect("event").expect("ok").revision());
    }
    assert_eq!(revs, vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let _first = SqliteStore::open(options(&path)).expect("open");
    match SqliteStore::open(options(&path)) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("in use"), "{msg}"),
        other => panic!("expected the second open to fail, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_garbage_files_are_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = dir.path().join("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("sqlite");
        conn.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');")
            .expect("seed");
    }
    let before = std::fs::read(&foreign).expect("read");
    assert!(matches!(
        SqliteStore::open(options(&foreign)),
        Err(StoreError::Corrupt(_))
    ));
    assert!(
        std::fs::read(&foreign).expect("read") == before,
        "a foreign database is left as it was"
    );

    let garbage = dir.path().join("garbage.db");
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, &noise).expect("write");
    assert!(matches!(
        SqliteStore::open(options(&garbage)),
        Err(StoreError::Corrupt(_))
    ));
    assert!(
        std::fs::read(&garbage).expect("read") == noise,
        "a garbage file is left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_bounds_the_size_under_churn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = SqliteOptions::new(dir.path().join("s.db"));
    o.compaction = Some(CompactorOptions {
        interval: Duration::from_millis(100),
        min_retained_revisions: 100,
    });
    let s = SqliteStore::open(o).expect("open");
    let value = Bytes::from(vec![7u8; 4096]);
    let keys = 50;
    let mut sizes = Vec::new();
    let mut first_rev_of_round = Vec::new();
    for round in 0..8 {
        first_rev_of_round.push(s.current_revision().await.expect("rev") + 1);
        for i in 0..1_000 {
            s.put(
                &format!("/churn/{}", i % keys),
                value.clone(),
                Precondition::None,
            )
            .await
            .expect("put");
        }
        // Wait until the compactor has passed this round's start, then measure.
        let old = first_rev_of_round[round];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !matches!(
            s.get("/churn/0", old).await,
            Err(StoreError::Compacted { .. })
        ) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "compactor never compacted past {old}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sizes.push(s.db_size().await.expect("size"));
    }
    // 8,000 writes of 4 KiB would be over 32 MiB kept whole; compacted, the file
    // stops growing after the first rounds.
    let settled = sizes[2];
    let last = *sizes.last().expect("sizes");
    // Growth of a few pages is page-allocation noise; a leak grows by about a
    // megabyte a round (the last version of every key, each compaction).
    assert!(
        last <= settled + settled / 2,
        "size kept growing: {sizes:?}"
    );
    assert!(last < 16 << 20, "size {last} is not bounded: {sizes:?}");
    let all = s
        .range(RangeRequest::prefix("/churn/"))
        .await
        .expect("range");
    assert_eq!(all.kvs.len(), keys, "compaction keeps every live key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_catches_up_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = options(&dir.path().join("s.db"));
    o.watch_buffer = 16;
    o.watcher_queue = 8;
    let s = SqliteStore::open(o).expect("open");
    let mut slow = s.watch("/lag/", 0).await.expect("watch");
    let mut acked = Vec::new();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..400 {
                    revs.push(
                        s.put(
                            &format!("/lag/{w}/{}", i % 5),
                            Bytes::from_static(b"v"),
                            Precondition::None,
                        )
                        .await
                        .expect("put"),
                    );
                }
                revs
            })
        })
        .collect();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    acked.sort_unstable();
    // Only now does the watcher read: far more than its buffers hold was written.
    let mut seen = Vec::with_capacity(acked.len());
    while seen.len() < acked.len() {
        let ev = tokio::time::timeout(Duration::from_secs(20), slow.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        seen.push(ev.revision());
    }
    assert_eq!(seen, acked, "every event once, in order");
}

/// A full disk fails writes with a clear error and loses nothing acknowledged.
/// Needs root, to mount a small tmpfs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=3m",
            "kybern-test-full",
            mnt.to_str().expect("utf-8 path"),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: a_full_disk_fails_writes_cleanly needs root to mount a tmpfs");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let path = mnt.join("s.db");
    let mut acked = BTreeMap::new();
    let failure = {
        let s = SqliteStore::open(options(&path)).expect("open");
        let value = Bytes::from(vec![1u8; 16 * 1024]);
        let mut failure = None;
        for i in 0..10_000 {
            let key = format!("/full/{i}");
            match s.create(&key, value.clone()).await {
                Ok(rev) => {
                    acked.insert(key, rev);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Reads still work while the disk is full.
        let n = s
            .range(RangeRequest::prefix("/full/"))
            .await
            .expect("range on a full disk")
            .kvs
            .len();
        assert_eq!(n, acked.len());
        failure
    };
    match failure {
        Some(StoreError::Backend(msg)) => assert!(
            msg.contains("full") || msg.contains("disk") || msg.contains("I/O"),
            "{msg}"
        ),
        other => panic!("expected a backend error from a full disk, got {other:?}"),
    }
    assert!(!acked.is_empty());
    let s = SqliteStore::open(options(&path)).expect("reopen after a full disk");
    for (key, rev) in &acked {
        let kv = s
            .get(key, 0)
            .await
            .expect("get")
            .kv
            .unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(kv.mod_revision, *rev);
    }
}
