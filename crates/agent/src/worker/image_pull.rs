//! A container's image, per its `imagePullPolicy`: taken from the store or
//! pulled (with the pod's `imagePullSecrets`), with back-off after failures
//! (`ErrImagePull`, then `ImagePullBackOff`), as the kubelet does it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::Api;

use super::PodWorker;
use crate::images::pull::{credentials_from_docker_config, pull};
use crate::images::{Image, normalize};

/// The first wait after a failed pull; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait between pulls.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When each image may be pulled again, and the wait after that; and which
/// back-offs have been reported (one `BackOff` Event per failed pull).
#[derive(Debug, Default)]
pub struct PullBackoff(HashMap<String, (Instant, Duration)>, HashSet<String>);

impl PullBackoff {
    /// Whether this back-off of `image` is not reported yet (and now is).
    fn first_report(&mut self, image: &str) -> bool {
        self.1.insert(image.to_owned())
    }

    fn blocked(&self, image: &str, now: Instant) -> bool {
        self.0.get(image).is_some_and(|(next, _)| now < *next)
    }

    fn failed(&mut self, image: &str, now: Instant) {
        let wait = self
            .0
            .get(image)
            .map_or(FIRST_BACKOFF, |(_, w)| (*w * 2).min(MAX_BACKOFF));
        self.0.insert(image.to_owned(), (now + wait, wait));
        self.1.remove(image);
    }

    fn succeeded(&mut self, image: &str) {
        self.0.remove(image);
        self.1.remove(image);
    }
}

/// The pull policy in effect: the container's, else upstream's default
/// (`Always` for `:latest` or no tag, else `IfNotPresent`).
fn policy(c: &Container, name: &str) -> String {
    c.image_pull_policy.clone().unwrap_or_else(|| {
        if name.contains('@') || !name.ends_with(":latest") {
            "IfNotPresent".into()
        } else {
            "Always".into()
        }
    })
}

/// Why the image cannot be had now: the waiting reason and message.
pub type Unavailable = (String, String);

impl PodWorker {
    /// Credentials from the pod's `imagePullSecrets`, by registry host.
    async fn pull_credentials(&self, pod: &Pod) -> HashMap<String, (String, String)> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), ns);
        let mut out = HashMap::new();
        let refs = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        for r in refs {
            match secrets.get_opt(&r.name).await {
                Ok(Some(secret)) => {
                    if let Some(config) = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(".dockerconfigjson"))
                    {
                        out.extend(credentials_from_docker_config(&config.0));
                    }
                }
                // As the kubelet: a missing secret is pulled without.
                Ok(None) => {}
                Err(e) => tracing::warn!(secret = %r.name, error = %e, "reading a pull secret"),
            }
        }
        out
    }

    /// The container's image from the store, when its pull policy lets it
    /// be used without a pull.
    pub(super) fn image_at_hand(&self, c: &Container) -> Result<Option<Image>, Unavailable> {
        let asked = c.image.clone().unwrap_or_default();
        let name = normalize(&asked);
        let store = &self.ctx.images;
        let present = store
            .resolve(&name)
            .map_err(|e| ("ErrImagePull".to_owned(), e.to_string()))?;
        match (policy(c, &name).as_str(), present) {
            ("Never", None) => Err((
                "ErrImageNeverPull".into(),
                format!("Container image {asked:?} is not present with pull policy of Never"),
            )),
            ("Never" | "IfNotPresent", Some(image)) => Ok(Some(image)),
            (_, Some(image)) if store.is_pinned(&name) => Ok(Some(image)),
            _ => Ok(None),
        }
    }

    /// The image to run `c` from.
    pub(super) async fn image_for(
        &mut self,
        pod: &Pod,
        c: &Container,
    ) -> Result<Image, Unavailable> {
        let asked = c.image.clone().unwrap_or_default();
        let at_hand = self.image_at_hand(c);
        let container = Some(c.name.as_str());
        match at_hand {
            Ok(Some(image)) => {
                let message = format!("Container image {asked:?} already present on machine");
                self.event(pod, container, "Normal", "Pulled", message);
                return Ok(image);
            }
            Ok(None) => {}
            Err((reason, message)) => {
                if self.pull_backoff.first_report(&format!("{reason} {asked}")) {
                    self.event(pod, container, "Warning", &reason, message.clone());
                }
                return Err((reason, message));
            }
        }
        let name = normalize(&asked);
        let now = Instant::now();
        if self.pull_backoff.blocked(&name, now) {
            let message = format!("Back-off pulling image {asked:?}");
            if self.pull_backoff.first_report(&name) {
                self.event(pod, container, "Normal", "BackOff", message.clone());
            }
            return Err(("ImagePullBackOff".into(), message));
        }
        self.event(
            pod,
            container,
            "Normal",
            "Pulling",
            format!("Pulling image {asked:?}"),
        );
        let credentials = self.pull_credentials(pod).await;
        let store = &self.ctx.images;
        match pull(store, &self.ctx.registries, &asked, &credentials).await {
            Ok(_) => {
                self.pull_backoff.succeeded(&name);
                let message = format!(
                    "Successfully pulled image {asked:?} in {:.3}s",
                    now.elapsed().as_secs_f64()
                );
                self.event(pod, container, "Normal", "Pulled", message);
                store
                    .resolve(&name)
                    .map_err(|e| ("ErrImagePull".to_owned(), e.to_string()))?
                    .ok_or_else(|| ("ErrImagePull".into(), format!("{asked:?} vanished")))
            }
            Err(e) => {
                self.pull_backoff.failed(&name, now);
                tracing::warn!(image = %name, error = %e, "image pull failed");
                let message = format!("Failed to pull image {asked:?}: {e}");
                self.event(pod, container, "Warning", "Failed", message);
                Err(("ErrImagePull".into(), e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_pulled_always_unless_the_container_says() {
        let c = |policy: Option<&str>| Container {
            image_pull_policy: policy.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            policy(&c(None), "docker.io/library/busybox:latest"),
            "Always"
        );
        assert_eq!(
            policy(&c(None), "docker.io/library/busybox:1.36"),
            "IfNotPresent"
        );
        assert_eq!(policy(&c(None), "r/x@sha256:ab"), "IfNotPresent");
        assert_eq!(policy(&c(Some("Never")), "x:latest"), "Never");
    }

    #[test]
    fn back_off_doubles_to_five_minutes_and_clears_on_success() {
        let mut b = PullBackoff::default();
        let t = Instant::now();
        assert!(!b.blocked("i", t));
        b.failed("i", t);
        assert!(b.blocked("i", t + Duration::from_secs(9)));
        assert!(!b.blocked("i", t + Duration::from_secs(10)));
        for _ in 0..10 {
            b.failed("i", t);
        }
        assert_eq!(b.0["i"].1, MAX_BACKOFF);
        b.succeeded("i");
        assert!(!b.blocked("i", t));
    }
}
