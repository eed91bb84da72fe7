//! Turns a pod's container spec, its image's defaults and the pod's sandbox
//! into a [`ContainerPlan`]: command, environment, user, mounts, limits.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::runtime::LinuxNamespaceType;

use super::qos::{QosClass, cgroup_parent};
use super::state::PodDir;
use crate::AgentError;
use crate::images::Image;
use crate::runtime::bundle::{ContainerPlan, MountPlan};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Values the agent resolved for the container's environment: the pod's
/// IP and node, and the ConfigMap and Secret keys it refers to.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    /// `status.podIP`.
    pub pod_ip: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// `(kind, name)` → data, for `configMapKeyRef`, `secretKeyRef` and `envFrom`.
    pub objects: BTreeMap<(String, String), BTreeMap<String, String>>,
}

/// The command line: the container's `command`/`args` over the image's
/// `Entrypoint`/`Cmd`, as Kubernetes defines it.
pub fn command_line(c: &Container, image: &Image) -> Vec<String> {
    let cfg = &image.config;
    match (&c.command, &c.args) {
        (Some(cmd), Some(args)) => cmd.iter().chain(args).cloned().collect(),
        (Some(cmd), None) => cmd.clone(),
        (None, Some(args)) => cfg
            .entrypoint
            .iter()
            .flatten()
            .chain(args)
            .cloned()
            .collect(),
        (None, None) => cfg
            .entrypoint
            .iter()
            .flatten()
            .chain(cfg.cmd.iter().flatten())
            .cloned()
            .collect(),
    }
}

/// Expands `$(VAR)` references from earlier variables; `$$` escapes.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(end) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..end + 1];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &after[end + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_value(pod: &Pod, path: &str, src: &EnvSources) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone()?,
        "metadata.namespace" => meta.namespace.clone()?,
        "metadata.uid" => meta.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone()?,
        "status.podIP" => src.pod_ip.clone(),
        "status.hostIP" => src.host_ip.clone(),
        p => {
            let key = p
                .strip_prefix("metadata.labels['")
                .map(|k| ("labels", k))
                .or_else(|| {
                    p.strip_prefix("metadata.annotations['")
                        .map(|k| ("annotations", k))
                })?;
            let name = key.1.trim_end_matches("']");
            let map = if key.0 == "labels" {
                meta.labels.as_ref()
            } else {
                meta.annotations.as_ref()
            };
            map?.get(name)?.clone()
        }
    })
}

/// The environment: image defaults, `envFrom`, then `env` in order.
pub fn environment(
    pod: &Pod,
    c: &Container,
    image: &Image,
    src: &EnvSources,
) -> Result<Vec<String>, AgentError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    };
    let image_env = image.config.env.clone().unwrap_or_default();
    if !image_env.iter().any(|e| e.starts_with("PATH=")) {
        set(&mut env, "PATH".into(), DEFAULT_PATH[5..].into());
    }
    for e in image_env {
        if let Some((k, v)) = e.split_once('=') {
            set(&mut env, k.into(), v.into());
        }
    }
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    set(&mut env, "HOSTNAME".into(), hostname);
    let lookup = |kind: &str, name: &str| src.objects.get(&(kind.to_owned(), name.to_owned()));
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => ("ConfigMap", r.name.clone(), r.optional.unwrap_or(false)),
            (_, Some(r)) => ("Secret", r.name.clone(), r.optional.unwrap_or(false)),
            _ => continue,
        };
        match lookup(kind, &name) {
            Some(data) => {
                for (k, v) in data {
                    set(&mut env, format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional => {}
            None => {
                return Err(AgentError::Config(format!("{kind} {name:?} not found")));
            }
        }
    }
    for var in c.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or(""), &env),
            Some(from) => {
                let keyed =
                    |kind: &str, name: &str, key: &str, optional: Option<bool>| match lookup(
                        kind, name,
                    )
                    .and_then(|d| d.get(key))
                    {
                        Some(v) => Ok(Some(v.clone())),
                        None if optional.unwrap_or(false) => Ok(None),
                        None => Err(AgentError::Config(format!(
                            "key {key:?} of {kind} {name:?} not found"
                        ))),
                    };
                let v = if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, src)
                } else if let Some(r) = &from.config_map_key_ref {
                    keyed("ConfigMap", &r.name, &r.key, r.optional)?
                } else if let Some(r) = &from.secret_key_ref {
                    keyed("Secret", &r.name, &r.key, r.optional)?
                } else {
                    None
                };
                match v {
                    Some(v) => v,
                    None => continue,
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// User and group: the security context's over the image's numeric `User`.
fn user(pod: &Pod, c: &Container, image: &Image) -> (u32, u32) {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let (mut uid, mut gid) = (0u32, 0u32);
    if let Some(u) = image.config.user.as_deref() {
        let mut parts = u.split(':');
        uid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        gid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    if let Some(u) = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user))
    {
        uid = u32::try_from(u).unwrap_or(uid);
    }
    if let Some(g) = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group))
    {
        gid = u32::try_from(g).unwrap_or(gid);
    }
    (uid, gid)
}

fn bind(destination: &str, source: &Path, read_only: bool) -> MountPlan {
    let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
    options.push(if read_only { "ro" } else { "rw" }.to_owned());
    MountPlan {
        destination: destination.to_owned(),
        source: source.to_owned(),
        kind: "bind".into(),
        options,
    }
}

/// The whole plan for one run of container `c`.
pub fn plan(
    pod: &Pod,
    c: &Container,
    image: &Image,
    dir: &PodDir,
    attempt_dir: &Path,
    src: &EnvSources,
) -> Result<ContainerPlan, AgentError> {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let host_ipc = spec.and_then(|s| s.host_ipc).unwrap_or(false);
    let mut namespaces = Vec::new();
    let ns = dir.ns();
    if !host_network {
        namespaces.push((LinuxNamespaceType::Network, Some(ns.join("net"))));
        namespaces.push((LinuxNamespaceType::Uts, Some(ns.join("uts"))));
    }
    if !host_ipc {
        namespaces.push((LinuxNamespaceType::Ipc, Some(ns.join("ipc"))));
    }
    let mut mounts = vec![
        bind("/etc/hosts", &dir.etc().join("hosts"), false),
        bind("/etc/resolv.conf", &dir.etc().join("resolv.conf"), false),
        bind("/etc/hostname", &dir.etc().join("hostname"), false),
    ];
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    mounts.push(bind(
        &term_path,
        &attempt_dir.join("termination-log"),
        false,
    ));
    for vm in c.volume_mounts.iter().flatten() {
        let mut source = super::volumes::host_path_of(pod, &vm.name, dir)
            .ok_or_else(|| AgentError::Config(format!("volume {:?} not found", vm.name)))?;
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(AgentError::Config(format!(
                    "subPath {sub:?} leaves its volume"
                )));
            }
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)?;
            }
        }
        let read_only =
            vm.read_only.unwrap_or(false) || super::volumes::forced_read_only(pod, &vm.name);
        mounts.push(bind(&vm.mount_path, &source, read_only));
    }
    let sc = c.security_context.as_ref();
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let resources = c.resources.as_ref();
    let quantity = |which: &str, name: &str| {
        let map = match which {
            "limits" => resources.and_then(|r| r.limits.as_ref()),
            _ => resources.and_then(|r| r.requests.as_ref()),
        };
        map.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let cpu_request = quantity("requests", "cpu")
        .or_else(|| quantity("limits", "cpu"))
        .and_then(|q| super::qos::millis(&q));
    let cpu_limit = quantity("limits", "cpu").and_then(|q| super::qos::millis(&q));
    let memory_limit = quantity("limits", "memory").and_then(|q| super::qos::bytes(&q));
    let qos = QosClass::of(pod);
    let (uid, gid) = user(pod, c, image);
    let id = dir.container_id(&c.name, attempt_number(attempt_dir));
    Ok(ContainerPlan {
        args: command_line(c, image),
        env: environment(pod, c, image, src)?,
        cwd: c
            .working_dir
            .clone()
            .or(image.config.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        uid,
        gid,
        namespaces,
        pid_namespace: super::ephemeral::pid_namespace(pod, &c.name, dir)?,
        cgroup_path: format!("{}/{id}", cgroup_parent(pod, qos)),
        memory_limit,
        // Kubernetes' conversion: 1 CPU = 1024 shares, at least 2.
        cpu_shares: Some(cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2))),
        cpu_quota: cpu_limit.map(|m| i64::try_from(m * 100).unwrap_or(i64::MAX).max(1000)),
        pids_limit: None,
        mounts,
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        oom_score_adj: Some(qos.oom_score_adj()),
        start_gate: None,
        tty: c.tty.unwrap_or(false),
    })
}

fn attempt_number(attempt_dir: &Path) -> u32 {
    attempt_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::RunDefaults;

    fn image() -> Image {
        Image {
            name: "x".into(),
            manifest_digest: String::new(),
            layers: vec![],
            config: RunDefaults {
                entrypoint: Some(vec!["/entry".into()]),
                cmd: Some(vec!["default".into()]),
                env: Some(vec!["A=image".into()]),
                ..Default::default()
            },
            size: 0,
        }
    }

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).expect("test setup")
    }

    #[test]
    fn command_and_args_override_entrypoint_and_cmd() {
        let img = image();
        let c = |j| command_line(&container(j), &img);
        assert_eq!(c(serde_json::json!({"name": "a"})), ["/entry", "default"]);
        assert_eq!(
            c(serde_json::json!({"name": "a", "args": ["x"]})),
            ["/entry", "x"]
        );
        assert_eq!(
            c(serde_json::json!({"name": "a", "command": ["sh"]})),
            ["sh"]
        );
        assert_eq!(
            c(serde_json::json!({"name": "a", "command": ["sh"], "args": ["-c", "true"]})),
            ["sh", "-c", "true"]
        );
    }

    #[test]
    fn environment_resolves_references_in_order() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []}}))
        .expect("test setup");
        let c = container(serde_json::json!({"name": "a",
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [
                {"name": "A", "value": "pod"},
                {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "no", "optional": true}}}]}));
        let mut src = EnvSources {
            pod_ip: "10.0.0.9".into(),
            ..Default::default()
        };
        src.objects.insert(
            ("ConfigMap".into(), "cm".into()),
            [("k".to_owned(), "v".to_owned())].into(),
        );
        src.objects.insert(
            ("Secret".into(), "s".into()),
            [("pw".to_owned(), "hunter2".to_owned())].into(),
        );
        let env = environment(&pod, &c, &image(), &src).expect("test setup");
        for want in [
            "A=pod",
            "B=pod-$(MISSING)-$(A)",
            "NODE=n1",
            "IP=10.0.0.9",
            "APP=web",
            "PW=hunter2",
            "CM_k=v",
            "HOSTNAME=p",
        ] {
            assert!(env.contains(&want.to_owned()), "{want} not in {env:?}");
        }
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        assert!(!env.iter().any(|e| e.starts_with("OPT=")));
        src.objects.clear();
        assert!(environment(&pod, &c, &image(), &src).is_err());
    }
}
