//! Crash safety of the sqlite store: `kybern store-writer` writes with many
//! concurrent writers and reports each acknowledged write; the test kills it with
//! SIGKILL mid-stream, reopens the store, and checks that every acknowledged
//! write is there and that the log is consistent. Repeated on the same file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use kybern_store::{RangeRequest, SqliteOptions, SqliteStore, Store};

/// The last acknowledged (revision, value) of each key.
type Acked = HashMap<String, (i64, String)>;

/// Runs the writer until it has acknowledged `min_acks` writes, kills it with
/// SIGKILL, and returns every write it acknowledged.
fn write_then_kill(path: &std::path::Path, prefix: &str, min_acks: usize) -> Acked {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args([
            "store-writer",
            "--writers",
            "16",
            "--prefix",
            prefix,
            "--path",
        ])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kybern store-writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = Acked::new();
    let mut lines = BufReader::new(stdout).lines();
    let mut count = 0;
    while count < min_acks {
        let line = lines.next().expect("writer stopped early").expect("read");
        record(&mut acked, &line);
        count += 1;
    }
    // std's kill() sends SIGKILL: no chance to flush or clean up.
    child.kill().expect("kill -9");
    // Whatever it printed before dying was acknowledged too.
    for line in lines.map_while(Result::ok) {
        record(&mut acked, &line);
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the writer was killed, not finished");
    acked
}

fn record(acked: &mut Acked, line: &str) {
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts.len(), 4, "malformed ack {line:?}");
    assert_eq!(parts[0], "ack");
    let rev: i64 = parts[2].parse().expect("revision");
    let entry = acked
        .entry(parts[1].to_owned())
        .or_insert((0, String::new()));
    if rev > entry.0 {
        *entry = (rev, parts[3].to_owned());
    }
}

async fn verify(path: &std::path::Path, acked: &Acked, prefix: &str) {
    let mut options = SqliteOptions::new(path);
    options.compaction = None;
    let store = SqliteStore::open(options).expect("reopen after kill -9");
    for (key, (rev, value)) in acked {
        let kv = store
            .get(key, 0)
            .await
            .expect("get")
            .kv
            .unwrap_or_else(|| panic!("acknowledged key {key} lost"));
        assert!(
            kv.mod_revision >= *rev,
            "{key}: acknowledged revision {rev}, found {}",
            kv.mod_revision
        );
        if kv.mod_revision == *rev {
            assert_eq!(kv.value, value.as_bytes(), "{key}");
        }
    }
    // The log is consistent: revisions 1..=current, each exactly once, and the
    // replayed history ends in the current state.
    let current = store.current_revision().await.expect("revision");
    let mut watch = store.watch("/", 1).await.expect("watch from 1");
    let mut last = HashMap::new();
    for expected in 1..=current {
        let ev = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("history replays in time")
            .expect("stream open")
            .expect("event");
        assert_eq!(ev.revision(), expected, "history has no gap or duplicate");
        last.insert(ev.kv.key.clone(), ev.kv.clone());
    }
    let state = store
        .range(RangeRequest::prefix(prefix))
        .await
        .expect("range");
    assert!(!state.kvs.is_empty());
    for kv in &state.kvs {
        assert_eq!(
            last.get(&kv.key),
            Some(kv),
            "current row of {} matches the log",
            kv.key
        );
    }
    let ours = last.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(ours, state.kvs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    for (round, acks) in [(0, 2_000), (1, 5_000), (2, 300)] {
        let prefix = format!("/crash{round}");
        let acked = write_then_kill(&path, &prefix, acks);
        assert!(acked.len() >= acks / 2 / 16);
        verify(&path, &acked, &prefix).await;
    }
}
