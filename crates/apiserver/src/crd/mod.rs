//! CustomResourceDefinitions: a loop inside the API server that follows the
//! CRDs in the store, registers the resources they define (so discovery and
//! the generic handlers serve them), marks each CRD `NamesAccepted` and
//! `Established`, and on deletion removes every object of it ([`cleanup`],
//! while the CRD waits on its finalizer) and then the API.
//! Each served version carries its schema, printer columns and scale paths
//! ([`crate::registry::CustomVersion`]); [`schema`] applies the schema.
//!
//! Not yet: conversion webhooks (versions share storage with `None` conversion).

pub mod cleanup;
pub mod rules;
pub mod schema;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kybern_apimachinery::ApiError;
use kybern_store::{EventKind, Precondition, RangeRequest, Revision};
use serde_json::{Value, json};

use crate::object;
use crate::registry::{CustomVersion, ResourceInfo, Scope};
use crate::server::ApiState;
use crate::storage::ObjectStore;

/// Checks what a CRD must hold for the API it defines to be servable; `old`
/// is the stored CRD on update.
pub fn validate(crd: &Value, old: Option<&Value>) -> Vec<kybern_apimachinery::Cause> {
    use kybern_apimachinery::Cause;
    let mut causes = Vec::new();
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (group, plural, kind) = (
        s("/spec/group"),
        s("/spec/names/plural"),
        s("/spec/names/kind"),
    );
    if group.is_empty() {
        causes.push(Cause::required("spec.group", ""));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind", ""));
    }
    let want = format!("{plural}.{group}");
    if !plural.is_empty() && !group.is_empty() && object::name(crd) != want {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(object::name(crd)),
            format!("must be spec.names.plural+\".\"+spec.group ({want:?})"),
        ));
    }
    if !matches!(s("/spec/scope"), "Namespaced" | "Cluster") {
        causes.push(Cause::not_supported(
            "spec.scope",
            &json!(s("/spec/scope")),
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required(
            "spec.versions",
            "must have at least one version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    let stored_schema = |name: &Value| {
        old?.pointer("/spec/versions")?
            .as_array()?
            .iter()
            .find(|o| o.get("name") == Some(name))?
            .pointer("/schema/openAPIV3Schema")
    };
    for (i, v) in versions.iter().enumerate() {
        // A schema the update leaves as it was stays acceptable (a status
        // write to a CRD stored before these checks must not fail).
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema")
            && v.get("name").and_then(stored_schema) != Some(schema)
        {
            let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
            causes.extend(rules::schema_errors(schema, &path));
        }
    }
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            &json!(storage),
            "must have exactly one version marked as storage version",
        ));
    }
    causes
}

/// The resources a CRD defines, one per served version.
pub fn resources_of(crd: &Value) -> Vec<ResourceInfo> {
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let strings = |p: &str| object::strings_at(crd, p);
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .unwrap_or("")
        .to_owned();
    let kind = s("/spec/names/kind");
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|v| {
            let version = v.get("name")?.as_str()?.to_owned();
            let mut subresources = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subresources.push("status".to_owned());
            }
            if v.pointer("/subresources/scale").is_some() {
                subresources.push("scale".to_owned());
            }
            let schema = v.pointer("/schema/openAPIV3Schema");
            let custom = CustomVersion {
                has_rules: schema.is_some_and(rules::declared),
                schema: schema.cloned(),
                printer_columns: v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                scale: v.pointer("/subresources/scale").cloned(),
                terminating: object::is_deleting(crd),
            };
            Some(ResourceInfo {
                group: s("/spec/group"),
                version,
                kind: kind.clone(),
                plural: s("/spec/names/plural"),
                singular: {
                    let singular = s("/spec/names/singular");
                    if singular.is_empty() {
                        kind.to_lowercase()
                    } else {
                        singular
                    }
                },
                scope: if s("/spec/scope") == "Cluster" {
                    Scope::Cluster
                } else {
                    Scope::Namespaced
                },
                short_names: strings("/spec/names/shortNames"),
                categories: strings("/spec/names/categories"),
                subresources,
                storage_version: storage_version.clone(),
                custom: Some(Arc::new(custom)),
            })
        })
        .collect()
}

/// Follows CRDs in the store until the server stops.
pub async fn run(state: Arc<ApiState>) {
    let running = cleanup::Running::default();
    loop {
        if let Err(e) = follow(&state, &running).await {
            tracing::warn!(error = %e.message, "CRD loop restarting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn follow(state: &Arc<ApiState>, running: &cleanup::Running) -> Result<(), ApiError> {
    let info = state
        .registry
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(|| ApiError::internal("CRDs are not registered"))?;
    let mut known: BTreeSet<(String, String)> = BTreeSet::new();
    let page = state.objects.list_page(&info, None, None, 0, 0).await?;
    for crd in &page.items {
        established(state, &info, crd, &mut known).await;
        cleanup::start_if_due(state, crd, running);
    }
    let mut watch = state.objects.watch(&info, None, page.revision + 1).await?;
    while let Some(event) = watch.next().await {
        let event = event.map_err(|e| ApiError::internal(e.to_string()))?;
        match event.kind {
            EventKind::Put => {
                let crd = ObjectStore::decode(&event.kv.value, event.kv.mod_revision)?;
                established(state, &info, &crd, &mut known).await;
                cleanup::start_if_due(state, &crd, running);
            }
            EventKind::Delete => {
                if let Some(prev) = &event.prev {
                    let crd = ObjectStore::decode(&prev.value, prev.mod_revision)?;
                    removed(state, &crd, &mut known).await;
                }
            }
        }
    }
    Err(ApiError::internal("CRD watch ended"))
}

/// Registers a CRD's resources and records its conditions.
async fn established(
    state: &ApiState,
    info: &ResourceInfo,
    crd: &Value,
    known: &mut BTreeSet<(String, String)>,
) {
    let resources = resources_of(crd);
    let Some(first) = resources.first() else {
        return;
    };
    let (group, plural) = (first.group.clone(), first.plural.clone());
    let builtin_clash = crate::registry::builtin_resources()
        .iter()
        .any(|b| b.group == group);
    if !builtin_clash {
        state.registry.remove(&group, &plural);
        for r in resources {
            state.registry.insert(r);
        }
        known.insert((group, plural));
    }
    let conditions = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    // A deleting CRD's status belongs to its cleanup.
    if (has("Established") && has("NamesAccepted")) || object::is_deleting(crd) {
        return;
    }
    let now = object::now_rfc3339();
    let (accepted, reason, message) = if builtin_clash {
        (
            "False",
            "GroupConflict",
            "the group is served by a built-in API",
        )
    } else {
        ("True", "NoConflicts", "no conflicts found")
    };
    let mut updated = crd.clone();
    updated["status"] = json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({})),
        "storedVersions": [crd.pointer("/spec/versions").and_then(Value::as_array).and_then(|v| v.iter().find(|x| x.get("storage").and_then(Value::as_bool) == Some(true))).and_then(|v| v.get("name")).cloned().unwrap_or(Value::Null)],
        "conditions": [
            {"type": "NamesAccepted", "status": accepted, "reason": reason, "message": message, "lastTransitionTime": now},
            {"type": "Established", "status": accepted, "reason": if builtin_clash { "NotAccepted" } else { "InitialNamesAccepted" }, "message": if builtin_clash { "not all names are accepted" } else { "the initial names have been accepted" }, "lastTransitionTime": now},
        ],
    });
    let rev: Revision = object::meta_str(crd, "resourceVersion")
        .parse()
        .unwrap_or(0);
    // A conflict means the CRD changed meanwhile; its next event comes back here.
    if let Err(e) = state.objects.update(info, updated, rev).await {
        tracing::debug!(error = %e.message, "CRD status not written");
    }
}

/// Removes a deleted CRD's API and every object it held.
async fn removed(state: &ApiState, crd: &Value, known: &mut BTreeSet<(String, String)>) {
    let resources = resources_of(crd);
    let Some(first) = resources.first() else {
        return;
    };
    let id = (first.group.clone(), first.plural.clone());
    if !known.remove(&id) {
        return;
    }
    state.registry.remove(&id.0, &id.1);
    let store = state.objects.store();
    let prefix = first.key_prefix();
    loop {
        let Ok(page) = store
            .range(RangeRequest {
                prefix: prefix.clone(),
                limit: 500,
                ..Default::default()
            })
            .await
        else {
            return;
        };
        if page.kvs.is_empty() {
            return;
        }
        for kv in page.kvs {
            let _ = store.delete(&kv.key, Precondition::None).await;
        }
    }
}
