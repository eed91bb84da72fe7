//! A writer that reports every acknowledged write, for the crash-safety test:
//! the test reads the acknowledgements, kills this process with SIGKILL, reopens
//! the store and checks that every acknowledged write survived.

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use kybern_store::{SqliteOptions, SqliteStore, Store};

/// Arguments of `kybern store-writer`.
#[derive(clap::Args, Debug)]
pub struct StoreWriterArgs {
    /// The sqlite database file.
    #[arg(long)]
    path: PathBuf,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Key prefix (each writer writes `<prefix>/<writer>/<n>`).
    #[arg(long, default_value = "/crash")]
    prefix: String,
}

/// Writes forever (until killed): each writer creates a key, then updates it
/// with compare-and-swap, printing `ack <key> <revision> <value>` after each.
pub async fn run(args: StoreWriterArgs) -> anyhow::Result<()> {
    let mut options = SqliteOptions::new(&args.path);
    options.compaction = None;
    let store = SqliteStore::open(options)?;
    let (acks, mut acks_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for w in 0..args.writers {
        let (store, acks, prefix) = (store.clone(), acks.clone(), args.prefix.clone());
        tokio::spawn(async move {
            for n in 0u64.. {
                let key = format!("{prefix}/{w}/{n}");
                let value = format!("v{n}-a");
                let Ok(rev) = store.create(&key, Bytes::from(value.clone())).await else {
                    return;
                };
                if acks.send(format!("ack {key} {rev} {value}")).is_err() {
                    return;
                }
                let value = format!("v{n}-b");
                let Ok(rev) = store.update(&key, Bytes::from(value.clone()), rev).await else {
                    return;
                };
                if acks.send(format!("ack {key} {rev} {value}")).is_err() {
                    return;
                }
            }
        });
    }
    drop(acks);
    let mut out = std::io::stdout().lock();
    while let Some(line) = acks_rx.recv().await {
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}
