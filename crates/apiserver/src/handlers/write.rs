//! `create` and `update`, and the update core that `patch` shares: optimistic
//! concurrency on `resourceVersion`, finalizer-driven removal, no-op detection.

use axum::body::Body;
use axum::http::StatusCode;
use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::{Value, json};

use super::attempts::{Attempt, Reads, settle};
use super::{Ctx, body};
use crate::object::{self, Object};
use crate::registry::ResourceInfo;
use crate::response::ApiResult;
use crate::storage::{parse_rv, with_rv};
use crate::strategy;

fn invalid(info: &ResourceInfo, obj: &Object, causes: Vec<kybern_apimachinery::Cause>) -> ApiError {
    ApiError::invalid(&info.group, &info.kind, object::name(obj), causes)
}

/// Refuses writes into a namespace that does not exist or is being deleted.
pub async fn check_namespace_open(ctx: &Ctx, namespace: &str) -> Result<(), ApiError> {
    if !ctx.info.namespaced() {
        return Ok(());
    }
    let Some(ns_info) = ctx.state.registry.get("", "v1", "namespaces") else {
        return Ok(());
    };
    // Most writes go to a namespace the namespaces cache already holds; only a
    // miss (e.g. a namespace created a moment ago) costs a store read.
    let key = crate::storage::ObjectStore::key(&ns_info, "", namespace);
    let cached = ctx
        .state
        .caches
        .get(&ctx.state.objects, &ns_info)
        .and_then(|c| c.get(&key));
    // The cache indexes `status.phase`; an active namespace without a
    // deletion timestamp (the common case) is open without decoding it.
    if let Some(c) = &cached
        && c.field("status.phase").is_some_and(|v| v != "Terminating")
        && !c.json().windows(19).any(|w| w == b"\"deletionTimestamp\"")
    {
        return Ok(());
    }
    let ns = match cached.and_then(|c| serde_json::from_slice::<Value>(&c.json()).ok()) {
        Some(ns) => ns,
        None => ctx.state.objects.get(&ns_info, "", namespace).await?,
    };
    if object::is_deleting(&ns)
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
    {
        let mut err = ApiError::forbidden(format!(
            "{} {:?} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
            ctx.info.plural,
            object::name(&ns)
        ));
        err.kind = Some(ctx.info.plural.clone());
        // Clients tell this refusal from others by its cause, as upstream's.
        err.causes.push(kybern_apimachinery::Cause {
            reason: "NamespaceTerminating",
            field: "metadata.namespace".into(),
            message: format!("namespace {namespace} is being terminated"),
        });
        return Err(err);
    }
    Ok(())
}

/// Extra attempts at a generated name that is taken (upstream: 7).
const GENERATE_NAME_RETRIES: usize = 7;

/// POST a collection.
pub async fn create(ctx: &Ctx, request: Body) -> ApiResult {
    if ctx.path.subresource.is_some() {
        return Err(
            ApiError::method_not_allowed("create", &ctx.info.group, &ctx.info.plural).into(),
        );
    }
    let bytes = body::read(request).await?;
    let obj = body::decode_object(&ctx.headers, &bytes)?;
    let mut warnings = Vec::new();
    let stored = create_object(ctx, obj, &mut warnings, true).await?;
    Ok(with_warnings(
        ctx.answer_written(StatusCode::CREATED, stored),
        &warnings,
    ))
}

/// The create path shared by POST and server-side apply of a new object:
/// type and namespace checks, typed decoding, defaulting, validation, and
/// (for a plain create) the creator's ownership of every field.
pub async fn create_object(
    ctx: &Ctx,
    mut obj: Object,
    warnings: &mut Vec<String>,
    record_ownership: bool,
) -> Result<Object, ApiError> {
    let info = &ctx.info;
    if info.custom.as_ref().is_some_and(|c| c.terminating) {
        let mut err = ApiError::method_not_allowed("create", &info.group, &info.plural);
        err.message = "create not allowed while custom resource definition is terminating".into();
        return Err(err);
    }
    strategy::check_type(info, &mut obj)?;
    strategy::check_namespace(info, &mut obj, ctx.path.namespace.as_deref())?;
    check_typed(ctx, &mut obj, warnings)?;
    let managed_fields = object::remove_meta(&mut obj, "managedFields");
    let generated =
        object::name(&obj).is_empty() && !object::meta_str(&obj, "generateName").is_empty();
    strategy::prepare_create(info, &mut obj)?;
    if record_ownership {
        crate::managed::record_update(&mut obj, None, &ctx.ownership()?);
    } else if let Some(m) = managed_fields {
        object::set_meta(&mut obj, "managedFields", m);
    }
    if info.group.is_empty() && info.plural == "pods" {
        crate::admission::limit_ranger::admit(&ctx.state, info, &mut obj).await?;
        crate::priority::admit(&ctx.state, &mut obj).await?;
        crate::admission::runtime_class::admit(&ctx.state, info, &mut obj).await?;
        crate::service_accounts::admit(&ctx.state, &mut obj).await;
        crate::admission::default_tolerations::admit(&mut obj);
    }
    if crate::certificates::is_csr(&info.group, &info.plural) {
        crate::certificates::admit_create(&ctx.user, &mut obj);
    }
    if info.group.is_empty() && info.plural == "persistentvolumeclaims" {
        crate::admission::limit_ranger::admit_claim(&ctx.state, info, &obj).await?;
        crate::admission::default_storage_class::admit(&ctx.state, &mut obj).await?;
    }
    ctx.mutate_admission("CREATE", Some(&mut obj), None, warnings)
        .await?;
    if info.group.is_empty() && info.plural == "pods" {
        // LimitRanger or a webhook may have given the pod requests and limits.
        obj["status"]["qosClass"] =
            crate::defaults::qos_class(obj.get("spec").unwrap_or(&Value::Null)).into();
    }
    let causes = strategy::validate(info, &obj, None, None);
    if !causes.is_empty() {
        return Err(invalid(info, &obj, causes));
    }
    crate::authz::escalation::admit(&ctx.state, &ctx.user, &info.group, &info.plural, &obj).await?;
    crate::authz::node::admit_create(
        &ctx.user,
        &info.plural,
        &info.group,
        object::meta_str(&obj, "name"),
    )?;
    crate::pod_security::admit(&ctx.state, info, &obj, warnings, &ctx.audit).await?;
    ctx.validate_admission("CREATE", Some(&obj), None, warnings)
        .await?;
    check_namespace_open(ctx, object::namespace(&obj)).await?;
    let dry_run = ctx.query.dry_run()?;
    // Last, so that a create refused for any other reason is not charged.
    crate::admission::resource_quota::admit(&ctx.state, info, &obj, dry_run).await?;
    if dry_run {
        return Ok(obj);
    }
    ctx.to_storage(&mut obj);
    let is_service = info.group.is_empty() && info.plural == "services";
    if is_service {
        crate::service_ips::allocate(&ctx.state.objects, info, &mut obj).await?;
    }
    if !is_service && !generated {
        return store_new(ctx, info, obj).await;
    }
    if !is_service {
        // A generated name can collide (27⁵ suffixes): retry with fresh
        // ones, as upstream does, before answering AlreadyExists.
        for _ in 0..GENERATE_NAME_RETRIES {
            match store_new(ctx, info, obj.clone()).await {
                Err(e) if e.reason == StatusReason::AlreadyExists => {
                    strategy::generate_name(&mut obj);
                }
                result => return result,
            }
        }
        return store_new(ctx, info, obj).await;
    }
    let result = store_new(ctx, info, obj.clone()).await;
    if result.is_err() {
        crate::service_ips::release(&ctx.state.objects, &obj).await;
    }
    result
}

/// Stores a new object, keeping its JSON for the answer.
async fn store_new(ctx: &Ctx, info: &ResourceInfo, obj: Object) -> Result<Object, ApiError> {
    let (stored, json) = ctx.state.objects.create_with_json(info, obj).await?;
    ctx.note_written(json);
    Ok(stored)
}

/// PUT an object (or its status).
pub async fn update(ctx: &Ctx, request: Body) -> ApiResult {
    let bytes = body::read(request).await?;
    let mut new = body::decode_object(&ctx.headers, &bytes)?;
    let info = &ctx.info;
    strategy::check_type(info, &mut new)?;
    strategy::check_namespace(info, &mut new, ctx.path.namespace.as_deref())?;
    ctx.name_from_url(&mut new)?;
    let requested_rv = match object::meta_str(&new, "resourceVersion") {
        "" => None,
        rv => Some(parse_rv(rv)?),
    };
    let mut warnings = Vec::new();
    let stored = update_with(
        ctx,
        |_old| Ok(new.clone()),
        requested_rv,
        &mut warnings,
        true,
    )
    .await?;
    Ok(with_warnings(
        ctx.answer_written(StatusCode::OK, stored),
        &warnings,
    ))
}

/// Reads the object, makes the new version with `make`, and writes it if the
/// object has not changed meanwhile. With `requested_rv` the write is
/// conditional on that version (409 otherwise); without, a concurrent change is
/// retried against the fresh object. With `record_ownership` the writer takes
/// ownership of the fields it changed (server-side apply records its own).
///
/// As upstream's `GuaranteedUpdate` with a cached object, the first try
/// starts from the watch cache's copy, sparing a store read. That copy may
/// trail the store, so anything the try ends in other than a write that
/// succeeded (a refusal, a conflict, no change at all) is judged again
/// against the stored object before it is answered.
pub async fn update_with(
    ctx: &Ctx,
    mut make: impl FnMut(&Object) -> Result<Object, ApiError>,
    requested_rv: Option<i64>,
    warnings: &mut Vec<String>,
    record_ownership: bool,
) -> Result<Object, ApiError> {
    let writer = ctx.ownership()?;
    let (ns, name) = (ctx.namespace(), ctx.name());
    let mut reads = Reads::new(ctx, ns, name, ctx.query.dry_run()?);
    while let Some((old, from_store)) = reads.next().await? {
        let outcome = update_attempt(
            ctx,
            &mut make,
            old,
            requested_rv,
            warnings,
            record_ownership.then_some(&writer),
        )
        .await;
        if let Some(answer) = settle(outcome, from_store, requested_rv.is_none()) {
            return answer;
        }
    }
    Err(modified_too_often(ctx, name))
}

/// One read-modify-write of [`update_with`] from `old`.
async fn update_attempt(
    ctx: &Ctx,
    make: &mut impl FnMut(&Object) -> Result<Object, ApiError>,
    old: Object,
    requested_rv: Option<i64>,
    warnings: &mut Vec<String>,
    writer: Option<&crate::managed::Writer<'_>>,
) -> Result<Attempt<Object>, ApiError> {
    let info = &ctx.info;
    let (ns, name) = (ctx.namespace(), ctx.name());
    let old_rv = parse_rv(object::meta_str(&old, "resourceVersion"))?;
    if let Some(rv) = requested_rv
        && rv != old_rv
    {
        return Err(ApiError::stale(&info.group, &info.plural, name));
    }
    // A version whose fields differ from the stored one's changes the
    // object as that version shows it, then is stored back.
    let mut new = if ctx.converts_builtin() {
        make(&ctx.present(old.clone()))?
    } else {
        make(&old)?
    };
    strategy::check_type(info, &mut new)?;
    strategy::check_namespace(info, &mut new, ctx.path.namespace.as_deref())?;
    warnings.clear();
    check_typed(ctx, &mut new, warnings)?;
    if ctx.converts_builtin() {
        ctx.to_storage(&mut new);
    }
    if object::name(&new) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object::name(&new)
        )));
    }
    if new.pointer("/metadata/managedFields").is_none()
        && let Some(m) = old.pointer("/metadata/managedFields")
    {
        object::set_meta(&mut new, "managedFields", m.clone());
    }
    strategy::prepare_update(info, &mut new, &old, ctx.path.subresource.as_deref());
    if let Some(writer) = writer {
        crate::managed::record_update(&mut new, Some(&old), writer);
    }
    ctx.mutate_admission("UPDATE", Some(&mut new), Some(&old), warnings)
        .await?;
    let subresource = ctx.path.subresource.as_deref();
    let causes = strategy::validate(info, &new, Some(&old), subresource);
    if !causes.is_empty() {
        return Err(invalid(info, &new, causes));
    }
    if subresource == Some(strategy::EPHEMERAL_CONTAINERS) {
        // Upstream's PodSecurity judges the pod with its new containers.
        crate::pod_security::admit(&ctx.state, info, &new, warnings, &ctx.audit).await?;
    }
    crate::authz::escalation::admit(&ctx.state, &ctx.user, &info.group, &info.plural, &new).await?;
    if subresource.is_none() {
        crate::admission::claim_resize::admit(&ctx.state, info, &new, &old).await?;
    }
    ctx.validate_admission("UPDATE", Some(&new), Some(&old), warnings)
        .await?;
    let dry_run = ctx.query.dry_run()?;
    if !object::is_deleting(&new) {
        crate::admission::resource_quota::admit_update(&ctx.state, info, &new, &old, dry_run)
            .await?;
    }
    object::set_meta(&mut new, "resourceVersion", json!(old_rv.to_string()));
    ctx.to_storage(&mut new);
    // The last finalizer of a deleting object is gone: remove the object.
    if object::is_deleting(&new) && !object::held(&new) {
        if dry_run {
            return Ok(Attempt::Written(new));
        }
        return match ctx.state.objects.delete(info, ns, name, old_rv).await {
            Ok(_) => Ok(Attempt::Written(new)),
            Err(e) if e.reason == StatusReason::Conflict => Ok(Attempt::Conflict(e)),
            Err(e) => Err(e),
        };
    }
    // Upstream does not write an update that changes nothing, except to
    // re-seal data at rest (which it learns from the read; here any
    // sealed resource's no-op update is written, so rewriting rotates).
    let reseal = ctx
        .state
        .encryption
        .get()
        .is_some_and(|c| c.seals(&info.key_prefix()));
    if dry_run {
        return Ok(Attempt::Written(new));
    }
    if new == old && !reseal {
        return Ok(Attempt::Unchanged(with_rv(old, old_rv)));
    }
    match ctx.state.objects.update_with_json(info, new, old_rv).await {
        Ok((stored, json)) => {
            ctx.note_written(json);
            Ok(Attempt::Written(stored))
        }
        Err(e) if e.reason == StatusReason::Conflict => Ok(Attempt::Conflict(e)),
        Err(e) => Err(e),
    }
}

/// The 409 a write gives up with after its conflicting retries.
pub fn modified_too_often(ctx: &Ctx, name: &str) -> ApiError {
    ApiError::conflict(
        &ctx.info.group,
        &ctx.info.plural,
        name,
        "the object is being modified too often; try again",
    )
}

/// Writes a change made at the storage layer, as upstream's `pods/binding`
/// does: `make` sets only fields the server owns on an object that was valid
/// when stored, so there is no decoding, validation or field ownership to
/// redo. A concurrent change is retried against the fresh object.
pub async fn update_in_storage(
    ctx: &Ctx,
    mut make: impl FnMut(&Object) -> Result<Object, ApiError>,
) -> Result<Object, ApiError> {
    let info = &ctx.info;
    let (ns, name) = (ctx.namespace(), ctx.name());
    let dry_run = ctx.query.dry_run()?;
    let mut reads = Reads::new(ctx, ns, name, dry_run);
    while let Some((old, from_store)) = reads.next().await? {
        let outcome = async {
            let old_rv = parse_rv(object::meta_str(&old, "resourceVersion"))?;
            let new = make(&old)?;
            if dry_run {
                return Ok(Attempt::Written(new));
            }
            match ctx.state.objects.update(info, new, old_rv).await {
                Err(e) if e.reason == StatusReason::Conflict => Ok(Attempt::Conflict(e)),
                done => done.map(Attempt::Written),
            }
        }
        .await;
        if let Some(answer) = settle(outcome, from_store, true) {
            return answer;
        }
    }
    Err(modified_too_often(ctx, name))
}

/// How a write treats fields its kind does not have (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

fn field_validation(ctx: &Ctx) -> Result<FieldValidation, ApiError> {
    match ctx.query.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter invalid: {other:?}; allowed values are Strict, Warn and Ignore"
        ))),
    }
}

/// Decodes a body as its built-in kind: a wrong type is a 400; unknown fields
/// are refused (Strict), reported as warnings (Warn, the default) or ignored,
/// and pruned from what is stored, as upstream's decoder drops them.
pub fn check_typed(
    ctx: &Ctx,
    obj: &mut Object,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let info = &ctx.info;
    if let Some(schema) = info.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        // Custom resources: pruned and defaulted by their CRD's schema.
        let pruned = crate::crd::schema::prune(obj, schema);
        report_unknown(ctx, &pruned, warnings)?;
        crate::crd::schema::default(obj, schema);
        return Ok(());
    }
    let Some(decoded) = crate::typed::check(info, obj) else {
        return Ok(());
    };
    let cannot_handle = |e: &str| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            info.kind, info.version, info.kind
        ))
    };
    let decoded = decoded.map_err(|e| cannot_handle(&e))?;
    if let Some(fields) = crate::resource_rules::quantity_fields(&info.group, &info.plural)
        && crate::resource_rules::malformed_quantity(obj, fields).is_some()
    {
        return Err(cannot_handle(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ));
    }
    if decoded.unknown.is_empty() {
        return Ok(());
    }
    report_unknown(ctx, &decoded.unknown, warnings)?;
    decoded.prune(obj);
    Ok(())
}

/// Unknown fields: refused (Strict), warnings (Warn, the default) or nothing (Ignore).
fn report_unknown(
    ctx: &Ctx,
    unknown: &[String],
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    if unknown.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match field_validation(ctx)? {
        FieldValidation::Strict => {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                fields.join(", ")
            )));
        }
        FieldValidation::Warn => warnings.extend(fields),
        FieldValidation::Ignore => {}
    }
    Ok(())
}

/// Adds upstream's `Warning: 299 - "..."` headers to a response.
pub fn with_warnings(
    mut resp: axum::response::Response,
    warnings: &[String],
) -> axum::response::Response {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}
