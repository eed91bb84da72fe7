//! Which PersistentVolume a claim may take, and in which phase a volume is
//! by its claim reference: upstream's binding rules, shared by the volume
//! controller (which binds) and `VolumeBinding` (which picks the volumes of
//! claims that wait for their first consumer).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::plugins::matching::{compile_term, term_matches};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kybern_apimachinery::labels::Selector;
use kybern_apimachinery::quantity::parse_value;

/// Set on a claim once the controller has bound it (upstream's
/// `pv.kubernetes.io/bind-completed`).
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim or volume whose binding the controller made.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The node the scheduler chose for a claim's first consumer.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The beta class annotation, which still wins over `storageClassName`.
const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The provisioner a claim waits for, set by the volume controller so that
/// external provisioners know to act.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The deprecated beta spelling of [`STORAGE_PROVISIONER`], still written.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Set on a volume by the provisioner that made it (upstream's
/// `AnnDynamicallyProvisioned`); such a volume is deleted by it too.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The provisioner of classes whose volumes an administrator makes by hand.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// Whether class `c` can provision a volume on a node with `labels`: it
/// names a provisioner, and its `allowedTopologies` (if any) admit the node
/// (any term; within a term, every key's value listed).
pub fn can_provision(c: &StorageClass, labels: &BTreeMap<String, String>) -> bool {
    if c.provisioner == NO_PROVISIONER {
        return false;
    }
    let Some(terms) = c.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    terms.iter().any(|t| {
        t.match_label_expressions.iter().flatten().all(|r| {
            labels
                .get(&r.key)
                .is_some_and(|v| r.values.iter().any(|w| w == v))
        })
    })
}

/// Annotation `key` of an object, if set.
pub fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A claim's storage class (`""`: none).
pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    annotation(&c.metadata, BETA_CLASS)
        .or(c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()))
        .unwrap_or("")
}

/// A volume's storage class (`""`: none).
pub fn volume_class(v: &PersistentVolume) -> &str {
    annotation(&v.metadata, BETA_CLASS)
        .or(v
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()))
        .unwrap_or("")
}

/// Whether volume `v`'s claim reference names claim `c` (by UID once the
/// reference has one).
pub fn refers_to(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name == c.metadata.name
        && r.namespace == c.metadata.namespace
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_deref())
}

fn storage(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<i64> {
    parse_value(&map?.get("storage")?.0).ok()
}

/// Why volume `v` cannot serve claim `c`, or `None` when it can: the same
/// class and volume mode, every access mode the claim asks for, room for its
/// request, labels its selector takes, and (for a claim whose consumer was
/// scheduled) a node affinity that allows that node.
pub fn unfit(
    v: &PersistentVolume,
    c: &PersistentVolumeClaim,
    node: Option<(&str, &BTreeMap<String, String>)>,
) -> Option<String> {
    let (vs, cs) = (
        v.spec.clone().unwrap_or_default(),
        c.spec.clone().unwrap_or_default(),
    );
    if volume_class(v) != claim_class(c) {
        return Some("storageClassName does not match".into());
    }
    let mode = |m: Option<&str>| m.unwrap_or("Filesystem").to_owned();
    if mode(vs.volume_mode.as_deref()) != mode(cs.volume_mode.as_deref()) {
        return Some("incompatible volumeMode".into());
    }
    let modes = vs.access_modes.unwrap_or_default();
    if cs.access_modes.iter().flatten().any(|m| !modes.contains(m)) {
        return Some("incompatible accessMode".into());
    }
    let wanted = storage(cs.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or(0);
    if storage(vs.capacity.as_ref()).unwrap_or(0) < wanted {
        return Some("requested PV is too small".into());
    }
    if let Some(selector) = &cs.selector {
        let labels = serde_json::to_value(&v.metadata.labels).unwrap_or_default();
        let matches = serde_json::to_value(selector)
            .ok()
            .and_then(|s| Selector::from_label_selector(&s).ok())
            .is_some_and(|s| s.matches_labels(Some(&labels)));
        if !matches {
            return Some("volume's labels do not match the claim's selector".into());
        }
    }
    if let (Some((name, labels)), Some(required)) = (
        node,
        vs.node_affinity.as_ref().and_then(|a| a.required.as_ref()),
    ) {
        let allowed = required
            .node_selector_terms
            .iter()
            .any(|t| compile_term(t).is_some_and(|r| term_matches(&r, name, labels)));
        if !allowed {
            return Some("node affinity does not allow the selected node".into());
        }
    }
    None
}

/// The volume claim `c` should take: one already reserved for it (a claim
/// reference naming it), else the smallest free volume that fits, as
/// upstream's `findBestMatchForClaim`. Volumes being deleted, bound
/// elsewhere or in `skip` are not candidates.
pub fn best_match(
    c: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    node: Option<(&str, &BTreeMap<String, String>)>,
    skip: &dyn Fn(&str) -> bool,
) -> Option<Arc<PersistentVolume>> {
    let mut best: Option<(i64, &Arc<PersistentVolume>)> = None;
    for v in volumes {
        let name = v.metadata.name.as_deref().unwrap_or_default();
        if v.metadata.deletion_timestamp.is_some() || skip(name) {
            continue;
        }
        let claimed = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some();
        if claimed && !refers_to(v, c) {
            continue;
        }
        if unfit(v, c, node).is_some() {
            continue;
        }
        if claimed {
            return Some(v.clone());
        }
        let size = storage(v.spec.as_ref().and_then(|s| s.capacity.as_ref())).unwrap_or(0);
        if best.is_none_or(|(b, _)| size < b) {
            best = Some((size, v));
        }
    }
    best.map(|(_, v)| v.clone())
}

/// Volume `v` reserved for claim `c`: a claim reference with the claim's
/// UID and version, and the bound-by-controller annotation when it had no
/// reference before (what upstream's binder writes first).
pub fn reserved_for(v: &PersistentVolume, c: &PersistentVolumeClaim) -> PersistentVolume {
    let mut out = v.clone();
    let spec = out.spec.get_or_insert_with(Default::default);
    if spec.claim_ref.is_none() {
        out.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(BOUND_BY_CONTROLLER.to_owned(), "yes".to_owned());
    }
    spec.claim_ref = Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
        resource_version: c.metadata.resource_version.clone(),
        ..Default::default()
    });
    out
}

/// The phase volume `v` should be in, given its claim as the controller
/// sees it (`None`: no such claim, or one with another UID).
pub fn volume_phase(v: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> &'static str {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return "Available";
    };
    let reserved_only = r.uid.as_deref().is_none_or(str::is_empty);
    match claim {
        Some(c) => match c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
            Some(n) if Some(n) == v.metadata.name.as_deref() => "Bound",
            // Bound to it by UID, the claim's side not written yet.
            None | Some("") if !reserved_only => "Bound",
            // Reserved for a claim that has not taken it (yet).
            _ => "Available",
        },
        None if reserved_only => "Available",
        // Its claim is gone: what happens next is the reclaim policy's.
        None => "Released",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, extra: serde_json::Value) -> Arc<PersistentVolume> {
        let mut spec = json!({"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/tmp/x"}, "storageClassName": ""});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"tier": name}}, "spec": spec}),
            )
            .expect("test setup"),
        )
    }

    #[test]
    fn a_class_provisions_where_its_topology_allows() {
        let class = |v: serde_json::Value| -> StorageClass {
            serde_json::from_value(v).expect("test setup")
        };
        let zone = |z: &str| BTreeMap::from([("zone".to_owned(), z.to_owned())]);
        let open = class(json!({"metadata": {"name": "a"}, "provisioner": "example.com/p"}));
        assert!(can_provision(&open, &zone("x")));
        let manual = class(json!({"metadata": {"name": "b"}, "provisioner": NO_PROVISIONER}));
        assert!(!can_provision(&manual, &zone("x")));
        let zoned = class(
            json!({"metadata": {"name": "c"}, "provisioner": "example.com/p",
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["y", "z"]}]}]}),
        );
        assert!(can_provision(&zoned, &zone("z")));
        assert!(!can_provision(&zoned, &zone("x")));
        assert!(!can_provision(&zoned, &BTreeMap::new()));
    }

    fn pvc(spec: serde_json::Value) -> PersistentVolumeClaim {
        let mut base = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}});
        if let (Some(s), Some(e)) = (base.as_object_mut(), spec.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(
            json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": base}),
        )
        .expect("test setup")
    }

    fn names(v: Option<Arc<PersistentVolume>>) -> Option<String> {
        v.and_then(|v| v.metadata.name.clone())
    }

    #[test]
    fn the_smallest_volume_that_fits_is_taken() {
        let volumes = vec![
            pv("big", "10Gi", json!({})),
            pv("small", "2Gi", json!({})),
            pv("tiny", "500Mi", json!({})),
            pv("rwx", "1Gi", json!({"accessModes": ["ReadWriteMany"]})),
            pv("classy", "1Gi", json!({"storageClassName": "fast"})),
        ];
        let none = |_: &str| false;
        assert_eq!(
            names(best_match(&pvc(json!({})), &volumes, None, &none)).as_deref(),
            Some("small")
        );
        let selective = pvc(json!({"selector": {"matchLabels": {"tier": "big"}}}));
        assert_eq!(
            names(best_match(&selective, &volumes, None, &none)).as_deref(),
            Some("big")
        );
        let fast = pvc(json!({"storageClassName": "fast"}));
        assert_eq!(
            names(best_match(&fast, &volumes, None, &none)).as_deref(),
            Some("classy")
        );
        let skip_small = |n: &str| n == "small";
        assert_eq!(
            names(best_match(&pvc(json!({})), &volumes, None, &skip_small)).as_deref(),
            Some("big")
        );
        let block = pvc(json!({"volumeMode": "Block"}));
        assert!(best_match(&block, &volumes, None, &none).is_none());
    }

    #[test]
    fn reserved_volumes_go_to_their_claim_only() {
        let mine = pv(
            "mine",
            "5Gi",
            json!({"claimRef": {"namespace": "ns", "name": "data"}}),
        );
        let other = pv(
            "other",
            "1Gi",
            json!({"claimRef": {"namespace": "ns", "name": "else", "uid": "u2"}}),
        );
        let free = pv("free", "1Gi", json!({}));
        let volumes = vec![free, other.clone(), mine.clone()];
        let none = |_: &str| false;
        assert_eq!(
            names(best_match(&pvc(json!({})), &volumes, None, &none)).as_deref(),
            Some("mine")
        );
        assert_eq!(volume_phase(&mine, None), "Available");
        assert_eq!(volume_phase(&other, None), "Released");
        let mut bound = pvc(json!({"volumeName": "mine"}));
        assert_eq!(volume_phase(&mine, Some(&bound)), "Bound");
        bound.spec.as_mut().expect("spec").volume_name = None;
        assert_eq!(volume_phase(&mine, Some(&bound)), "Available");
        let by_uid = pv(
            "mine",
            "5Gi",
            json!({"claimRef": {"namespace": "ns", "name": "data", "uid": "u1"}}),
        );
        assert_eq!(volume_phase(&by_uid, Some(&bound)), "Bound");
        bound.spec.as_mut().expect("spec").volume_name = Some("elsewhere".into());
        assert_eq!(volume_phase(&by_uid, Some(&bound)), "Available");
    }

    #[test]
    fn a_reservation_names_the_claim_and_who_made_it() {
        let claim = pvc(json!({}));
        let reserved = reserved_for(&pv("v", "1Gi", json!({})), &claim);
        assert!(refers_to(&reserved, &claim));
        let annotations = reserved.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get(BOUND_BY_CONTROLLER).map(String::as_str),
            Some("yes")
        );
        // A user's reservation stays the user's.
        let by_user = pv(
            "u",
            "1Gi",
            json!({"claimRef": {"namespace": "ns", "name": "data"}}),
        );
        let completed = reserved_for(&by_user, &claim);
        assert!(completed.metadata.annotations.is_none());
        assert_eq!(
            completed
                .spec
                .and_then(|s| s.claim_ref)
                .and_then(|r| r.uid)
                .as_deref(),
            Some("u1")
        );
    }

    #[test]
    fn local_volumes_follow_the_selected_node() {
        let local = pv(
            "local",
            "1Gi",
            json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}),
        );
        let labels =
            |n: &str| BTreeMap::from([("kubernetes.io/hostname".to_owned(), n.to_owned())]);
        let c = pvc(json!({}));
        assert!(unfit(&local, &c, Some(("n1", &labels("n1")))).is_none());
        assert!(unfit(&local, &c, Some(("n2", &labels("n2")))).is_some());
        assert!(unfit(&local, &c, None).is_none());
    }
}
