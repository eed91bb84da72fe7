//! `watch`: a chunked stream of `{"type": ..., "object": ...}` lines, from a
//! resource version or from the current state, with bookmarks, the
//! initial-events-end bookmark of watch-list, selectors and timeouts.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use kybern_apimachinery::ApiError;
use kybern_store::{Event, EventKind, Revision};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Ctx, list};
use crate::object::Object;
use crate::request::ListOptions;
use crate::response::ApiResult;
use crate::storage::{ObjectStore, parse_rv, with_rv};

/// Time between bookmarks when a client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// Longest watch when the client sets no timeout (upstream picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// How watch objects are rendered: as they are, or as one-row Tables.
struct Render {
    table: bool,
    include: Option<String>,
}

impl Render {
    fn event(&self, ctx: &Ctx, kind: &str, obj: &Object) -> Bytes {
        if self.table {
            let meta = json!({"resourceVersion": crate::object::meta_str(obj, "resourceVersion")});
            let t = crate::table::table(
                &ctx.info,
                &ctx.headers,
                self.include.as_deref(),
                std::slice::from_ref(obj),
                meta,
            );
            line(kind, &t)
        } else {
            line(kind, obj)
        }
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(ctx: &Ctx, rev: Revision, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": ctx.info.kind, "apiVersion": ctx.info.api_version(), "metadata": meta}),
    )
}

fn error_line(err: &ApiError) -> Bytes {
    line("ERROR", &err.to_status())
}

/// Turns a store event into a watch event for this watcher, if it concerns it:
/// an object that starts matching is ADDED, one that stops matching is DELETED.
fn translate(
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
            let now_matches = list::matches(opts, &obj);
            Ok(match (prev_matches, now_matches) {
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
    // The state to send first, and the revision to follow from.
    let rv = opts.resource_version.clone();
    let (initial, start) = match rv.as_deref() {
        None | Some("0") => {
            let mut list_opts = opts.clone();
            list_opts.limit = 0;
            list_opts.continue_from = None;
            list_opts.revision = crate::request::ListRevision::Latest;
            let listed = list::read(&ctx, &list_opts).await?;
            (Some((listed.items, listed.revision)), listed.revision + 1)
        }
        Some(rv) if send_initial => {
            let min = parse_rv(rv)?;
            let mut list_opts = opts.clone();
            list_opts.limit = 0;
            list_opts.continue_from = None;
            list_opts.revision = crate::request::ListRevision::NotOlderThan(min);
            let listed = list::read(&ctx, &list_opts).await?;
            (Some((listed.items, listed.revision)), listed.revision + 1)
        }
        Some(rv) => (None, parse_rv(rv)? + 1),
    };
    let timeout = opts
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let namespace = ctx.path.namespace.clone();
    let render = Render {
        table: crate::table::wants_table(&ctx.headers),
        include: ctx.query.get("includeObject").map(str::to_owned),
    };
    let store_watch = ctx
        .state
        .objects
        .watch(&ctx.info, namespace.as_deref(), start)
        .await;

    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last_rev = start - 1;
        if let Some((items, rev)) = initial {
            for item in items {
                if tx.send(render.event(&ctx, "ADDED", &item)).await.is_err() {
                    return;
                }
            }
            if send_initial && tx.send(bookmark(&ctx, rev, true)).await.is_err() {
                return;
            }
        }
        let mut stream = match store_watch {
            Ok(s) => s,
            Err(err) => {
                let _ = tx.send(error_line(&err)).await;
                return;
            }
        };
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if opts.bookmarks => {
                    if tx.send(bookmark(&ctx, last_rev, false)).await.is_err() {
                        return;
                    }
                }
                next = stream.next() => {
                    let event = match next {
                        Some(Ok(event)) => event,
                        Some(Err(e)) => {
                            let err = crate::storage::api_error(e, &ctx.info, "");
                            let _ = tx.send(error_line(&err)).await;
                            return;
                        }
                        None => return,
                    };
                    last_rev = event.revision();
                    match translate(&opts, &event) {
                        Ok(Some((kind, obj))) => {
                            if tx.send(render.event(&ctx, kind, &obj)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(err) => {
                            let _ = tx.send(error_line(&err)).await;
                            return;
                        }
                    }
                }
            }
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
