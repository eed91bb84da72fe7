//! Pod networking through the CNI specification: the [`PodNetwork`] seam, and
//! [`Cni`], which calls the standard plugins (`loopback`, `bridge` with
//! `host-local` IPAM from the node's pod CIDR, `portmap` for hostPorts).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::AgentError;

const CNI_VERSION: &str = "1.0.0";

/// A hostPort of the pod, for `portmap`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// Port on the node.
    pub host_port: i32,
    /// Port in the pod.
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// Attaches pods' network namespaces to the node's pod network.
#[async_trait]
pub trait PodNetwork: Send + Sync {
    /// Gives the namespace an interface and an address; returns the address.
    async fn attach(
        &self,
        id: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<IpAddr, AgentError>;
    /// Releases what `attach` took (address, veth, port mappings). Succeeds
    /// if there is nothing to release.
    async fn detach(&self, id: &str, netns: &Path, ports: &[PortMapping])
    -> Result<(), AgentError>;
}

/// The node's CNI network.
#[derive(Debug, Clone)]
pub struct Cni {
    bin_dir: PathBuf,
    plugins: Vec<Value>,
}

/// Settings of the node's bridge network.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Linux bridge name.
    pub bridge: String,
    /// The node's pod CIDR.
    pub subnet: String,
    /// Where `host-local` keeps its leases.
    pub ipam_dir: PathBuf,
    /// Masquerade traffic leaving the pod network (needs iptables).
    pub ip_masq: bool,
}

impl Cni {
    /// The network `bridge` + `host-local` + `portmap` with plugins from `bin_dir`.
    pub fn bridge(bin_dir: &Path, s: &BridgeSettings) -> Self {
        let bridge = json!({
            "type": "bridge", "bridge": s.bridge, "isGateway": true,
            "ipMasq": s.ip_masq, "hairpinMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": s.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}], "dataDir": s.ipam_dir},
        });
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true},
            "snat": true});
        Cni {
            bin_dir: bin_dir.to_owned(),
            plugins: vec![bridge, portmap],
        }
    }

    async fn invoke(
        &self,
        command: &str,
        plugin: &Value,
        id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<Value, AgentError> {
        let kind = plugin["type"].as_str().unwrap_or_default();
        let mut child = tokio::process::Command::new(self.bin_dir.join(kind))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| AgentError::Network(format!("starting CNI plugin {kind}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            tokio::io::AsyncWriteExt::write_all(&mut stdin, plugin.to_string().as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            let msg = result["msg"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
            return Err(AgentError::Network(format!("CNI {kind} {command}: {msg}")));
        }
        Ok(result)
    }

    /// The plugins a pod needs: those that only map ports are skipped for
    /// pods without hostPorts (portmap costs iptables calls per pod).
    fn chain<'a>(&'a self, ports: &'a [PortMapping]) -> impl Iterator<Item = &'a Value> + 'a {
        self.plugins
            .iter()
            .filter(move |p| !ports.is_empty() || p["capabilities"]["portMappings"] != json!(true))
    }

    /// A plugin's config as the spec hands it over: the network's name and
    /// version, the previous result, and the runtime's port mappings.
    fn plugin_config(plugin: &Value, prev: Option<&Value>, ports: &[PortMapping]) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!(CNI_VERSION);
        conf["name"] = json!("kybern");
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        if conf["capabilities"]["portMappings"] == json!(true) {
            let mappings: Vec<Value> = ports
                .iter()
                .map(|p| {
                    json!({"hostPort": p.host_port, "containerPort": p.container_port,
                    "protocol": p.protocol})
                })
                .collect();
            conf["runtimeConfig"] = json!({"portMappings": mappings});
        }
        conf
    }
}

/// The first IPv4 address of a CNI result (else the first address).
fn first_address(result: &Value) -> Option<IpAddr> {
    let addrs: Vec<IpAddr> = result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

#[async_trait]
impl PodNetwork for Cni {
    async fn attach(
        &self,
        id: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<IpAddr, AgentError> {
        let lo = json!({"cniVersion": CNI_VERSION, "name": "loopback", "type": "loopback"});
        // `lo` and `eth0` are separate networks: set up side by side.
        let eth0 = async {
            let mut prev: Option<Value> = None;
            for plugin in self.chain(ports) {
                let conf = Self::plugin_config(plugin, prev.as_ref(), ports);
                prev = Some(self.invoke("ADD", &conf, id, netns, "eth0").await?);
            }
            Ok::<_, AgentError>(prev)
        };
        let (lo, prev) = tokio::join!(self.invoke("ADD", &lo, id, netns, "lo"), eth0);
        lo?;
        prev?
            .as_ref()
            .and_then(first_address)
            .ok_or_else(|| AgentError::Network("the CNI result has no address".into()))
    }

    async fn detach(
        &self,
        id: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<(), AgentError> {
        let mut first_error = None;
        let chain: Vec<&Value> = self.chain(ports).collect();
        for plugin in chain.into_iter().rev() {
            let conf = Self::plugin_config(plugin, None, ports);
            if let Err(e) = self.invoke("DEL", &conf, id, netns, "eth0").await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_go_only_to_plugins_that_ask() {
        let cni = Cni::bridge(
            Path::new("/usr/lib/cni"),
            &BridgeSettings {
                bridge: "kb0".into(),
                subnet: "10.1.0.0/24".into(),
                ipam_dir: "/x".into(),
                ip_masq: false,
            },
        );
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
        }];
        let bridge = Cni::plugin_config(&cni.plugins[0], None, &ports);
        assert_eq!(bridge["name"], "kybern");
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.1.0.0/24");
        let prev = json!({"ips": [{"address": "10.1.0.5/24"}]});
        let portmap = Cni::plugin_config(&cni.plugins[1], Some(&prev), &ports);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert_eq!(portmap["prevResult"], prev);
    }

    #[test]
    fn the_pod_ip_is_the_first_ipv4_address() {
        let result = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24"}]});
        assert_eq!(
            first_address(&result),
            Some("10.1.0.5".parse().expect("test setup"))
        );
        assert_eq!(first_address(&json!({})), None);
    }
}
