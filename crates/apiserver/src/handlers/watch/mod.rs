//! `watch`: a chunked stream of `{"type": ..., "object": ...}` lines, from a
//! resource version or from the current state, with bookmarks, the
//! initial-events-end bookmark of watch-list, selectors and timeouts. Served from
//! the resource's watch cache; a resume older than the cache's ring is served
//! from a store watch instead.
//!
//! The response body is the feed itself: hyper's connection task polls it, so a
//! cache event reaches the socket with one task wake-up and no channel in between.

mod feed;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kybern_apimachinery::ApiError;
use kybern_store::{Event, EventKind, Revision};
use serde_json::{Value, json};

use super::{Ctx, list};
use crate::cache::{CachedEvent, CachedObject, LiveEvent, watch_line_into};
use crate::object::Object;
use crate::request::{ListOptions, ListRevision};
use crate::response::ApiResult;
use crate::storage::{ObjectStore, parse_rv, with_rv};

/// Time between bookmarks when a client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// Longest watch when the client sets no timeout (upstream picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Encodes watch events for one watcher: JSON objects as they are, or one-row Tables.
struct Encoder {
    ctx: Ctx,
    opts: ListOptions,
    table: bool,
    /// The `meta.k8s.io` apiVersion of metadata-only events, when asked for.
    partial: Option<&'static str>,
    include: Option<String>,
}

impl Encoder {
    /// Whether cached JSON can be sent as it is (no table, no metadata-only
    /// form, no version conversion).
    fn plain(&self) -> bool {
        !self.table && self.partial.is_none() && !self.ctx.converts()
    }

    fn object(&self, kind: &str, obj: &Object) -> Bytes {
        let converted;
        let obj = if self.ctx.converts() {
            converted = self.ctx.present(obj.clone());
            &converted
        } else {
            obj
        };
        if self.table {
            let meta = json!({"resourceVersion": crate::object::meta_str(obj, "resourceVersion")});
            let t = crate::table::table(
                &self.ctx.info,
                &self.ctx.headers,
                self.include.as_deref(),
                std::slice::from_ref(obj),
                meta,
            );
            value_line(kind, &t)
        } else if let Some(v) = self.partial {
            value_line(kind, &crate::partial_metadata::of_object(obj, v))
        } else {
            value_line(kind, obj)
        }
    }

    /// Appends the line for a cached object.
    fn cached_into(&self, kind: &str, obj: &CachedObject, out: &mut BytesMut) {
        self.json_into(kind, &obj.json(), out);
    }

    /// Appends the line for an object's JSON.
    fn json_into(&self, kind: &str, json: &[u8], out: &mut BytesMut) {
        if self.plain() {
            watch_line_into(kind, json, out);
        } else if let (Some(v), false) = (self.partial, self.table) {
            // Straight from the JSON: metadata watchers (the garbage
            // collector's, one per resource) never decode whole objects.
            let mut partial = BytesMut::with_capacity(json.len().min(4096));
            crate::partial_metadata::json_into(json, v, &mut partial);
            watch_line_into(kind, &partial, out);
        } else if let Ok(v) = serde_json::from_slice::<Value>(json) {
            out.extend_from_slice(&self.object(kind, &v));
        }
    }

    /// The line for a live event as this watcher sees it, if it sees it: the
    /// event's shared line when nothing about this watcher changes it, else
    /// one made from the JSON the event carries (never unpacked again).
    fn event(&self, live: &LiveEvent) -> Option<Bytes> {
        let (kind, _) = classify(&self.opts, &live.event)?;
        if self.plain() && kind == live.event.natural_type() {
            return Some(live.line());
        }
        let mut out = BytesMut::new();
        self.json_into(kind, &live.json(), &mut out);
        Some(out.freeze())
    }

    fn bookmark(&self, rev: Revision, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = match self.partial {
            Some(v) => json!({"kind": "PartialObjectMetadata", "apiVersion": v, "metadata": meta}),
            None => {
                json!({"kind": self.ctx.info.kind, "apiVersion": self.ctx.info.api_version(), "metadata": meta})
            }
        };
        value_line("BOOKMARK", &obj)
    }

    fn error(&self, err: &ApiError) -> Bytes {
        value_line("ERROR", &err.to_status())
    }
}

/// A watch line for an object: `type` first, as upstream writes it.
fn value_line(kind: &str, object: &Value) -> Bytes {
    let mut out = BytesMut::new();
    watch_line_into(
        kind,
        &serde_json::to_vec(object).unwrap_or_default(),
        &mut out,
    );
    out.freeze()
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
    if send_initial && let Some(rv) = opts.resource_version.as_deref() {
        list::reached(&ctx, parse_rv(rv)?).await?;
    }
    let cache = ctx.state.caches.get(&ctx.state.objects, &ctx.info);
    // A cache still loading serves the watch soon; a store watch would
    // decode every event of the resource for this watcher alone.
    if let Some(c) = &cache {
        c.wait_loaded(list::CACHE_LOAD_WAIT).await;
    }
    let namespace = ctx.path.namespace.clone();
    let subscription = cache
        .as_ref()
        .and_then(|c| c.subscribe(namespace.as_deref(), from));
    let timeout = opts
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let encoder = Encoder {
        table: crate::table::wants_table(&ctx.headers),
        partial: crate::partial_metadata::wanted(&ctx.headers, crate::partial_metadata::Shape::One),
        include: ctx.query.get("includeObject").map(str::to_owned),
        ctx,
        opts,
    };
    let chunks = match (subscription, from) {
        (Some(sub), _) => feed::CacheFeed::new(encoder, sub, send_initial, cache).into_stream(),
        // A resume from before the history the cache's ring let go of: as
        // upstream's watch cache, one ERROR event (410 Expired), on which
        // clients relist. Serving it from the store instead would decode
        // every event of the resource for this one watcher while it lasts.
        (None, Some(rev))
            if cache
                .as_ref()
                .and_then(|c| c.resumable_after())
                .is_some_and(|floor| rev < floor) =>
        {
            futures::stream::iter([encoder.error(&too_old(rev))]).boxed()
        }
        // Without the cache (not loaded yet, or a resume older than its ring)
        // the store serves the watch directly.
        (None, Some(rev)) => {
            tracing::debug!(
                resource = %encoder.ctx.info.plural,
                revision = rev,
                user_agent = ?encoder.ctx.headers.get(axum::http::header::USER_AGENT),
                "watch served from the store"
            );
            let watch = encoder
                .ctx
                .state
                .objects
                .watch(&encoder.ctx.info, namespace.as_deref(), rev + 1)
                .await;
            feed::StoreFeed::new(encoder, None, watch, send_initial).into_stream()
        }
        (None, None) => {
            let mut list_opts = encoder.opts.clone();
            list_opts.limit = 0;
            list_opts.continue_from = None;
            list_opts.revision = ListRevision::Latest;
            let listed = list::read(&encoder.ctx, &list_opts).await?;
            let watch = encoder
                .ctx
                .state
                .objects
                .watch(
                    &encoder.ctx.info,
                    namespace.as_deref(),
                    listed.end.revision + 1,
                )
                .await;
            let initial = Some((listed.items, listed.end.revision));
            feed::StoreFeed::new(encoder, initial, watch, send_initial).into_stream()
        }
    };
    Ok(super::list_body::json_stream(
        chunks.take_until(tokio::time::sleep(timeout)),
    ))
}
