//! Ephemeral containers (`kubectl debug`): started once each in the running
//! pod's sandbox, never restarted, and able to join the PID namespace of
//! the container they target.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

use super::PodWorker;
use super::state::{History, PodDir, Run, history};
use crate::AgentError;
use crate::runtime::bundle::PidNamespace;

/// An ephemeral container as the container it runs as (the two share every
/// field but the target).
pub fn as_container(ec: &EphemeralContainer) -> Container {
    let mut value = serde_json::to_value(ec).unwrap_or_default();
    if let Some(m) = value.as_object_mut() {
        m.remove("targetContainerName");
    }
    serde_json::from_value(value).unwrap_or_else(|_| Container {
        name: ec.name.clone(),
        image: ec.image.clone(),
        ..Default::default()
    })
}

/// The pod's ephemeral containers, as containers.
pub fn containers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(as_container)
        .collect()
}

/// The PID namespace a container of `pod` named `name` runs in: the host's
/// with `hostPID`, its target's for an ephemeral container that names one
/// (an error while the target is not running), else its own.
pub fn pid_namespace(pod: &Pod, name: &str, dir: &PodDir) -> Result<PidNamespace, AgentError> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_pid).unwrap_or(false) {
        return Ok(PidNamespace::Host);
    }
    let target = spec
        .into_iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .find(|ec| ec.name == name)
        .and_then(|ec| ec.target_container_name.as_deref())
        .filter(|t| !t.is_empty());
    let Some(target) = target else {
        return Ok(PidNamespace::Own);
    };
    let not_running = || AgentError::Config(format!("target container {target:?} is not running"));
    let Some((attempt, Run::Running { .. })) = history(dir, target).latest else {
        return Err(not_running());
    };
    let pid: u32 = std::fs::read_to_string(dir.attempt(target, attempt).join("pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(not_running)?;
    Ok(PidNamespace::Join(PathBuf::from(format!(
        "/proc/{pid}/ns/pid"
    ))))
}

impl PodWorker {
    /// Starts each ephemeral container that has not run yet; returns their
    /// histories in spec order.
    pub(super) async fn step_ephemeral(
        &mut self,
        pod: &Pod,
        pod_ip: &str,
    ) -> Result<Vec<History>, AgentError> {
        let mut out = Vec::new();
        for c in containers(pod) {
            let mut h = history(&self.dir, &c.name);
            if h.latest.is_none() {
                self.start(pod, &c, pod_ip).await?;
                h = history(&self.dir, &c.name);
            }
            out.push(h);
        }
        Ok(out)
    }
}
