//! Service cluster IPs: allocation from the service CIDR (10.96.0.0/12, as
//! kubeadm's default) and release on deletion. Each allocated IP is a store
//! key naming its Service, claimed with a create-if-absent write, so two
//! Services never get one IP even with several API servers.

use std::net::Ipv4Addr;

use bytes::Bytes;
use kybern_apimachinery::{ApiError, Cause};
use kybern_store::{Precondition, StoreError};
use serde_json::{Value, json};

use crate::object::{self, Object};
use crate::registry::ResourceInfo;
use crate::storage::ObjectStore;

/// First address of the service CIDR.
const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
/// Prefix length of the service CIDR.
const PREFIX_LEN: u32 = 12;
/// Where claims live.
const CLAIMS: &str = "/registry/core/serviceips/";
/// Tries before giving up on a full range.
const ATTEMPTS: usize = 64;

fn in_range(ip: Ipv4Addr) -> bool {
    u32::from(ip) >> (32 - PREFIX_LEN) == BASE >> (32 - PREFIX_LEN)
}

/// True for Services that get a cluster IP (not ExternalName, not headless).
fn wants_ip(svc: &Object) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
        && svc.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None")
}

fn owner(svc: &Object) -> String {
    format!("{}/{}", object::namespace(svc), object::name(svc))
}

fn invalid(svc: &Object, ip: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        object::name(svc),
        vec![Cause::invalid("spec.clusterIPs[0]", &json!(ip), detail)],
    )
}

/// Claims `ip` for `svc`; a claim left by a Service that no longer holds the
/// IP (a crash between delete and release) is taken over.
async fn claim(
    objects: &ObjectStore,
    info: &ResourceInfo,
    svc: &Object,
    ip: Ipv4Addr,
) -> Result<bool, ApiError> {
    let key = format!("{CLAIMS}{ip}");
    let me = Bytes::from(owner(svc));
    match objects
        .store()
        .put(&key, me.clone(), Precondition::Absent)
        .await
    {
        Ok(_) => return Ok(true),
        Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(ApiError::internal(e.to_string())),
    }
    let current = objects
        .store()
        .get(&key, 0)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(kv) = current.kv else {
        return Ok(false);
    };
    let holder = String::from_utf8_lossy(&kv.value).to_string();
    let (ns, name) = holder.split_once('/').unwrap_or(("", &holder));
    let still_held = match objects.get(info, ns, name).await {
        Ok(other) => {
            other.pointer("/spec/clusterIP").and_then(Value::as_str) == Some(&ip.to_string())
        }
        Err(e) if e.reason == kybern_apimachinery::StatusReason::NotFound => false,
        Err(e) => return Err(e),
    };
    if still_held {
        return Ok(false);
    }
    Ok(objects
        .store()
        .put(&key, me, Precondition::ModRevision(kv.mod_revision))
        .await
        .is_ok())
}

/// Gives a new Service its cluster IP: the one it asks for (if free and in
/// range) or a free one, and fills `clusterIPs`, `ipFamilies` and `ipFamilyPolicy`.
pub async fn allocate(
    objects: &ObjectStore,
    info: &ResourceInfo,
    svc: &mut Object,
) -> Result<(), ApiError> {
    if !wants_ip(svc) {
        return Ok(());
    }
    let asked = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let ip = match asked {
        Some(text) => {
            let ip: Ipv4Addr = text
                .parse()
                .map_err(|_| invalid(svc, &text, "must be a valid IP address"))?;
            if !in_range(ip) {
                return Err(invalid(
                    svc,
                    &text,
                    "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
                ));
            }
            if !claim(objects, info, svc, ip).await? {
                return Err(invalid(svc, &text, "provided IP is already allocated"));
            }
            ip
        }
        None => {
            let size = 1u32 << (32 - PREFIX_LEN);
            let mut found = None;
            for _ in 0..ATTEMPTS {
                // Skip the network address, .1 (the kubernetes Service) and broadcast.
                let offset = 2 + (uuid::Uuid::new_v4().as_u128() as u32) % (size - 3);
                let ip = Ipv4Addr::from(BASE + offset);
                if claim(objects, info, svc, ip).await? {
                    found = Some(ip);
                    break;
                }
            }
            found.ok_or_else(|| {
                ApiError::internal("failed to allocate a service IP: range is full")
            })?
        }
    };
    let spec = &mut svc["spec"];
    spec["clusterIP"] = json!(ip.to_string());
    spec["clusterIPs"] = json!([ip.to_string()]);
    spec["ipFamilies"] = json!(["IPv4"]);
    if spec.get("ipFamilyPolicy").is_none() {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    Ok(())
}

/// Releases the cluster IP of a deleted (or never stored) Service.
pub async fn release(objects: &ObjectStore, svc: &Object) {
    let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) else {
        return;
    };
    if ip.is_empty() || ip == "None" {
        return;
    }
    let key = format!("{CLAIMS}{ip}");
    if let Ok(resp) = objects.store().get(&key, 0).await
        && let Some(kv) = resp.kv
        && kv.value.as_ref() == owner(svc).as_bytes()
    {
        let _ = objects
            .store()
            .delete(&key, Precondition::ModRevision(kv.mod_revision))
            .await;
    }
}

/// Keeps what the server allocated when an update leaves it out, as
/// upstream's `patchAllocatedValues`; changing it is refused by validation.
pub fn keep_allocated(new: &mut Object, old: &Object) {
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = new
            .pointer(&format!("/spec/{field}"))
            .is_none_or(|v| v.is_null() || v == "");
        if missing
            && let Some(v) = old.pointer(&format!("/spec/{field}"))
            && new.get("spec").is_some_and(Value::is_object)
        {
            new["spec"][field] = v.clone();
        }
    }
}

/// `spec.clusterIP` may not change once set.
pub fn validate_update(new: &Object, old: &Object) -> Vec<Cause> {
    let ip = |o: &Object| o.pointer("/spec/clusterIP").cloned().unwrap_or(Value::Null);
    if ip(old) != Value::Null && ip(new) != ip(old) {
        vec![Cause::invalid(
            "spec.clusterIPs[0]",
            &ip(new),
            "may not change once set",
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_kinds() {
        assert!(in_range("10.96.0.10".parse().expect("ip")));
        assert!(in_range("10.111.255.254".parse().expect("ip")));
        assert!(!in_range("10.112.0.1".parse().expect("ip")));
        assert!(!wants_ip(&json!({"spec": {"type": "ExternalName"}})));
        assert!(!wants_ip(&json!({"spec": {"clusterIP": "None"}})));
        assert!(wants_ip(&json!({"spec": {"type": "ClusterIP"}})));
    }

    #[test]
    fn updates_keep_the_ip_and_cannot_change_it() {
        let old = json!({"spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"]}});
        let mut new = json!({"spec": {"ports": []}});
        keep_allocated(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert!(validate_update(&new, &old).is_empty());
        let changed = json!({"spec": {"clusterIP": "10.96.0.6"}});
        assert_eq!(validate_update(&changed, &old).len(), 1);
    }
}
