//! The two sources of a watch response body: the watch cache (every watch the
//! cache can serve) and a store watch (resumes older than the cache's ring, or
//! before the cache has loaded). Each yields the body's chunks on demand.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use kybern_apimachinery::ApiError;
use kybern_store::{Revision, WatchStream};
use tokio::sync::broadcast;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{BOOKMARK_INTERVAL, Encoder, classify, classify_store, too_old};
use crate::cache::{CacheMessage, CachedEvent, CachedObject, Initial, Subscription, WatchCache};
use crate::object::Object;

/// Initial events are written in chunks of about this size, not one per object.
const CHUNK: usize = 64 * 1024;

fn bookmark_ticker() -> Interval {
    let mut t = tokio::time::interval_at(Instant::now() + BOOKMARK_INTERVAL, BOOKMARK_INTERVAL);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// What a cache feed still has to send before live events.
enum Replay {
    /// Objects of a fresh watch, from this index on.
    State(Vec<Arc<CachedObject>>, usize),
    /// Events of a resumed (or lagging) watch, from this index on.
    Events(Vec<Arc<CachedEvent>>, usize),
    /// Nothing: live events only.
    Done,
}

/// A watcher fed by the watch cache.
pub(super) struct CacheFeed {
    enc: Encoder,
    cache: Option<Arc<WatchCache>>,
    replay: Replay,
    /// The initial-events-end bookmark still to send after the state (watch-list).
    initial_end: Option<Revision>,
    live: broadcast::Receiver<CacheMessage>,
    /// Events below this revision were already sent.
    next: Revision,
    /// The revision the watcher has been brought up to, for bookmarks.
    last: Revision,
    ticker: Interval,
    finished: bool,
}

impl CacheFeed {
    pub(super) fn new(
        enc: Encoder,
        sub: Subscription,
        send_initial: bool,
        cache: Option<Arc<WatchCache>>,
    ) -> Self {
        let (replay, initial_end) = match sub.initial {
            Initial::State(objects) => (
                Replay::State(objects, 0),
                send_initial.then_some(sub.revision),
            ),
            Initial::Events(events) => (Replay::Events(events, 0), None),
        };
        CacheFeed {
            enc,
            cache,
            replay,
            initial_end,
            live: sub.live,
            next: sub.revision + 1,
            last: sub.revision,
            ticker: bookmark_ticker(),
            finished: false,
        }
    }

    pub(super) fn into_stream(self) -> BoxStream<'static, Bytes> {
        futures::stream::unfold(self, |mut feed| async move {
            let chunk = feed.next_chunk().await?;
            Some((chunk, feed))
        })
        .boxed()
    }

    /// The next chunk of replayed objects or events, if any are left.
    fn replay_chunk(&mut self) -> Option<Bytes> {
        let mut buf = BytesMut::new();
        match &mut self.replay {
            Replay::State(objects, i) => {
                while *i < objects.len() && buf.len() < CHUNK {
                    let o = &objects[*i];
                    *i += 1;
                    if o.matches(&self.enc.opts) {
                        self.enc.cached_into("ADDED", o, &mut buf);
                    }
                }
                if *i >= objects.len() {
                    self.replay = Replay::Done;
                    if let Some(rev) = self.initial_end.take() {
                        buf.extend_from_slice(&self.enc.bookmark(rev, true));
                    }
                }
            }
            Replay::Events(events, i) => {
                while *i < events.len() && buf.len() < CHUNK {
                    let ev = &events[*i];
                    *i += 1;
                    self.next = ev.revision + 1;
                    self.last = ev.revision;
                    if let Some((kind, obj)) = classify(&self.enc.opts, ev) {
                        self.enc.cached_into(kind, obj, &mut buf);
                    }
                }
                if *i >= events.len() {
                    self.replay = Replay::Done;
                }
            }
            Replay::Done => {}
        }
        (!buf.is_empty()).then(|| buf.freeze())
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        loop {
            while !matches!(self.replay, Replay::Done) {
                if let Some(chunk) = self.replay_chunk() {
                    return Some(chunk);
                }
            }
            let msg = tokio::select! {
                biased;
                m = self.live.recv() => m,
                _ = self.ticker.tick(), if self.enc.opts.bookmarks => {
                    return Some(self.enc.bookmark(self.last, false));
                }
            };
            match msg {
                Ok(CacheMessage::Event(ev)) => {
                    if ev.event.revision < self.next {
                        continue;
                    }
                    self.next = ev.event.revision + 1;
                    self.last = ev.event.revision;
                    if let Some(line) = self.enc.event(&ev) {
                        return Some(line);
                    }
                }
                Ok(CacheMessage::Reset) | Err(broadcast::error::RecvError::Closed) => {
                    self.finished = true;
                    return Some(self.enc.error(&too_old(self.next - 1)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live fan-out: catch up from the ring.
                    let resumed = self.cache.as_ref().and_then(|c| {
                        c.subscribe(self.enc.ctx.path.namespace.as_deref(), Some(self.next - 1))
                    });
                    let Some(sub) = resumed else {
                        self.finished = true;
                        return Some(self.enc.error(&too_old(self.next - 1)));
                    };
                    if let Initial::Events(events) = sub.initial {
                        self.replay = Replay::Events(events, 0);
                    }
                    self.live = sub.live;
                }
            }
        }
    }
}

/// A watcher fed by a store watch, optionally after a list.
pub(super) struct StoreFeed {
    enc: Encoder,
    /// Listed objects still to send as ADDED, the list's revision, and whether
    /// the initial-events-end bookmark follows them.
    initial: Option<(std::vec::IntoIter<Object>, Revision, bool)>,
    watch: Option<WatchStream>,
    /// The error to end with, when the store watch could not start.
    failed: Option<ApiError>,
    last: Revision,
    ticker: Interval,
}

impl StoreFeed {
    pub(super) fn new(
        enc: Encoder,
        initial: Option<(Vec<Object>, Revision)>,
        watch: Result<WatchStream, ApiError>,
        send_initial: bool,
    ) -> Self {
        let (watch, failed) = match watch {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e)),
        };
        StoreFeed {
            enc,
            initial: initial.map(|(items, rev)| (items.into_iter(), rev, send_initial)),
            watch,
            failed,
            last: 0,
            ticker: bookmark_ticker(),
        }
    }

    pub(super) fn into_stream(self) -> BoxStream<'static, Bytes> {
        futures::stream::unfold(self, |mut feed| async move {
            let chunk = feed.next_chunk().await?;
            Some((chunk, feed))
        })
        .boxed()
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some((items, rev, send_initial)) = &mut self.initial {
            let mut buf = BytesMut::new();
            for item in items.by_ref() {
                buf.extend_from_slice(&self.enc.object("ADDED", &item));
                if buf.len() >= CHUNK {
                    return Some(buf.freeze());
                }
            }
            if *send_initial {
                buf.extend_from_slice(&self.enc.bookmark(*rev, true));
            }
            self.initial = None;
            if !buf.is_empty() {
                return Some(buf.freeze());
            }
        }
        if let Some(err) = self.failed.take() {
            return Some(self.enc.error(&err));
        }
        loop {
            let stream = self.watch.as_mut()?;
            let next = tokio::select! {
                biased;
                n = stream.next() => n,
                _ = self.ticker.tick(), if self.enc.opts.bookmarks && self.last > 0 => {
                    return Some(self.enc.bookmark(self.last, false));
                }
            };
            let event = match next {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    self.watch = None;
                    return Some(self.enc.error(&crate::storage::api_error(
                        e,
                        &self.enc.ctx.info,
                        "",
                    )));
                }
                None => return None,
            };
            self.last = event.revision();
            match classify_store(&self.enc.opts, &event) {
                Ok(Some((kind, obj))) => return Some(self.enc.object(kind, &obj)),
                Ok(None) => {}
                Err(err) => {
                    self.watch = None;
                    return Some(self.enc.error(&err));
                }
            }
        }
    }
}
