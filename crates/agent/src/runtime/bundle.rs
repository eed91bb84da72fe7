//! The OCI runtime `config.json` of one container, built with `oci-spec` from
//! a resolved [`ContainerPlan`] (what the pod spec and the image ask for).

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, Hook, Hooks, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxMemory,
    LinuxNamespace, LinuxPids, LinuxResources, Mount, Process, Root, Spec, User,
};

pub use oci_spec::runtime::LinuxNamespaceType;

use crate::AgentError;

/// containerd's default capability set, which Kubernetes users expect of an
/// unprivileged container (runc's own default is much smaller).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A bind or filesystem mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// Path inside the container.
    pub destination: String,
    /// Host path (or the filesystem's name for `tmpfs`).
    pub source: PathBuf,
    /// `bind` or a filesystem type.
    pub kind: String,
    /// Mount options (`ro`, `rbind`, ...).
    pub options: Vec<String>,
}

/// Whose PID namespace a container runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PidNamespace {
    /// A new one of its own (a pod's containers see only their own processes).
    #[default]
    Own,
    /// The host's (`hostPID: true`).
    Host,
    /// The namespace at this path: another container's, which an ephemeral
    /// container with a `targetContainerName` joins.
    Join(PathBuf),
}

/// Everything a container's config depends on, already resolved.
#[derive(Debug, Clone, Default)]
pub struct ContainerPlan {
    /// Executable and arguments.
    pub args: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User and group IDs.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Namespace files to join (`net`, `ipc`, `uts`); `None` makes a new one.
    pub namespaces: Vec<(LinuxNamespaceType, Option<PathBuf>)>,
    /// The PID namespace.
    pub pid_namespace: PidNamespace,
    /// The cgroup path (relative to each hierarchy's root).
    pub cgroup_path: String,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// CPU shares (from the CPU request).
    pub cpu_shares: Option<u64>,
    /// CPU quota per 100 ms period (from the CPU limit).
    pub cpu_quota: Option<i64>,
    /// Max processes in the container.
    pub pids_limit: Option<i64>,
    /// Extra mounts after the defaults.
    pub mounts: Vec<MountPlan>,
    /// Read-only root filesystem.
    pub readonly_rootfs: bool,
    /// All capabilities, all devices, nothing masked.
    pub privileged: bool,
    /// Capabilities added to and dropped from the default set.
    pub cap_add: Vec<String>,
    /// Capabilities dropped (`ALL` drops every one).
    pub cap_drop: Vec<String>,
    /// Set `no_new_privs` (the pod's `allowPrivilegeEscalation: false`).
    pub no_new_privileges: bool,
    /// OOM score adjustment from the pod's QoS class.
    pub oom_score_adj: Option<i32>,
    /// Hold the container before its command runs until this gate opens:
    /// `(the kybern executable, the gate file)`.
    pub start_gate: Option<(PathBuf, PathBuf)>,
    /// Run on a terminal (`tty: true`), whose controlling side runc hands
    /// to the monitor.
    pub tty: bool,
}

fn capability(name: &str) -> Result<Capability, AgentError> {
    let bare = name.trim().to_ascii_uppercase();
    let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
    Capability::from_str(bare)
        .map_err(|_| AgentError::Runtime(format!("unknown capability {name:?}")))
}

fn capabilities(plan: &ContainerPlan) -> Result<HashSet<Capability>, AgentError> {
    if plan.privileged {
        return Ok(all_capabilities().collect());
    }
    let drop_all = plan.cap_drop.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut set = HashSet::new();
    if !drop_all {
        for c in DEFAULT_CAPABILITIES {
            set.insert(capability(c)?);
        }
        for c in &plan.cap_drop {
            set.remove(&capability(c)?);
        }
    }
    for c in &plan.cap_add {
        if c.eq_ignore_ascii_case("ALL") {
            set.extend(all_capabilities());
        } else {
            set.insert(capability(c)?);
        }
    }
    Ok(set)
}

fn all_capabilities() -> impl Iterator<Item = Capability> {
    (0..64).filter_map(|i| {
        let v = serde_json::Value::String(format!("CAP_{}", cap_name(i)?));
        serde_json::from_value(v).ok()
    })
}

/// Capability names by number, for `privileged` and `add: [ALL]`.
fn cap_name(n: u32) -> Option<&'static str> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES.get(n as usize).copied()
}

/// The container's `config.json`.
pub fn spec(plan: &ContainerPlan) -> Result<Spec, AgentError> {
    let mut spec = Spec::default();
    spec.set_hostname(None);

    let mut user = User::default();
    user.set_uid(plan.uid);
    user.set_gid(plan.gid);
    let caps = capabilities(plan)?;
    let mut linux_caps = LinuxCapabilities::default();
    linux_caps.set_bounding(Some(caps.clone()));
    linux_caps.set_effective(Some(caps.clone()));
    linux_caps.set_permitted(Some(caps.clone()));
    // Ambient and inheritable stay empty for non-root users, as in containerd.
    linux_caps.set_inheritable(Some(HashSet::new()));
    linux_caps.set_ambient(Some(HashSet::new()));
    let mut process = Process::default();
    process.set_terminal(Some(plan.tty));
    process.set_args(Some(plan.args.clone()));
    let mut env = plan.env.clone();
    // As containerd does for a terminal, unless the pod says otherwise.
    if plan.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(if plan.cwd.is_empty() {
        "/"
    } else {
        &plan.cwd
    }));
    process.set_user(user);
    process.set_capabilities(Some(linux_caps));
    process.set_no_new_privileges(Some(plan.no_new_privileges));
    process.set_oom_score_adj(plan.oom_score_adj);
    process.set_rlimits(None);
    spec.set_process(Some(process));

    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(plan.readonly_rootfs));
    spec.set_root(Some(root));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &plan.mounts {
        let mut mount = Mount::default();
        mount.set_destination(PathBuf::from(&m.destination));
        mount.set_source(Some(m.source.clone()));
        mount.set_typ(Some(m.kind.clone()));
        mount.set_options(Some(m.options.clone()));
        mounts.push(mount);
    }
    spec.set_mounts(Some(mounts));

    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or_else(|| AgentError::Runtime("default spec has no linux section".into()))?;
    let mut mount_ns = LinuxNamespace::default();
    mount_ns.set_typ(LinuxNamespaceType::Mount);
    let mut namespaces = vec![mount_ns];
    // A namespace not listed is the host's.
    let pid_path = match &plan.pid_namespace {
        PidNamespace::Own => Some(None),
        PidNamespace::Host => None,
        PidNamespace::Join(path) => Some(Some(path.clone())),
    };
    if let Some(path) = pid_path {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Pid);
        ns.set_path(path);
        namespaces.push(ns);
    }
    for (typ, path) in &plan.namespaces {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(*typ);
        ns.set_path(path.clone());
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(&plan.cgroup_path)));

    let mut resources = LinuxResources::default();
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(plan.privileged);
    deny_all.set_access(Some("rwm".into()));
    resources.set_devices(Some(vec![deny_all]));
    if let Some(limit) = plan.memory_limit {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(limit));
        resources.set_memory(Some(memory));
    }
    if plan.cpu_shares.is_some() || plan.cpu_quota.is_some() {
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(plan.cpu_shares);
        if let Some(quota) = plan.cpu_quota {
            cpu.set_quota(Some(quota));
            cpu.set_period(Some(100_000));
        }
        resources.set_cpu(Some(cpu));
    }
    if let Some(limit) = plan.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        resources.set_pids(Some(pids));
    }
    linux.set_resources(Some(resources));
    if plan.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    if let Some((exe, gate)) = &plan.start_gate {
        let (path, args) = super::gate::hook_command(exe, gate);
        let mut hook = Hook::default();
        hook.set_path(path);
        hook.set_args(Some(args));
        // runc kills a hook that outlives this, and the container fails.
        hook.set_timeout(Some(super::gate::GATE_TIMEOUT.as_secs() as i64));
        let mut hooks = Hooks::default();
        hooks.set_create_runtime(Some(vec![hook]));
        spec.set_hooks(Some(hooks));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ContainerPlan {
        ContainerPlan {
            args: vec!["sleep".into(), "1".into()],
            env: vec!["A=1".into()],
            namespaces: vec![(LinuxNamespaceType::Network, Some("/ns/net".into()))],
            cgroup_path: "/kubepods/burstable/podu/c".into(),
            memory_limit: Some(64 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            ..Default::default()
        }
    }

    #[test]
    fn limits_namespaces_and_process_reach_the_config() {
        let json = serde_json::to_value(spec(&plan()).expect("test setup")).expect("test setup");
        assert_eq!(json["process"]["args"], serde_json::json!(["sleep", "1"]));
        assert_eq!(json["process"]["cwd"], "/");
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(json["linux"]["cgroupsPath"], "/kubepods/burstable/podu/c");
        let ns = json["linux"]["namespaces"].as_array().expect("test setup");
        assert!(
            ns.iter()
                .any(|n| n["type"] == "network" && n["path"] == "/ns/net")
        );
        assert!(
            ns.iter()
                .any(|n| n["type"] == "pid" && n.get("path").is_none())
        );
        assert!(json.get("hostname").is_none());
        let bounding = json["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("test setup");
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        assert!(bounding.contains(&serde_json::json!("CAP_NET_RAW")));
    }

    #[test]
    fn the_pid_namespace_is_new_the_hosts_or_joined() {
        let pid_ns = |p: &ContainerPlan| {
            let json = serde_json::to_value(spec(p).expect("test setup")).expect("test setup");
            json["linux"]["namespaces"]
                .as_array()
                .expect("test setup")
                .iter()
                .find(|n| n["type"] == "pid")
                .cloned()
        };
        let mut p = plan();
        assert_eq!(pid_ns(&p), Some(serde_json::json!({"type": "pid"})));
        p.pid_namespace = PidNamespace::Host;
        assert_eq!(pid_ns(&p), None);
        p.pid_namespace = PidNamespace::Join("/proc/42/ns/pid".into());
        assert_eq!(
            pid_ns(&p),
            Some(serde_json::json!({"type": "pid", "path": "/proc/42/ns/pid"}))
        );
    }

    #[test]
    fn capabilities_follow_add_and_drop() {
        let mut p = plan();
        p.cap_drop = vec!["ALL".into()];
        p.cap_add = vec!["NET_ADMIN".into()];
        let caps = capabilities(&p).expect("test setup");
        assert_eq!(caps.len(), 1);
        p.cap_add = vec!["NOT_A_CAP".into()];
        assert!(capabilities(&p).is_err());
        p.cap_drop.clear();
        p.cap_add.clear();
        p.privileged = true;
        assert!(capabilities(&p).expect("test setup").len() > 30);
    }

    #[test]
    fn a_gated_container_waits_in_a_create_runtime_hook() {
        let json = serde_json::to_value(spec(&plan()).expect("test setup")).expect("test setup");
        assert!(json.get("hooks").is_none());
        let mut p = plan();
        p.start_gate = Some(("/usr/bin/kybern".into(), "/pods/u/network-gate".into()));
        let json = serde_json::to_value(spec(&p).expect("test setup")).expect("test setup");
        let hook = &json["hooks"]["createRuntime"][0];
        let (path, args) = super::super::gate::hook_command(
            std::path::Path::new("/usr/bin/kybern"),
            std::path::Path::new("/pods/u/network-gate"),
        );
        assert_eq!(hook["path"], path.to_string_lossy().as_ref());
        assert_eq!(hook["args"], serde_json::json!(args));
        assert_eq!(
            args.last().map(String::as_str),
            Some("/pods/u/network-gate")
        );
        assert_eq!(hook["timeout"].as_i64(), Some(60));
    }

    #[test]
    fn a_terminal_container_gets_a_terminal_and_a_term() {
        let json = serde_json::to_value(spec(&plan()).expect("test setup")).expect("test setup");
        assert_eq!(json["process"]["terminal"], false);
        let mut p = plan();
        p.tty = true;
        let json = serde_json::to_value(spec(&p).expect("test setup")).expect("test setup");
        assert_eq!(json["process"]["terminal"], true);
        assert_eq!(
            json["process"]["env"],
            serde_json::json!(["A=1", "TERM=xterm"])
        );
        p.env.push("TERM=vt100".into());
        let json = serde_json::to_value(spec(&p).expect("test setup")).expect("test setup");
        assert_eq!(
            json["process"]["env"],
            serde_json::json!(["A=1", "TERM=vt100"])
        );
    }
}
