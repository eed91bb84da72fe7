//! Lifecycle hooks, as the kubelet runs them: `postStart` right after a
//! container starts (a failure kills it, and its restart policy takes over),
//! `preStop` before a container is signalled to stop, within the grace
//! period. Handlers: `exec`, `httpGet`, `sleep`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::PodWorker;
use super::checks::http_action;

/// The longest a postStart hook may hold a container's start up.
const POST_START_LIMIT: Duration = Duration::from_secs(120);

impl PodWorker {
    /// Runs `handler` for container `c` (runtime ID `id`, pod IP `ip`),
    /// giving up after `limit`.
    async fn run_hook(
        &self,
        c: &Container,
        handler: &LifecycleHandler,
        id: &str,
        ip: &str,
        limit: Duration,
    ) -> Result<(), String> {
        let run = async {
            if let Some(exec) = &handler.exec {
                let command = exec.command.clone().unwrap_or_default();
                return match self.runtime.exec(id, &command, limit).await {
                    Ok(r) if r.code == 0 => Ok(()),
                    Ok(r) => Err(format!(
                        "command {command:?} exited with {}: {}",
                        r.code,
                        r.output.trim_end()
                    )),
                    Err(e) => Err(e.to_string()),
                };
            }
            if let Some(http) = &handler.http_get {
                return http_action(c, http, ip).await;
            }
            if let Some(sleep) = &handler.sleep {
                let secs = u64::try_from(sleep.seconds).unwrap_or(0);
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            Ok(())
        };
        tokio::time::timeout(limit, run)
            .await
            .unwrap_or_else(|_| Err(format!("did not finish in {limit:?}")))
    }

    /// Runs `c`'s postStart hook, if any, after the container `id` started;
    /// on failure the container is killed.
    pub(super) async fn post_start(&self, pod: &Pod, c: &Container, id: &str, ip: &str) {
        let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return;
        };
        if let Err(message) = self.run_hook(c, handler, id, ip, POST_START_LIMIT).await {
            tracing::warn!(pod = %self.dir.uid, container = %c.name, %message,
                "FailedPostStartHook: killing the container");
            let message = format!("PostStartHook failed: {message}");
            self.event(
                pod,
                Some(&c.name),
                "Warning",
                "FailedPostStartHook",
                message,
            );
            if let Err(e) = self.runtime.kill(id, "KILL").await {
                tracing::warn!(container = %c.name, error = %e, "killing after a failed postStart hook");
            }
        }
    }

    /// Runs the preStop hooks of the running containers `running` (name,
    /// runtime ID) together, within `grace`.
    pub(super) async fn pre_stop(&self, pod: &Pod, running: &[(String, String)], grace: Duration) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let all = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        let hooks = all.filter_map(|c| {
            let handler = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
            let (_, id) = running.iter().find(|(name, _)| name == &c.name)?;
            let ip = ip.clone();
            Some(async move {
                if let Err(message) = self.run_hook(c, handler, id, &ip, grace).await {
                    tracing::warn!(pod = %self.dir.uid, container = %c.name, %message,
                        "FailedPreStopHook");
                    let message = format!("PreStopHook failed: {message}");
                    self.event(pod, Some(&c.name), "Warning", "FailedPreStopHook", message);
                }
            })
        });
        futures::future::join_all(hooks).await;
    }
}
