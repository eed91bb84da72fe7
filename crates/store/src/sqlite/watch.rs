//! Watches on the sqlite log: each watcher replays history from the log, then
//! follows the batches the writer publishes, falling back to the log whenever it
//! lags, so it never skips or repeats an event.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::fanout::{BatchReceiver, RecvError};
use super::reader::{self, ReadPool};
use crate::error::StoreError;
use crate::types::{Event, Revision};

/// Events read from the log per catch-up query.
const PAGE: usize = 1_000;

/// Feeds one watcher's channel until its receiver is dropped or the store closes.
pub(super) async fn run(
    pool: Arc<ReadPool>,
    prefix: String,
    mut next: Revision,
    catch_up: bool,
    mut live: BatchReceiver,
    out: mpsc::Sender<Result<Event, StoreError>>,
) {
    let mut need_catch_up = catch_up;
    loop {
        if need_catch_up {
            match catch_up_from_log(&pool, &prefix, &mut next, &out).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    let _ = out.send(Err(err)).await;
                    return;
                }
            }
        }
        need_catch_up = true;
        loop {
            let batch = tokio::select! {
                _ = out.closed() => return,
                batch = live.recv() => batch,
            };
            match batch {
                Ok(batch) => {
                    for event in batch.iter() {
                        let rev = event.revision();
                        if rev < next {
                            continue;
                        }
                        next = rev + 1;
                        if event.kv.key.starts_with(prefix.as_str())
                            && out.send(Ok(event.clone())).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(%prefix, next, missed, "watcher lagged; catching up from the log");
                    break;
                }
                Err(RecvError::Closed) => {
                    let _ = out.send(Err(StoreError::Closed)).await;
                    return;
                }
            }
        }
    }
}

/// Replays events from `next` up to the log's current revision. Returns false
/// when the receiver is gone.
async fn catch_up_from_log(
    pool: &Arc<ReadPool>,
    prefix: &str,
    next: &mut Revision,
    out: &mpsc::Sender<Result<Event, StoreError>>,
) -> Result<bool, StoreError> {
    loop {
        let (from, owned_prefix) = (*next, prefix.to_owned());
        let (events, head) = pool
            .read(move |tx, meta| {
                let events = reader::events(tx, meta, &owned_prefix, from, PAGE)?;
                Ok((events, meta.revision))
            })
            .await?;
        let full = events.len() == PAGE;
        for event in events {
            *next = event.revision() + 1;
            if out.send(Ok(event)).await.is_err() {
                return Ok(false);
            }
        }
        if !full {
            *next = (*next).max(head + 1);
            return Ok(true);
        }
    }
}
