//! `list`: a collection, with label and field selectors, pages and resource versions.

use axum::http::StatusCode;
use kybern_apimachinery::ApiError;
use kybern_store::Revision;
use serde_json::{Value, json};

use super::Ctx;
use crate::object::{self, Object};
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

/// A filtered list read: the items, the revision, and the continue token.
pub struct Listed {
    /// Matching objects, in key order.
    pub items: Vec<Object>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Continue token when a limit cut the list short.
    pub continue_token: Option<String>,
    /// Items left, when known (no selectors).
    pub remaining: Option<u64>,
}

/// Reads a collection as a list request asks.
pub async fn read(ctx: &Ctx, opts: &ListOptions) -> Result<Listed, ApiError> {
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
                let current = ctx.state.objects.current_revision().await?;
                if rev > current {
                    return Err(crate::storage::api_error(
                        kybern_store::StoreError::FutureRevision {
                            revision: rev,
                            current,
                        },
                        info,
                        "",
                    ));
                }
                (0, None)
            }
        },
    };
    let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
    let mut items = Vec::new();
    let mut remaining = None;
    let mut continue_key = None;
    loop {
        let want = if opts.limit == 0 {
            0
        } else {
            opts.limit - items.len()
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
            items.push(obj);
            if opts.limit > 0
                && items.len() == opts.limit
                && (i + 1 < page_len || page.last_key.is_some())
            {
                let last = &items[items.len() - 1];
                continue_key = Some(ObjectStore::key(
                    info,
                    object::namespace(last),
                    object::name(last),
                ));
                if !filtered {
                    remaining = Some(page.remaining);
                }
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
    Ok(Listed {
        items,
        revision,
        continue_token,
        remaining,
    })
}

fn list_meta(listed: &Listed) -> Value {
    let mut meta = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(token) = &listed.continue_token {
        meta["continue"] = json!(token);
        if let Some(n) = listed.remaining {
            meta["remainingItemCount"] = json!(n);
        }
    }
    meta
}

/// The list object for a read.
pub fn list_object(info: &ResourceInfo, listed: Listed) -> Value {
    let meta = list_meta(&listed);
    json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": meta,
        "items": listed.items,
    })
}

/// Serves a list from the watch cache when its semantics allow (`resourceVersion=0`,
/// or a minimum the cache has reached, and no continue token): the objects are
/// copied as the JSON the cache holds.
fn list_from_cache(ctx: &Ctx, opts: &ListOptions) -> Option<axum::response::Response> {
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
    let cache = ctx.state.caches.get(ctx.state.objects.store(), &ctx.info)?;
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
            .filter_map(|o| serde_json::from_slice(&o.json).ok())
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
    // {"kind":...,"apiVersion":...,"metadata":{...},"items":[<cached JSON>,...]}
    let head = json!({"kind": format!("{}List", ctx.info.kind), "apiVersion": ctx.info.api_version(), "metadata": meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let size: usize = items.iter().map(|o| o.json.len() + 1).sum();
    let mut body = Vec::with_capacity(head.len() + size + 16);
    body.extend_from_slice(&head[..head.len() - 1]);
    body.extend_from_slice(b",\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&o.json);
    }
    body.extend_from_slice(b"]}");
    let mut resp = axum::response::IntoResponse::into_response((StatusCode::OK, body));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Some(resp)
}

/// GET a collection.
pub async fn list(ctx: &Ctx) -> ApiResult {
    let opts = ListOptions::parse(&ctx.query)?;
    check_fields(&ctx.info, &opts)?;
    if let Some(resp) = list_from_cache(ctx, &opts) {
        return Ok(resp);
    }
    let mut listed = read(ctx, &opts).await?;
    if ctx.converts() {
        listed.items = listed.items.into_iter().map(|o| ctx.present(o)).collect();
    }
    if crate::table::wants_table(&ctx.headers) {
        let include = ctx.query.get("includeObject");
        let t = crate::table::table(
            &ctx.info,
            &ctx.headers,
            include,
            &listed.items,
            list_meta(&listed),
        );
        return Ok(json_response(StatusCode::OK, &t));
    }
    Ok(json_response(
        StatusCode::OK,
        &list_object(&ctx.info, listed),
    ))
}
