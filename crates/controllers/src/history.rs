//! ControllerRevisions: the template history of DaemonSets and StatefulSets,
//! one revision per distinct template (`<owner>-<hash>`, data in upstream's
//! `{"spec":{"template":{..., "$patch":"replace"}}}` form that `kubectl
//! rollout undo` applies), renumbered when an old template returns, trimmed
//! to `revisionHistoryLimit`.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::ControllerError;
use crate::deployment::hash::template_hash;
use crate::pods::{controller_of, controller_ref};

/// The label carrying a pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// A revision's data for a template, as upstream stores it.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The owner's revisions, oldest first.
pub fn owned<K: Resource<DynamicType = ()>>(
    owner: &K,
    all: Vec<Arc<ControllerRevision>>,
) -> Vec<Arc<ControllerRevision>> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let mut v: Vec<Arc<ControllerRevision>> = all
        .into_iter()
        .filter(|r| controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    v.sort_by_key(|r| r.revision);
    v
}

/// Makes sure a revision holds `template` and is the newest; returns it.
/// `existing` are the owner's revisions from [`owned`].
pub async fn ensure<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    owner: &K,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    existing: &[Arc<ControllerRevision>],
) -> Result<ControllerRevision, ControllerError> {
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let data = revision_data(template);
    let newest = existing.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(r) = existing
        .iter()
        .find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
    {
        if r.revision == newest {
            return Ok((**r).clone());
        }
        // An old template is back (a rollback): it becomes the newest.
        let name = r.metadata.name.clone().unwrap_or_default();
        let patch = json!({"revision": newest + 1});
        return Ok(api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?);
    }
    let hash = template_hash(template, collision_count);
    let owner_name = owner.meta().name.clone().unwrap_or_default();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.clone());
    let rev = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{owner_name}-{hash}")),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data.clone())),
        revision: newest + 1,
    };
    match api.create(&PostParams::default(), &rev).await {
        Ok(r) => Ok(r),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Made by an earlier sync whose result the cache lacks.
            let name = rev.metadata.name.clone().unwrap_or_default();
            let found = api.get(&name).await?;
            let ours = controller_of(&found.metadata)
                .is_some_and(|o| Some(&o.uid) == owner.meta().uid.as_ref());
            if ours && found.data.as_ref().map(|d| &d.0) == Some(&data) {
                Ok(found)
            } else {
                Err(ControllerError::Invalid(format!(
                    "controller revision {name} exists with other contents (hash collision)"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest revisions beyond `limit` that no live pod uses and
/// that are not `current`.
pub async fn trim(
    client: &kube::Client,
    existing: &[Arc<ControllerRevision>],
    current: &str,
    in_use: &HashSet<String>,
    limit: i32,
) -> Result<(), ControllerError> {
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    let removable: Vec<&Arc<ControllerRevision>> = existing
        .iter()
        .filter(|r| {
            let name = r.metadata.name.as_deref().unwrap_or_default();
            let hash = r
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .map(String::as_str)
                .unwrap_or_default();
            name != current && !in_use.contains(name) && !in_use.contains(hash)
        })
        .collect();
    let surplus = removable.len().saturating_sub(limit);
    for r in removable.into_iter().take(surplus) {
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
        match api
            .delete(
                r.metadata.name.as_deref().unwrap_or_default(),
                &DeleteParams::default(),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The hash part of a revision (its `controller-revision-hash` label).
pub fn hash_of(rev: &ControllerRevision) -> String {
    rev.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .cloned()
        .unwrap_or_default()
}
