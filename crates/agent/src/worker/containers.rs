//! Starting, restarting and stopping a pod's containers: init containers in
//! order, sidecars, app containers, restart back-off, graceful termination.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodWorker;
use super::state::{History, Run, history};
use super::status::{Observed, is_sidecar, restarts};
use crate::AgentError;
use crate::runtime::ContainerFiles;

/// The first restart waits this long, each further one twice as long...
const BACKOFF_START: Duration = Duration::from_secs(10);
/// ... up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long a new container may take to be running before the agent moves on.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A container that ran this long restarts without waiting.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// A run handed to the runtime and not yet known to be running.
pub(super) struct Launch {
    attempt: u32,
    attempt_dir: std::path::PathBuf,
    files: ContainerFiles,
    monitor_pid: u32,
}

/// What to do with one container now.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Start a new run.
    Start,
    /// It runs (or ran to completion as needed): go on to the next container.
    Proceed,
    /// Wait for it (an init container running, or a restart in back-off).
    Hold,
}

/// The delay before restarting a container after run number `attempt` ended.
fn backoff(attempt: u32, ran_for: Duration) -> Duration {
    if attempt == 0 || ran_for >= BACKOFF_RESET {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

fn decide(h: &History, policy: &str, blocks_when_running: bool) -> Next {
    match &h.latest {
        None => Next::Start,
        Some((_, Run::Running { .. })) if blocks_when_running => Next::Hold,
        Some((_, Run::Running { .. })) => Next::Proceed,
        Some((
            attempt,
            Run::Exited {
                started_at, exit, ..
            },
        )) => {
            if !restarts(policy, exit.exit_code) {
                return if exit.exit_code == 0 || !blocks_when_running {
                    Next::Proceed
                } else {
                    Next::Hold
                };
            }
            let ran = (exit.finished_at - *started_at)
                .to_std()
                .unwrap_or_default();
            let due = exit.finished_at
                + chrono::Duration::from_std(backoff(*attempt, ran)).unwrap_or_default();
            if Utc::now() >= due {
                Next::Start
            } else {
                Next::Hold
            }
        }
    }
}

impl PodWorker {
    /// The containers' histories, without acting.
    pub(super) fn observe(&self, pod: &Pod) -> Observed {
        let spec = pod.spec.as_ref();
        let mut obs = Observed {
            waiting: self.waiting.clone(),
            image_ids: self.image_ids.clone(),
            ..Default::default()
        };
        for c in spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten())
        {
            obs.init.push(history(&self.dir, &c.name));
        }
        for c in spec.into_iter().flat_map(|s| s.containers.iter()) {
            obs.app.push(history(&self.dir, &c.name));
        }
        for c in super::ephemeral::containers(pod) {
            obs.ephemeral.push(history(&self.dir, &c.name));
        }
        self.fill_ids(pod, &mut obs);
        obs
    }

    fn fill_ids(&self, pod: &Pod, obs: &mut Observed) {
        let spec = pod.spec.as_ref();
        let all = spec.into_iter().flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .zip(&obs.init)
                .chain(s.containers.iter().zip(&obs.app))
        });
        let ephemeral = super::ephemeral::containers(pod);
        let ids: Vec<(String, String)> = all
            .chain(ephemeral.iter().zip(&obs.ephemeral))
            .filter_map(|(c, h)| {
                let (attempt, _) = h.latest.as_ref()?;
                Some((c.name.clone(), self.dir.container_id(&c.name, *attempt)))
            })
            .collect();
        obs.container_ids.extend(ids);
    }

    /// Starts whatever should run now, in order, and returns what it sees.
    pub(super) async fn step(&mut self, pod: &Pod, pod_ip: &str) -> Result<Observed, AgentError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        let mut blocked = false;
        let mut obs = Observed::default();
        for c in spec.init_containers.iter().flatten() {
            let sidecar = is_sidecar(c);
            let p = if sidecar { "Always" } else { init_policy };
            let mut h = history(&self.dir, &c.name);
            if !blocked {
                match decide(&h, p, !sidecar) {
                    Next::Start => {
                        self.start(pod, c, pod_ip).await?;
                        h = history(&self.dir, &c.name);
                        blocked = !sidecar;
                    }
                    Next::Hold => {
                        self.report_backoff(pod, c, &h, p);
                        blocked = true;
                    }
                    Next::Proceed => {}
                }
            }
            obs.init.push(h);
        }
        for c in &spec.containers {
            let mut h = history(&self.dir, &c.name);
            if !blocked {
                match decide(&h, policy, false) {
                    Next::Start => {
                        self.start(pod, c, pod_ip).await?;
                        h = history(&self.dir, &c.name);
                    }
                    Next::Hold => self.report_backoff(pod, c, &h, policy),
                    Next::Proceed => {}
                }
            }
            obs.app.push(h);
        }
        obs.ephemeral = self.step_ephemeral(pod, pod_ip).await?;
        obs.waiting = self.waiting.clone();
        obs.image_ids = self.image_ids.clone();
        self.fill_ids(pod, &mut obs);
        self.probe(pod, &mut obs, pod_ip).await;
        Ok(obs)
    }

    /// A `BackOff` Event, once per ended run, for a container that waits to
    /// be restarted (what shows as CrashLoopBackOff).
    fn report_backoff(&mut self, pod: &Pod, c: &Container, h: &History, policy: &str) {
        let Some((attempt, Run::Exited { exit, .. })) = &h.latest else {
            return;
        };
        if !restarts(policy, exit.exit_code) || self.backoff_reported.get(&c.name) == Some(attempt)
        {
            return;
        }
        self.backoff_reported.insert(c.name.clone(), *attempt);
        let message = format!(
            "Back-off restarting failed container {} in pod {}_{}({})",
            c.name,
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.dir.uid
        );
        self.event(pod, Some(&c.name), "Warning", "BackOff", message);
    }

    /// Starts a new run of `c`. Image and config problems become the
    /// container's waiting reason rather than errors.
    pub(super) async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        pod_ip: &str,
    ) -> Result<(), AgentError> {
        if let Some(launch) = self.launch(pod, c, pod_ip, None).await? {
            self.await_start(pod, c, launch, pod_ip).await?;
        }
        Ok(())
    }

    /// Prepares a new run of `c` and hands it to the runtime, held at
    /// `gate` when given (`pod_ip` is then not known yet). `None` when it
    /// cannot start (the reason is in `waiting`).
    pub(super) async fn launch(
        &mut self,
        pod: &Pod,
        c: &Container,
        pod_ip: &str,
        gate: Option<&std::path::Path>,
    ) -> Result<Option<Launch>, AgentError> {
        let image = match self.image_for(pod, c).await {
            Ok(image) => image,
            Err(why) => {
                self.waiting.insert(c.name.clone(), why);
                return Ok(None);
            }
        };
        let repo = image
            .name
            .rsplit_once(':')
            .map_or(image.name.as_str(), |(r, _)| r);
        self.image_ids
            .insert(c.name.clone(), format!("{repo}@{}", image.manifest_digest));
        let attempt = self.dir.attempts(&c.name).last().map_or(0, |a| a + 1);
        self.retire_old_runs(&c.name, attempt).await?;
        let attempt_dir = self.dir.attempt(&c.name, attempt);
        let bundle = attempt_dir.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        let src = super::volumes::env_sources(
            &self.ctx.client,
            pod,
            pod_ip,
            &self.ctx.node_ip.to_string(),
        )
        .await;
        let plan =
            src.and_then(|src| super::plan::plan(pod, c, &image, &self.dir, &attempt_dir, &src));
        let mut plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                std::fs::remove_dir_all(&attempt_dir)?;
                self.cannot_create(pod, c, "CreateContainerConfigError", &e);
                return Ok(None);
            }
        };
        if let Some(gate) = gate {
            plan.start_gate = Some((std::env::current_exe()?, gate.to_owned()));
        }
        match self
            .spawn(c, attempt, &attempt_dir, &image.layers, &plan)
            .await
        {
            Ok((files, monitor_pid)) => Ok(Some(Launch {
                attempt,
                attempt_dir,
                files,
                monitor_pid,
            })),
            Err(e) => {
                self.ctx.host.unmount(&bundle.join("rootfs"))?;
                std::fs::remove_dir_all(&attempt_dir)?;
                self.cannot_create(pod, c, "CreateContainerError", &e);
                Ok(None)
            }
        }
    }

    /// A run of `c` that could not be made: a `Failed` Event, and `reason`
    /// as the container's waiting reason.
    fn cannot_create(&mut self, pod: &Pod, c: &Container, reason: &str, e: &AgentError) {
        self.event(
            pod,
            Some(&c.name),
            "Warning",
            "Failed",
            format!("Error: {e}"),
        );
        self.waiting
            .insert(c.name.clone(), (reason.into(), e.to_string()));
    }

    /// Waits for a launched run to be running (or over), records it as
    /// started and runs its postStart hook.
    pub(super) async fn await_start(
        &mut self,
        pod: &Pod,
        c: &Container,
        launch: Launch,
        pod_ip: &str,
    ) -> Result<(), AgentError> {
        // Started means the container runs (or it already ended), not
        // merely that its monitor was spawned.
        launch.files.started(START_TIMEOUT).await;
        super::state::mark_started(&launch.attempt_dir, launch.monitor_pid)?;
        tracing::info!(pod = %self.dir.uid, container = %c.name, attempt = launch.attempt, "container started");
        let name = Some(c.name.as_str());
        self.event_after_status(
            pod,
            name,
            "Created",
            format!("Created container: {}", c.name),
        );
        self.event_after_status(
            pod,
            name,
            "Started",
            format!("Started container {}", c.name),
        );
        let id = self.dir.container_id(&c.name, launch.attempt);
        if c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some()) {
            // A hook's own Events come after these.
            self.post_held_events();
        }
        self.post_start(pod, c, &id, pod_ip).await;
        self.waiting.remove(&c.name);
        Ok(())
    }

    /// Gives up a launched run that never got past its gate: waits for
    /// its monitor to record the failure, then removes every trace, so it
    /// does not count as a run.
    pub(super) async fn abandon(&self, c: &Container, launch: Launch) -> Result<(), AgentError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while !launch.files.exit_file.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let id = self.dir.container_id(&c.name, launch.attempt);
        self.runtime.delete(&id).await?;
        self.ctx.host.unmount(&launch.files.bundle.join("rootfs"))?;
        remove_if_present(&launch.attempt_dir)?;
        remove_if_present(&self.dir.log(&c.name, launch.attempt))
    }

    /// Mounts the rootfs, writes the bundle and starts the monitor.
    async fn spawn(
        &self,
        c: &Container,
        attempt: u32,
        attempt_dir: &std::path::Path,
        layers: &[std::path::PathBuf],
        plan: &crate::runtime::bundle::ContainerPlan,
    ) -> Result<(ContainerFiles, u32), AgentError> {
        let bundle = attempt_dir.join("bundle");
        self.ctx.host.mount_overlay(
            layers,
            &attempt_dir.join("upper"),
            &attempt_dir.join("work"),
            &bundle.join("rootfs"),
        )?;
        std::fs::File::create(attempt_dir.join("termination-log"))?;
        let spec = crate::runtime::bundle::spec(plan)?;
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).map_err(|e| AgentError::Runtime(e.to_string()))?,
        )?;
        let log = self.dir.log(&c.name, attempt);
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let files = ContainerFiles {
            bundle,
            log,
            exit_file: attempt_dir.join("exit"),
            pid_file: attempt_dir.join("pid"),
            stdin_fifo: c.stdin.unwrap_or(false).then(|| attempt_dir.join("stdin")),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
        };
        let id = self.dir.container_id(&c.name, attempt);
        tracing::debug!(pod = %self.dir.uid, container = %c.name, "bundle ready");
        let pid = self.runtime.start(&id, &files).await?;
        Ok((files, pid))
    }

    /// Before run `next` of a container: the run before it keeps only its
    /// record (for `lastState`), older ones go entirely.
    async fn retire_old_runs(&self, name: &str, next: u32) -> Result<(), AgentError> {
        for attempt in self.dir.attempts(name) {
            if attempt >= next {
                continue;
            }
            let dir = self.dir.attempt(name, attempt);
            self.ctx.host.unmount(&dir.join("bundle/rootfs"))?;
            self.runtime
                .delete(&self.dir.container_id(name, attempt))
                .await?;
            if attempt + 1 == next {
                for sub in ["bundle", "upper", "work"] {
                    remove_if_present(&dir.join(sub))?;
                }
            } else {
                remove_if_present(&dir)?;
            }
        }
        Ok(())
    }

    /// Every container's latest run that has not ended, by ID.
    fn running_ids(&self) -> Vec<(String, std::path::PathBuf)> {
        let containers = std::fs::read_dir(self.dir.root.join("containers"));
        let mut out = Vec::new();
        for entry in containers.into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((attempt, Run::Running { .. })) = history(&self.dir, &name).latest {
                out.push((
                    self.dir.container_id(&name, attempt),
                    self.dir.attempt(&name, attempt),
                ));
            }
        }
        out
    }

    /// The preStop hooks of `pod` (when known), then SIGTERM to every
    /// running container, SIGKILL to those still running once `grace` is up.
    pub(super) async fn stop_containers(
        &self,
        pod: Option<&Pod>,
        grace: Duration,
    ) -> Result<(), AgentError> {
        let running = self.running_ids();
        if running.is_empty() {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let named: Vec<(String, String)> = running
            .iter()
            .filter_map(|(id, dir)| {
                let name = dir.parent()?.file_name()?.to_string_lossy().into_owned();
                Some((name, id.clone()))
            })
            .collect();
        if let Some(pod) = pod {
            for (name, _) in &named {
                let message = format!("Stopping container {name}");
                self.event(pod, Some(name), "Normal", "Killing", message);
            }
        }
        if let Some(pod) = pod.filter(|_| !grace.is_zero()) {
            self.pre_stop(pod, &named, grace).await;
        }
        // The hooks spend from the same grace period.
        let grace = grace.saturating_sub(started.elapsed());
        let signal = if grace.is_zero() { "KILL" } else { "TERM" };
        for (id, _) in &running {
            self.runtime.kill(id, signal).await?;
        }
        let ended = |running: &[(String, std::path::PathBuf)]| {
            running.iter().all(|(_, dir)| dir.join("exit").exists())
        };
        let deadline = tokio::time::Instant::now() + grace;
        while !ended(&running) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ended(&running) {
            for (id, dir) in &running {
                if !dir.join("exit").exists() {
                    self.runtime.kill(id, "KILL").await?;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !ended(&running) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Removes the pod's containers and sandbox from the node. With
    /// `everything`, its directory goes too; without, its logs and exit
    /// records stay (a finished pod's `kubectl logs`).
    pub(super) async fn teardown(&self, everything: bool) -> Result<(), AgentError> {
        let containers = std::fs::read_dir(self.dir.root.join("containers"));
        for entry in containers.into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            for attempt in self.dir.attempts(&name) {
                let dir = self.dir.attempt(&name, attempt);
                self.ctx.host.unmount(&dir.join("bundle/rootfs"))?;
                self.runtime
                    .delete(&self.dir.container_id(&name, attempt))
                    .await?;
                for sub in ["bundle", "upper", "work"] {
                    remove_if_present(&dir.join(sub))?;
                }
            }
        }
        self.release_sandbox().await?;
        // In-memory emptyDirs are tmpfs mounts (claims are symlinks, which
        // unmount does not follow).
        let volumes = std::fs::read_dir(self.dir.root.join("volumes"));
        for entry in volumes.into_iter().flatten().flatten() {
            self.ctx.host.unmount(&entry.path())?;
        }
        if everything {
            remove_if_present(&self.dir.root)?;
        } else {
            remove_if_present(&self.dir.root.join("volumes"))?;
        }
        Ok(())
    }
}

/// Removes the file or directory tree at `path`, if there is one.
pub(super) fn remove_if_present(path: &std::path::Path) -> Result<(), AgentError> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::monitor::ExitRecord;

    fn exited(attempt: u32, code: i32, ago: i64, ran: i64) -> History {
        let finished_at = Utc::now() - chrono::Duration::seconds(ago);
        History {
            latest: Some((
                attempt,
                Run::Exited {
                    started_at: finished_at - chrono::Duration::seconds(ran),
                    exit: ExitRecord {
                        exit_code: code,
                        finished_at,
                        oom_killed: false,
                    },
                    message: None,
                },
            )),
            previous: None,
        }
    }

    #[test]
    fn restarts_back_off_exponentially_up_to_five_minutes() {
        assert_eq!(backoff(0, Duration::ZERO), Duration::ZERO);
        assert_eq!(backoff(1, Duration::ZERO), Duration::from_secs(10));
        assert_eq!(backoff(2, Duration::ZERO), Duration::from_secs(20));
        assert_eq!(backoff(10, Duration::ZERO), BACKOFF_MAX);
        assert_eq!(backoff(40, Duration::ZERO), BACKOFF_MAX);
        assert_eq!(backoff(5, BACKOFF_RESET), Duration::ZERO);
    }

    #[test]
    fn decisions_follow_policy_and_back_off() {
        assert_eq!(decide(&History::default(), "Always", false), Next::Start);
        // The first crash restarts at once; the second waits 10 s.
        assert_eq!(decide(&exited(0, 1, 0, 1), "Always", false), Next::Start);
        assert_eq!(decide(&exited(1, 1, 2, 1), "Always", false), Next::Hold);
        assert_eq!(decide(&exited(1, 1, 11, 1), "Always", false), Next::Start);
        assert_eq!(
            decide(&exited(0, 0, 0, 1), "OnFailure", false),
            Next::Proceed
        );
        assert_eq!(decide(&exited(0, 1, 0, 1), "Never", false), Next::Proceed);
        // A failed init container under Never holds the pod (it has failed).
        assert_eq!(decide(&exited(0, 1, 0, 1), "Never", true), Next::Hold);
    }
}
