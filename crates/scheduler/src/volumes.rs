//! The scheduler's view of storage: PersistentVolumeClaims, PersistentVolumes
//! and StorageClasses as their watches report them, for `VolumeBinding`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::watcher;

/// One storage object.
#[derive(Clone, Debug)]
pub enum VolumeObject {
    /// A PersistentVolumeClaim.
    Claim(Arc<PersistentVolumeClaim>),
    /// A PersistentVolume.
    Volume(Arc<PersistentVolume>),
    /// A StorageClass.
    Class(Arc<StorageClass>),
}

/// Which of the three kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VolumeKind {
    /// PersistentVolumeClaims.
    Claim,
    /// PersistentVolumes.
    Volume,
    /// StorageClasses.
    Class,
}

/// A watch event of one of the storage kinds.
#[derive(Debug)]
pub enum VolumeEvent {
    /// A re-list of the kind begins.
    Init(VolumeKind),
    /// An object added or changed; `listed` when it is part of a re-list.
    Apply(VolumeObject, bool),
    /// An object deleted.
    Delete(VolumeObject),
    /// The re-list of the kind ended: what it did not show is gone.
    InitDone(VolumeKind),
}

impl VolumeEvent {
    /// Wraps a watcher event of one kind.
    pub fn from_watch<K>(
        ev: watcher::Event<K>,
        kind: VolumeKind,
        wrap: fn(Arc<K>) -> VolumeObject,
    ) -> Self {
        match ev {
            watcher::Event::Init => VolumeEvent::Init(kind),
            watcher::Event::InitApply(o) => VolumeEvent::Apply(wrap(Arc::new(o)), true),
            watcher::Event::Apply(o) => VolumeEvent::Apply(wrap(Arc::new(o)), false),
            watcher::Event::Delete(o) => VolumeEvent::Delete(wrap(Arc::new(o))),
            watcher::Event::InitDone => VolumeEvent::InitDone(kind),
        }
    }
}

impl VolumeObject {
    fn kind(&self) -> VolumeKind {
        match self {
            VolumeObject::Claim(_) => VolumeKind::Claim,
            VolumeObject::Volume(_) => VolumeKind::Volume,
            VolumeObject::Class(_) => VolumeKind::Class,
        }
    }

    /// `namespace/name` for claims, `name` otherwise.
    fn key(&self) -> String {
        match self {
            VolumeObject::Claim(c) => claim_key(
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default(),
            ),
            VolumeObject::Volume(v) => v.metadata.name.clone().unwrap_or_default(),
            VolumeObject::Class(c) => c.metadata.name.clone().unwrap_or_default(),
        }
    }
}

fn claim_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Claims, volumes and classes by key.
#[derive(Debug, Default)]
pub struct VolumeCache {
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
    /// Keys seen by a re-list in progress, per kind.
    relisting: HashMap<VolumeKind, HashSet<String>>,
    /// Volumes this scheduler has reserved for a claim (by UID) whose
    /// reservation its watch does not show yet.
    assumed: HashMap<String, String>,
}

impl VolumeCache {
    /// Applies a watch event. Returns whether pods waiting on storage may now fit.
    pub fn apply(&mut self, ev: VolumeEvent) -> bool {
        match ev {
            VolumeEvent::Init(kind) => {
                self.relisting.insert(kind, HashSet::new());
                false
            }
            VolumeEvent::Apply(o, listed) => {
                let key = o.key();
                if listed && let Some(seen) = self.relisting.get_mut(&o.kind()) {
                    seen.insert(key.clone());
                }
                match o {
                    VolumeObject::Claim(c) => {
                        self.claims.insert(key, c);
                    }
                    VolumeObject::Volume(v) => {
                        if v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some() {
                            self.assumed.remove(&key);
                        }
                        self.volumes.insert(key, v);
                    }
                    VolumeObject::Class(c) => {
                        self.classes.insert(key, c);
                    }
                }
                true
            }
            VolumeEvent::Delete(o) => {
                let key = o.key();
                match o {
                    VolumeObject::Claim(_) => self.claims.remove(&key).is_some(),
                    VolumeObject::Volume(_) => self.volumes.remove(&key).is_some(),
                    VolumeObject::Class(_) => self.classes.remove(&key).is_some(),
                }
            }
            VolumeEvent::InitDone(kind) => {
                let Some(seen) = self.relisting.remove(&kind) else {
                    return false;
                };
                match kind {
                    VolumeKind::Claim => self.claims.retain(|k, _| seen.contains(k)),
                    VolumeKind::Volume => self.volumes.retain(|k, _| seen.contains(k)),
                    VolumeKind::Class => self.classes.retain(|k, _| seen.contains(k)),
                }
                true
            }
        }
    }

    /// A claim by namespace and name.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&PersistentVolumeClaim> {
        self.claims.get(&claim_key(namespace, name)).map(|c| &**c)
    }

    /// A volume by name.
    pub fn volume(&self, name: &str) -> Option<&PersistentVolume> {
        self.volumes.get(name).map(|v| &**v)
    }

    /// Every volume.
    pub fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.values().cloned().collect()
    }

    /// Records that volume `name` goes to the claim with `claim_uid`.
    pub fn assume(&mut self, name: &str, claim_uid: &str) {
        self.assumed.insert(name.to_owned(), claim_uid.to_owned());
    }

    /// Reserved volumes, by name, with their claims' UIDs.
    pub fn assumed(&self) -> &HashMap<String, String> {
        &self.assumed
    }

    /// A storage class by name.
    pub fn class(&self, name: &str) -> Option<&StorageClass> {
        self.classes.get(name).map(|c| &**c)
    }
}
