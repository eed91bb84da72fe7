//! A pod's volumes on the node (emptyDir on disk or in memory, hostPath,
//! configMap, secret, downwardAPI, projected, persistentVolumeClaim), and
//! the ConfigMaps and Secrets its environment refers to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::Api;

use super::plan::EnvSources;
use super::projection::project;
use super::state::PodDir;
use crate::AgentError;
use crate::host::NodeHost;

/// Where volume `name` of `pod` is on the host.
pub fn host_path_of(pod: &Pod, name: &str, dir: &PodDir) -> Option<PathBuf> {
    let v = volume(pod, name)?;
    Some(match &v.host_path {
        Some(h) => PathBuf::from(&h.path),
        None => dir.volume(name),
    })
}

/// Whether volume `name` is mounted read-only whatever the mount says (a
/// claim given with `readOnly: true`).
pub fn forced_read_only(pod: &Pod, name: &str) -> bool {
    volume(pod, name)
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .and_then(|c| c.read_only)
        .unwrap_or(false)
}

fn volume<'a>(pod: &'a Pod, name: &str) -> Option<&'a Volume> {
    pod.spec
        .as_ref()?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
}

pub(super) async fn data_of(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, AgentError> {
    let mut out = BTreeMap::new();
    if kind == "ConfigMap" {
        let Some(cm) = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
        else {
            return Ok(None);
        };
        for (k, v) in cm.data.unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        for (k, v) in cm.binary_data.unwrap_or_default() {
            out.insert(k, v.0);
        }
    } else {
        let Some(s) = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
        else {
            return Ok(None);
        };
        for (k, v) in s.data.unwrap_or_default() {
            out.insert(k, v.0);
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
    }
    Ok(Some(out))
}

/// Reads every ConfigMap and Secret the pod's containers take environment from.
pub async fn env_sources(
    client: &kube::Client,
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
) -> Result<EnvSources, AgentError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut wanted = Vec::new();
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    for c in containers {
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                wanted.push(("ConfigMap", r.name.clone()));
            }
            if let Some(r) = &f.secret_ref {
                wanted.push(("Secret", r.name.clone()));
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                wanted.push(("ConfigMap", r.name.clone()));
            }
            if let Some(r) = &from.secret_key_ref {
                wanted.push(("Secret", r.name.clone()));
            }
        }
    }
    wanted.sort();
    wanted.dedup();
    let mut src = EnvSources {
        pod_ip: pod_ip.to_owned(),
        host_ip: host_ip.to_owned(),
        ..Default::default()
    };
    for (kind, name) in wanted {
        if let Some(data) = data_of(client, ns, kind, &name).await? {
            let text = data
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            src.objects.insert((kind.to_owned(), name), text);
        }
    }
    Ok(src)
}

/// Whether a volume's content is written from the API (configMap, secret,
/// projected, downwardAPI): [`fill`] writes it, [`materialize`] only makes
/// its directory.
pub fn from_api(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.projected.is_some()
        || v.downward_api.is_some()
}

/// Checks (or makes) a `hostPath` of type `type_`, as the kubelet does
/// before it mounts one.
fn prepare_host_path(path: &Path, type_: Option<&str>) -> Result<(), AgentError> {
    let shown = path.display();
    match type_.unwrap_or("") {
        "DirectoryOrCreate" => std::fs::create_dir_all(path)?,
        "FileOrCreate" if !path.exists() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(path)?;
        }
        "Directory" if !path.is_dir() => {
            return Err(AgentError::Config(format!(
                "hostPath {shown} is not a directory"
            )));
        }
        "File" if !path.is_file() => {
            return Err(AgentError::Config(format!(
                "hostPath {shown} is not a file"
            )));
        }
        _ => {}
    }
    Ok(())
}

/// Creates every volume of the pod on the node; the volumes written from
/// the API get an empty directory, which [`fill`] fills. Containers can be
/// created against them meanwhile, as long as none mounts a path inside
/// one (a `subPath`) and none runs before `fill` is done.
pub async fn materialize(
    client: &kube::Client,
    host: &dyn NodeHost,
    pod: &Pod,
    dir: &PodDir,
) -> Result<(), AgentError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let target = dir.volume(&v.name);
        if from_api(v) {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(h) = &v.host_path {
            prepare_host_path(Path::new(&h.path), h.type_.as_deref())?;
        } else if let Some(claim) = &v.persistent_volume_claim {
            let (path, type_) = super::claims::claimed_path(client, ns, &claim.claim_name).await?;
            prepare_host_path(&path, type_.as_deref())?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::symlink_metadata(&target).is_ok() {
                std::fs::remove_file(&target)?;
            }
            std::os::unix::fs::symlink(path, &target)?;
        } else if let Some(empty) = v
            .empty_dir
            .as_ref()
            .filter(|e| e.medium.as_deref() == Some("Memory"))
        {
            let size = empty
                .size_limit
                .as_ref()
                .and_then(|q| super::qos::bytes(&q.0))
                .and_then(|b| u64::try_from(b).ok());
            host.mount_tmpfs(&target, size)?;
        } else {
            // emptyDir, and kinds not built yet, get an empty directory.
            std::fs::create_dir_all(&target)?;
        }
    }
    Ok(())
}

/// Writes the pod's volumes whose content comes from the API, once, before
/// any of its containers runs (the kubelet's mount step for those kinds).
pub async fn fill(client: &kube::Client, pod: &Pod, dir: &PodDir) -> Result<(), AgentError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        project_volume(client, ns, pod, v, &dir.volume(&v.name)).await?;
    }
    Ok(())
}

/// Whether a container mounts a path inside a volume written from the API,
/// which must exist before the container is created.
pub fn mounts_into_api_volume(pod: &Pod, c: &k8s_openapi::api::core::v1::Container) -> bool {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    let api: Vec<&str> = volumes
        .filter(|v| from_api(v))
        .map(|v| v.name.as_str())
        .collect();
    c.volume_mounts.iter().flatten().any(|m| {
        api.contains(&m.name.as_str())
            && (m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
                || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()))
    })
}

/// Writes a configMap, secret or downwardAPI volume from the API; `false`
/// for other kinds.
async fn project_volume(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    v: &Volume,
    target: &Path,
) -> Result<bool, AgentError> {
    if let Some(cm) = &v.config_map {
        match data_of(client, ns, "ConfigMap", &cm.name).await? {
            Some(data) => {
                project(target, &data, cm.items.as_ref(), cm.default_mode)?;
            }
            None if cm.optional.unwrap_or(false) => std::fs::create_dir_all(target)?,
            None => {
                return Err(AgentError::Config(format!(
                    "configmap {:?} not found",
                    cm.name
                )));
            }
        }
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        match data_of(client, ns, "Secret", &name).await? {
            Some(data) => {
                project(target, &data, s.items.as_ref(), s.default_mode)?;
            }
            None if s.optional.unwrap_or(false) => std::fs::create_dir_all(target)?,
            None => return Err(AgentError::Config(format!("secret {name:?} not found"))),
        }
    } else if let Some(p) = &v.projected {
        super::projected::write(client, ns, pod, p, target).await?;
    } else if let Some(d) = &v.downward_api {
        let mut data = BTreeMap::new();
        let mut items = Vec::new();
        for item in d.items.iter().flatten() {
            let value = item
                .field_ref
                .as_ref()
                .and_then(|f| downward_field(pod, &f.field_path));
            if let Some(value) = value {
                data.insert(item.path.clone(), value.into_bytes());
                items.push(KeyToPath {
                    key: item.path.clone(),
                    path: item.path.clone(),
                    mode: item.mode,
                });
            }
        }
        project(target, &data, Some(&items), d.default_mode)?;
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// Brings the pod's configMap, secret and downwardAPI volumes up to date
/// with the API (the kubelet's periodic volume sync). Unchanged data is left
/// as it is; changed data replaces the old at once.
pub async fn refresh(client: &kube::Client, pod: &Pod, dir: &PodDir) -> Result<(), AgentError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        project_volume(client, ns, pod, v, &dir.volume(&v.name)).await?;
    }
    Ok(())
}

/// A downward API file: name, namespace, uid, labels or annotations.
pub(super) fn downward_field(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let lines = |map: Option<&BTreeMap<String, String>>| {
        map.map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v:?}\n"))
                .collect::<String>()
        })
    };
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "metadata.labels" => lines(m.labels.as_ref()).or(Some(String::new())),
        "metadata.annotations" => lines(m.annotations.as_ref()).or(Some(String::new())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_files_hold_fields_and_quoted_labels() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {
            "name": "p", "namespace": "ns", "labels": {"app": "web", "tier": "a b"}}}))
        .expect("pod");
        assert_eq!(downward_field(&pod, "metadata.name").as_deref(), Some("p"));
        assert_eq!(
            downward_field(&pod, "metadata.labels").as_deref(),
            Some("app=\"web\"\ntier=\"a b\"\n")
        );
        assert_eq!(
            downward_field(&pod, "metadata.annotations").as_deref(),
            Some("")
        );
        assert_eq!(downward_field(&pod, "spec.nodeName"), None);
    }

    #[test]
    fn only_paths_inside_api_volumes_must_wait_for_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "containers": [
                {"name": "whole", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"},
                    {"name": "scratch", "mountPath": "/s", "subPath": "x"}]},
                {"name": "file", "volumeMounts": [{"name": "cfg", "mountPath": "/f", "subPath": "key"}]},
                {"name": "expr", "volumeMounts": [{"name": "token", "mountPath": "/t", "subPathExpr": "$(N)"}]}
            ],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "token", "projected": {"sources": []}},
                {"name": "scratch", "emptyDir": {}}
            ]}}))
        .expect("pod");
        let spec = pod.spec.as_ref().expect("spec");
        let wait: Vec<bool> = spec
            .containers
            .iter()
            .map(|c| mounts_into_api_volume(&pod, c))
            .collect();
        assert_eq!(wait, [false, true, true]);
        let api: Vec<bool> = spec.volumes.iter().flatten().map(from_api).collect();
        assert_eq!(api, [true, true, false]);
    }
}
