//! The Endpoints object of a Service with a selector (the legacy API, still
//! maintained upstream): ready addresses, not-ready addresses and ports,
//! one subset per distinct set of resolved ports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::ControllerError;
use crate::service_pods::{ResolvedPort, SelectedPod, by_ports};

/// Tells the EndpointSlice mirroring controller these Endpoints are managed.
const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Most addresses in one Endpoints object (upstream's limit).
const MAX_ADDRESSES: usize = 1000;

/// A reference to a pod, as endpoints carry it.
pub fn pod_ref(p: &SelectedPod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: p.pod.metadata.namespace.clone(),
        name: p.pod.metadata.name.clone(),
        uid: p.pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn node_of(p: &SelectedPod) -> Option<String> {
    p.pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// The subsets the Service's pods make (terminating pods left out unless the
/// Service publishes not-ready addresses).
pub fn subsets(pods: Vec<SelectedPod>) -> Vec<EndpointSubset> {
    let mut out = Vec::new();
    let mut total = 0;
    for (ports, group) in by_ports(pods) {
        let address = |p: &SelectedPod| EndpointAddress {
            ip: p.ip.clone(),
            node_name: node_of(p),
            target_ref: Some(pod_ref(p)),
            hostname: None,
        };
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for p in group.iter().filter(|p| !p.terminating || p.ready) {
            if total >= MAX_ADDRESSES {
                break;
            }
            total += 1;
            if p.ready {
                ready.push(address(p));
            } else {
                not_ready.push(address(p));
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        out.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| ports.iter().map(endpoint_port).collect()),
        });
    }
    out
}

fn endpoint_port(p: &ResolvedPort) -> EndpointPort {
    EndpointPort {
        name: p.name.clone(),
        port: p.port,
        protocol: Some(p.protocol.clone()),
        app_protocol: p.app_protocol.clone(),
    }
}

/// Creates or updates the Service's Endpoints to hold `subsets`.
pub async fn write(
    client: &kube::Client,
    svc: &Service,
    existing: Option<&Endpoints>,
    subsets: Vec<EndpointSubset>,
) -> Result<(), ControllerError> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SKIP_MIRROR.into(), "true".into());
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    match existing {
        Some(e) if e.subsets == subsets && e.metadata.labels.as_ref() == Some(&labels) => Ok(()),
        Some(e) => {
            let mut e = e.clone();
            e.subsets = subsets;
            e.metadata.labels = Some(labels);
            match api.replace(&name, &PostParams::default(), &e).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
        None => {
            let e = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets,
            };
            match api.create(&PostParams::default(), &e).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
    }
}
