//! Where `pods/{id}/proxy` and `services/{id}/proxy` lead: the pod's IP, or
//! a ready endpoint of the service, from an id `name`, `name:port` or
//! `scheme:name:port`, decided as upstream's `ResourceLocation`s decide it.

use std::net::IpAddr;

use kybern_apimachinery::{ApiError, StatusReason};
use serde_json::Value;

/// The backend a proxied request goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// `http` or `https`.
    pub scheme: String,
    /// The IP address.
    pub ip: IpAddr,
    /// The port; `None` leaves the scheme's own.
    pub port: Option<u16>,
}

impl Location {
    /// `host[:port]` as in a URL's authority (IPv6 in brackets).
    pub fn authority(&self) -> String {
        let host = match self.ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The port to dial.
    pub fn dial_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.scheme == "https" { 443 } else { 80 })
    }
}

/// A proxy id split as upstream's `SplitSchemeNamePort` splits it; `None`
/// for more than three parts, an empty name or a scheme other than `http`
/// and `https`.
pub fn split_id(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// An address a proxied request may go to: a global unicast address, as
/// upstream requires, so that the API server is not made to reach its own
/// loopback, link-local or multicast neighbours through a pod's status.
fn proxyable(ip: &str) -> Option<IpAddr> {
    let ip: IpAddr = ip.parse().ok()?;
    let global_unicast = match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || v6.is_unicast_link_local())
        }
    };
    global_unicast.then_some(ip)
}

/// Upstream's 503 for a proxy target it cannot find or reach: without the
/// `Retry-After` our other 503s carry, so that clients do not send again
/// what will fail again.
pub fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusReason::ServiceUnavailable, message)
}

fn port_number(port: &str, what: &str) -> Result<Option<u16>, ApiError> {
    if port.is_empty() {
        return Ok(None);
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("invalid {what} port {port:?}")))
}

fn scheme_or_http(scheme: &str) -> String {
    if scheme.is_empty() { "http" } else { scheme }.to_owned()
}

/// Where `pods/{id}/proxy` leads for `pod`: its IP, at the id's port or else
/// the first port a container declares.
pub fn pod_location(pod: &Value, scheme: &str, port: &str) -> Result<Location, ApiError> {
    let declared = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c["ports"].get(0)?["containerPort"].as_u64())
        .map(|p| p.to_string());
    let port = if port.is_empty() {
        declared.unwrap_or_default()
    } else {
        port.to_owned()
    };
    let ip = pod["status"]["podIP"]
        .as_str()
        .and_then(proxyable)
        .ok_or_else(|| ApiError::bad_request("address not allowed"))?;
    Ok(Location {
        scheme: scheme_or_http(scheme),
        ip,
        port: port_number(&port, "pod")?,
    })
}

/// The name of `service`'s port that the id's port names: the port of that
/// name, or with that number (upstream maps a number to its port's name).
pub fn service_port_name(service: &Value, port: &str) -> Result<String, ApiError> {
    let Ok(number) = port.parse::<u64>() else {
        return Ok(port.to_owned());
    };
    let name = service["metadata"]["name"].as_str().unwrap_or_default();
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(number))
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .ok_or_else(|| {
            unavailable(format!(
                "no service port {number} found for service {name:?}"
            ))
        })
}

/// Where `services/{id}/proxy` leads: a ready address of `endpoints` that
/// serves the port named `port_name` and belongs to a pod `is_pod` accepts
/// (upstream proxies only to addresses that are pods). `start` picks where
/// the search begins, so that requests spread over the addresses.
pub fn service_location(
    endpoints: &Value,
    scheme: &str,
    port_name: &str,
    start: usize,
    is_pod: impl Fn(&Value) -> bool,
) -> Result<Location, ApiError> {
    let name = endpoints["metadata"]["name"].as_str().unwrap_or_default();
    let none = || unavailable(format!("no endpoints available for service {name:?}"));
    let subsets = endpoints["subsets"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or_else(none)?;
    for i in 0..subsets.len() {
        let subset = &subsets[(start + i) % subsets.len()];
        let Some(addresses) = subset["addresses"].as_array().filter(|a| !a.is_empty()) else {
            continue;
        };
        for port in subset["ports"].as_array().into_iter().flatten() {
            if port["name"].as_str().unwrap_or_default() != port_name {
                continue;
            }
            let Some(number) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for j in 0..addresses.len() {
                let address = &addresses[(start + j) % addresses.len()];
                if !is_pod(address) {
                    continue;
                }
                if let Some(ip) = address["ip"].as_str().and_then(proxyable) {
                    return Ok(Location {
                        scheme: scheme_or_http(scheme),
                        ip,
                        port: Some(number),
                    });
                }
            }
        }
    }
    Err(none())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_split_as_upstream_splits_them() {
        assert_eq!(split_id("web"), Some(("", "web", "")));
        assert_eq!(split_id("web:8080"), Some(("", "web", "8080")));
        assert_eq!(split_id("https:web:443"), Some(("https", "web", "443")));
        assert_eq!(split_id("https:web:"), Some(("https", "web", "")));
        assert_eq!(split_id("ftp:web:21"), None);
        assert_eq!(split_id(":8080"), None);
        assert_eq!(split_id("a:b:c:d"), None);
    }

    fn pod(ip: &str) -> Value {
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "ports": [{"containerPort": 8080}, {"containerPort": 9090}]}]},
            "status": {"podIP": ip}})
    }

    #[test]
    fn a_pod_is_reached_at_its_first_declared_port_unless_one_is_named() {
        let at = pod_location(&pod("10.42.0.7"), "", "").expect("location");
        assert_eq!(
            (at.scheme.as_str(), at.authority()),
            ("http", "10.42.0.7:8080".to_owned())
        );
        let at = pod_location(&pod("10.42.0.7"), "https", "8443").expect("location");
        assert_eq!(
            (at.scheme.as_str(), at.authority()),
            ("https", "10.42.0.7:8443".to_owned())
        );
        let bare = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"podIP": "fd00::7"}});
        let at = pod_location(&bare, "", "").expect("location");
        assert_eq!(
            (at.authority(), at.dial_port()),
            ("[fd00::7]".to_owned(), 80)
        );
    }

    #[test]
    fn a_pod_without_a_reachable_address_is_refused() {
        for ip in [
            "",
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "224.0.0.1",
            "0.0.0.0",
        ] {
            let err = pod_location(&pod(ip), "", "").expect_err(ip);
            assert_eq!(err.code(), 400, "{ip}");
        }
        let err = pod_location(&pod("10.0.0.1"), "", "http").expect_err("port");
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn a_service_port_number_is_mapped_to_its_name() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 81}]}});
        assert_eq!(service_port_name(&svc, "81").expect("port"), "admin");
        assert_eq!(service_port_name(&svc, "http").expect("port"), "http");
        assert_eq!(service_port_name(&svc, "").expect("port"), "");
        assert_eq!(
            service_port_name(&svc, "82").expect_err("no port").code(),
            503
        );
    }

    fn endpoints() -> Value {
        json!({"metadata": {"name": "web"}, "subsets": [
            {"notReadyAddresses": [{"ip": "10.42.0.9"}], "ports": [{"name": "http", "port": 8080}]},
            {"addresses": [{"ip": "10.42.0.5", "targetRef": {"kind": "Pod", "name": "a"}},
                           {"ip": "10.42.0.6", "targetRef": {"kind": "Pod", "name": "b"}}],
             "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]}]})
    }

    #[test]
    fn a_service_is_reached_at_a_ready_pod_address_serving_the_port() {
        let all = |_: &Value| true;
        let at = service_location(&endpoints(), "", "admin", 0, all).expect("location");
        assert_eq!(at.authority(), "10.42.0.5:9090");
        let at = service_location(&endpoints(), "", "http", 1, all).expect("location");
        assert_eq!(at.authority(), "10.42.0.6:8080");
        let only_b = |a: &Value| a["targetRef"]["name"] == "b";
        let at = service_location(&endpoints(), "https", "http", 0, only_b).expect("location");
        assert_eq!(
            (at.scheme.as_str(), at.authority()),
            ("https", "10.42.0.6:8080".to_owned())
        );
    }

    #[test]
    fn a_service_without_a_usable_endpoint_is_unavailable() {
        let all = |_: &Value| true;
        let none = |_: &Value| false;
        assert_eq!(
            service_location(&endpoints(), "", "metrics", 0, all)
                .expect_err("port")
                .code(),
            503
        );
        assert_eq!(
            service_location(&endpoints(), "", "http", 0, none)
                .expect_err("pods")
                .code(),
            503
        );
        let empty = json!({"metadata": {"name": "web"}});
        let err = service_location(&empty, "", "", 0, all).expect_err("empty");
        assert_eq!(err.code(), 503);
        assert!(
            err.to_status()["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no endpoints available for service \"web\"")
        );
    }
}
