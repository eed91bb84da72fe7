//! `watch`: a chunked stream of `{"type": ..., "object": ...}` lines, from a
//! resource version or from the current state, with bookmarks, the
//! initial-events-end bookmark of watch-list, selectors and timeouts. Served from
//! the resource's watch cache; a resume older than the cache's ring is served
//! from a store watch instead.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use kybern_apimachinery::ApiError;
use kybern_store::{Event, EventKind, Revision, WatchStream};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Ctx, list};
use crate::cache::{CacheMessage, CachedEvent, CachedObject, Initial, Subscription};
use crate::object::Object;
use crate::request::{ListOptions, ListRevision};
use crate::response::ApiResult;
use crate::storage::{ObjectStore, parse_rv, with_rv};

/// Time between bookmarks when a client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// Longest watch when the client sets no timeout (upstream picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Writes watch events for one watcher: JSON objects as they are, or one-row Tables.
struct Writer {
    ctx: Ctx,
    opts: ListOptions,
    table: bool,
    include: Option<String>,
    tx: mpsc::Sender<Bytes>,
}

impl Writer {
    /// Sends one line; false when the client is gone.
    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(line).await.is_ok()
    }

    async fn object(&self, kind: &str, obj: &Object) -> bool {
        let converted;
        let obj = if self.ctx.converts() {
            converted = self.ctx.present(obj.clone());
            &converted
        } else {
            obj
        };
        let line = if self.table {
            let meta = json!({"resourceVersion": crate::object::meta_str(obj, "resourceVersion")});
            let t = crate::table::table(
                &self.ctx.info,
                &self.ctx.headers,
                self.include.as_deref(),
                std::slice::from_ref(obj),
                meta,
            );
            value_line(kind, &t)
        } else {
            value_line(kind, obj)
        };
        self.send(line).await
    }

    async fn cached(&self, kind: &str, obj: &CachedObject) -> bool {
        if self.table || self.ctx.converts() {
            match serde_json::from_slice::<Value>(&obj.json) {
                Ok(v) => self.object(kind, &v).await,
                Err(_) => true,
            }
        } else {
            let mut b = BytesMut::with_capacity(obj.json.len() + 32);
            b.put_slice(b"{\"type\":\"");
            b.put_slice(kind.as_bytes());
            b.put_slice(b"\",\"object\":");
            b.put_slice(&obj.json);
            b.put_slice(b"}\n");
            self.send(b.freeze()).await
        }
    }

    async fn bookmark(&self, rev: Revision, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.ctx.info.kind, "apiVersion": self.ctx.info.api_version(), "metadata": meta});
        self.send(value_line("BOOKMARK", &obj)).await
    }

    async fn error(&self, err: &ApiError) {
        let _ = self.send(value_line("ERROR", &err.to_status())).await;
    }
}

fn value_line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn too_old(rev: Revision) -> ApiError {
    ApiError::expired(format!("too old resource version: {rev}"))
}

/// What a cached event means to a watcher with these selectors: an object that
/// starts matching is ADDED, one that stops matching is DELETED.
fn classify<'a>(
    opts: &ListOptions,
    ev: &'a CachedEvent,
) -> Option<(&'static str, &'a CachedObject)> {
    let prev = ev.prev.as_ref().is_some_and(|p| p.matches(opts));
    match ev.kind {
        EventKind::Delete => prev.then_some(("DELETED", &*ev.object)),
        EventKind::Put => match (prev, ev.object.matches(opts)) {
            (true, true) => Some(("MODIFIED", &*ev.object)),
            (false, true) => Some(("ADDED", &*ev.object)),
            (true, false) => Some(("DELETED", &*ev.object)),
            (false, false) => None,
        },
    }
}

/// The same for an event read from a store watch.
fn classify_store(
    opts: &ListOptions,
    event: &Event,
) -> Result<Option<(&'static str, Object)>, ApiError> {
    let rev = event.revision();
    let prev = match &event.prev {
        Some(p) => Some(ObjectStore::decode(&p.value, p.mod_revision)?),
        None => None,
    };
    let prev_matches = prev.as_ref().is_some_and(|p| list::matches(opts, p));
    match event.kind {
        EventKind::Delete => Ok(prev
            .filter(|_| prev_matches)
            .map(|p| ("DELETED", with_rv(p, rev)))),
        EventKind::Put => {
            let obj = ObjectStore::decode(&event.kv.value, rev)?;
            Ok(match (prev_matches, list::matches(opts, &obj)) {
                (true, true) => Some(("MODIFIED", obj)),
                (false, true) => Some(("ADDED", obj)),
                (true, false) => Some(("DELETED", obj)),
                (false, false) => None,
            })
        }
    }
}

/// GET a collection with `watch=true`.
pub async fn watch(ctx: Ctx) -> ApiResult {
    let opts = ListOptions::parse(&ctx.query)?;
    list::check_fields(&ctx.info, &opts)?;
    let send_initial = opts.send_initial_events == Some(true);
    if send_initial && !opts.bookmarks {
        return Err(ApiError::bad_request(
            "sendInitialEvents is forbidden unless allowWatchBookmarks is set",
        )
        .into());
    }
    // Where to start: the current state (no resourceVersion, "0", or watch-list),
    // or after a given revision.
    let from = match opts.resource_version.as_deref() {
        None | Some("0") => None,
        Some(_) if send_initial => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    if let (Some(min), true) = (
        opts.resource_version.as_deref().map(parse_rv).transpose()?,
        send_initial,
    ) {
        let current = ctx.state.objects.current_revision().await?;
        if min > current {
            return Err(crate::storage::api_error(
                kybern_store::StoreError::FutureRevision {
                    revision: min,
                    current,
                },
                &ctx.info,
                "",
            )
            .into());
        }
    }
    let cache = ctx.state.caches.get(ctx.state.objects.store(), &ctx.info);
    let namespace = ctx.path.namespace.clone();
    let subscription = cache
        .as_ref()
        .and_then(|c| c.subscribe(namespace.as_deref(), from));
    // Without the cache (not loaded yet, or a resume older than its ring) the
    // store serves the watch directly.
    let fallback = match (&subscription, from) {
        (Some(_), _) => None,
        (None, Some(rev)) => Some((
            None,
            ctx.state
                .objects
                .watch(&ctx.info, namespace.as_deref(), rev + 1)
                .await,
        )),
        (None, None) => {
            let mut list_opts = opts.clone();
            list_opts.limit = 0;
            list_opts.continue_from = None;
            list_opts.revision = ListRevision::Latest;
            let listed = list::read(&ctx, &list_opts).await?;
            let w = ctx
                .state
                .objects
                .watch(&ctx.info, namespace.as_deref(), listed.revision + 1)
                .await;
            Some((Some((listed.items, listed.revision)), w))
        }
    };
    let timeout = opts
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let writer = Writer {
        table: crate::table::wants_table(&ctx.headers),
        include: ctx.query.get("includeObject").map(str::to_owned),
        ctx,
        opts,
        tx,
    };
    tokio::spawn(async move {
        let run = async {
            match (subscription, fallback) {
                (Some(sub), _) => from_cache(&writer, sub, send_initial, cache).await,
                (None, Some((initial, watch))) => {
                    from_store(&writer, initial, watch, send_initial).await
                }
                (None, None) => {}
            }
        };
        tokio::select! {
            _ = run => {}
            _ = tokio::time::sleep(timeout) => {}
            _ = writer.tx.closed() => {}
        }
    });
    let mut resp = Response::new(Body::from_stream(
        ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    ));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Feeds a watcher from the watch cache.
async fn from_cache(
    w: &Writer,
    sub: Subscription,
    send_initial: bool,
    cache: Option<Arc<crate::cache::WatchCache>>,
) {
    let mut next = sub.revision + 1;
    match sub.initial {
        Initial::State(objects) => {
            for o in objects.iter().filter(|o| o.matches(&w.opts)) {
                if !w.cached("ADDED", o).await {
                    return;
                }
            }
            if send_initial && !w.bookmark(sub.revision, true).await {
                return;
            }
        }
        Initial::Events(events) => {
            for ev in &events {
                if let Some((kind, obj)) = classify(&w.opts, ev)
                    && !w.cached(kind, obj).await
                {
                    return;
                }
            }
        }
    }
    let mut live = sub.live;
    let mut last = sub.revision;
    let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
    ticker.tick().await;
    loop {
        let msg = tokio::select! {
            m = live.recv() => m,
            _ = ticker.tick(), if w.opts.bookmarks => {
                if !w.bookmark(last, false).await { return; }
                continue;
            }
        };
        match msg {
            Ok(CacheMessage::Event(ev)) => {
                if ev.revision < next {
                    continue;
                }
                next = ev.revision + 1;
                last = ev.revision;
                if let Some((kind, obj)) = classify(&w.opts, &ev)
                    && !w.cached(kind, obj).await
                {
                    return;
                }
            }
            Ok(CacheMessage::Reset) | Err(broadcast::error::RecvError::Closed) => {
                w.error(&too_old(next - 1)).await;
                return;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow for the live fan-out: catch up from the ring.
                let resumed = cache
                    .as_ref()
                    .and_then(|c| c.subscribe(w.ctx.path.namespace.as_deref(), Some(next - 1)));
                let Some(sub) = resumed else {
                    w.error(&too_old(next - 1)).await;
                    return;
                };
                if let Initial::Events(events) = &sub.initial {
                    for ev in events {
                        next = ev.revision + 1;
                        last = ev.revision;
                        if let Some((kind, obj)) = classify(&w.opts, ev)
                            && !w.cached(kind, obj).await
                        {
                            return;
                        }
                    }
                }
                live = sub.live;
            }
        }
    }
}

/// Feeds a watcher from a store watch (optionally after a list).
async fn from_store(
    w: &Writer,
    initial: Option<(Vec<Object>, Revision)>,
    watch: Result<WatchStream, ApiError>,
    send_initial: bool,
) {
    if let Some((items, rev)) = initial {
        for item in &items {
            if !w.object("ADDED", item).await {
                return;
            }
        }
        if send_initial && !w.bookmark(rev, true).await {
            return;
        }
    }
    let mut stream = match watch {
        Ok(s) => s,
        Err(err) => return w.error(&err).await,
    };
    let mut last = 0;
    let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
    ticker.tick().await;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = ticker.tick(), if w.opts.bookmarks && last > 0 => {
                if !w.bookmark(last, false).await { return; }
                continue;
            }
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                return w
                    .error(&crate::storage::api_error(e, &w.ctx.info, ""))
                    .await;
            }
            None => return,
        };
        last = event.revision();
        match classify_store(&w.opts, &event) {
            Ok(Some((kind, obj))) => {
                if !w.object(kind, &obj).await {
                    return;
                }
            }
            Ok(None) => {}
            Err(err) => return w.error(&err).await,
        }
    }
}
