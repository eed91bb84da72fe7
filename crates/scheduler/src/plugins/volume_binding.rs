//! `VolumeBinding`: a pod's PersistentVolumeClaims must exist, and the nodes
//! it may go to are those its bound volumes' node affinity allows, as
//! upstream filters them. Binding delayed (`WaitForFirstConsumer`) claims
//! needs a volume binder and provisioner, which Kybern does not have yet:
//! such claims find no volume, as upstream without a provisioner.

use kybern_apimachinery::labels::Requirement;

use super::matching::{compile_term, term_matches};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, Plugin, PreFilterPlugin, Status};

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
/// must match), and whether a delayed claim waits for a volume.
struct Claims {
    bound: Vec<Vec<Vec<Requirement>>>,
    delayed: bool,
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
            delayed: false,
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
                claims.delayed = true;
            } else {
                immediate_unbound = true;
            }
        }
        if immediate_unbound {
            return Status::unresolvable(UNBOUND_IMMEDIATE);
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
        if claims.delayed {
            return Status::unresolvable(BIND_CONFLICT);
        }
        Status::ok()
    }
}
