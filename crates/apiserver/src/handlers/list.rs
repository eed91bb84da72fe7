//! `list`: a collection, with label and field selectors, pages and resource versions.

use axum::http::StatusCode;
use kybern_apimachinery::ApiError;
use kybern_store::Revision;
use serde_json::{Value, json};

use super::Ctx;
use crate::object::{self, Object};
use crate::partial_metadata;
use crate::registry::ResourceInfo;
use crate::request::{ListOptions, ListRevision, encode_continue};
use crate::response::{ApiResult, json as json_response};
use crate::storage::ObjectStore;

/// The per-kind fields a field selector may name (besides `metadata.name` and
/// `metadata.namespace`), as upstream allows.
pub fn selectable_fields(info: &ResourceInfo) -> &'static [&'static str] {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") | ("events.k8s.io", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
            "note",
        ],
        ("", "secrets") => &["type"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
        _ => &[],
    }
}

fn supported_field(info: &ResourceInfo, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || selectable_fields(info).contains(&field)
}

/// The value of a selectable field of an object, as field selectors compare it.
pub fn field_of(obj: &Object, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(object::name(obj).to_owned()),
        "metadata.namespace" => Some(object::namespace(obj).to_owned()),
        "source" => object::field_value(obj, "source.component"),
        other => object::field_value(obj, other),
    }
}

/// Checks the field selector's fields against what the resource supports.
pub fn check_fields(info: &ResourceInfo, opts: &ListOptions) -> Result<(), ApiError> {
    for r in &opts.fields.requirements {
        if !supported_field(info, &r.field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                r.field
            )));
        }
    }
    Ok(())
}

/// Whether an object passes both selectors.
pub fn matches(opts: &ListOptions, obj: &Object) -> bool {
    opts.labels.matches_labels(object::labels(obj)) && opts.fields.matches(|f| field_of(obj, f))
}

/// A filtered list read: the items, and where the read ended.
pub struct Listed {
    /// Matching objects, in key order.
    pub items: Vec<Object>,
    /// The revision, continue token and count of items left.
    pub end: ListEnd,
}

/// What a list read found besides its items.
#[derive(Default)]
pub struct ListEnd {
    /// The revision the list was read at.
    pub revision: Revision,
    /// Continue token when a limit cut the list short.
    pub continue_token: Option<String>,
    /// Items left, when known (no selectors).
    pub remaining: Option<u64>,
}

/// Reads a collection as a list request asks.
pub async fn read(ctx: &Ctx, opts: &ListOptions) -> Result<Listed, ApiError> {
    let mut items = Vec::new();
    let end = read_each(ctx, opts, |obj| items.push(obj)).await?;
    Ok(Listed { items, end })
}

/// Fails with upstream's "too large resource version" when the store has not
/// reached `revision` yet.
pub async fn reached(ctx: &Ctx, revision: Revision) -> Result<(), ApiError> {
    let current = ctx.state.objects.current_revision().await?;
    if revision > current {
        return Err(crate::storage::api_error(
            kybern_store::StoreError::FutureRevision { revision, current },
            &ctx.info,
            "",
        ));
    }
    Ok(())
}

/// Reads a collection as a list request asks, handing each matching object to
/// `each` as it is decoded, a store page at a time.
pub async fn read_each(
    ctx: &Ctx,
    opts: &ListOptions,
    mut each: impl FnMut(Object),
) -> Result<ListEnd, ApiError> {
    check_fields(&ctx.info, opts)?;
    let info = &ctx.info;
    let namespace = ctx.path.namespace.as_deref();
    let resource_prefix = info.key_prefix();
    let list_prefix = ObjectStore::prefix(info, namespace);

    let (mut revision, mut start_after) = match &opts.continue_from {
        Some((rev, start)) => {
            let key = format!("{resource_prefix}{start}");
            if !key.starts_with(&list_prefix) {
                return Err(ApiError::bad_request(
                    "continue key is not valid for this request",
                ));
            }
            (*rev, Some(key))
        }
        None => match opts.revision {
            ListRevision::Latest => (0, None),
            ListRevision::Exact(rev) => (rev, None),
            ListRevision::NotOlderThan(rev) => {
                reached(ctx, rev).await?;
                (0, None)
            }
        },
    };
    let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
    let mut count = 0;
    let mut remaining = None;
    let mut continue_key = None;
    // Without a limit, pages bound how many decoded objects exist at once.
    const PAGE: usize = 1000;
    loop {
        // With selectors, a page of the limit's size may hold no match: read
        // whole pages (each store page also costs a count).
        let want = if opts.limit == 0 || filtered {
            PAGE
        } else {
            (opts.limit - count).min(PAGE)
        };
        let page = ctx
            .state
            .objects
            .list_page(info, namespace, start_after.clone(), want, revision)
            .await?;
        revision = page.revision;
        let page_len = page.items.len();
        for (i, obj) in page.items.into_iter().enumerate() {
            if !matches(opts, &obj) {
                continue;
            }
            count += 1;
            let full = opts.limit > 0
                && count == opts.limit
                && (i + 1 < page_len || page.last_key.is_some());
            if full {
                continue_key = Some(ObjectStore::key(
                    info,
                    object::namespace(&obj),
                    object::name(&obj),
                ));
                if !filtered {
                    remaining = Some(page.remaining);
                }
            }
            each(obj);
            if full {
                break;
            }
        }
        if continue_key.is_some() || page.last_key.is_none() {
            break;
        }
        start_after = page.last_key;
    }
    let continue_token =
        continue_key.map(|k| encode_continue(revision, &k[resource_prefix.len()..]));
    Ok(ListEnd {
        revision,
        continue_token,
        remaining,
    })
}

impl ListEnd {
    /// The list's `metadata`.
    pub(super) fn meta(&self) -> Value {
        let mut meta = json!({"resourceVersion": self.revision.to_string()});
        if let Some(token) = &self.continue_token {
            meta["continue"] = json!(token);
            if let Some(n) = self.remaining {
                meta["remainingItemCount"] = json!(n);
            }
        }
        meta
    }
}

/// A list response without its items: `kind`, `apiVersion` and `metadata`.
pub(super) fn list_head(info: &ResourceInfo, meta: Value) -> Value {
    json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": meta})
}

/// How long a list the watch cache could serve waits for it to load before
/// the store serves it instead.
pub(super) const CACHE_LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves a list from the watch cache when its semantics allow (`resourceVersion=0`,
/// or a minimum the cache has reached, and no continue token): the objects are
/// copied as the JSON the cache holds.
async fn list_from_cache(ctx: &Ctx, opts: &ListOptions) -> Option<axum::response::Response> {
    // The cache holds storage-version bytes; other versions are listed from the store.
    if ctx.converts() {
        return None;
    }
    if opts.continue_from.is_some() {
        return None;
    }
    let min = match (opts.resource_version.as_deref(), opts.revision) {
        (Some("0"), _) => 0,
        (_, ListRevision::NotOlderThan(min)) => min,
        _ => return None,
    };
    let cache = ctx.state.caches.get(&ctx.state.objects, &ctx.info)?;
    // A cache still loading answers soon; listing the store meanwhile would
    // decode every object a second time, at once.
    cache.wait_loaded(CACHE_LOAD_WAIT).await;
    let (objects, revision) = cache.snapshot(ctx.path.namespace.as_deref())?;
    if revision < min {
        return None;
    }
    let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
    let mut matching = objects.iter().filter(|o| o.matches(opts));
    let mut items = Vec::new();
    let mut continue_token = None;
    for o in matching.by_ref() {
        if opts.limit > 0 && items.len() == opts.limit {
            let last: &std::sync::Arc<crate::cache::CachedObject> = items[items.len() - 1];
            continue_token = Some(encode_continue(
                revision,
                &last.key[ctx.info.key_prefix().len()..],
            ));
            break;
        }
        items.push(o);
    }
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = &continue_token {
        meta["continue"] = json!(token);
        if !filtered {
            meta["remainingItemCount"] = json!(objects.len() - items.len());
        }
    }
    if crate::table::wants_table(&ctx.headers) {
        let parsed: Vec<Object> = items
            .iter()
            .filter_map(|o| serde_json::from_slice(&o.json()).ok())
            .collect();
        let t = crate::table::table(
            &ctx.info,
            &ctx.headers,
            ctx.query.get("includeObject"),
            &parsed,
            meta,
        );
        return Some(json_response(StatusCode::OK, &t));
    }
    let items = items.into_iter().cloned().collect();
    let partial = partial_metadata::wanted(&ctx.headers, partial_metadata::Shape::List);
    let head = match partial {
        Some(v) => partial_metadata::list_head(v, meta),
        None => list_head(&ctx.info, meta),
    };
    Some(super::list_body::cached_response(&head, items, partial))
}

/// GET a collection.
pub async fn list(ctx: &Ctx) -> ApiResult {
    let opts = ListOptions::parse(&ctx.query)?;
    check_fields(&ctx.info, &opts)?;
    if let Some(resp) = list_from_cache(ctx, &opts).await {
        return Ok(resp);
    }
    if crate::table::wants_table(&ctx.headers) {
        let mut listed = read(ctx, &opts).await?;
        if ctx.converts() {
            listed.items = listed.items.into_iter().map(|o| ctx.present(o)).collect();
        }
        let include = ctx.query.get("includeObject");
        let t = crate::table::table(
            &ctx.info,
            &ctx.headers,
            include,
            &listed.items,
            listed.end.meta(),
        );
        return Ok(json_response(StatusCode::OK, &t));
    }
    // Encoded a page at a time: no list-sized Vec of decoded objects.
    let mut items = super::list_body::EncodedItems::default();
    if let Some(v) = partial_metadata::wanted(&ctx.headers, partial_metadata::Shape::List) {
        let end = read_each(ctx, &opts, |o| {
            items.push(&partial_metadata::of_object(&o, v))
        })
        .await?;
        return Ok(items.into_response(&partial_metadata::list_head(v, end.meta())));
    }
    let end = read_each(ctx, &opts, |o| items.push(&ctx.present(o))).await?;
    Ok(items.into_response(&list_head(&ctx.info, end.meta())))
}
