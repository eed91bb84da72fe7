//! The Pod Security Standards' checks on one pod spec, each with upstream's
//! reason and detail wording, in upstream's order (baseline checks, then
//! restricted ones, each level by check name).

use std::collections::BTreeSet;

use serde_json::Value;

/// A level of the Pod Security Standards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations are refused.
    Baseline,
    /// Hardened: non-root, no escalation, capabilities dropped.
    Restricted,
}

impl Level {
    /// The level a label value names.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// One failed check: its reason and, when upstream gives one, its detail.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    /// Short reason, e.g. `privileged`.
    pub reason: &'static str,
    /// What exactly, e.g. `container "c" must not set securityContext.privileged=true`.
    pub detail: String,
}

/// Capabilities baseline pods may add (the container runtime's defaults).
const DEFAULT_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls baseline pods may set (namespaced and isolated).
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Volume sources restricted pods may use.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// SELinux types baseline pods may use.
const SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// `"a", "b"`.
fn quoted<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    items
        .into_iter()
        .map(|s| format!("{:?}", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_named(names: &[String]) -> String {
    let noun = if names.len() == 1 {
        "container"
    } else {
        "containers"
    };
    format!("{noun} {}", quoted(names))
}

/// A pod spec's containers (init, app, ephemeral) with their names.
fn containers(spec: &Value) -> Vec<(String, &Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .map(|c| (c["name"].as_str().unwrap_or_default().to_owned(), c))
        .collect()
}

/// The names of the containers for which `bad` holds.
fn failing(spec: &Value, mut bad: impl FnMut(&Value) -> bool) -> Vec<String> {
    containers(spec)
        .into_iter()
        .filter(|(_, c)| bad(c))
        .map(|(n, _)| n)
        .collect()
}

use crate::object::str_items as strings;

fn baseline(spec: &Value, meta: &Value, out: &mut Vec<Violation>) {
    let pod_sc = &spec["securityContext"];
    let mut push = |reason: &'static str, detail: String| out.push(Violation { reason, detail });
    // appArmorProfile
    let unconfined = |p: &Value| p["type"].as_str() == Some("Unconfined");
    let mut apparmor: BTreeSet<String> = BTreeSet::new();
    if unconfined(&pod_sc["appArmorProfile"]) {
        apparmor.insert(
            "pod must not set securityContext.appArmorProfile.type to \"Unconfined\"".into(),
        );
    }
    for (name, c) in containers(spec) {
        if unconfined(&c["securityContext"]["appArmorProfile"]) {
            apparmor.insert(format!(
                "container {name:?} must not set securityContext.appArmorProfile.type to \"Unconfined\""
            ));
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        for (k, v) in annotations {
            let value = v.as_str().unwrap_or_default();
            if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && value != "runtime/default"
                && !value.starts_with("localhost/")
            {
                apparmor.insert(format!("{k}={value:?}"));
            }
        }
    }
    if !apparmor.is_empty() {
        push(
            "forbidden AppArmor profile",
            apparmor.into_iter().collect::<Vec<_>>().join(", "),
        );
    }
    // capabilities_baseline
    let mut added: BTreeSet<String> = BTreeSet::new();
    let with_caps = failing(spec, |c| {
        let adds = strings(&c["securityContext"]["capabilities"]["add"]);
        let bad: Vec<&str> = adds
            .into_iter()
            .filter(|a| !DEFAULT_CAPABILITIES.contains(a))
            .collect();
        added.extend(bad.iter().map(|s| (*s).to_owned()));
        !bad.is_empty()
    });
    if !with_caps.is_empty() {
        push(
            "non-default capabilities",
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_named(&with_caps),
                quoted(&added)
            ),
        );
    }
    // hostNamespaces
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k].as_bool() == Some(true))
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        push("host namespaces", host.join(", "));
    }
    // hostPathVolumes
    let host_paths: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| v["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        push(
            "hostPath volumes",
            format!("{noun} {}", quoted(&host_paths)),
        );
    }
    // hostPorts
    let mut ports: BTreeSet<i64> = BTreeSet::new();
    let with_ports = failing(spec, |c| {
        let used: Vec<i64> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["hostPort"].as_i64())
            .filter(|p| *p != 0)
            .collect();
        ports.extend(&used);
        !used.is_empty()
    });
    if !with_ports.is_empty() {
        let (verb, noun) = if with_ports.len() == 1 {
            (
                "uses",
                if ports.len() == 1 {
                    "hostPort"
                } else {
                    "hostPorts"
                },
            )
        } else {
            ("use", "hostPorts")
        };
        let list: Vec<String> = ports.iter().map(i64::to_string).collect();
        push(
            "hostPort",
            format!(
                "{} {verb} {noun} {}",
                containers_named(&with_ports),
                list.join(", ")
            ),
        );
    }
    // hostProcess
    let host_process = |sc: &Value| sc["windowsOptions"]["hostProcess"].as_bool() == Some(true);
    let hp = failing(spec, |c| host_process(&c["securityContext"]));
    if host_process(pod_sc) || !hp.is_empty() {
        push("hostProcess", String::new());
    }
    // privileged
    let privileged = failing(spec, |c| {
        c["securityContext"]["privileged"].as_bool() == Some(true)
    });
    if !privileged.is_empty() {
        push(
            "privileged",
            format!(
                "{} must not set securityContext.privileged=true",
                containers_named(&privileged)
            ),
        );
    }
    // procMount
    let unmasked = failing(spec, |c| {
        c["securityContext"]["procMount"]
            .as_str()
            .is_some_and(|m| m != "Default")
    });
    if !unmasked.is_empty() {
        push(
            "procMount",
            format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                containers_named(&unmasked)
            ),
        );
    }
    // seLinuxOptions
    let bad_selinux = |sc: &Value| {
        let o = &sc["seLinuxOptions"];
        o["type"]
            .as_str()
            .is_some_and(|t| !t.is_empty() && !SELINUX_TYPES.contains(&t))
            || o["user"].as_str().is_some_and(|u| !u.is_empty())
            || o["role"].as_str().is_some_and(|r| !r.is_empty())
    };
    let selinux = failing(spec, |c| bad_selinux(&c["securityContext"]));
    if bad_selinux(pod_sc) || !selinux.is_empty() {
        push("seLinuxOptions", String::new());
    }
    // seccompProfile_baseline
    let seccomp_unconfined =
        |sc: &Value| sc["seccompProfile"]["type"].as_str() == Some("Unconfined");
    let unconfined_containers = failing(spec, |c| seccomp_unconfined(&c["securityContext"]));
    let mut who = Vec::new();
    if seccomp_unconfined(pod_sc) {
        who.push("pod".to_owned());
    }
    if !unconfined_containers.is_empty() {
        who.push(containers_named(&unconfined_containers));
    }
    if !who.is_empty() {
        push(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                who.join(" and ")
            ),
        );
    }
    // sysctls
    let sysctls: Vec<&str> = pod_sc["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if !sysctls.is_empty() {
        push("forbidden sysctls", sysctls.join(", "));
    }
}

fn restricted(spec: &Value, out: &mut Vec<Violation>) {
    let pod_sc = &spec["securityContext"];
    let mut push = |reason: &'static str, detail: String| out.push(Violation { reason, detail });
    // allowPrivilegeEscalation
    let escalating = failing(spec, |c| {
        c["securityContext"]["allowPrivilegeEscalation"].as_bool() != Some(false)
    });
    if !escalating.is_empty() {
        push(
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_named(&escalating)
            ),
        );
    }
    // capabilities_restricted
    let no_drop = failing(spec, |c| {
        !strings(&c["securityContext"]["capabilities"]["drop"]).contains(&"ALL")
    });
    let mut added: BTreeSet<String> = BTreeSet::new();
    let adding = failing(spec, |c| {
        let bad: Vec<&str> = strings(&c["securityContext"]["capabilities"]["add"])
            .into_iter()
            .filter(|a| *a != "NET_BIND_SERVICE")
            .collect();
        added.extend(bad.iter().map(|s| (*s).to_owned()));
        !bad.is_empty()
    });
    let mut details = Vec::new();
    if !no_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_named(&no_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&adding),
            quoted(&added)
        ));
    }
    if !details.is_empty() {
        push("unrestricted capabilities", details.join("; "));
    }
    // restrictedVolumes
    let mut kinds: BTreeSet<String> = BTreeSet::new();
    let bad_volumes: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            let source = v
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.as_str())
                .find(|k| *k != "name");
            match source {
                Some(k) if !RESTRICTED_VOLUMES.contains(&k) => {
                    kinds.insert(k.to_owned());
                    true
                }
                _ => false,
            }
        })
        .map(|v| v["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    if !bad_volumes.is_empty() {
        let (noun, verb, types) = if bad_volumes.len() == 1 {
            ("volume", "uses", "type")
        } else {
            ("volumes", "use", "types")
        };
        let types = if kinds.len() == 1 { "type" } else { types };
        push(
            "restricted volume types",
            format!(
                "{noun} {} {verb} restricted volume {types} {}",
                quoted(&bad_volumes),
                quoted(&kinds)
            ),
        );
    }
    // runAsNonRoot
    let pod_non_root = pod_sc["runAsNonRoot"].as_bool();
    let explicit_root = failing(spec, |c| {
        c["securityContext"]["runAsNonRoot"].as_bool() == Some(false)
    });
    let unset = failing(spec, |c| {
        c["securityContext"]["runAsNonRoot"].as_bool().is_none()
    });
    let mut details = Vec::new();
    if pod_non_root == Some(false) {
        details.push("pod must not set securityContext.runAsNonRoot=false".to_owned());
    }
    if !explicit_root.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            containers_named(&explicit_root)
        ));
    }
    if pod_non_root != Some(true) && !unset.is_empty() {
        details.push(format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_named(&unset)
        ));
    }
    if !details.is_empty() {
        push("runAsNonRoot != true", details.join("; "));
    }
    // runAsUser
    let root_user = failing(spec, |c| {
        c["securityContext"]["runAsUser"].as_i64() == Some(0)
    });
    let mut who = Vec::new();
    if pod_sc["runAsUser"].as_i64() == Some(0) {
        who.push("pod".to_owned());
    }
    if !root_user.is_empty() {
        who.push(containers_named(&root_user));
    }
    if !who.is_empty() {
        push(
            "runAsUser=0",
            format!("{} must not set runAsUser=0", who.join(" and ")),
        );
    }
    // seccompProfile_restricted
    let allowed = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let pod_ok = allowed(pod_sc);
    let bad = failing(spec, |c| {
        let sc = &c["securityContext"];
        match sc["seccompProfile"]["type"].as_str() {
            None => !pod_ok,
            Some(_) => !allowed(sc),
        }
    });
    let pod_unconfined = pod_sc["seccompProfile"]["type"].as_str() == Some("Unconfined");
    if !bad.is_empty() || pod_unconfined {
        let detail = if pod_unconfined {
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_owned()
        } else {
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_named(&bad)
            )
        };
        push("seccompProfile", detail);
    }
}

/// What `spec` (with its pod's `metadata`) does that `level` forbids.
pub fn violations(level: Level, meta: &Value, spec: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    baseline(spec, meta, &mut out);
    if level == Level::Restricted {
        // The restricted forms of these two checks replace the baseline ones.
        out.retain(|v| v.reason != "non-default capabilities" && v.reason != "seccompProfile");
        restricted(spec, &mut out);
    }
    out
}
