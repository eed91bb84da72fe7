//! `VolumeBinding`: a pod's PersistentVolumeClaims must exist, and the nodes
//! it may go to are those its bound volumes' node affinity allows, as
//! upstream filters them. A claim whose class waits for its first consumer
//! (`WaitForFirstConsumer`) needs a free volume that fits it on the node;
//! once a node is chosen the scheduler reserves that volume for the claim
//! (its `claimRef`, as upstream's volume binder writes it) before binding
//! the pod, and the volume controller completes the binding. Nothing
//! provisions volumes dynamically.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, PostParams};
use kybern_apimachinery::labels::Requirement;

use super::matching::{compile_term, term_matches};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{Code, CycleState, FilterPlugin, Plugin, PreFilterPlugin, Status};
use crate::volume_match::{best_match, reserved_for};

const CLAIMS: &str = "VolumeBinding/claims";

/// Upstream's reasons.
pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// No volume can be bound or provisioned for a delayed claim on the node.
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// A claim that must be bound before scheduling is not.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// A claim is bound to a volume that does not exist.
pub const PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// The annotation the volume controller sets on a claim it has bound.
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";

/// The `VolumeBinding` plugin.
pub struct VolumeBinding;

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }
}

/// What the filter checks: each bound volume's required node terms (any one
/// must match), and the delayed claims that need a volume on the node.
struct Claims {
    bound: Vec<Vec<Vec<Requirement>>>,
    delayed: Vec<PersistentVolumeClaim>,
    /// The volumes, and those reserved for claims, when there are delayed
    /// claims.
    volumes: Vec<Arc<PersistentVolume>>,
    assumed: HashMap<String, String>,
}

impl Claims {
    /// A free volume for each delayed claim on `node`, each volume once;
    /// `None` if some claim finds none.
    fn pick(&self, node: &NodeInfo) -> Option<Vec<(PersistentVolumeClaim, Arc<PersistentVolume>)>> {
        let mut out: Vec<(PersistentVolumeClaim, Arc<PersistentVolume>)> = Vec::new();
        for claim in &self.delayed {
            let uid = claim.metadata.uid.as_deref().unwrap_or_default();
            let skip = |name: &str| {
                self.assumed.get(name).is_some_and(|u| u != uid)
                    || out
                        .iter()
                        .any(|(_, v)| v.metadata.name.as_deref() == Some(name))
            };
            let node = Some((node.name.as_str(), &*node.labels));
            let volume = best_match(claim, &self.volumes, node, &skip)?;
            out.push((claim.clone(), volume));
        }
        Some(out)
    }
}

/// The volumes to reserve for the pod's delayed claims on `node`, as the
/// filter found them (empty when it has none).
pub fn reservations(
    state: &CycleState,
    node: &NodeInfo,
) -> Vec<(PersistentVolumeClaim, Arc<PersistentVolume>)> {
    state
        .read::<Claims>(CLAIMS)
        .filter(|c| !c.delayed.is_empty())
        .and_then(|c| c.pick(node))
        .unwrap_or_default()
}

/// Writes each reservation: the volume's `claimRef` to its claim (only if
/// the volume has not changed since it was seen), which the volume
/// controller then completes into a binding.
pub async fn reserve(
    client: &kube::Client,
    reservations: &[(PersistentVolumeClaim, Arc<PersistentVolume>)],
) -> Status {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    for (claim, volume) in reservations {
        if volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some()
        {
            continue;
        }
        let updated = reserved_for(volume, claim);
        let name = volume.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api.replace(&name, &PostParams::default(), &updated).await {
            return Status::new(Code::Error, format!("binding volumes: {e}"));
        }
    }
    Status::ok()
}

/// The claim names a pod uses: its `persistentVolumeClaim` volumes, and the
/// `<pod>-<volume>` claims of its generic ephemeral volumes.
fn claim_names(pod: &PodInfo) -> Vec<String> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{}-{}", pod.name, v.name))
            }
        })
        .collect()
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cache: &ClusterCache) -> Status {
        let names = claim_names(pod);
        if names.is_empty() {
            return Status::skip();
        }
        let mut claims = Claims {
            bound: Vec::new(),
            delayed: Vec::new(),
            volumes: Vec::new(),
            assumed: HashMap::new(),
        };
        let mut immediate_unbound = false;
        for name in names {
            let Some(claim) = cache.volumes.claim(&pod.namespace, &name) else {
                return Status::unresolvable(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Status::unresolvable(format!(
                    "persistentvolumeclaim \"{name}\" is being deleted"
                ));
            }
            let spec = claim.spec.as_ref();
            let volume = spec
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or_default();
            // Bound only once the volume controller says so, as upstream: a
            // claim merely naming a volume is still being bound.
            let completed = claim
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(BIND_COMPLETED));
            if !volume.is_empty() && completed {
                let Some(pv) = cache.volumes.volume(volume) else {
                    return Status::unresolvable(PV_NOT_EXIST);
                };
                let terms = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.as_ref())
                    .map(|r| {
                        r.node_selector_terms
                            .iter()
                            .filter_map(compile_term)
                            .collect()
                    });
                if let Some(terms) = terms {
                    claims.bound.push(terms);
                }
                continue;
            }
            let delayed = spec
                .and_then(|s| s.storage_class_name.as_deref())
                .and_then(|c| cache.volumes.class(c))
                .and_then(|c| c.volume_binding_mode.as_deref())
                == Some("WaitForFirstConsumer");
            if delayed {
                claims.delayed.push(claim.clone());
            } else {
                immediate_unbound = true;
            }
        }
        if immediate_unbound {
            return Status::unresolvable(UNBOUND_IMMEDIATE);
        }
        if !claims.delayed.is_empty() {
            claims.volumes = cache.volumes.volumes();
            claims.assumed = cache.volumes.assumed().clone();
        }
        state.write(CLAIMS, claims);
        Status::ok()
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(claims) = state.read::<Claims>(CLAIMS) else {
            return Status::ok();
        };
        let fits = |terms: &Vec<Vec<Requirement>>| {
            terms
                .iter()
                .any(|t| term_matches(t, &node.name, &node.labels))
        };
        if !claims.bound.iter().all(fits) {
            return Status::unresolvable(NODE_CONFLICT);
        }
        if !claims.delayed.is_empty() && claims.pick(node).is_none() {
            return Status::unresolvable(BIND_CONFLICT);
        }
        Status::ok()
    }
}
