//! Automatic compaction: keeps a bounded window of history in any [`Store`].
//!
//! Like kube-apiserver's compactor, each tick compacts to the revision seen at
//! the previous tick, so at least one interval of history (and at least
//! `min_retained_revisions`) stays available to watchers that fall behind.

use std::sync::Weak;
use std::time::Duration;

use crate::error::StoreError;
use crate::store::Store;
use crate::types::Revision;

/// How much history automatic compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactorOptions {
    /// Time between compactions; history is kept for at least this long.
    pub interval: Duration,
    /// Revisions always kept behind the current one.
    pub min_retained_revisions: Revision,
}

impl Default for CompactorOptions {
    fn default() -> Self {
        CompactorOptions {
            interval: Duration::from_secs(60),
            min_retained_revisions: 1_000,
        }
    }
}

impl CompactorOptions {
    /// The revision to compact to, given the revision seen at the previous tick and now.
    pub fn target(&self, previous_tick: Revision, now: Revision) -> Revision {
        previous_tick.min(now - self.min_retained_revisions).max(0)
    }
}

/// A background task compacting a store; stops when dropped or when the store is gone.
#[derive(Debug)]
pub struct Compactor {
    task: tokio::task::JoinHandle<()>,
}

impl Compactor {
    /// Starts compacting `store` every `options.interval`. Holds only a weak
    /// reference, so the store still closes when its last user drops it.
    pub fn spawn<S: Store + ?Sized>(store: Weak<S>, options: CompactorOptions) -> Self {
        let task = tokio::spawn(async move {
            let mut previous_tick: Revision = 0;
            let mut compacted: Revision = 0;
            let mut ticker = tokio::time::interval(options.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(store) = store.upgrade() else { return };
                let now = match store.current_revision().await {
                    Ok(rev) => rev,
                    Err(err) => {
                        tracing::warn!(error = %err, "compactor cannot read the revision");
                        continue;
                    }
                };
                let target = options.target(previous_tick, now);
                previous_tick = now;
                if target <= compacted {
                    continue;
                }
                match store.compact(target).await {
                    Ok(()) => {
                        tracing::debug!(revision = target, "compacted store history");
                        compacted = target;
                    }
                    // Someone else (another server, an operator) compacted further.
                    Err(StoreError::Compacted { .. }) => compacted = target,
                    Err(err) => {
                        tracing::warn!(error = %err, revision = target, "compaction failed")
                    }
                }
            }
        });
        Compactor { task }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keeps_one_interval_and_a_minimum() {
        let opts = CompactorOptions {
            interval: Duration::from_secs(1),
            min_retained_revisions: 100,
        };
        assert_eq!(opts.target(0, 50), 0);
        assert_eq!(opts.target(500, 1_000), 500);
        assert_eq!(opts.target(990, 1_000), 900);
    }
}
