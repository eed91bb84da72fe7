//! Client settings for the components `kybern` runs as API clients (the
//! scheduler, the controller manager, the node agent, the simulator): a
//! kubeconfig read, and the component named in every request's `User-Agent`.

use std::path::Path;

use anyhow::Context;

/// A client for the cluster a kubeconfig names, as `component`.
pub async fn client_from_kubeconfig(path: &Path, component: &str) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(
        config_from_kubeconfig(path, component).await?,
    )?)
}

/// The client settings of the kubeconfig at `path` (its current context),
/// for requests that name `component` in their `User-Agent`.
pub async fn config_from_kubeconfig(path: &Path, component: &str) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    set_user_agent(&mut config, component);
    Ok(config)
}

/// Names `component` in the `User-Agent` of `config`'s requests, as
/// upstream's components do (`kube-scheduler/v1.35.0 (linux/amd64) ...`).
/// The API server takes a write's field manager from the part before the
/// first `/`, so server-side apply and `managedFields` name the component,
/// not "unknown".
pub fn set_user_agent(config: &mut kube::Config, component: &str) {
    let agent = format!(
        "{component}/{} ({}/{}) kybern/{}",
        crate::KUBERNETES_VERSION,
        std::env::consts::OS,
        kybern_apimachinery::go_arch(),
        env!("CARGO_PKG_VERSION")
    );
    if let Ok(value) = http::HeaderValue::from_str(&agent) {
        config
            .headers
            .retain(|(name, _)| name != http::header::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_names_the_component_once() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().expect("url"));
        set_user_agent(&mut config, "kube-scheduler");
        set_user_agent(&mut config, "kubelet");
        let agents: Vec<&str> = config
            .headers
            .iter()
            .filter(|(name, _)| name == http::header::USER_AGENT)
            .filter_map(|(_, v)| v.to_str().ok())
            .collect();
        assert_eq!(agents.len(), 1, "{agents:?}");
        assert!(agents[0].starts_with("kubelet/v1.35.0 ("), "{agents:?}");
        // What the API server takes as the field manager.
        assert_eq!(agents[0].split('/').next(), Some("kubelet"));
    }
}
