//! The garbage collector: a graph of every object's owner references, built
//! from metadata watches of every deletable kind, that deletes dependents whose
//! owners are gone (background), deletes dependents before their owner
//! (foreground, the `foregroundDeletion` finalizer) and releases dependents of
//! an owner deleted with the `orphan` finalizer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::borrow::Cow;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::DynamicResourceScope;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::ControllerError;
use crate::queue::{ReconcileResult, WorkQueue, run_workers};

/// Finalizer of an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";
/// Finalizer of an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// How often new kinds (CRDs) are looked for.
const REDISCOVERY: Duration = Duration::from_secs(30);
/// Concurrent deletions and patches.
const WORKERS: usize = 8;

/// A watched kind.
#[derive(Debug)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

/// One object in the graph.
#[derive(Clone, Debug)]
struct Node {
    uid: String,
    kind: Arc<Kind>,
    namespace: Option<String>,
    name: String,
    resource_version: Option<String>,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    /// (group, kind) → the kind's resource, to resolve owner references.
    kinds: HashMap<(String, String), Arc<Kind>>,
}

/// What the collector reads of a watched object: its metadata without
/// `managedFields`; serde passes over the rest unread. (kube's
/// `PartialObjectMeta` flattens the type fields into itself, which makes
/// serde buffer the whole object, spec and status too, before picking
/// them out, and it decodes the managedFields.)
#[derive(Clone, Debug, Default, Deserialize)]
struct Observed {
    #[serde(
        default,
        deserialize_with = "kybern_apimachinery::cached_pod::metadata_without_managed_fields"
    )]
    metadata: ObjectMeta,
}

impl kube::Resource for Observed {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

enum GraphEvent {
    Applied(Arc<Kind>, Observed),
    Deleted(Observed),
    /// A fresh list of the kind ended: objects of it not in the list are gone.
    Relisted(Arc<Kind>, HashSet<String>),
}

struct GarbageCollector {
    client: kube::Client,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue<String>>,
}

/// Runs the garbage collector until the process ends.
pub async fn run(client: kube::Client) {
    let gc = Arc::new(GarbageCollector {
        client: client.clone(),
        graph: Mutex::default(),
        queue: Arc::default(),
    });
    let (tx, mut rx) = mpsc::channel::<GraphEvent>(4096);
    let discover = {
        let gc = gc.clone();
        async move {
            let mut watched = HashSet::new();
            loop {
                gc.discover(&tx, &mut watched).await;
                tokio::time::sleep(REDISCOVERY).await;
            }
        }
    };
    let build = {
        let gc = gc.clone();
        async move {
            while let Some(event) = rx.recv().await {
                gc.observe(event);
            }
        }
    };
    let work = {
        let gc = gc.clone();
        run_workers(
            "garbagecollector",
            gc.queue.clone(),
            WORKERS,
            move |uid: String| {
                let gc = gc.clone();
                async move { gc.process(&uid).await }
            },
        )
    };
    tokio::join!(discover, build, work);
}

impl GarbageCollector {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a metadata watch for every deletable kind not yet watched.
    async fn discover(&self, tx: &mpsc::Sender<GraphEvent>, watched: &mut HashSet<String>) {
        let discovery = match Discovery::new(self.client.clone()).run().await {
            Ok(d) => d,
            Err(err) => {
                tracing::warn!(error = %err, "garbage collector: discovery failed");
                return;
            }
        };
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                let id = format!("{}/{}", resource.api_version, resource.plural);
                // Events own nothing and churn; upstream ignores them too.
                let ignored = resource.plural == "events";
                if ignored
                    || !caps.supports_operation(verbs::WATCH)
                    || !caps.supports_operation(verbs::DELETE)
                    || !watched.insert(id)
                {
                    continue;
                }
                let kind = Arc::new(Kind {
                    namespaced: caps.scope == Scope::Namespaced,
                    resource,
                });
                self.graph().kinds.insert(
                    (kind.resource.group.clone(), kind.resource.kind.clone()),
                    kind.clone(),
                );
                tokio::spawn(watch_kind(self.client.clone(), kind, tx.clone()));
            }
        }
    }

    /// Folds one watch event into the graph and queues what it may affect.
    fn observe(&self, event: GraphEvent) {
        let mut g = self.graph();
        match event {
            GraphEvent::Applied(kind, obj) => {
                let meta = obj.metadata;
                let Some(uid) = meta.uid.clone() else { return };
                let node = Node {
                    uid: uid.clone(),
                    kind,
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone().unwrap_or_default(),
                    resource_version: meta.resource_version.clone(),
                    owners: meta.owner_references.clone().unwrap_or_default(),
                    finalizers: meta.finalizers.clone().unwrap_or_default(),
                    deleting: meta.deletion_timestamp.is_some(),
                };
                if let Some(old) = g.nodes.get(&uid).cloned() {
                    for o in &old.owners {
                        if let Some(d) = g.dependents.get_mut(&o.uid) {
                            d.remove(&uid);
                        }
                    }
                }
                for o in &node.owners {
                    g.dependents
                        .entry(o.uid.clone())
                        .or_default()
                        .insert(uid.clone());
                }
                let check = !node.owners.is_empty()
                    || (node.deleting
                        && node
                            .finalizers
                            .iter()
                            .any(|f| f == ORPHAN || f == FOREGROUND));
                g.nodes.insert(uid.clone(), node);
                drop(g);
                if check {
                    self.queue.add(uid);
                }
            }
            GraphEvent::Relisted(kind, seen) => {
                let stale: Vec<String> = g
                    .nodes
                    .values()
                    .filter(|n| Arc::ptr_eq(&n.kind, &kind) && !seen.contains(&n.uid))
                    .map(|n| n.uid.clone())
                    .collect();
                drop(g);
                for uid in stale {
                    self.forget(uid);
                }
            }
            GraphEvent::Deleted(obj) => {
                let Some(uid) = obj.metadata.uid else { return };
                drop(g);
                self.forget(uid);
            }
        }
    }

    /// Removes an object that is gone, and queues its dependents and owners.
    fn forget(&self, uid: String) {
        let mut g = self.graph();
        let Some(node) = g.nodes.remove(&uid) else {
            return;
        };
        for o in &node.owners {
            if let Some(d) = g.dependents.get_mut(&o.uid) {
                d.remove(&uid);
            }
        }
        let dependents = g.dependents.remove(&uid).unwrap_or_default();
        drop(g);
        // An owner waiting in the foreground may have lost its last dependent.
        let owners = node.owners.iter().map(|o| o.uid.clone());
        for d in dependents.into_iter().chain(owners) {
            self.queue.add(d);
        }
    }

    async fn process(&self, uid: &str) -> ReconcileResult<ControllerError> {
        let (node, dependents) = {
            let g = self.graph();
            let Some(node) = g.nodes.get(uid).cloned() else {
                return Ok(None);
            };
            let deps: Vec<Node> = g
                .dependents
                .get(uid)
                .map(|d| d.iter().filter_map(|u| g.nodes.get(u).cloned()).collect())
                .unwrap_or_default();
            (node, deps)
        };
        if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
            for dep in &dependents {
                let refs: Vec<&OwnerReference> =
                    dep.owners.iter().filter(|o| o.uid != uid).collect();
                self.patch_owners(dep, &refs).await?;
            }
            return self.remove_finalizer(&node, ORPHAN).await;
        }
        if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
            if dependents.is_empty() {
                return self.remove_finalizer(&node, FOREGROUND).await;
            }
            for dep in dependents.iter().filter(|d| !d.deleting) {
                let has_own = self
                    .graph()
                    .dependents
                    .get(&dep.uid)
                    .is_some_and(|d| !d.is_empty());
                let policy = if has_own {
                    PropagationPolicy::Foreground
                } else {
                    PropagationPolicy::Background
                };
                self.delete(dep, &dep.uid, policy).await?;
            }
            return Ok(None);
        }
        if node.owners.is_empty() {
            return Ok(None);
        }
        let (mut solid, mut gone, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for owner in &node.owners {
            match self.owner_state(&node, owner).await? {
                OwnerState::Present => solid.push(owner),
                OwnerState::Absent => gone.push(owner),
                OwnerState::DeletingInForeground if owner.block_owner_deletion == Some(true) => {
                    waiting.push(owner)
                }
                OwnerState::DeletingInForeground => solid.push(owner),
            }
        }
        if !solid.is_empty() {
            if !gone.is_empty() || !waiting.is_empty() {
                self.patch_owners(&node, &solid).await?;
            }
            return Ok(None);
        }
        let has_dependents = self
            .graph()
            .dependents
            .get(uid)
            .is_some_and(|d| !d.is_empty());
        let policy = if !waiting.is_empty() && has_dependents
            || node.finalizers.iter().any(|f| f == FOREGROUND)
        {
            PropagationPolicy::Foreground
        } else if node.finalizers.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else {
            PropagationPolicy::Background
        };
        if !node.deleting {
            self.delete(&node, uid, policy).await?;
        }
        Ok(None)
    }

    /// Whether an owner exists: the graph first, then a live read, since the
    /// graph may not have seen an owner created just before its dependent.
    async fn owner_state(
        &self,
        node: &Node,
        owner: &OwnerReference,
    ) -> Result<OwnerState, ControllerError> {
        let group = owner
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_owned();
        let kind = {
            let g = self.graph();
            if let Some(o) = g.nodes.get(&owner.uid) {
                return Ok(
                    if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) {
                        OwnerState::DeletingInForeground
                    } else {
                        OwnerState::Present
                    },
                );
            }
            g.kinds.get(&(group, owner.kind.clone())).cloned()
        };
        // An owner of a kind nobody serves cannot be checked: keep the dependent.
        let Some(kind) = kind else {
            return Ok(OwnerState::Present);
        };
        let api = self.api(&kind, node.namespace.as_deref());
        match api.get_metadata_opt(&owner.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                Ok(OwnerState::Present)
            }
            _ => Ok(OwnerState::Absent),
        }
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        match (kind.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &kind.resource),
            _ => Api::all_with(self.client.clone(), &kind.resource),
        }
    }

    async fn delete(
        &self,
        node: &Node,
        uid: &str,
        policy: PropagationPolicy,
    ) -> Result<(), ControllerError> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::info!(kind = %node.kind.resource.kind, namespace = ?node.namespace, name = %node.name, "garbage collector: deleting dependent");
        match self
            .api(&node.kind, node.namespace.as_deref())
            .delete(&node.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn patch_owners(
        &self,
        node: &Node,
        keep: &[&OwnerReference],
    ) -> Result<(), ControllerError> {
        let patch = json!({"metadata": {"ownerReferences": keep}});
        match self
            .api(&node.kind, node.namespace.as_deref())
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_finalizer(
        &self,
        node: &Node,
        finalizer: &str,
    ) -> ReconcileResult<ControllerError> {
        let rest: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch =
            json!({"metadata": {"finalizers": rest, "resourceVersion": node.resource_version}});
        match self
            .api(&node.kind, node.namespace.as_deref())
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

enum OwnerState {
    Present,
    Absent,
    DeletingInForeground,
}

/// Feeds one kind's metadata watch into the graph.
async fn watch_kind(client: kube::Client, kind: Arc<Kind>, tx: mpsc::Sender<GraphEvent>) {
    let api: Api<Observed> = Api::all_with(client, &kind.resource);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed = HashSet::new();
    while let Some(event) = events.next().await {
        let sent = match event {
            Ok(Event::Apply(o)) => tx.send(GraphEvent::Applied(kind.clone(), o)).await,
            Ok(Event::InitApply(o)) => {
                listed.extend(o.metadata.uid.clone());
                tx.send(GraphEvent::Applied(kind.clone(), o)).await
            }
            Ok(Event::Delete(o)) => tx.send(GraphEvent::Deleted(o)).await,
            Ok(Event::Init) => {
                listed.clear();
                Ok(())
            }
            Ok(Event::InitDone) => {
                let seen = std::mem::take(&mut listed);
                tx.send(GraphEvent::Relisted(kind.clone(), seen)).await
            }
            Err(err) => {
                tracing::debug!(kind = %kind.resource.kind, error = %err, "garbage collector watch failed; retrying");
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observes_owners_and_finalizers_without_managed_fields() {
        let text = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "uid": "u1", "resourceVersion": "7",
                "finalizers": ["orphan"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "rs", "uid": "u0", "controller": true}],
                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running"}
        })
        .to_string();
        let o: Observed = serde_json::from_str(&text).expect("observed");
        let m = &o.metadata;
        assert_eq!(m.managed_fields, None);
        assert_eq!(
            (m.uid.as_deref(), m.resource_version.as_deref()),
            (Some("u1"), Some("7"))
        );
        assert_eq!(m.finalizers.as_deref(), Some(&["orphan".to_string()][..]));
        assert_eq!(m.owner_references.as_ref().map(Vec::len), Some(1));
    }
}
