//! The `default/kubernetes` Endpoints and EndpointSlice: the addresses of the
//! live API servers, kept as upstream's lease endpoint reconciler keeps them.
//!
//! Each server renews a lease under `/masterleases/<ip>` in the store (the
//! upstream key; the expiry is in the value, as the store has no TTLs) and
//! then writes every unexpired lease's address into both objects, so a
//! server that stops is dropped once its lease lapses.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kybern_apimachinery::{ApiError, StatusReason};
use kybern_store::{Precondition, RangeRequest};
use serde_json::{Value, json};

use crate::server::ApiState;
use crate::storage::parse_rv;

/// Where the servers' leases live, as upstream keeps them.
const LEASE_PREFIX: &str = "/masterleases/";
/// How often a server renews its lease and reconciles (upstream's interval).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a lease lasts without renewal (upstream's TTL).
const LEASE_TTL: Duration = Duration::from_secs(15);
/// The Service, its Endpoints and its EndpointSlice share this name.
const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";

/// This server's address and port as the cluster reaches it.
#[derive(Clone, Copy, Debug)]
pub struct Advertised {
    /// The address other members of the cluster reach this server at.
    pub ip: IpAddr,
    /// The HTTPS port.
    pub port: u16,
}

impl Advertised {
    /// Whether an Endpoints object may hold this address: upstream refuses
    /// unspecified, loopback, link-local and multicast ones.
    pub fn publishable(&self) -> bool {
        let ip = self.ip;
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || link_local)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Renews this server's lease and reconciles both objects every
/// [`RECONCILE_INTERVAL`], until the task is dropped.
pub async fn run(state: std::sync::Arc<ApiState>, me: Advertised) {
    if !me.publishable() {
        tracing::warn!(ip = %me.ip, "not publishing the kubernetes Endpoints: the advertised address is not routable (set --advertise-address)");
        return;
    }
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = reconcile(&state, me).await {
            tracing::warn!(error = %e, "reconciling the kubernetes Endpoints");
        }
    }
}

/// One pass: renew the lease, then write the live servers' addresses.
pub async fn reconcile(state: &ApiState, me: Advertised) -> Result<(), ApiError> {
    let store = state.objects.store();
    let now = now_secs();
    let lease = json!({"port": me.port, "expires": now + LEASE_TTL.as_secs()});
    store
        .put(
            &format!("{LEASE_PREFIX}{}", me.ip),
            Bytes::from(lease.to_string()),
            Precondition::None,
        )
        .await
        .map_err(|e| ApiError::internal(format!("renewing the API server lease: {e}")))?;
    let leases = store
        .range(RangeRequest::prefix(LEASE_PREFIX))
        .await
        .map_err(|e| ApiError::internal(format!("reading the API server leases: {e}")))?;
    let mut live = Vec::new();
    for kv in leases.kvs {
        let value: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let ip = kv
            .key
            .strip_prefix(LEASE_PREFIX)
            .and_then(|s| s.parse::<IpAddr>().ok());
        match (ip, value["expires"].as_u64()) {
            (Some(ip), Some(expires)) if expires >= now => live.push(ip),
            _ => {
                // Lapsed (or unreadable): gone unless renewed meanwhile.
                let _ = store
                    .delete(&kv.key, Precondition::ModRevision(kv.mod_revision))
                    .await;
            }
        }
    }
    live.sort();
    live.dedup();
    write(state, ("", "v1", "endpoints"), endpoints(&live, me.port)).await?;
    // A slice holds one address family: this server's.
    let v4 = me.ip.is_ipv4();
    let same_family: Vec<IpAddr> = live
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv4() == v4)
        .collect();
    write(
        state,
        ("discovery.k8s.io", "v1", "endpointslices"),
        endpoint_slice(&same_family, me.port, v4),
    )
    .await
}

/// The Endpoints upstream writes: one subset, the port named `https`, and
/// the label that keeps the mirroring controller away.
fn endpoints(ips: &[IpAddr], port: u16) -> Value {
    let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": addresses,
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })
}

/// The EndpointSlice upstream writes beside the Endpoints.
fn endpoint_slice(ips: &[IpAddr], port: u16, v4: bool) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": if v4 { "IPv4" } else { "IPv6" },
        "endpoints": endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

/// The fields this reconciler owns; anything else on the object is kept.
const OWNED: &[&str] = &["subsets", "addressType", "endpoints", "ports"];

/// Creates `desired`, or updates the stored object where the owned fields
/// or labels differ.
async fn write(
    state: &ApiState,
    (group, version, plural): (&str, &str, &str),
    desired: Value,
) -> Result<(), ApiError> {
    let info = state
        .registry
        .get(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} is not registered")))?;
    for _ in 0..3 {
        let mut existing = match state.objects.get(&info, NAMESPACE, NAME).await {
            Ok(obj) => obj,
            Err(e) if e.reason == StatusReason::NotFound => {
                let mut obj = desired.clone();
                crate::strategy::prepare_create(&info, &mut obj)?;
                match state.objects.create(&info, obj).await {
                    Err(e) if e.reason == StatusReason::AlreadyExists => continue,
                    other => return other.map(drop),
                }
            }
            Err(e) => return Err(e),
        };
        let mut changed = false;
        for field in OWNED {
            if let Some(want) = desired.get(*field)
                && existing.get(*field) != Some(want)
            {
                existing[*field] = want.clone();
                changed = true;
            }
        }
        for (k, v) in desired["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if existing["metadata"]["labels"][k] != *v {
                existing["metadata"]["labels"][k] = v.clone();
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let revision = parse_rv(crate::object::meta_str(&existing, "resourceVersion"))?;
        match state.objects.update(&info, existing, revision).await {
            Err(e) if e.reason == StatusReason::Conflict => continue,
            other => return other.map(drop),
        }
    }
    Err(ApiError::conflict(
        group,
        plural,
        NAME,
        "the kubernetes endpoints kept changing",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routable_addresses_are_published() {
        let at = |ip: &str| Advertised {
            ip: ip.parse().expect("ip"),
            port: 6443,
        };
        assert!(at("192.0.2.2").publishable());
        assert!(at("2001:db8::1").publishable());
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
        ] {
            assert!(!at(bad).publishable(), "{bad}");
        }
    }

    #[test]
    fn objects_name_every_live_server_on_the_https_port() {
        let ips: Vec<IpAddr> = vec![
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ];
        let eps = endpoints(&ips, 6443);
        assert_eq!(eps["subsets"][0]["addresses"][1]["ip"], "10.0.0.2");
        assert_eq!(
            eps["subsets"][0]["ports"][0],
            json!({"name": "https", "port": 6443, "protocol": "TCP"})
        );
        let slice = endpoint_slice(&ips, 6443, true);
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.0.0.1");
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], true);
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kubernetes"
        );
    }
}
