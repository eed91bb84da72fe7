//! One cache of every pod for the scheduler and the controller manager that
//! `kybern server` runs in its process: the manager's pod informer, fed to
//! the scheduler as its pod watch. Each held every pod decoded; at 20,000
//! pods a second copy costs over a hundred megabytes.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_controllers::informer::{Change, Informer, next_change};
use kybern_scheduler::pod_feed::{PodEvent, PodFeed};
use tokio::sync::broadcast;

/// The scheduler's feed of `informer`'s pods: each time it starts, the
/// cached pods as a full list, then every change; a resync of the informer
/// (or a feed that fell behind it) is a full list again.
pub fn feed(informer: Arc<Informer<CachedPod>>) -> PodFeed {
    Arc::new(move || {
        let informer = informer.clone();
        // Subscribed before the list is taken, so no change falls between.
        let rx = informer.subscribe();
        let start = Reader {
            informer,
            rx,
            pending: VecDeque::new(),
            listed: false,
        };
        futures::stream::unfold(start, |mut r| async move {
            let event = r.next().await?;
            Some((event, r))
        })
        .boxed()
    })
}

struct Reader {
    informer: Arc<Informer<CachedPod>>,
    rx: broadcast::Receiver<Change<CachedPod>>,
    pending: VecDeque<PodEvent>,
    listed: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<PodEvent> {
        if !self.listed {
            self.informer.synced().await;
            self.list();
            self.listed = true;
        }
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            match next_change(&mut self.rx).await? {
                Change::Added(p) | Change::Modified(p) => return Some(PodEvent::Apply(p)),
                Change::Deleted(p) => return Some(PodEvent::Delete(p)),
                Change::Resync => self.list(),
            }
        }
    }

    fn list(&mut self) {
        self.pending.push_back(PodEvent::Init);
        self.pending
            .extend(self.informer.state().into_iter().map(PodEvent::Apply));
        self.pending.push_back(PodEvent::InitDone);
    }
}
