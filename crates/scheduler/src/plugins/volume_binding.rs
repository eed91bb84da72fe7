//! `VolumeBinding`: a pod's PersistentVolumeClaims must exist, and the nodes
//! it may go to are those its bound volumes' node affinity allows, as
//! upstream filters them. A claim whose class waits for its first consumer
//! (`WaitForFirstConsumer`) needs, on the node, a free volume that fits it
//! or a class that can provision one there. Once a node is chosen the
//! scheduler reserves that volume for the claim (its `claimRef`, as
//! upstream's volume binder writes it) or names the node on the claim for
//! the provisioner (`volume.kubernetes.io/selected-node`), and binds the pod
//! only once the volume controller has bound every such claim (upstream's
//! `PreBind`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kybern_apimachinery::labels::Requirement;
use tokio::sync::Semaphore;

use super::matching::{compile_term, term_matches};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{Code, CycleState, FilterPlugin, Plugin, PreFilterPlugin, Status};
use crate::volume_match::{
    BIND_COMPLETED, SELECTED_NODE, annotation, best_match, can_provision, claim_class, reserved_for,
};

const CLAIMS: &str = "VolumeBinding/claims";

/// How long a pod waits for its claims to be bound before it is retried
/// (upstream's default `bindTimeoutSeconds`).
const BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// Upstream's reasons.
pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// No volume can be bound or provisioned for a delayed claim on the node.
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// A claim that must be bound before scheduling is not.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// A claim is bound to a volume that does not exist.
pub const PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// The `VolumeBinding` plugin.
pub struct VolumeBinding;

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }
}

/// What becomes of a delayed claim on the chosen node.
#[derive(Clone, Debug)]
pub enum Reservation {
    /// This free volume is reserved for the claim.
    Volume(PersistentVolumeClaim, Arc<PersistentVolume>),
    /// The claim's class provisions a volume on the node.
    Provision(PersistentVolumeClaim),
}

impl Reservation {
    /// The claim reserved for.
    pub fn claim(&self) -> &PersistentVolumeClaim {
        match self {
            Reservation::Volume(c, _) | Reservation::Provision(c) => c,
        }
    }
}

/// What the filter checks: each bound volume's required node terms (any one
/// must match), and the delayed claims (with their classes) that need a
/// volume on the node.
struct Claims {
    bound: Vec<Vec<Vec<Requirement>>>,
    delayed: Vec<(PersistentVolumeClaim, Option<StorageClass>)>,
    /// The volumes, and those reserved for claims, when there are delayed
    /// claims.
    volumes: Vec<Arc<PersistentVolume>>,
    assumed: HashMap<String, String>,
}

impl Claims {
    /// For each delayed claim on `node`, a free volume (each volume once)
    /// or else provisioning by its class; `None` if some claim can have
    /// neither.
    fn pick(&self, node: &NodeInfo) -> Option<Vec<Reservation>> {
        let mut out: Vec<Reservation> = Vec::new();
        for (claim, class) in &self.delayed {
            let uid = claim.metadata.uid.as_deref().unwrap_or_default();
            let skip = |name: &str| {
                self.assumed.get(name).is_some_and(|u| u != uid)
                    || out.iter().any(|r| {
                        matches!(r, Reservation::Volume(_, v)
                            if v.metadata.name.as_deref() == Some(name))
                    })
            };
            let at = Some((node.name.as_str(), &*node.labels));
            match best_match(claim, &self.volumes, at, &skip) {
                Some(volume) => out.push(Reservation::Volume(claim.clone(), volume)),
                None if class
                    .as_ref()
                    .is_some_and(|c| can_provision(c, &node.labels)) =>
                {
                    out.push(Reservation::Provision(claim.clone()));
                }
                None => return None,
            }
        }
        Some(out)
    }
}

/// What to do for the pod's delayed claims on `node`, as the filter found
/// it (empty when it has none).
pub fn reservations(state: &CycleState, node: &NodeInfo) -> Vec<Reservation> {
    state
        .read::<Claims>(CLAIMS)
        .filter(|c| !c.delayed.is_empty())
        .and_then(|c| c.pick(node))
        .unwrap_or_default()
}

/// Upstream's `PreBind`: writes each reservation (a volume's `claimRef`,
/// only if the volume has not changed since it was seen; or the chosen
/// node on a claim to provision), holding an in-flight permit for the
/// writes alone, then waits until the volume controller has bound every
/// claim.
pub async fn pre_bind(
    client: &kube::Client,
    in_flight: &Semaphore,
    reservations: &[Reservation],
    node: &str,
) -> Status {
    let written = {
        let _permit = in_flight.acquire().await;
        let mut written = Status::ok();
        for r in reservations {
            if let Err(e) = write(client, r, node).await {
                written = Status::new(Code::Error, format!("binding volumes: {e}"));
                break;
            }
        }
        written
    };
    let status = if written.is_success() {
        wait_bound(client, reservations, node, BIND_TIMEOUT).await
    } else {
        written
    };
    if status.is_success() {
        return status;
    }
    // Worded as upstream's framework reports a failed PreBind.
    Status::new(
        Code::Error,
        format!(
            "running PreBind plugin \"VolumeBinding\": {}",
            status.reasons.join(", ")
        ),
    )
}

async fn write(client: &kube::Client, r: &Reservation, node: &str) -> kube::Result<()> {
    match r {
        Reservation::Volume(_, volume)
            if volume
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some() =>
        {
            Ok(())
        }
        Reservation::Volume(claim, volume) => {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            let name = volume.metadata.name.clone().unwrap_or_default();
            let updated = reserved_for(volume, claim);
            api.replace(&name, &PostParams::default(), &updated)
                .await
                .map(|_| ())
        }
        Reservation::Provision(claim) => {
            if selected_node(claim) == Some(node) {
                return Ok(());
            }
            let mut updated = claim.clone();
            updated
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(SELECTED_NODE.to_owned(), node.to_owned());
            claims_api(client, claim)
                .replace(&name_of(claim), &PostParams::default(), &updated)
                .await
                .map(|_| ())
        }
    }
}

fn name_of(c: &PersistentVolumeClaim) -> String {
    c.metadata.name.clone().unwrap_or_default()
}

fn claims_api(client: &kube::Client, c: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
    Api::namespaced(
        client.clone(),
        c.metadata.namespace.as_deref().unwrap_or_default(),
    )
}

fn selected_node(c: &PersistentVolumeClaim) -> Option<&str> {
    annotation(&c.metadata, SELECTED_NODE)
}

/// Whether the volume controller has finished binding claim `c`.
fn bound(c: &PersistentVolumeClaim) -> bool {
    let named = c
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    named
        && c.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(BIND_COMPLETED))
}

/// Polls the claims (upstream checks its caches every second) until all
/// are bound; fails when one is gone or replaced, when a provisioner gave
/// up on one (it takes the selected node off), or at `timeout`.
async fn wait_bound(
    client: &kube::Client,
    reservations: &[Reservation],
    node: &str,
    timeout: Duration,
) -> Status {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        let mut pending = false;
        for r in reservations {
            let wanted = r.claim();
            let name = name_of(wanted);
            let current = match claims_api(client, wanted).get_opt(&name).await {
                Ok(Some(c)) if c.metadata.uid == wanted.metadata.uid => c,
                Ok(_) => {
                    return Status::new(
                        Code::Error,
                        format!("binding volumes: persistentvolumeclaim \"{name}\" not found"),
                    );
                }
                Err(e) => return Status::new(Code::Error, format!("binding volumes: {e}")),
            };
            if bound(&current) {
                continue;
            }
            if matches!(r, Reservation::Provision(_)) && selected_node(&current) != Some(node) {
                return Status::new(
                    Code::Error,
                    format!("binding volumes: provisioning failed for PVC \"{name}\""),
                );
            }
            pending = true;
        }
        if !pending {
            return Status::ok();
        }
        if Instant::now() >= deadline {
            return Status::new(
                Code::Error,
                "binding volumes: timed out waiting for the condition",
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
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
            let class = cache.volumes.class(claim_class(claim));
            let delayed = class.and_then(|c| c.volume_binding_mode.as_deref())
                == Some("WaitForFirstConsumer");
            if delayed {
                claims.delayed.push((claim.clone(), class.cloned()));
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
