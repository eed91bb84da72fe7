//! A pod's sandbox: the namespaces its containers share, its network
//! attachment, its `/etc` files and volumes; and tearing all of it down.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use super::PodWorker;
use crate::AgentError;
use crate::network::PortMapping;
use crate::runtime::gate;

/// What the sandbox holds, recorded once it is complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    /// The pod's IP.
    pub ip: String,
    /// The pod shares the node's network namespace.
    pub host_network: bool,
    /// hostPorts mapped by the network plugin.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The RuntimeClass handler its containers run under.
    #[serde(default = "default_handler")]
    pub handler: String,
}

fn default_handler() -> String {
    crate::runtime::handlers::DEFAULT_HANDLER.to_owned()
}

/// The pod's hostPorts.
pub fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(PortMapping {
                host_port: p.host_port.filter(|h| *h > 0)?,
                container_port: p.container_port,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            })
        })
        .collect()
}

/// The pod's `/etc/hosts`: localhost, the pod's name at its address (once
/// known, and not for hostNetwork pods), and its hostAliases.
fn hosts_file(pod: &Pod, ip: Option<IpAddr>, hostname: &str) -> String {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(ip) = ip.filter(|_| !host_network) {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    for alias in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        hosts.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    hosts
}

/// The host's resolver configuration, skipping systemd-resolved's stub.
fn host_resolv_conf() -> String {
    for path in ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
    }
    String::new()
}

/// The handler recorded in the sandbox of the pod at `dir`, or the default.
pub fn recorded_handler(dir: &super::state::PodDir) -> String {
    std::fs::read(dir.sandbox_record())
        .ok()
        .and_then(|b| serde_json::from_slice::<SandboxRecord>(&b).ok())
        .map_or_else(default_handler, |r| r.handler)
}

impl PodWorker {
    /// Reads the sandbox record, if the sandbox is complete.
    pub(super) fn sandbox(&self) -> Option<SandboxRecord> {
        let bytes = std::fs::read(self.dir.sandbox_record()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Makes the pod's sandbox, or returns the one already made.
    pub(super) async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<SandboxRecord, AgentError> {
        if let Some(record) = self.sandbox() {
            return Ok(record);
        }
        let result = self.create_sandbox(pod).await;
        if result.is_err() {
            // Leave nothing half-made behind; the next sync starts afresh.
            if let Err(e) = self.release_sandbox().await {
                tracing::warn!(pod = %self.dir.uid, error = %e, "releasing a failed sandbox");
            }
        }
        result
    }

    /// Makes the namespaces, then attaches the network while the volumes
    /// are written and the first container is created behind the start
    /// gate; the gate opens once the pod has its address.
    async fn create_sandbox(&mut self, pod: &Pod) -> Result<SandboxRecord, AgentError> {
        // First, so that a pod no runtime here can run leaves nothing made.
        let handler = self.ctx.runtimes.handler_for(&self.ctx.client, pod).await?;
        self.runtime = self.ctx.runtimes.get_or_default(&handler);
        let spec = pod.spec.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hostname: String = spec
            .and_then(|s| s.hostname.clone())
            .unwrap_or(name)
            .chars()
            .take(63)
            .collect();
        let etc = self.dir.etc();
        std::fs::create_dir_all(&etc)?;
        self.ctx.host.create_namespaces(&self.dir.ns(), &hostname)?;
        tracing::debug!(pod = %self.dir.uid, "pod namespaces made");
        // The pod's cgroup before its first container, which runc puts in it.
        let qos = super::qos::QosClass::of(pod);
        let limits = super::qos::pod_limits(pod, qos, self.ctx.pod_pids_limit);
        let cgroup = super::qos::cgroup_parent(pod, qos);
        self.ctx.host.limit_pod(&cgroup, &limits)?;
        let ports = port_mappings(pod);
        let node_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned();
        std::fs::write(
            etc.join("hostname"),
            format!(
                "{}\n",
                if host_network {
                    &node_hostname
                } else {
                    &hostname
                }
            ),
        )?;
        std::fs::write(etc.join("resolv.conf"), host_resolv_conf())?;
        // Without the pod's own line until its address is known; rewritten
        // in place (the containers bind-mount this very file).
        std::fs::write(etc.join("hosts"), hosts_file(pod, None, &hostname))?;

        let early = self.early_container(pod, host_network);
        let gate = self.dir.root.join("network-gate");
        gate::prepare(&gate)?;
        let attach = {
            let (ctx, uid, netns) = (
                self.ctx.clone(),
                self.dir.uid.clone(),
                self.dir.ns().join("net"),
            );
            let ports = ports.clone();
            async move {
                if host_network {
                    Ok(ctx.node_ip)
                } else {
                    ctx.network.attach(&uid, &netns, &ports).await
                }
            }
        };
        // The first container is also created while the volumes written from
        // the API are fetched (a token request, the root CA), unless it
        // mounts a path inside one; the gate holds it until they are written.
        let overlap = early
            .as_ref()
            .is_some_and(|c| !super::volumes::mounts_into_api_volume(pod, c));
        let (client, pod_dir) = (self.ctx.client.clone(), self.dir.clone());
        let prepare = async {
            super::volumes::materialize(&self.ctx.client, self.ctx.host.as_ref(), pod, &self.dir)
                .await?;
            if !overlap {
                super::volumes::fill(&self.ctx.client, pod, &self.dir).await?;
            }
            match &early {
                Some(c) => self.launch(pod, c, "", Some(&gate)).await,
                None => Ok(None),
            }
        };
        let fill = async move {
            if overlap {
                super::volumes::fill(&client, pod, &pod_dir).await
            } else {
                Ok(())
            }
        };
        let (ip, launched, filled) = tokio::join!(attach, prepare, fill);
        let launched = launched?;
        let ip: IpAddr = match filled.and(ip) {
            Ok(ip) => ip,
            Err(e) => {
                if let (Some(c), Some(launch)) = (&early, launched) {
                    let _held = gate::close(&gate, &e.to_string())?;
                    self.abandon(c, launch).await?;
                }
                return Err(e);
            }
        };
        tracing::debug!(pod = %self.dir.uid, %ip, "pod network attached");
        std::fs::write(etc.join("hosts"), hosts_file(pod, Some(ip), &hostname))?;
        let record = SandboxRecord {
            ip: ip.to_string(),
            host_network,
            ports,
            handler,
        };
        let tmp = self.dir.root.join("sandbox.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&record).unwrap_or_default())?;
        std::fs::rename(&tmp, self.dir.sandbox_record())?;
        tracing::info!(pod = %self.dir.uid, %ip, "pod sandbox ready");
        if let (Some(c), Some(launch)) = (&early, launched) {
            // Held until the container runs: the gate's line waits in the
            // pipe for the hook.
            let _held = gate::open(&gate)?;
            self.await_start(pod, c, launch, &record.ip).await?;
        }
        Ok(record)
    }

    /// The container that starts first, if it can be created while the
    /// network is set up: its image is at hand and nothing in it needs the
    /// pod's address (a downward API `status.podIP` in its environment).
    fn early_container(&self, pod: &Pod, host_network: bool) -> Option<Container> {
        if host_network {
            return None;
        }
        let spec = pod.spec.as_ref()?;
        let first = spec
            .init_containers
            .iter()
            .flatten()
            .next()
            .or(spec.containers.first())?;
        let needs_ip = first.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .is_some_and(|f| f.field_path.starts_with("status.podIP"))
        });
        let fresh = self.dir.attempts(&first.name).is_empty();
        let at_hand = matches!(self.image_at_hand(first), Ok(Some(_)));
        (!needs_ip && fresh && at_hand).then(|| first.clone())
    }

    /// Releases the network attachment, namespaces and cgroups of the pod
    /// (its containers must have ended). Works from the sandbox record
    /// alone, so it also serves pods that are gone from the API.
    pub(super) async fn release_sandbox(&self) -> Result<(), AgentError> {
        let record = self.sandbox();
        let host_network = record.as_ref().is_some_and(|r| r.host_network);
        let ports = record.map(|r| r.ports).unwrap_or_default();
        let netns = self.dir.ns().join("net");
        if !host_network && netns.exists() {
            self.ctx
                .network
                .detach(&self.dir.uid, &netns, &ports)
                .await?;
        }
        self.ctx.host.remove_namespaces(&self.dir.ns())?;
        for parent in ["/kubepods", "/kubepods/burstable", "/kubepods/besteffort"] {
            self.ctx
                .host
                .remove_cgroup(&format!("{parent}/pod{}", self.dir.uid))?;
        }
        match std::fs::remove_file(self.dir.sandbox_record()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
