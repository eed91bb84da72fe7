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

/// The fields a field selector may name for a resource, as upstream allows.
fn supported_field(info: &ResourceInfo, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    let per_kind: &[&str] = match (info.group.as_str(), info.plural.as_str()) {
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
    };
    per_kind.contains(&field)
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
    opts.labels.matches_labels(object::labels(obj))
        && opts.fields.matches(|f| match f {
            "metadata.name" => Some(object::name(obj).to_owned()),
            "metadata.namespace" => Some(object::namespace(obj).to_owned()),
            "source" => object::field_value(obj, "source.component"),
            other => object::field_value(obj, other),
        })
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

/// GET a collection.
pub async fn list(ctx: &Ctx) -> ApiResult {
    let opts = ListOptions::parse(&ctx.query)?;
    let listed = read(ctx, &opts).await?;
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
