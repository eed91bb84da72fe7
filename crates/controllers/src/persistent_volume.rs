//! The PersistentVolume controller (upstream's `persistent-volume-binder`):
//! binds each pending claim to the volume that fits it best, keeps the
//! phases of both, and releases a volume whose claim is gone by its
//! reclaim policy. The rules are in [`kybern_scheduler::volume_match`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};

use crate::events::{EventRecorder, NORMAL, WARNING, reference_to};
use crate::informer::{Change, Informer, next_change};
use crate::queue::{ObjectKey, ReconcileResult, WorkQueue, run_workers};
use crate::{ControllerError, Informers};
use kybern_scheduler::volume_match::{
    BETA_STORAGE_PROVISIONER, BIND_COMPLETED, BOUND_BY_CONTROLLER, NO_PROVISIONER, PROVISIONED_BY,
    SELECTED_NODE, STORAGE_PROVISIONER, annotation, best_match, claim_class, refers_to,
    reserved_for, unfit, volume_phase,
};

/// What the volume controllers sync: a claim, or a volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum VolumeKey {
    Claim(ObjectKey),
    Volume(String),
}

use VolumeKey as Key;

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Claim(k) => write!(f, "claim {k}"),
            Key::Volume(n) => write!(f, "volume {n}"),
        }
    }
}

struct VolumeController {
    client: kube::Client,
    volumes: Arc<Informer<PersistentVolume>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    classes: Arc<Informer<StorageClass>>,
    nodes: Arc<Informer<Node>>,
    queue: Arc<WorkQueue<Key>>,
    recorder: EventRecorder,
    /// Volumes this controller has just bound, by name, with the claim's
    /// UID: the informer may not show the binding yet, and no other claim
    /// may take them meanwhile (upstream's assume cache).
    taken: Mutex<HashMap<String, String>>,
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let ctl = Arc::new(VolumeController {
        recorder: EventRecorder::new(client.clone(), "persistentvolume-controller"),
        client,
        volumes: informers.persistent_volumes.clone(),
        claims: informers.persistent_volume_claims.clone(),
        classes: informers.storage_classes.clone(),
        nodes: informers.nodes.clone(),
        queue: Arc::default(),
        taken: Mutex::default(),
    });
    let (mut volumes, mut claims, mut classes) = (
        ctl.volumes.subscribe(),
        ctl.claims.subscribe(),
        ctl.classes.subscribe(),
    );
    tokio::join!(
        ctl.volumes.synced(),
        ctl.claims.synced(),
        ctl.classes.synced()
    );
    ctl.resync();
    let events = {
        let ctl = ctl.clone();
        async move {
            loop {
                tokio::select! {
                    c = next_change(&mut volumes) => match c {
                        Some(c) => ctl.volume_changed(c),
                        None => return,
                    },
                    c = next_change(&mut claims) => match c {
                        Some(c) => ctl.claim_changed(c),
                        None => return,
                    },
                    c = next_change(&mut classes) => match c {
                        Some(_) => ctl.pending_claims(),
                        None => return,
                    },
                }
            }
        }
    };
    let sync = {
        let ctl = ctl.clone();
        run_workers(
            "persistentvolume-binder",
            ctl.queue.clone(),
            1,
            move |key| {
                let ctl = ctl.clone();
                async move {
                    match key {
                        Key::Claim(k) => ctl.sync_claim(&k).await,
                        Key::Volume(n) => ctl.sync_volume(&n).await,
                    }
                }
            },
        )
    };
    tokio::join!(events, sync);
}

fn name_of<K: kube::Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

fn annotated(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

fn annotate(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), "yes".to_owned());
}

/// A write's result, with an object gone meanwhile as `None` (its delete
/// is seen next and synced then).
fn present<K>(written: kube::Result<K>) -> Result<Option<K>, ControllerError> {
    match written {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

impl VolumeController {
    fn resync(&self) {
        for v in self.volumes.state() {
            self.queue.add(Key::Volume(name_of(v.as_ref())));
        }
        for c in self.claims.state() {
            self.queue.add(Key::Claim(ObjectKey::of(c.as_ref())));
        }
    }

    /// Every claim still waiting for a volume: a volume or class changed.
    fn pending_claims(&self) {
        for c in self.claims.state() {
            if c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_none_or(str::is_empty)
            {
                self.queue.add(Key::Claim(ObjectKey::of(c.as_ref())));
            }
        }
    }

    fn volume_changed(&self, change: Change<PersistentVolume>) {
        let (v, gone) = match change {
            Change::Added(v) | Change::Modified(v) => (v, false),
            Change::Deleted(v) => (v, true),
            Change::Resync => return self.resync(),
        };
        self.queue.add(Key::Volume(name_of(v.as_ref())));
        match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            Some(r) => {
                // Reserved for one claim: only that one can take it.
                if let (Some(ns), Some(name)) = (&r.namespace, &r.name) {
                    self.queue.add(Key::Claim(ObjectKey::namespaced(ns, name)));
                }
            }
            // A free volume may be what a waiting claim needs.
            None if !gone => self.pending_claims(),
            None => {}
        }
    }

    fn claim_changed(&self, change: Change<PersistentVolumeClaim>) {
        let c = match change {
            Change::Added(c) | Change::Modified(c) | Change::Deleted(c) => c,
            Change::Resync => return self.resync(),
        };
        self.queue.add(Key::Claim(ObjectKey::of(c.as_ref())));
        // The volume it names, and any that refer to it (a deleted claim
        // releases its volume).
        for v in self.volumes.state() {
            let named = c.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                == v.metadata.name.as_deref();
            if named || refers_to(&v, &c) {
                self.queue.add(Key::Volume(name_of(v.as_ref())));
            }
        }
    }

    fn event(
        &self,
        claim: &PersistentVolumeClaim,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) {
        self.recorder
            .post(reference_to(claim), type_, reason, message);
    }

    async fn sync_claim(&self, key: &ObjectKey) -> ReconcileResult<ControllerError> {
        let Some(claim) = self.claims.get(key.namespace.as_deref(), &key.name) else {
            return Ok(None);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let wanted = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        let Some(volume_name) = wanted else {
            return self.bind_pending(&claim).await;
        };
        let Some(volume) = self.volumes.get(None, &volume_name) else {
            if claim_phase(&claim) == "Bound" {
                self.event(&claim, WARNING, "ClaimLost",
                    "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!".into());
                self.claim_status(&claim, "Lost", None).await?;
            }
            return Ok(None);
        };
        let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if reference.is_none() {
            // The user named the volume in the claim: bind it if it fits.
            if let Some(why) = unfit(&volume, &claim, None) {
                self.event(
                    &claim,
                    WARNING,
                    "FailedBinding",
                    format!("Cannot bind to requested volume \"{volume_name}\": {why}"),
                );
                return Ok(None);
            }
        } else if !refers_to(&volume, &claim) {
            if claim_phase(&claim) == "Bound" {
                self.event(
                    &claim,
                    WARNING,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly".into(),
                );
                self.claim_status(&claim, "Lost", None).await?;
            } else {
                self.event(
                    &claim,
                    WARNING,
                    "FailedBinding",
                    format!("volume \"{volume_name}\" already bound to a different claim."),
                );
            }
            return Ok(None);
        }
        self.bind(&volume, &claim).await
    }

    /// A claim without a volume: the best one that fits, or an Event
    /// saying why it waits.
    async fn bind_pending(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> ReconcileResult<ControllerError> {
        // A volume reserved for it (by the user, or by the scheduler for a
        // claim that waited for its first consumer) is its volume.
        let reserved = self.volumes.state().into_iter().find(|v| {
            v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some() && refers_to(v, claim)
        });
        if let Some(volume) = reserved {
            return self.bind(&volume, claim).await;
        }
        let class_name = claim_class(claim);
        let class = (!class_name.is_empty())
            .then(|| self.classes.get(None, class_name))
            .flatten();
        let delayed = class
            .as_ref()
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        let selected = annotation(&claim.metadata, SELECTED_NODE).map(str::to_owned);
        let node = match (&selected, delayed) {
            (None, true) => {
                self.event(
                    claim,
                    NORMAL,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding".into(),
                );
                return Ok(None);
            }
            (Some(n), true) => self.nodes.get(None, n),
            _ => None,
        };
        let labels = node
            .as_ref()
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let node_ref = selected
            .as_deref()
            .filter(|_| delayed)
            .map(|n| (n, &labels));
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let taken = self
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let skip = |name: &str| taken.get(name).is_some_and(|u| *u != uid);
        if let Some(volume) = best_match(claim, &self.volumes.state(), node_ref, &skip) {
            return self.bind(&volume, claim).await;
        }
        let (type_, reason, message) = match (class_name, &class) {
            ("", _) => (
                NORMAL,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set"
                    .to_owned(),
            ),
            (name, None) => (
                WARNING,
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{name}\" not found"),
            ),
            (_, Some(c)) if c.provisioner == NO_PROVISIONER => (
                NORMAL,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set"
                    .to_owned(),
            ),
            (_, Some(c)) => {
                // Name the provisioner on the claim: external provisioners
                // act on claims that carry it.
                self.await_provisioner(claim, &c.provisioner).await?;
                (
                    NORMAL,
                    "ExternalProvisioning",
                    format!(
                        "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                        c.provisioner
                    ),
                )
            }
        };
        self.event(claim, type_, reason, message);
        Ok(None)
    }

    /// Sets the storage-provisioner annotations (and their beta spelling)
    /// on `claim` unless they name `provisioner` already (upstream's
    /// `setClaimProvisioner`).
    async fn await_provisioner(
        &self,
        claim: &PersistentVolumeClaim,
        provisioner: &str,
    ) -> Result<(), ControllerError> {
        if annotation(&claim.metadata, STORAGE_PROVISIONER) == Some(provisioner) {
            return Ok(());
        }
        let mut updated = claim.clone();
        let annotations = updated
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        for key in [BETA_STORAGE_PROVISIONER, STORAGE_PROVISIONER] {
            annotations.insert(key.to_owned(), provisioner.to_owned());
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let written = claims
            .replace(&name_of(claim), &PostParams::default(), &updated)
            .await;
        present(written).map(|_| ())
    }

    /// Binds `volume` and `claim` to each other, each step only if not done
    /// yet, in upstream's order: the volume's claim reference, its phase,
    /// the claim's volume name, its status. A failure in between is
    /// finished by the next sync of either.
    async fn bind(
        &self,
        volume: &PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> ReconcileResult<ControllerError> {
        let volume_name = name_of(volume);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let current = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let mut volume = volume.clone();
        if current.and_then(|r| r.uid.as_deref()) != claim.metadata.uid.as_deref() {
            let reserved = reserved_for(&volume, claim);
            let written = volumes
                .replace(&volume_name, &PostParams::default(), &reserved)
                .await;
            let Some(written) = present(written)? else {
                return Ok(None);
            };
            volume = written;
            self.taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    volume_name.clone(),
                    claim.metadata.uid.clone().unwrap_or_default(),
                );
        }
        self.volume_status(&volume, "Bound", None).await?;
        let mut claim = claim.clone();
        let spec = claim.spec.get_or_insert_with(Default::default);
        if spec.volume_name.as_deref() != Some(volume_name.as_str())
            || !annotated(&claim.metadata, BIND_COMPLETED)
        {
            if spec.volume_name.as_deref() != Some(volume_name.as_str()) {
                spec.volume_name = Some(volume_name.clone());
                annotate(&mut claim.metadata, BOUND_BY_CONTROLLER);
            }
            annotate(&mut claim.metadata, BIND_COMPLETED);
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(
                self.client.clone(),
                claim.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let written = claims
                .replace(&name_of(&claim), &PostParams::default(), &claim)
                .await;
            let Some(written) = present(written)? else {
                return Ok(None);
            };
            claim = written;
        }
        self.claim_status(&claim, "Bound", Some(&volume)).await?;
        Ok(None)
    }

    /// Writes the claim's phase (with the volume's modes and capacity once
    /// bound) unless it already says so.
    async fn claim_status(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> Result<(), ControllerError> {
        let mut updated = claim.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_owned());
        if let Some(spec) = volume.and_then(|v| v.spec.as_ref()) {
            status.access_modes = spec.access_modes.clone();
            status.capacity = spec.capacity.clone();
        }
        if updated.status == claim.status {
            return Ok(());
        }
        crate::write_status(&self.client, &updated)
            .await
            .map(|_| ())
    }

    /// Writes the volume's phase and message (and when the phase last
    /// changed) unless they already say so.
    async fn volume_status(
        &self,
        volume: &PersistentVolume,
        phase: &str,
        message: Option<String>,
    ) -> Result<(), ControllerError> {
        let status = volume.status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some(phase) && status.message == message {
            return Ok(());
        }
        let mut updated = volume.clone();
        let s = updated.status.get_or_insert_with(Default::default);
        if s.phase.as_deref() != Some(phase) {
            s.last_phase_transition_time = Some(crate::now());
        }
        s.phase = Some(phase.to_owned());
        s.message = message;
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let written = api
            .replace_status(&name_of(volume), &PostParams::default(), &updated)
            .await;
        present(written).map(|_| ())
    }

    async fn sync_volume(&self, name: &str) -> ReconcileResult<ControllerError> {
        let Some(volume) = self.volumes.get(None, name) else {
            self.taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
            return Ok(None);
        };
        if volume.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.clone());
        if reference.as_ref().and_then(|r| r.uid.as_ref()).is_some() {
            self.taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
        }
        let claim = match &reference {
            Some(r) => self.claim_of(r).await?,
            None => None,
        };
        let claim = claim.filter(|c| refers_to(&volume, c));
        let elsewhere = claim
            .as_ref()
            .and_then(|c| c.spec.as_ref()?.volume_name.as_deref())
            .is_some_and(|n| !n.is_empty() && n != name);
        if elsewhere && annotated(&volume.metadata, BOUND_BY_CONTROLLER) {
            // The claim went to another volume: this one is free again.
            return self.unbind(&volume).await.map(|_| None);
        }
        let phase = volume_phase(&volume, claim.as_ref());
        if phase != "Released" {
            return self.volume_status(&volume, phase, None).await.map(|_| None);
        }
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        let failed = match policy {
            // Its provisioner deletes it (upstream leaves such a volume
            // Released for the external deleter).
            "Delete" if annotated(&volume.metadata, PROVISIONED_BY) => None,
            "Delete" => Some((
                "VolumeFailedDelete",
                format!(
                    "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
                ),
            )),
            "Recycle" => Some((
                "VolumeFailedRecycle",
                "No recycler plugin found for the volume!".to_owned(),
            )),
            _ => None,
        };
        match failed {
            // No volume plugin here deletes or scrubs storage, as upstream
            // for a volume no plugin matches: the volume fails.
            Some((reason, message)) => {
                if volume.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed") {
                    self.recorder.post(
                        reference_to(volume.as_ref()),
                        WARNING,
                        reason,
                        message.clone(),
                    );
                }
                self.volume_status(&volume, "Failed", Some(message)).await?;
            }
            None => self.volume_status(&volume, "Released", None).await?,
        }
        Ok(None)
    }

    /// Clears a claim reference the controller made.
    async fn unbind(&self, volume: &PersistentVolume) -> Result<(), ControllerError> {
        let mut updated = volume.clone();
        if let Some(spec) = updated.spec.as_mut() {
            spec.claim_ref = None;
        }
        if let Some(a) = updated.metadata.annotations.as_mut() {
            a.remove(BOUND_BY_CONTROLLER);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let written = api
            .replace(&name_of(volume), &PostParams::default(), &updated)
            .await;
        present(written).map(|_| ())
    }

    /// The claim a volume's reference names, from the informer, or read
    /// from the API when the informer has not seen it (a volume is never
    /// released on a stale cache).
    async fn claim_of(
        &self,
        r: &ObjectReference,
    ) -> Result<Option<PersistentVolumeClaim>, ControllerError> {
        let (Some(ns), Some(name)) = (&r.namespace, &r.name) else {
            return Ok(None);
        };
        if let Some(c) = self.claims.get(Some(ns.as_str()), name) {
            return Ok(Some((*c).clone()));
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        Ok(api.get_opt(name).await?)
    }
}
