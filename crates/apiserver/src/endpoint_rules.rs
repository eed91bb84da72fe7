//! Upstream's validation of where a Service's traffic goes: Endpoints
//! subsets and EndpointSlices (addresses of the slice's type, not special
//! ones, and named, supported ports), with upstream's paths and messages.

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{PORT_RANGE, PROTOCOLS, immutable, items, text};

/// The most endpoints one slice holds.
const MAX_ENDPOINTS: usize = 1000;
/// The most addresses one endpoint of a slice holds.
const MAX_ADDRESSES: usize = 100;
/// The most ports one slice holds.
const MAX_PORTS: usize = 20000;

/// Upstream's `ValidateNonSpecialIP`: a backend address that routes
/// somewhere other than the host itself.
fn non_special(ip: std::net::IpAddr, raw: &str, at: &str, causes: &mut Vec<Cause>) {
    use std::net::IpAddr;
    let why = match ip {
        _ if ip.is_unspecified() => Some("may not be unspecified (0.0.0.0, ::)"),
        _ if ip.is_loopback() => Some("may not be in the loopback range (127.0.0.0/8, ::1/128)"),
        IpAddr::V4(a) if a.is_link_local() => {
            Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
        }
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
            Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
        }
        IpAddr::V4(a) if a.octets()[..3] == [224, 0, 0] => {
            Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
        }
        IpAddr::V6(a) if a.segments()[0] & 0xff0f == 0xff02 => {
            Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
        }
        _ => None,
    };
    if let Some(why) = why {
        causes.push(Cause::invalid(at, &json!(raw), why));
    }
}

/// A port of an Endpoints subset (`validateEndpointPort`).
fn endpoint_port(p: &Value, require_name: bool, at: &str, causes: &mut Vec<Cause>) {
    match text(p, "name").filter(|n| !n.is_empty()) {
        None if require_name => causes.push(Cause::required(format!("{at}.name"), "")),
        None => {}
        Some(name) => {
            for msg in names::dns1123_label(name) {
                causes.push(Cause::invalid(format!("{at}.name"), &json!(name), msg));
            }
        }
    }
    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=65535).contains(&port) {
        causes.push(Cause::invalid(
            format!("{at}.port"),
            &json!(port),
            PORT_RANGE,
        ));
    }
    protocol(p, at, causes);
    app_protocol(p, at, causes);
}

fn protocol(p: &Value, at: &str, causes: &mut Vec<Cause>) {
    match text(p, "protocol") {
        None => causes.push(Cause::required(format!("{at}.protocol"), "")),
        Some(proto) if !PROTOCOLS.contains(&proto) => causes.push(Cause::not_supported(
            format!("{at}.protocol"),
            &json!(proto),
            PROTOCOLS,
        )),
        Some(_) => {}
    }
}

fn app_protocol(p: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(app) = text(p, "appProtocol") {
        for msg in names::qualified_name(app) {
            causes.push(Cause::invalid(
                format!("{at}.appProtocol"),
                &json!(app),
                msg,
            ));
        }
    }
}

/// A hostname and node name of an address or an endpoint.
fn host_names(v: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(h) = text(v, "hostname").filter(|h| !h.is_empty()) {
        for msg in names::dns1123_label(h) {
            causes.push(Cause::invalid(format!("{at}.hostname"), &json!(h), msg));
        }
    }
    if let Some(n) = text(v, "nodeName") {
        for msg in names::dns1123_subdomain(n) {
            causes.push(Cause::invalid(format!("{at}.nodeName"), &json!(n), msg));
        }
    }
}

/// An Endpoints object: each subset has addresses, each a routable IP, and
/// ports named when there are several.
pub fn endpoints(obj: &Value, causes: &mut Vec<Cause>) {
    for (i, subset) in items(Some(obj), "subsets").enumerate() {
        let at = format!("subsets[{i}]");
        let ready: Vec<&Value> = items(Some(subset), "addresses").collect();
        let not_ready: Vec<&Value> = items(Some(subset), "notReadyAddresses").collect();
        if ready.is_empty() && not_ready.is_empty() {
            causes.push(Cause::required(
                &at,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (list, addresses) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, a) in addresses.into_iter().enumerate() {
                let at = format!("{at}.{list}[{j}]");
                let raw = text(a, "ip").unwrap_or("");
                match raw.parse::<std::net::IpAddr>() {
                    Ok(ip) => non_special(ip, raw, &format!("{at}.ip"), causes),
                    Err(_) => causes.push(Cause::invalid(
                        format!("{at}.ip"),
                        &json!(raw),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )),
                }
                host_names(a, &at, causes);
            }
        }
        let ports: Vec<&Value> = items(Some(subset), "ports").collect();
        for (k, p) in ports.iter().enumerate() {
            endpoint_port(p, ports.len() > 1, &format!("{at}.ports[{k}]"), causes);
        }
    }
}

/// Upstream's `IsFullyQualifiedDomainName`.
fn fqdn(name: &str, at: &str, causes: &mut Vec<Cause>) {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        causes.push(Cause::required(at, ""));
        return;
    }
    if name.split('.').count() < 2 {
        causes.push(Cause::invalid(
            at,
            &json!(name),
            "should be a domain with at least two segments separated by dots",
        ));
        return;
    }
    for msg in names::dns1123_subdomain(name) {
        causes.push(Cause::invalid(at, &json!(name), msg));
    }
}

/// An EndpointSlice: a known address type kept once set, endpoints with
/// one to a hundred addresses of that type, and distinctly named ports.
pub fn endpoint_slice(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let ty = text(obj, "addressType").unwrap_or("");
    match ty {
        "" => causes.push(Cause::required("addressType", "")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => causes.push(Cause::not_supported(
            "addressType",
            &json!(other),
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    immutable(obj, old, "/addressType", "addressType", causes);
    let endpoints: Vec<&Value> = items(Some(obj), "endpoints").collect();
    if endpoints.len() > MAX_ENDPOINTS {
        causes.push(Cause::too_many("endpoints", endpoints.len(), MAX_ENDPOINTS));
    } else {
        for (i, e) in endpoints.into_iter().enumerate() {
            let at = format!("endpoints[{i}]");
            slice_endpoint(e, ty, &at, causes);
        }
    }
    let ports: Vec<&Value> = items(Some(obj), "ports").collect();
    if ports.len() > MAX_PORTS {
        causes.push(Cause::too_many("ports", ports.len(), MAX_PORTS));
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, p) in ports.into_iter().enumerate() {
        let at = format!("ports[{i}]");
        let name = text(p, "name").unwrap_or("");
        if !name.is_empty() {
            for msg in names::dns1123_label(name) {
                causes.push(Cause::invalid(format!("{at}.name"), &json!(name), msg));
            }
        }
        if seen.contains(&name) {
            causes.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
        } else {
            seen.push(name);
        }
        protocol(p, &at, causes);
        if let Some(n) = p.get("port").and_then(Value::as_i64)
            && !(1..=65535).contains(&n)
        {
            causes.push(Cause::invalid(format!("{at}.port"), &json!(n), PORT_RANGE));
        }
        app_protocol(p, &at, causes);
    }
}

fn slice_endpoint(e: &Value, ty: &str, at: &str, causes: &mut Vec<Cause>) {
    let addresses: Vec<&Value> = items(Some(e), "addresses").collect();
    let list = format!("{at}.addresses");
    if addresses.is_empty() {
        causes.push(Cause::required(&list, "must contain at least 1 address"));
    } else if addresses.len() > MAX_ADDRESSES {
        causes.push(Cause::too_many(&list, addresses.len(), MAX_ADDRESSES));
    }
    for (j, a) in addresses.into_iter().enumerate() {
        let at = format!("{list}[{j}]");
        let raw = a.as_str().unwrap_or("");
        let parsed = raw.parse::<std::net::IpAddr>().ok();
        match ty {
            "IPv4" => match parsed.filter(std::net::IpAddr::is_ipv4) {
                Some(ip) => non_special(ip, raw, &at, causes),
                None => causes.push(Cause::invalid(
                    &at,
                    &json!(raw),
                    "must be a valid IPv4 address",
                )),
            },
            "IPv6" => match parsed.filter(std::net::IpAddr::is_ipv6) {
                Some(ip) => non_special(ip, raw, &at, causes),
                None => causes.push(Cause::invalid(
                    &at,
                    &json!(raw),
                    "must be a valid IPv6 address",
                )),
            },
            "FQDN" => fqdn(raw, &at, causes),
            _ => {}
        }
    }
    host_names(e, at, causes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines as lines;

    #[test]
    fn endpoints_hold_routable_addresses_and_named_ports() {
        let mut causes = Vec::new();
        endpoints(
            &json!({"subsets": [
                {"ports": [{"port": 80, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.1.2.3", "hostname": "Web"}, {"ip": "127.0.0.1"}],
                 "notReadyAddresses": [{"ip": "nope"}, {"ip": "fe80::1"}],
                 "ports": [{"port": 80, "protocol": "TCP"}, {"name": "b", "port": 0, "protocol": "ICMP"}]}]}),
            &mut causes,
        );
        let got = lines(&causes);
        assert_eq!(
            got[0],
            "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`"
        );
        assert!(got[1].starts_with("subsets[1].addresses[0].hostname: Invalid value: \"Web\""));
        assert_eq!(
            got[2],
            "subsets[1].addresses[1].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
        assert!(got[3].starts_with("subsets[1].notReadyAddresses[0].ip: Invalid value: \"nope\""));
        assert!(got[4].ends_with("may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
        assert_eq!(got[5], "subsets[1].ports[0].name: Required value");
        assert!(got[6].starts_with("subsets[1].ports[1].port: Invalid value: 0"));
        assert!(got[7].starts_with("subsets[1].ports[1].protocol: Unsupported value: \"ICMP\""));
        assert_eq!(got.len(), 8, "{got:?}");
    }

    #[test]
    fn endpoint_slices_keep_to_their_address_type() {
        let mut causes = Vec::new();
        endpoint_slice(
            &json!({"addressType": "IPv4", "endpoints": [
                {"addresses": ["10.0.0.1", "::1"]}, {"addresses": []}, {"addresses": ["224.0.0.5"], "nodeName": "Node_1"}],
                "ports": [{"name": "", "protocol": "TCP", "port": 80}, {"name": "", "protocol": "TCP"}, {"name": "x"}]}),
            Some(&json!({"addressType": "IPv6"})),
            &mut causes,
        );
        let got = lines(&causes);
        assert_eq!(
            got,
            vec![
                "addressType: Invalid value: \"IPv4\": field is immutable",
                "endpoints[0].addresses[1]: Invalid value: \"::1\": must be a valid IPv4 address",
                "endpoints[1].addresses: Required value: must contain at least 1 address",
                "endpoints[2].addresses[0]: Invalid value: \"224.0.0.5\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
                got[4].as_str(),
                "ports[1].name: Duplicate value: \"\"",
                "ports[2].protocol: Required value",
            ]
        );
        assert!(got[4].starts_with("endpoints[2].nodeName: Invalid value: \"Node_1\""));
        let mut causes = Vec::new();
        endpoint_slice(
            &json!({"addressType": "FQDN", "endpoints": [{"addresses": ["localhost", "db.example.com."]}]}),
            None,
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "endpoints[0].addresses[0]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"
            ]
        );
    }
}
