//! The pod worker: one task per pod on the node that drives the pod's sandbox
//! and containers toward its spec and reports what it sees as the pod's status.

mod checks;
mod claims;
mod containers;
mod ephemeral;
mod eviction;
mod hooks;
mod image_pull;
pub mod plan;
pub mod probes;
mod projected;
mod projection;
pub mod qos;
pub mod sandbox;
pub mod state;
pub mod status;
pub mod volumes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use self::state::PodDir;
use crate::runtime::ContainerRuntime;
use crate::{AgentError, NodeContext};

/// How often a worker looks at its containers when nothing else wakes it.
const TICK: Duration = Duration::from_secs(1);
/// How often projected volumes are compared with the API (the kubelet's
/// sync period is a minute; ConfigMap updates reach pods within this).
const VOLUME_SYNC: Duration = Duration::from_secs(10);

/// Drives one pod.
pub struct PodWorker {
    ctx: Arc<NodeContext>,
    dir: PodDir,
    /// The status last written to the API.
    last_status: Option<Value>,
    /// Why containers are not running, for their `waiting` state.
    waiting: HashMap<String, (String, String)>,
    /// When images that failed to pull may be tried again.
    pull_backoff: image_pull::PullBackoff,
    image_ids: HashMap<String, String>,
    /// Probe state of the containers' current runs.
    probes: HashMap<String, probes::RunProbes>,
    /// When the configMap, secret and downwardAPI volumes were last synced.
    volumes_synced: Option<tokio::time::Instant>,
    /// The runtime of the pod's RuntimeClass handler (the default until
    /// the sandbox says otherwise).
    runtime: Arc<dyn ContainerRuntime>,
    /// The run of each container whose restart back-off has been reported.
    backoff_reported: HashMap<String, u32>,
    /// When the pod's local storage was last measured against its limits.
    storage_checked: Option<tokio::time::Instant>,
    /// Events held until the status they go with is written, so that
    /// their writes do not delay it (the pod's start is seen through it).
    held_events: Vec<HeldEvent>,
}

/// An Event waiting for the next status write.
struct HeldEvent {
    object: k8s_openapi::api::core::v1::ObjectReference,
    type_: &'static str,
    reason: &'static str,
    message: String,
}

impl PodWorker {
    /// A worker for the pod with `uid`.
    pub fn new(ctx: Arc<NodeContext>, uid: &str) -> Self {
        let dir = PodDir {
            root: ctx.data_dir.join("pods").join(uid),
            uid: uid.to_owned(),
        };
        let handler = sandbox::recorded_handler(&dir);
        PodWorker {
            runtime: ctx.runtimes.get_or_default(&handler),
            ctx,
            dir,
            last_status: None,
            waiting: HashMap::new(),
            pull_backoff: Default::default(),
            image_ids: HashMap::new(),
            probes: HashMap::new(),
            volumes_synced: None,
            backoff_reported: HashMap::new(),
            storage_checked: None,
            held_events: Vec::new(),
        }
    }

    /// Runs until the pod is gone from the node. `pods` carries the pod's
    /// latest version, or `None` once it is gone from the API.
    pub async fn run(mut self, mut pods: watch::Receiver<Option<Arc<Pod>>>) {
        loop {
            let pod = pods.borrow_and_update().clone();
            let next = match pod {
                None => {
                    if let Err(e) = self.remove_orphan().await {
                        tracing::warn!(pod = %self.dir.uid, error = %e, "cleaning up a removed pod");
                    }
                    return;
                }
                Some(pod) => {
                    let synced = self.sync(&pod).await;
                    // Whether or not the sync got as far as its status write.
                    self.post_held_events();
                    match synced {
                        Ok(None) => return,
                        Ok(Some(after)) => after,
                        Err(e) => {
                            tracing::warn!(pod = %self.dir.uid, error = %e, "pod sync failed");
                            Duration::from_secs(2)
                        }
                    }
                }
            };
            tokio::select! {
                changed = pods.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// One pass over the pod. `None` when the worker is done with it.
    async fn sync(&mut self, pod: &Pod) -> Result<Option<Duration>, AgentError> {
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30);
            self.stop_containers(
                Some(pod),
                Duration::from_secs(u64::try_from(grace).unwrap_or(0)),
            )
            .await?;
            self.teardown(true).await?;
            self.delete_from_api(pod).await?;
            return Ok(None);
        }
        if self.dir.root.join("finished").exists() {
            // Its final status is written and its sandbox gone; the pod
            // object stays until someone deletes it.
            return Ok(Some(Duration::from_secs(3600)));
        }
        if let Some(message) = eviction::recorded(&self.dir) {
            return self.finish_evicted(pod, message).await;
        }
        std::fs::create_dir_all(&self.dir.root)?;
        tracing::debug!(pod = %self.dir.uid, "pod sync");
        let start_time = self.start_time()?;
        let sandbox = match self.ensure_sandbox(pod).await {
            Ok(s) => {
                self.runtime = self.ctx.runtimes.get_or_default(&s.handler);
                Some(s)
            }
            Err(e) => {
                tracing::warn!(pod = %self.dir.uid, error = %e, "pod sandbox failed");
                let message = e.to_string();
                self.event(
                    pod,
                    None,
                    "Warning",
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {message}"),
                );
                for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                    self.waiting.insert(
                        c.name.clone(),
                        ("ContainerCreating".into(), message.clone()),
                    );
                }
                None
            }
        };
        if sandbox.is_some() {
            self.sync_volumes(pod).await;
            if let Some(message) = self.check_storage(pod).await {
                return self.finish_evicted(pod, message).await;
            }
        }
        let mut obs = match &sandbox {
            Some(s) => self.step(pod, &s.ip).await?,
            None => self.observe(pod),
        };
        obs.pod_ip = sandbox.map(|s| s.ip);
        obs.host_ip = self.ctx.node_ip.to_string();
        obs.start_time = Some(start_time);
        let status = status::pod_status(&self.basis(pod), &obs);
        let terminal = matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
        self.publish(pod, status).await?;
        if terminal {
            self.teardown(false).await?;
            std::fs::write(self.dir.root.join("finished"), b"")?;
        }
        Ok(Some(TICK))
    }

    /// Every `VOLUME_SYNC`, brings projected volumes up to date with their
    /// ConfigMaps and Secrets (the sandbox wrote them first).
    async fn sync_volumes(&mut self, pod: &Pod) {
        let now = tokio::time::Instant::now();
        match self.volumes_synced {
            None => self.volumes_synced = Some(now),
            Some(t) if now.duration_since(t) >= VOLUME_SYNC => {
                self.volumes_synced = Some(now);
                if let Err(e) = volumes::refresh(&self.ctx.client, pod, &self.dir).await {
                    tracing::warn!(pod = %self.dir.uid, error = %e, "syncing volumes");
                }
            }
            Some(_) => {}
        }
    }

    /// Every [`eviction::CHECK_EVERY`], measures the local storage of a pod
    /// that has limits on it; over a limit, records the eviction and says why.
    async fn check_storage(&mut self, pod: &Pod) -> Option<String> {
        let now = tokio::time::Instant::now();
        if !eviction::limited(pod)
            || self
                .storage_checked
                .is_some_and(|t| now.duration_since(t) < eviction::CHECK_EVERY)
        {
            return None;
        }
        self.storage_checked = Some(now);
        let (pod_copy, dir) = (pod.clone(), self.dir.clone());
        let message = tokio::task::spawn_blocking(move || {
            eviction::exceeded(&pod_copy, &dir, &eviction::disk_usage)
        })
        .await
        .ok()??;
        tracing::info!(pod = %self.dir.uid, %message, "evicting the pod");
        if let Err(e) = std::fs::write(eviction::marker(&self.dir), &message) {
            tracing::warn!(pod = %self.dir.uid, error = %e, "recording the eviction");
        }
        self.event(pod, None, "Warning", "Evicted", message.clone());
        Some(message)
    }

    /// Ends an evicted pod: its containers are killed at once (as the
    /// kubelet's local-storage eviction does), its status says why, and
    /// its sandbox goes; the pod object stays, `Failed`.
    async fn finish_evicted(
        &mut self,
        pod: &Pod,
        message: String,
    ) -> Result<Option<Duration>, AgentError> {
        self.stop_containers(Some(pod), Duration::ZERO).await?;
        let mut obs = self.observe(pod);
        obs.evicted = Some(message);
        obs.pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        obs.host_ip = self.ctx.node_ip.to_string();
        obs.start_time = Some(self.start_time()?);
        let status = status::pod_status(&self.basis(pod), &obs);
        self.publish(pod, status).await?;
        self.teardown(false).await?;
        std::fs::write(self.dir.root.join("finished"), b"")?;
        Ok(Some(TICK))
    }

    /// Records an Event about the pod, or about one of its containers, in
    /// the background: the pod's progress does not wait for it.
    fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: &'static str,
        reason: &str,
        message: String,
    ) {
        let object = kybern_apimachinery::events::pod_reference(pod, container);
        self.ctx
            .events
            .post(object, type_, reason.to_owned(), message);
    }

    /// Like [`Self::event`], but the Event is posted after the next status
    /// write (or at the end of this sync, whichever comes first).
    fn event_after_status(
        &mut self,
        pod: &Pod,
        container: Option<&str>,
        reason: &'static str,
        message: String,
    ) {
        self.held_events.push(HeldEvent {
            object: kybern_apimachinery::events::pod_reference(pod, container),
            type_: "Normal",
            reason,
            message,
        });
    }

    fn post_held_events(&mut self) {
        for e in self.held_events.drain(..) {
            self.ctx.events.post(e.object, e.type_, e.reason, e.message);
        }
    }

    /// When the agent first took the pod on (kept across agent restarts).
    fn start_time(&self) -> Result<DateTime<Utc>, AgentError> {
        let path = self.dir.root.join("accepted");
        if let Some(t) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
        {
            return Ok(t.with_timezone(&Utc));
        }
        let now = Utc::now();
        std::fs::write(&path, now.to_rfc3339())?;
        Ok(now)
    }

    /// The pod with the conditions this worker last wrote, so their
    /// transition times hold even while the watch lags behind our writes.
    fn basis(&self, pod: &Pod) -> Pod {
        let mut basis = pod.clone();
        if let (Some(last), Some(status)) = (&self.last_status, basis.status.as_mut())
            && let Ok(conditions) = serde_json::from_value(last["conditions"].clone())
        {
            status.conditions = Some(conditions);
        }
        basis
    }

    async fn publish(&mut self, pod: &Pod, status: Value) -> Result<(), AgentError> {
        let written = self.write_status(pod, status).await;
        self.post_held_events();
        written
    }

    async fn write_status(&mut self, pod: &Pod, status: Value) -> Result<(), AgentError> {
        if self.last_status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %self.dir.uid, "pod status written");
                self.last_status = Some(status);
                Ok(())
            }
            // Gone: the watch will say so.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_from_api(&self, pod: &Pod) -> Result<(), AgentError> {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A pod that left the API without passing through graceful deletion
    /// (forced, or while the agent was down): stop and remove what is left.
    async fn remove_orphan(&mut self) -> Result<(), AgentError> {
        if !self.dir.root.exists() {
            return Ok(());
        }
        self.stop_containers(None, Duration::from_secs(2)).await?;
        self.teardown(true).await
    }
}
