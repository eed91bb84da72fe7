//! The EndpointSlice controller (and, from the same observations, the
//! Endpoints controller): for every Service with a selector, slices of at most
//! 100 endpoints per distinct set of resolved ports, with ready, serving and
//! terminating conditions, changed in place so that an endpoint stays in its
//! slice while it lives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kybern_apimachinery::cached_pod::CachedPod;

use crate::expectations::Expectations;
use crate::informer::{Change, Informer, next_change};
use crate::pods::controller_ref;
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::service_pods::{ResolvedPort, SelectedPod, by_ports, selected_pods, selector_of};
use crate::{ControllerError, Informers, endpoints};

/// Most endpoints per slice (upstream's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";

struct EndpointSliceController {
    client: kube::Client,
    /// The Endpoints controller's own identity, for the Endpoints it mirrors.
    endpoints_client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<CachedPod>>,
    slices: Arc<Informer<EndpointSlice>>,
    endpoints: Arc<Informer<Endpoints>>,
    /// Slices created or deleted and not yet seen: until they are, the
    /// slice cache is stale and a sync would write the same slices again.
    expectations: Expectations,
    queue: Arc<WorkQueue<ObjectKey>>,
}

/// Runs the EndpointSlice and Endpoints controllers.
pub async fn run(
    client: kube::Client,
    endpoints_client: kube::Client,
    informers: &Informers,
    workers: usize,
) {
    let ctl = Arc::new(EndpointSliceController {
        client,
        endpoints_client,
        services: informers.services.clone(),
        pods: informers.pods.clone(),
        slices: informers.endpoint_slices.clone(),
        endpoints: informers.endpoints.clone(),
        expectations: Expectations::default(),
        queue: Arc::default(),
    });
    let mut svc_changes = ctl.services.subscribe();
    let mut pod_changes = ctl.pods.subscribe();
    let mut slice_changes = ctl.slices.subscribe();
    ctl.services.synced().await;
    ctl.pods.synced().await;
    ctl.slices.synced().await;
    ctl.endpoints.synced().await;
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    c = next_change(&mut svc_changes) => match c {
                        Some(Change::Added(s) | Change::Modified(s) | Change::Deleted(s)) => ctl.queue.add(ObjectKey::of(s.as_ref())),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    c = next_change(&mut pod_changes) => match c {
                        Some(Change::Added(p) | Change::Modified(p) | Change::Deleted(p)) => ctl.pod_changed(&p),
                        Some(Change::Resync) => ctl.resync(),
                        None => return,
                    },
                    c = next_change(&mut slice_changes) => match c {
                        Some(Change::Resync) => ctl.resync(),
                        Some(change) => ctl.slice_changed(change),
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers("endpointslice", ctl.queue.clone(), workers, move |key| {
            let ctl = ctl.clone();
            async move { ctl.sync(&key).await }
        })
    };
    tokio::join!(events, sync);
}

impl EndpointSliceController {
    /// A slice this controller manages was seen: it may satisfy what a sync
    /// expected, or someone else changed it and it must be put back.
    fn slice_changed(&self, change: Change<EndpointSlice>) {
        let (slice, added, deleted) = match change {
            Change::Added(s) => (s, true, false),
            Change::Modified(s) => (s, false, false),
            Change::Deleted(s) => (s, false, true),
            Change::Resync => return self.resync(),
        };
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        if labels.get(MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
            return;
        }
        let Some(svc) = labels.get(SERVICE_NAME) else {
            return;
        };
        let key =
            ObjectKey::namespaced(slice.metadata.namespace.as_deref().unwrap_or_default(), svc);
        if added {
            self.expectations.creation_observed(&key);
        }
        if deleted {
            self.expectations
                .deletion_observed(&key, slice.metadata.uid.as_deref().unwrap_or_default());
        }
        self.queue.add(key);
    }

    fn resync(&self) {
        for s in self.services.state() {
            self.queue.add(ObjectKey::of(s.as_ref()));
        }
    }

    /// A pod may join or leave any Service of its namespace (its old labels
    /// are not known), so every Service with a selector there is looked at.
    fn pod_changed(&self, pod: &CachedPod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        for svc in self.services.in_namespace(ns) {
            if selector_of(&svc).is_some() {
                self.queue.add(ObjectKey::of(svc.as_ref()));
            }
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let ns = key.ns();
        let Some(svc) = self.services.get(Some(ns), &key.name) else {
            self.expectations.forget(key);
            // Slices go with their owner through the garbage collector;
            // Endpoints carry no owner and are deleted here, as upstream.
            if self.endpoints.get(Some(ns), &key.name).is_some() {
                let api: Api<Endpoints> = Api::namespaced(self.endpoints_client.clone(), ns);
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(None);
        };
        let Some(selector) = selector_of(&svc) else {
            return Ok(None);
        };
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let pods = selected_pods(&svc, &selector, &self.pods.in_namespace(ns));
        let existing = self.endpoints.get(Some(ns), &key.name);
        endpoints::write(
            &self.endpoints_client,
            &svc,
            existing.as_deref(),
            endpoints::subsets(pods.clone()),
        )
        .await?;
        if self.expectations.satisfied(key) {
            self.write_slices(key, &svc, pods).await?;
        }
        Ok(self.expectations.lapse_in(key))
    }

    async fn write_slices(
        &self,
        key: &ObjectKey,
        svc: &Service,
        pods: Vec<SelectedPod>,
    ) -> Result<(), ControllerError> {
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let uid = svc.metadata.uid.as_deref().unwrap_or_default();
        let mut existing: Vec<EndpointSlice> = self
            .slices
            .in_namespace(ns)
            .into_iter()
            .filter(|s| {
                let l = s.metadata.labels.clone().unwrap_or_default();
                l.get(SERVICE_NAME).map(String::as_str) == Some(name)
                    && l.get(MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
                    && s.metadata
                        .owner_references
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .any(|o| o.uid == uid)
            })
            .map(|s| (*s).clone())
            .collect();
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut desired: Vec<EndpointSlice> = Vec::new();
        let groups = by_ports(pods);
        for (ports, group) in &groups {
            let wanted: HashMap<String, Endpoint> =
                group.iter().map(|p| (p.ip.clone(), endpoint(p))).collect();
            let slice_ports: Option<Vec<EndpointPort>> =
                Some(ports.iter().map(slice_port).collect());
            let mut placed: HashMap<String, ()> = HashMap::new();
            // Keep each living endpoint in the slice that has it.
            for s in existing
                .iter()
                .filter(|s| s.ports == slice_ports && s.address_type == "IPv4")
            {
                let kept: Vec<Endpoint> = s
                    .endpoints
                    .iter()
                    .filter_map(|e| e.addresses.first())
                    .filter_map(|ip| wanted.get(ip).map(|e| (ip, e)))
                    .filter(|(ip, _)| placed.insert((*ip).clone(), ()).is_none())
                    .map(|(_, e)| e.clone())
                    .collect();
                let mut s = s.clone();
                s.endpoints = kept;
                desired.push(s);
            }
            let mut fresh: Vec<Endpoint> = group
                .iter()
                .filter(|p| !placed.contains_key(&p.ip))
                .map(endpoint)
                .collect();
            for s in desired.iter_mut().filter(|s| s.ports == slice_ports) {
                while s.endpoints.len() < MAX_ENDPOINTS_PER_SLICE && !fresh.is_empty() {
                    s.endpoints.push(fresh.remove(0));
                }
            }
            for chunk in fresh.chunks(MAX_ENDPOINTS_PER_SLICE) {
                desired.push(new_slice(svc, slice_ports.clone(), chunk.to_vec()));
            }
        }
        desired.retain(|s| !s.endpoints.is_empty());
        if desired.is_empty() {
            // A Service with no endpoints keeps one empty placeholder slice.
            let placeholder = existing
                .iter()
                .find(|s| s.ports.is_none() && s.endpoints.is_empty())
                .cloned()
                .unwrap_or_else(|| new_slice(svc, None, Vec::new()));
            desired.push(placeholder);
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let labels = slice_labels(svc);
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for mut s in desired {
            s.metadata.labels = Some(labels.clone());
            let Some(name) = s.metadata.name.clone() else {
                creates.push(s);
                continue;
            };
            if let Some(i) = existing
                .iter()
                .position(|e| e.metadata.name.as_ref() == Some(&name))
            {
                let old = existing.remove(i);
                if old.endpoints != s.endpoints
                    || old.ports != s.ports
                    || old.metadata.labels != s.metadata.labels
                {
                    updates.push(s);
                }
            }
        }
        let deletes = existing;
        let uid_of = |s: &EndpointSlice| s.metadata.uid.clone().unwrap_or_default();
        self.expectations
            .expect(key, creates.len(), deletes.iter().map(uid_of));
        let mut first_err: Option<ControllerError> = None;
        for s in &creates {
            match api.create(&PostParams::default(), s).await {
                Ok(_) => {}
                Err(e) => {
                    self.expectations.creation_observed(key);
                    if !matches!(&e, kube::Error::Api(st) if st.code == 403) {
                        first_err.get_or_insert(e.into());
                    }
                }
            }
        }
        for s in &updates {
            let name = s.metadata.name.as_deref().unwrap_or_default();
            match api.replace(name, &PostParams::default(), s).await {
                Ok(_) => {}
                Err(kube::Error::Api(st)) if st.code == 404 => {}
                Err(e) => {
                    first_err.get_or_insert(e.into());
                }
            }
        }
        for s in &deletes {
            let name = s.metadata.name.as_deref().unwrap_or_default();
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) => {
                    self.expectations.deletion_observed(key, &uid_of(s));
                    if !matches!(&e, kube::Error::Api(st) if st.code == 404) {
                        first_err.get_or_insert(e.into());
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn endpoint(p: &SelectedPod) -> Endpoint {
    Endpoint {
        addresses: vec![p.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(p.ready),
            serving: Some(p.serving),
            terminating: Some(p.terminating),
        }),
        node_name: p.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(endpoints::pod_ref(p)),
        ..Default::default()
    }
}

fn slice_port(p: &ResolvedPort) -> EndpointPort {
    EndpointPort {
        name: Some(p.name.clone().unwrap_or_default()),
        port: Some(p.port),
        protocol: Some(p.protocol.clone()),
        app_protocol: p.app_protocol.clone(),
    }
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SERVICE_NAME.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

fn new_slice(
    svc: &Service,
    ports: Option<Vec<EndpointPort>>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                svc.metadata.name.as_deref().unwrap_or_default()
            )),
            owner_references: Some(vec![controller_ref(svc)]),
            labels: Some(slice_labels(svc)),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports,
    }
}
