//! Leader election through a `coordination.k8s.io` Lease, as client-go's
//! `leaderelection` does it: take the Lease when it is free or expired, renew
//! it while working, and stop working when it cannot be renewed in time.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Timings of an election (kube-scheduler's defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug)]
pub struct ElectionTimings {
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl Default for ElectionTimings {
    fn default() -> Self {
        ElectionTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for a Lease.
pub struct LeaseElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: ElectionTimings,
}

impl LeaseElector {
    /// A candidate `identity` for the Lease `namespace/name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: ElectionTimings,
    ) -> Self {
        LeaseElector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
        }
    }

    /// Takes or renews the Lease; `Ok(true)` when this candidate holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = self.timings.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease: Lease = Lease {
                metadata: kube::core::ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let expired = renewed.is_none_or(|t| t.as_second() + duration < now.as_second());
            if !expired {
                return Ok(false);
            }
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(MicroTime(now));
        // The update carries the resourceVersion read above: a rival's write
        // in between makes it a 409, and the rival wins.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs `work` whenever this candidate leads, forever: waits to acquire
    /// the Lease, runs `work` while renewing it, and stops `work` (to start it
    /// again once re-elected) if renewal fails for longer than the deadline.
    pub async fn run<F, Fut>(self, mut work: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, lease = %self.name, "leader election"),
                }
                tokio::time::sleep(self.timings.retry_period).await;
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let task = tokio::spawn(work());
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(self.timings.retry_period).await;
                match self.try_acquire_or_renew().await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(e) => tracing::warn!(error = %e, lease = %self.name, "renewing the lease"),
                }
                if last_renewal.elapsed() > self.timings.renew_deadline {
                    break;
                }
            }
            tracing::warn!(lease = %self.name, identity = %self.identity, "lost leadership");
            task.abort();
        }
    }
}
