//! The ResourceQuota controller: each quota's `status.hard` and
//! `status.used`, for object counts (`pods`, `services`, `count/<resource>`,
//! …) and the compute its pods request and limit (`requests.cpu`,
//! `limits.memory`, `cpu`, …), the storage its claims request
//! (`requests.storage`, per storage class); pods within a scoped quota's
//! scopes only. Recomputed when a quota or a pod of its namespace changes,
//! and every 10 s for the other kinds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::resources::{
    claim_quota_usage, format_quota_amount, is_claim_quota_resource, is_pod_quota_resource,
    pod_quota_usage, quota_counted_kind,
};

use crate::informer::{Change, Informer, next_change};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers};

/// How often every quota is recomputed for kinds not watched here.
const RESYNC: Duration = Duration::from_secs(10);

struct QuotaController {
    client: kube::Client,
    quotas: Arc<Informer<ResourceQuota>>,
    pods: Arc<Informer<CachedPod>>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

/// Runs the ResourceQuota controller.
pub async fn run(client: kube::Client, informers: &Informers, workers: usize) {
    let ctl = Arc::new(QuotaController {
        client,
        quotas: informers.resource_quotas.clone(),
        pods: informers.pods.clone(),
        queue: Arc::default(),
    });
    let (mut quota_changes, mut pod_changes) = (ctl.quotas.subscribe(), ctl.pods.subscribe());
    ctl.quotas.synced().await;
    ctl.pods.synced().await;
    let events = {
        let ctl = ctl.clone();
        async move {
            let mut tick = tokio::time::interval(RESYNC);
            loop {
                tokio::select! {
                    _ = tick.tick() => ctl.resync(),
                    c = next_change(&mut quota_changes) => match c {
                        Some(Change::Added(q) | Change::Deleted(q)) => ctl.queue.add(ObjectKey::of(q.as_ref())),
                        // As upstream: only a change of `hard` is recomputed at once. A
                        // status-only change is admission charging the quota; recomputing
                        // then, from a pod cache that has not yet seen the pod just
                        // admitted, would hand the charge back and let the next create
                        // overshoot.
                        Some(Change::Modified(q)) if hard_changed(&q) => ctl.queue.add(ObjectKey::of(q.as_ref())),
                        Some(Change::Modified(_)) => {}
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    c = next_change(&mut pod_changes) => match c {
                        Some(Change::Added(p) | Change::Modified(p) | Change::Deleted(p)) => {
                            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                            for q in ctl.quotas.in_namespace(ns) {
                                ctl.queue.add(ObjectKey::of(q.as_ref()));
                            }
                        }
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("resourcequota", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

/// Whether a quota's `spec.hard` differs from the `status.hard` last
/// written for it.
fn hard_changed(q: &ResourceQuota) -> bool {
    q.spec.as_ref().and_then(|s| s.hard.as_ref()) != q.status.as_ref().and_then(|s| s.hard.as_ref())
}

impl QuotaController {
    fn resync(&self) {
        for q in self.quotas.state() {
            self.queue.add(ObjectKey::of(q.as_ref()));
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(quota) = self.quotas.get(key.namespace.as_deref(), &key.name) else {
            return Ok(None);
        };
        let spec = quota.spec.clone().unwrap_or_default();
        let scoped = kybern_apimachinery::quota_scope::is_scoped(&spec);
        let hard = spec.hard.clone().unwrap_or_default();
        let ns = key.ns();
        // Pods that still hold resources: not finished.
        let pods: Vec<Arc<CachedPod>> = self
            .pods
            .in_namespace(ns)
            .into_iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ) && kybern_apimachinery::quota_scope::covers_pod(&spec, p)
            })
            .collect();
        let mut used: BTreeMap<String, Quantity> = BTreeMap::new();
        // Listed once, on first need.
        let mut claims: Option<Vec<PersistentVolumeClaim>> = None;
        for name in hard.keys() {
            let amount = if is_pod_quota_resource(name) {
                pods.iter()
                    .filter_map(|p| pod_quota_usage(p, name))
                    .sum::<i64>()
            } else if scoped {
                // A scoped quota counts pods only, as upstream.
                continue;
            } else if is_claim_quota_resource(name) {
                let claims = match &claims {
                    Some(c) => c,
                    None => claims.insert(
                        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
                            .list(&ListParams::default())
                            .await?
                            .items,
                    ),
                };
                claims
                    .iter()
                    .filter_map(|c| claim_quota_usage(c, name))
                    .sum::<i64>()
            } else if let Some(kind) = quota_counted_kind(name) {
                self.count(ns, name, kind).await?
            } else {
                continue;
            };
            used.insert(name.clone(), Quantity(format_quota_amount(name, amount)));
        }
        let status = ResourceQuotaStatus {
            hard: Some(hard),
            used: Some(used),
        };
        if quota.status.as_ref() != Some(&status) {
            let mut updated = (*quota).clone();
            updated.status = Some(status);
            crate::write_status(&self.client, &updated).await?;
        }
        Ok(None)
    }

    /// Counts objects of a kind in the namespace (metadata only; services
    /// split by type for the `services.*` quotas).
    async fn count(
        &self,
        ns: &str,
        name: &str,
        (group, version, plural): (String, String, String),
    ) -> Result<i64, ControllerError> {
        let version = if version.is_empty() {
            // The preferred version of the group, from discovery.
            match preferred_version(&self.client, &group).await {
                Some(v) => v,
                None => return Ok(0),
            }
        } else {
            version
        };
        let api_version = if group.is_empty() {
            version.clone()
        } else {
            format!("{group}/{version}")
        };
        let resource = ApiResource {
            group,
            version,
            api_version,
            kind: String::new(),
            plural,
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource);
        if let Some(kind) = name.strip_prefix("services.") {
            let want = if kind == "loadbalancers" {
                "LoadBalancer"
            } else {
                "NodePort"
            };
            let list = api.list(&ListParams::default()).await?;
            let n = list
                .items
                .iter()
                .filter(|s| {
                    let t = s.data.pointer("/spec/type").and_then(|v| v.as_str());
                    t == Some(want) || (want == "NodePort" && t == Some("LoadBalancer"))
                })
                .count();
            return Ok(n as i64);
        }
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) => Ok(list.items.len() as i64),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

async fn preferred_version(client: &kube::Client, group: &str) -> Option<String> {
    let groups = client.list_api_groups().await.ok()?;
    groups
        .groups
        .into_iter()
        .find(|g| g.name == group)?
        .preferred_version
        .map(|v| v.version)
}
