//! The ServiceAccount controller and the root CA publisher: every namespace
//! that is not terminating has a `default` ServiceAccount and a
//! `kube-root-ca.crt` ConfigMap holding the cluster's CA certificate.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::informer::{Change, Informer, next_change};
use crate::queue::{ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers};

/// The ConfigMap every namespace gets.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The ServiceAccount every namespace gets.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Upstream's description annotation on the ConfigMap.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct ServiceAccountController {
    client: kube::Client,
    /// The root CA publisher's own identity, for the ConfigMaps.
    publisher_client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    accounts: Arc<Informer<ServiceAccount>>,
    maps: Arc<Informer<ConfigMap>>,
    root_ca: Option<String>,
    queue: Arc<WorkQueue<String>>,
}

/// Runs both controllers; the CA is published only when `root_ca` is given.
pub async fn run(
    client: kube::Client,
    publisher_client: kube::Client,
    informers: &Informers,
    root_ca: Option<String>,
) {
    let ctl = Arc::new(ServiceAccountController {
        client,
        publisher_client,
        namespaces: informers.namespaces.clone(),
        accounts: informers.service_accounts.clone(),
        maps: informers.root_ca_maps.clone(),
        root_ca,
        queue: Arc::default(),
    });
    let mut ns_changes = ctl.namespaces.subscribe();
    let mut sa_changes = ctl.accounts.subscribe();
    let mut map_changes = ctl.maps.subscribe();
    ctl.namespaces.synced().await;
    ctl.accounts.synced().await;
    ctl.maps.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                let ns = tokio::select! {
                    c = next_change(&mut ns_changes) => match c {
                        Some(Change::Added(n) | Change::Modified(n)) => n.metadata.name.clone(),
                        Some(Change::Deleted(_)) => None,
                        Some(Change::Resync) => { ctl.resync(); None }
                        None => return,
                    },
                    c = next_change(&mut sa_changes) => match c {
                        Some(Change::Deleted(sa) | Change::Modified(sa)) if sa.metadata.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT) => sa.metadata.namespace.clone(),
                        Some(Change::Resync) => { ctl.resync(); None }
                        Some(_) => None,
                        None => return,
                    },
                    c = next_change(&mut map_changes) => match c {
                        Some(Change::Deleted(m) | Change::Modified(m)) => m.metadata.namespace.clone(),
                        Some(Change::Resync) => { ctl.resync(); None }
                        Some(_) => None,
                        None => return,
                    },
                };
                if let Some(ns) = ns {
                    ctl.queue.add(ns);
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("serviceaccount", ctl.queue.clone(), 2, move |ns: String| {
            let ctl = ctl.clone();
            async move { ctl.sync(&ns).await }
        })
    };
    tokio::join!(events, sync);
}

impl ServiceAccountController {
    fn resync(&self) {
        for ns in self.namespaces.state() {
            if let Some(name) = &ns.metadata.name {
                self.queue.add(name.clone());
            }
        }
    }

    async fn sync(&self, ns: &str) -> ReconcileResult<ControllerError> {
        let Some(namespace) = self.namespaces.get(None, ns) else {
            return Ok(None);
        };
        let terminating = namespace.metadata.deletion_timestamp.is_some()
            || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        if terminating {
            return Ok(None);
        }
        if self
            .accounts
            .get(Some(ns), DEFAULT_SERVICE_ACCOUNT)
            .is_none()
        {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
            created_or_exists(api.create(&PostParams::default(), &sa).await)?;
        }
        let Some(pem) = &self.root_ca else {
            return Ok(None);
        };
        let data = BTreeMap::from([("ca.crt".to_owned(), pem.clone())]);
        let api: Api<ConfigMap> = Api::namespaced(self.publisher_client.clone(), ns);
        match self.maps.get(Some(ns), ROOT_CA_CONFIG_MAP) {
            Some(cm) if cm.data.as_ref() == Some(&data) => {}
            Some(cm) => {
                let mut cm = (*cm).clone();
                cm.data = Some(data);
                api.replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &cm)
                    .await?;
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIG_MAP.into()),
                        annotations: Some(BTreeMap::from([(
                            "kubernetes.io/description".to_owned(),
                            DESCRIPTION.to_owned(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                created_or_exists(api.create(&PostParams::default(), &cm).await)?;
            }
        }
        Ok(None)
    }
}

fn created_or_exists<T>(r: Result<T, kube::Error>) -> Result<(), ControllerError> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        // A namespace being deleted refuses new content; the next sync sees
        // it terminating. Other refusals (a quota without status yet) are
        // retried.
        Err(kube::Error::Api(s))
            if s.code == 403
                && s.details.as_ref().is_some_and(|d| {
                    d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
                }) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
