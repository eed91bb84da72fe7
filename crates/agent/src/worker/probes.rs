//! Startup, liveness and readiness probes (exec, httpGet, tcpSocket, grpc) of a
//! pod's running containers, with the kubelet's delays, periods, thresholds
//! and consequences: a failed liveness or startup probe restarts the
//! container; readiness decides `ready`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};

use super::PodWorker;
use super::checks::{grpc_health, http_action, port_of, tcp_open};
use super::state::Run;
use super::status::Observed;

/// What the probes say of a container's current run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The startup probe has succeeded (or there is none).
    pub started: bool,
    /// The readiness probe says ready (or there is none and it has started).
    pub ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// Probe bookkeeping for one run of one container.
#[derive(Debug, Default)]
pub struct RunProbes {
    attempt: u32,
    started: bool,
    ready: bool,
    successes: HashMap<Kind, i32>,
    failures: HashMap<Kind, i32>,
    next: HashMap<Kind, tokio::time::Instant>,
}

fn probe_of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

/// Whole seconds from a spec field (negative counts as zero).
fn secs(n: impl Into<i64>) -> Duration {
    Duration::from_secs(u64::try_from(n.into()).unwrap_or(0))
}

impl PodWorker {
    /// Runs one probe against container `c` (runtime ID `id`) at `ip`; a
    /// failure says why, in the kubelet's words (the command's output, the
    /// HTTP status, the dial error).
    async fn run_probe(
        &self,
        c: &Container,
        probe: &Probe,
        id: &str,
        ip: &str,
    ) -> Result<(), String> {
        let timeout = secs(probe.timeout_seconds.unwrap_or(1).max(1));
        let timed_out = match &probe.exec {
            Some(exec) => format!(
                "command {:?} timed out",
                exec.command.clone().unwrap_or_default().join(" ")
            ),
            None => format!("probe did not answer within {timeout:?}"),
        };
        let check = async {
            if let Some(exec) = &probe.exec {
                let command = exec.command.clone().unwrap_or_default();
                return match self.runtime.exec(id, &command, timeout).await {
                    Ok(r) if r.code == 0 => Ok(()),
                    Ok(r) => Err(r.output),
                    Err(e) => Err(e.to_string()),
                };
            }
            if let Some(http) = &probe.http_get {
                return http_action(c, http, ip).await;
            }
            if let Some(tcp) = &probe.tcp_socket {
                let Some(port) = port_of(c, &tcp.port) else {
                    return Err(format!("no port {:?} in the container", tcp.port));
                };
                let host = tcp.host.clone().filter(|h| !h.is_empty());
                return tcp_open(host.as_deref().unwrap_or(ip), port).await;
            }
            if let Some(grpc) = &probe.grpc {
                let Ok(port) = u16::try_from(grpc.port) else {
                    return Err(format!("invalid port {}", grpc.port));
                };
                let service = grpc.service.as_deref().unwrap_or_default();
                return grpc_health(ip, port, service).await.map_err(|e| {
                    tracing::debug!(container = %c.name, error = %e, "gRPC probe failed");
                    e
                });
            }
            Err("the probe names no action".into())
        };
        tokio::time::timeout(timeout, check)
            .await
            .unwrap_or(Err(timed_out))
    }

    /// Runs the probes that are due for every running app container and
    /// records their verdicts in `obs`. A container whose liveness or
    /// startup probe failed `failureThreshold` times is stopped; its restart
    /// policy takes it from there.
    pub(super) async fn probe(&mut self, pod: &Pod, obs: &mut Observed, ip: &str) {
        let spec = pod.spec.clone().unwrap_or_default();
        let grace = spec.termination_grace_period_seconds.unwrap_or(30);
        for (c, h) in spec.containers.iter().zip(&obs.app) {
            let Some((attempt, Run::Running { started_at })) = &h.latest else {
                self.probes.remove(&c.name);
                continue;
            };
            if [Kind::Startup, Kind::Liveness, Kind::Readiness]
                .iter()
                .all(|k| probe_of(c, *k).is_none())
            {
                continue;
            }
            let fresh = self
                .probes
                .get(&c.name)
                .is_none_or(|p| p.attempt != *attempt);
            if fresh {
                self.probes.insert(
                    c.name.clone(),
                    RunProbes {
                        attempt: *attempt,
                        started: c.startup_probe.is_none(),
                        ..Default::default()
                    },
                );
            }
            let id = self.dir.container_id(&c.name, *attempt);
            let running_for = (Utc::now() - *started_at).to_std().unwrap_or_default();
            let mut kill = false;
            for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
                let Some(probe) = probe_of(c, kind) else {
                    continue;
                };
                let Some(state) = self.probes.get(&c.name) else {
                    break;
                };
                // Liveness and readiness wait for the startup probe.
                if kind != Kind::Startup && !state.started || kind == Kind::Startup && state.started
                {
                    continue;
                }
                let delay = secs(probe.initial_delay_seconds.unwrap_or(0));
                let now = tokio::time::Instant::now();
                if running_for < delay || state.next.get(&kind).is_some_and(|t| now < *t) {
                    continue;
                }
                let result = self.run_probe(c, probe, &id, ip).await;
                let ok = result.is_ok();
                if let Err(why) = result {
                    let message = format!("{kind:?} probe failed: {}", why.trim_end());
                    self.event(pod, Some(&c.name), "Warning", "Unhealthy", message);
                }
                let Some(state) = self.probes.get_mut(&c.name) else {
                    break;
                };
                let period = secs(probe.period_seconds.unwrap_or(10).max(1));
                state.next.insert(kind, now + period);
                let (succ, fail) = if ok {
                    *state.successes.entry(kind).or_default() += 1;
                    state.failures.insert(kind, 0);
                    (state.successes[&kind], 0)
                } else {
                    *state.failures.entry(kind).or_default() += 1;
                    state.successes.insert(kind, 0);
                    (0, state.failures[&kind])
                };
                let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
                let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
                match kind {
                    Kind::Startup if succ >= 1 => state.started = true,
                    Kind::Readiness if succ >= success_threshold => state.ready = true,
                    Kind::Readiness if fail >= failure_threshold => state.ready = false,
                    Kind::Startup | Kind::Liveness if fail >= failure_threshold => kill = true,
                    _ => {}
                }
                if kill {
                    tracing::info!(pod = %self.dir.uid, container = %c.name, ?kind, "probe failed; restarting the container");
                    let message = format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name,
                        format!("{kind:?}").to_lowercase()
                    );
                    self.event(pod, Some(&c.name), "Normal", "Killing", message);
                    break;
                }
            }
            if kill {
                self.probes.remove(&c.name);
                let runtime = self.runtime.clone();
                let grace = secs(grace.clamp(0, 30));
                let _ = runtime.kill(&id, "TERM").await;
                // The kubelet's grace period, then SIGKILL.
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let _ = runtime.kill(&id, "KILL").await;
                });
                continue;
            }
            if let Some(state) = self.probes.get(&c.name) {
                let ready = state.started && (c.readiness_probe.is_none() || state.ready);
                obs.probes.insert(
                    c.name.clone(),
                    Verdict {
                        started: state.started,
                        ready,
                    },
                );
            }
        }
    }
}
