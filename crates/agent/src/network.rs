//! Pod networking through the CNI specification: the [`PodNetwork`] seam, and
//! [`Cni`], which calls the standard plugins (`loopback`, `bridge` with
//! `host-local` IPAM from the node's pod CIDR, `portmap` for hostPorts) and
//! masquerades the pod network with one node-wide rule.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::AgentError;

const CNI_VERSION: &str = "1.0.0";

/// The nat chain that masquerades the traffic of the pods on `bridge` that
/// leaves their network (one per bridge, so that agents on different
/// bridges of one host keep theirs; at most 27 characters, below
/// iptables' limit).
pub fn masquerade_chain(bridge: &str) -> String {
    format!("KYBERN-MASQ-{bridge}")
}

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
    /// Sets up, once at the agent's start, what every pod shares.
    async fn prepare(&self) -> Result<(), AgentError> {
        Ok(())
    }
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
    /// The masquerade chain and the pod CIDR whose outgoing traffic it
    /// masquerades, if any.
    masquerade: Option<(String, String)>,
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
    ///
    /// The bridge plugin's own `ipMasq` stays off: it would add a chain and
    /// three rules per pod, four `iptables` runs that more than double the
    /// plugin's time (8.5 → 21 ms here). One rule for the whole pod CIDR,
    /// made by [`PodNetwork::prepare`], does the same.
    pub fn bridge(bin_dir: &Path, s: &BridgeSettings) -> Self {
        let bridge = json!({
            "type": "bridge", "bridge": s.bridge, "isGateway": true,
            "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": s.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}], "dataDir": s.ipam_dir},
        });
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true},
            "snat": true});
        Cni {
            bin_dir: bin_dir.to_owned(),
            plugins: vec![bridge, portmap],
            masquerade: s
                .ip_masq
                .then(|| (masquerade_chain(&s.bridge), s.subnet.clone())),
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
        let mut cni = tokio::process::Command::new(self.bin_dir.join(kind));
        cni.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir);
        let what = format!("CNI plugin {kind}");
        let out = output_fed(cni, plugin.to_string().as_bytes(), &what).await?;
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

/// The `iptables-restore --noflush` input that (re)writes the masquerade
/// chain for `subnet`: traffic from the pod network to anywhere but the pod
/// network and multicast leaves with the node's address, as the bridge
/// plugin's per-pod rules would have it. Declaring the chain flushes it, so
/// a changed pod CIDR replaces the old rules.
fn masquerade_rules(c: &str, subnet: &str) -> String {
    let multicast = if subnet.contains(':') {
        "ff00::/8"
    } else {
        "224.0.0.0/4"
    };
    format!(
        "*nat\n:{c} - [0:0]\n-A {c} ! -s {subnet} -j RETURN\n-A {c} -d {subnet} -j RETURN\n\
         -A {c} -d {multicast} -j RETURN\n-A {c} -j MASQUERADE\nCOMMIT\n"
    )
}

/// The `iptables` arguments that check (`-C`), add (`-A`) or delete (`-D`)
/// the jump from the nat table's POSTROUTING to `chain`.
pub fn masquerade_jump<'a>(verb: &'a str, chain: &'a str) -> [&'a str; 11] {
    [
        "-w",
        "-t",
        "nat",
        verb,
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "kybern: masquerade traffic leaving the pod network",
        "-j",
        chain,
    ]
}

/// Removes the masquerade chain of the pods on `bridge` (from a pod CIDR of
/// `subnet`'s family) and the jump to it, for a node taken apart; succeeds
/// if they are gone already.
pub async fn remove_masquerade(bridge: &str, subnet: &str) -> Result<(), AgentError> {
    let chain = masquerade_chain(bridge);
    let tool = iptables_tool(subnet, false);
    while run_tool(tool, &masquerade_jump("-D", &chain), "").await?.0 {}
    for verb in ["-F", "-X"] {
        run_tool(tool, &["-w", "-t", "nat", verb, &chain], "").await?;
    }
    Ok(())
}

/// `iptables` or `ip6tables` (`-restore` when `restore`), as `subnet`'s
/// family asks.
fn iptables_tool(subnet: &str, restore: bool) -> &'static str {
    match (subnet.contains(':'), restore) {
        (false, false) => "iptables",
        (false, true) => "iptables-restore",
        (true, false) => "ip6tables",
        (true, true) => "ip6tables-restore",
    }
}

/// Runs `command` with `input` on its stdin and collects what it writes;
/// `what` names it when it cannot be started.
async fn output_fed(
    mut command: tokio::process::Command,
    input: &[u8],
    what: &str,
) -> Result<std::process::Output, AgentError> {
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| AgentError::Network(format!("starting {what}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        tokio::io::AsyncWriteExt::write_all(&mut stdin, input).await?;
    }
    Ok(child.wait_with_output().await?)
}

/// Runs `program` with `args` and `input` on its stdin; whether it
/// succeeded, and what it wrote to stderr.
async fn run_tool(program: &str, args: &[&str], input: &str) -> Result<(bool, String), AgentError> {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    let out = output_fed(command, input.as_bytes(), program).await?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Ok((out.status.success(), said))
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
    async fn prepare(&self) -> Result<(), AgentError> {
        let Some((chain, subnet)) = &self.masquerade else {
            return Ok(());
        };
        let restore = iptables_tool(subnet, true);
        let rules = masquerade_rules(chain, subnet);
        let (written, said) = run_tool(restore, &["-w", "--noflush"], &rules).await?;
        if !written {
            return Err(AgentError::Network(format!("{restore}: {said}")));
        }
        // `-C` fails when the jump is missing; then it is added.
        let tool = iptables_tool(subnet, false);
        if !run_tool(tool, &masquerade_jump("-C", chain), "").await?.0 {
            let (added, said) = run_tool(tool, &masquerade_jump("-A", chain), "").await?;
            if !added {
                return Err(AgentError::Network(format!(
                    "adding the jump to {chain} to POSTROUTING: {said}"
                )));
            }
        }
        tracing::info!(%subnet, %chain, "masquerading the pod network");
        Ok(())
    }

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

    /// The bridge network `kb0` on 10.1.0.0/24.
    fn test_network(ip_masq: bool) -> Cni {
        Cni::bridge(
            Path::new("/usr/lib/cni"),
            &BridgeSettings {
                bridge: "kb0".into(),
                subnet: "10.1.0.0/24".into(),
                ipam_dir: "/x".into(),
                ip_masq,
            },
        )
    }

    #[test]
    fn port_mappings_go_only_to_plugins_that_ask() {
        let cni = test_network(false);
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
    fn one_chain_masquerades_the_pod_cidr_and_no_bridge_rule_does() {
        let cni = test_network(true);
        assert_eq!(cni.plugins[0]["ipMasq"], false);
        let (chain, subnet) = cni.masquerade.clone().unwrap_or_default();
        assert_eq!(
            (chain.as_str(), subnet.as_str()),
            ("KYBERN-MASQ-kb0", "10.1.0.0/24")
        );
        let rules = masquerade_rules(&chain, &subnet);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(
            lines,
            [
                "*nat",
                ":KYBERN-MASQ-kb0 - [0:0]",
                "-A KYBERN-MASQ-kb0 ! -s 10.1.0.0/24 -j RETURN",
                "-A KYBERN-MASQ-kb0 -d 10.1.0.0/24 -j RETURN",
                "-A KYBERN-MASQ-kb0 -d 224.0.0.0/4 -j RETURN",
                "-A KYBERN-MASQ-kb0 -j MASQUERADE",
                "COMMIT",
            ]
        );
        assert!(masquerade_rules("c", "fd00:42::/64").contains("-d ff00::/8 -j RETURN"));
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
