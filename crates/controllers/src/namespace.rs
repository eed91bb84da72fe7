//! The namespace controller: empties a terminating namespace of every
//! namespaced kind, reports progress in the namespace's conditions, then
//! clears its `kubernetes` finalizer so the API server removes it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use serde_json::json;

use crate::informer::{Change, Informer, next_change};
use crate::queue::{ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers, now};

/// The finalizer this controller owns.
const FINALIZER: &str = "kubernetes";
/// How long discovery results are reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(10);
/// How soon to look again at a namespace with content left.
const CONTENT_RETRY: Duration = Duration::from_secs(1);

struct NamespaceController {
    client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    queue: Arc<WorkQueue<String>>,
    discovered: Mutex<Option<(Instant, Arc<Vec<ApiResource>>)>>,
}

/// Runs the namespace controller.
pub async fn run(client: kube::Client, informers: &Informers) {
    let ctl = Arc::new(NamespaceController {
        client,
        namespaces: informers.namespaces.clone(),
        queue: Arc::default(),
        discovered: Mutex::default(),
    });
    let mut changes = ctl.namespaces.subscribe();
    ctl.namespaces.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                match next_change(&mut changes).await {
                    Some(Change::Added(ns) | Change::Modified(ns)) => {
                        if ns.metadata.deletion_timestamp.is_some() {
                            ctl.queue.add(ns.metadata.name.clone().unwrap_or_default());
                        }
                    }
                    Some(Change::Deleted(_)) => {}
                    Some(Change::Resync) => ctl.resync(),
                    None => return,
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("namespace", ctl.queue.clone(), 2, move |name: String| {
            let ctl = ctl.clone();
            async move { ctl.sync(&name).await }
        })
    };
    tokio::join!(events, sync);
}

impl NamespaceController {
    fn resync(&self) {
        for ns in self.namespaces.state() {
            if ns.metadata.deletion_timestamp.is_some() {
                self.queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        }
    }

    /// Every namespaced kind that can be listed and deleted.
    async fn resources(&self) -> Result<Arc<Vec<ApiResource>>, ControllerError> {
        if let Some((at, r)) = &*self
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(r.clone());
        }
        let discovery = Discovery::new(self.client.clone()).run().await?;
        let mut found = Vec::new();
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if caps.scope == Scope::Namespaced
                    && caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::DELETE)
                {
                    found.push(resource);
                }
            }
        }
        let found = Arc::new(found);
        *self
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), found.clone()));
        Ok(found)
    }

    async fn sync(&self, name: &str) -> ReconcileResult<ControllerError> {
        let Some(ns) = self.namespaces.get(None, name) else {
            return Ok(None);
        };
        let waits = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|f| f == FINALIZER);
        if ns.metadata.deletion_timestamp.is_none() || !waits {
            return Ok(None);
        }
        let resources = self.resources().await?;
        let mut remaining: Vec<(String, usize)> = Vec::new();
        let mut with_finalizers: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for ar in resources.iter() {
            let api: Api<PartialObjectMeta<DynamicObject>> =
                Api::namespaced_with(self.client.clone(), name, ar);
            let dynamic: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, ar);
            let listed = match api.list_metadata(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!("{}: {e}", ar.plural));
                    continue;
                }
            };
            if listed.items.is_empty() {
                continue;
            }
            if let Err(e) = dynamic
                .delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
            {
                // Kinds without deletecollection go one by one.
                for item in &listed.items {
                    let n = item.metadata.name.as_deref().unwrap_or_default();
                    if let Err(e2) = dynamic.delete(n, &DeleteParams::background()).await
                        && !matches!(&e2, kube::Error::Api(s) if s.code == 404)
                    {
                        failures.push(format!("{}: {e}; {e2}", ar.plural));
                        break;
                    }
                }
            }
            let left = api
                .list_metadata(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or(listed.items);
            if !left.is_empty() {
                remaining.push((ar.plural.clone(), left.len()));
                for item in &left {
                    for f in item.metadata.finalizers.as_deref().unwrap_or_default() {
                        if !with_finalizers.contains(f) {
                            with_finalizers.push(f.clone());
                        }
                    }
                }
            }
        }
        self.report(&ns, &remaining, &with_finalizers, &failures)
            .await?;
        if !remaining.is_empty() || !failures.is_empty() {
            return Ok(Some(CONTENT_RETRY));
        }
        let mut finalized = (*ns).clone();
        if let Some(spec) = finalized.spec.as_mut() {
            spec.finalizers = Some(
                spec.finalizers
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|f| f != FINALIZER)
                    .collect(),
            );
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &finalized)
            .await
        {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes upstream's deletion conditions when they changed.
    async fn report(
        &self,
        ns: &Namespace,
        remaining: &[(String, usize)],
        finalizers: &[String],
        failures: &[String],
    ) -> Result<(), ControllerError> {
        let content = if remaining.is_empty() {
            (
                "False",
                "ContentRemoved",
                "All content successfully removed".to_owned(),
            )
        } else {
            let parts: Vec<String> = remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            (
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            )
        };
        let finalizing = if finalizers.is_empty() {
            (
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".to_owned(),
            )
        } else {
            (
                "True",
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    finalizers.join(", ")
                ),
            )
        };
        let failed = if failures.is_empty() {
            (
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".to_owned(),
            )
        } else {
            (
                "True",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    failures.len(),
                    failures.join(", ")
                ),
            )
        };
        let wanted = [
            (
                "NamespaceDeletionDiscoveryFailure",
                (
                    "False",
                    "ResourcesDiscovered",
                    "All resources successfully discovered".to_owned(),
                ),
            ),
            (
                "NamespaceDeletionGroupVersionParsingFailure",
                (
                    "False",
                    "ParsedGroupVersions",
                    "All legacy kube types successfully parsed".to_owned(),
                ),
            ),
            ("NamespaceDeletionContentFailure", failed),
            ("NamespaceContentRemaining", content),
            ("NamespaceFinalizersRemaining", finalizing),
        ];
        let old = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut changed = false;
        let conditions: Vec<NamespaceCondition> = wanted
            .into_iter()
            .map(|(type_, (status, reason, message))| {
                let prev = old.iter().find(|c| c.type_ == type_);
                match prev {
                    Some(c)
                        if c.status == status
                            && c.reason.as_deref() == Some(reason)
                            && c.message.as_deref() == Some(message.as_str()) =>
                    {
                        c.clone()
                    }
                    _ => {
                        changed = true;
                        NamespaceCondition {
                            type_: type_.to_owned(),
                            status: status.to_owned(),
                            reason: Some(reason.to_owned()),
                            message: Some(message),
                            last_transition_time: Some(now()),
                        }
                    }
                }
            })
            .collect();
        if !changed {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions}});
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
