//! Upstream's validation of the `networking.k8s.io` kinds: NetworkPolicy
//! peers and ports, Ingress rules, paths, backends and TLS, and
//! IngressClass controllers and parameters
//! (`pkg/apis/networking/validation`, paths and messages as upstream's).

use kybern_apimachinery::{Cause, names};
use serde_json::{Value, json};

use crate::field_rules::{CIDR, PORT_RANGE, cidr, immutable, items, one_of, port_name, text};
use crate::scheduling_rules::label_selector;

/// The longest IngressClass controller name.
const MAX_CONTROLLER: usize = 250;

/// The object at `key` of `v`, when one is given.
fn given<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A NetworkPolicy's spec: its pod selector, each rule's ports and peers,
/// and its policy types.
pub fn network_policy(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = given(obj, "spec") else {
        return;
    };
    if let Some(sel) = given(spec, "podSelector") {
        label_selector(sel, "spec.podSelector", causes);
    }
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in items(Some(spec), dir).enumerate() {
            let at = format!("spec.{dir}[{i}]");
            for (j, port) in items(Some(rule), "ports").enumerate() {
                policy_port(port, &format!("{at}.ports[{j}]"), causes);
            }
            for (j, peer) in items(Some(rule), peers).enumerate() {
                policy_peer(peer, &format!("{at}.{peers}[{j}]"), causes);
            }
        }
    }
    let types: Vec<&Value> = items(Some(spec), "policyTypes").collect();
    if types.len() > 2 {
        causes.push(Cause::invalid(
            "spec.policyTypes",
            &spec["policyTypes"],
            "may not specify more than two policyTypes",
        ));
        return;
    }
    for (i, t) in types.iter().enumerate() {
        if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
            causes.push(Cause::not_supported(
                format!("spec.policyTypes[{i}]"),
                t,
                &["Ingress", "Egress"],
            ));
        }
    }
}

fn policy_port(port: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(p) = text(port, "protocol")
        && !matches!(p, "TCP" | "UDP" | "SCTP")
    {
        causes.push(Cause::not_supported(
            format!("{at}.protocol"),
            &json!(p),
            &["TCP", "UDP", "SCTP"],
        ));
    }
    let end = port.get("endPort").and_then(Value::as_i64);
    match given(port, "port") {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                causes.push(Cause::invalid(format!("{at}.port"), &json!(n), PORT_RANGE));
            }
            if let Some(end) = end {
                if end < n {
                    causes.push(Cause::invalid(
                        format!("{at}.endPort"),
                        &json!(n),
                        "must be greater than or equal to `port`",
                    ));
                }
                if !(1..=65535).contains(&end) {
                    causes.push(Cause::invalid(
                        format!("{at}.endPort"),
                        &json!(end),
                        PORT_RANGE,
                    ));
                }
            }
        }
        Some(Value::String(name)) => {
            if let Some(end) = end {
                causes.push(Cause::invalid(
                    format!("{at}.endPort"),
                    &json!(end),
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for msg in port_name(name) {
                causes.push(Cause::invalid(format!("{at}.port"), &json!(name), msg));
            }
        }
        _ => {
            if let Some(end) = end {
                causes.push(Cause::invalid(
                    format!("{at}.endPort"),
                    &json!(end),
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

fn policy_peer(peer: &Value, at: &str, causes: &mut Vec<Cause>) {
    let mut count = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = given(peer, key) {
            count += 1;
            label_selector(sel, &format!("{at}.{key}"), causes);
        }
    }
    let block = given(peer, "ipBlock");
    if let Some(block) = block {
        count += 1;
        ip_block(block, &format!("{at}.ipBlock"), causes);
    }
    if count == 0 {
        causes.push(Cause::required(at, "must specify a peer"));
    } else if count > 1 && block.is_some() {
        causes.push(Cause::forbidden(
            at,
            "may not specify both ipBlock and another peer",
        ));
    }
}

/// Whether `ip` lies in the network `net/len`.
fn contains(net: std::net::IpAddr, len: u8, ip: std::net::IpAddr) -> bool {
    let bits = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32u32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let ((n, nw), (i, iw)) = (bits(net), bits(ip));
    if nw != iw {
        return false;
    }
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    n & mask == i & mask
}

fn ip_block(block: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(net) = text(block, "cidr").filter(|c| !c.is_empty()) else {
        causes.push(Cause::required(format!("{at}.cidr"), ""));
        return;
    };
    let Some((ip, len)) = cidr(net) else {
        causes.push(Cause::invalid(format!("{at}.cidr"), &json!(net), CIDR));
        return;
    };
    for (i, except) in items(Some(block), "except").enumerate() {
        let field = format!("{at}.except[{i}]");
        let e = except.as_str().unwrap_or("");
        match cidr(e) {
            None => causes.push(Cause::invalid(&field, &json!(e), CIDR)),
            Some((eip, elen)) if !contains(ip, len, eip) || len >= elen => {
                causes.push(Cause::invalid(
                    &field,
                    &json!(e),
                    "must be a strict subset of `cidr`",
                ));
            }
            Some(_) => {}
        }
    }
}

/// Upstream's `IsWildcardDNS1123Subdomain`.
fn wildcard_host(host: &str) -> Option<&'static str> {
    match host.strip_prefix("*.") {
        Some(rest) if names::dns1123_subdomain(rest).is_empty() => None,
        _ => Some(
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
    }
}

/// A host name in a rule or a TLS entry: a DNS subdomain, or a wildcard one.
fn host(h: &str, at: &str, causes: &mut Vec<Cause>) {
    if h.contains('*') {
        if let Some(msg) = wildcard_host(h) {
            causes.push(Cause::invalid(at, &json!(h), msg));
        }
    } else {
        for msg in names::dns1123_subdomain(h) {
            causes.push(Cause::invalid(at, &json!(h), msg));
        }
    }
}

/// An Ingress's spec: a default backend or rules, each rule's host and
/// paths, TLS hosts and secrets, the class name.
pub fn ingress(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = given(obj, "spec") else {
        return;
    };
    let default_backend = given(spec, "defaultBackend");
    if items(Some(spec), "rules").next().is_none() && default_backend.is_none() {
        causes.push(Cause::invalid(
            "spec",
            spec.get("rules").unwrap_or(&Value::Null),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default_backend {
        backend(b, "spec.defaultBackend", causes);
    }
    for (i, rule) in items(Some(spec), "rules").enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(h) = text(rule, "host").filter(|h| !h.is_empty()) {
            if h.parse::<std::net::IpAddr>().is_ok() {
                causes.push(Cause::invalid(
                    format!("{at}.host"),
                    &json!(h),
                    "must be a DNS name, not an IP address",
                ));
            }
            host(h, &format!("{at}.host"), causes);
        }
        if let Some(http) = given(rule, "http") {
            let at = format!("{at}.http");
            if items(Some(http), "paths").next().is_none() {
                causes.push(Cause::required(format!("{at}.paths"), ""));
            }
            for (j, p) in items(Some(http), "paths").enumerate() {
                ingress_path(p, &format!("{at}.paths[{j}]"), causes);
            }
        }
    }
    for (i, tls) in items(Some(spec), "tls").enumerate() {
        let at = format!("spec.tls[{i}]");
        for (j, h) in items(Some(tls), "hosts").enumerate() {
            host(
                h.as_str().unwrap_or(""),
                &format!("{at}.hosts[{j}]"),
                causes,
            );
        }
        if let Some(secret) = text(tls, "secretName").filter(|s| !s.is_empty()) {
            for msg in names::dns1123_subdomain(secret) {
                causes.push(Cause::invalid(
                    format!("{at}.secretName"),
                    &json!(secret),
                    msg,
                ));
            }
        }
    }
    if let Some(class) = text(spec, "ingressClassName").filter(|c| !c.is_empty()) {
        for msg in names::dns1123_subdomain(class) {
            causes.push(Cause::invalid("spec.ingressClassName", &json!(class), msg));
        }
    }
}

fn ingress_path(p: &Value, at: &str, causes: &mut Vec<Cause>) {
    let path = text(p, "path").unwrap_or("");
    let field = format!("{at}.path");
    let mut invalid = |msg: String| causes.push(Cause::invalid(&field, &json!(path), msg));
    match text(p, "pathType") {
        None => {
            causes.push(Cause::required(
                format!("{at}.pathType"),
                "pathType must be specified",
            ));
        }
        Some("Exact" | "Prefix") => {
            if !path.starts_with('/') {
                invalid("must be an absolute path".into());
            }
            for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                if path.contains(seq) {
                    invalid(format!("must not contain '{seq}'"));
                }
            }
            for suffix in ["/..", "/."] {
                if path.ends_with(suffix) {
                    invalid(format!("cannot end with '{suffix}'"));
                }
            }
        }
        Some("ImplementationSpecific") => {
            if !path.is_empty() && !path.starts_with('/') {
                invalid("must be an absolute path".into());
            }
        }
        Some(other) => causes.push(Cause::not_supported(
            format!("{at}.pathType"),
            &json!(other),
            &["Exact", "ImplementationSpecific", "Prefix"],
        )),
    }
    match given(p, "backend") {
        Some(b) => backend(b, &format!("{at}.backend"), causes),
        None => causes.push(Cause::invalid(
            format!("{at}.backend"),
            &json!(""),
            "resource or service backend is required",
        )),
    }
}

/// A backend: a Service by name and port, or a typed resource, not both.
fn backend(b: &Value, at: &str, causes: &mut Vec<Cause>) {
    match (given(b, "resource"), given(b, "service")) {
        (Some(_), Some(_)) => causes.push(Cause::invalid(
            at,
            &json!(""),
            "cannot set both resource and service backends",
        )),
        (Some(r), None) => typed_reference(r, &format!("{at}.resource"), causes),
        (None, Some(s)) => {
            match text(s, "name").filter(|n| !n.is_empty()) {
                None => causes.push(Cause::required(format!("{at}.service.name"), "")),
                Some(name) => {
                    for msg in names::dns1035_label(name) {
                        causes.push(Cause::invalid(
                            format!("{at}.service.name"),
                            &json!(name),
                            msg,
                        ));
                    }
                }
            }
            let port = s.get("port");
            let name = port.and_then(|p| text(p, "name")).filter(|n| !n.is_empty());
            let number = port
                .and_then(|p| p.get("number"))
                .and_then(Value::as_i64)
                .filter(|n| *n != 0);
            match (name, number) {
                (Some(_), Some(_)) => causes.push(Cause::invalid(
                    at,
                    &json!(""),
                    "cannot set both port name & port number",
                )),
                (Some(name), None) => {
                    for msg in port_name(name) {
                        causes.push(Cause::invalid(
                            format!("{at}.service.port.name"),
                            &json!(name),
                            msg,
                        ));
                    }
                }
                (None, Some(n)) if !(1..=65535).contains(&n) => causes.push(Cause::invalid(
                    format!("{at}.service.port.number"),
                    &json!(n),
                    PORT_RANGE,
                )),
                (None, Some(_)) => {}
                (None, None) => {
                    causes.push(Cause::required(at, "port name or number is required"));
                }
            }
        }
        (None, None) => causes.push(Cause::invalid(
            at,
            &json!(""),
            "resource or service backend is required",
        )),
    }
}

/// A typed reference to another object (a resource backend, an
/// IngressClass's parameters).
fn typed_reference(r: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(group) = text(r, "apiGroup") {
        for msg in names::dns1123_subdomain(group) {
            causes.push(Cause::invalid(format!("{at}.apiGroup"), &json!(group), msg));
        }
    }
    for key in ["kind", "name"] {
        match text(r, key).filter(|v| !v.is_empty()) {
            None => causes.push(Cause::required(
                format!("{at}.{key}"),
                format!("{key} is required"),
            )),
            Some(v) => {
                for msg in names::path_segment(v) {
                    causes.push(Cause::invalid(format!("{at}.{key}"), &json!(v), msg));
                }
            }
        }
    }
}

/// An IngressClass's spec: a domain-prefixed controller, kept once set,
/// and parameters with their scope.
pub fn ingress_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let controller = text(spec, "controller").unwrap_or("");
    if controller.len() > MAX_CONTROLLER {
        causes.push(Cause::too_long("spec.controller", MAX_CONTROLLER));
    }
    match controller.split_once('/') {
        _ if controller.is_empty() => causes.push(Cause::required("spec.controller", "")),
        Some((domain, path)) if !domain.is_empty() && !path.is_empty() => {
            for msg in names::dns1123_subdomain(domain) {
                causes.push(Cause::invalid("spec.controller", &json!(domain), msg));
            }
        }
        _ => causes.push(Cause::invalid(
            "spec.controller",
            &json!(controller),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )),
    }
    immutable(obj, old, "/spec/controller", "spec.controller", causes);
    let Some(params) = given(spec, "parameters") else {
        return;
    };
    let at = "spec.parameters";
    typed_reference(params, at, causes);
    let namespace = text(params, "namespace");
    match text(params, "scope") {
        None => causes.push(Cause::required(format!("{at}.scope"), "")),
        Some("Namespace") => match namespace {
            None => causes.push(Cause::required(
                format!("{at}.namespace"),
                "`parameters.scope` is set to 'Namespace'",
            )),
            Some(ns) => {
                for msg in names::dns1123_label(ns) {
                    causes.push(Cause::invalid(format!("{at}.namespace"), &json!(ns), msg));
                }
            }
        },
        Some("Cluster") if namespace.is_some() => causes.push(Cause::forbidden(
            format!("{at}.namespace"),
            "`parameters.scope` is set to 'Cluster'",
        )),
        Some(_) => one_of(params, "scope", at, &["Cluster", "Namespace"], causes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_rules::cause_lines as lines;

    #[test]
    fn network_policies_need_peers_ports_in_range_and_known_types() {
        let mut causes = Vec::new();
        network_policy(
            &json!({"spec": {
                "podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
                "ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16", "10.1.0.0/16"]},
                    "podSelector": {}}],
                    "ports": [{"port": 80, "endPort": 70}, {"port": "http", "endPort": 90}, {"protocol": "ICMP"}]}],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0"}}]}],
                "policyTypes": ["Ingress", "Sideways"]}}),
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "spec.podSelector.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator",
                "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
                "spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
                "spec.ingress[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
                "spec.ingress[0].from[0]: Required value: must specify a peer",
                "spec.ingress[0].from[1].ipBlock.except[0]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[1]: Forbidden: may not specify both ipBlock and another peer",
                "spec.egress[0].to[0].ipBlock.cidr: Invalid value: \"10.0.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"",
            ]
        );
    }

    #[test]
    fn ingresses_need_rules_or_a_default_and_well_formed_paths() {
        let mut causes = Vec::new();
        ingress(&json!({"spec": {}}), &mut causes);
        assert_eq!(
            lines(&causes),
            vec!["spec: Invalid value: null: either `defaultBackend` or `rules` must be specified"]
        );
        let mut causes = Vec::new();
        ingress(
            &json!({"spec": {"rules": [
                {"host": "1.2.3.4", "http": {"paths": [
                    {"path": "a//b", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
                    {"path": "/", "backend": {"service": {"name": "s"}}},
                    {"path": "/", "pathType": "Exact", "backend": {"service": {"name": "S", "port": {"name": "http", "number": 80}}}}]}},
                {"host": "*.example.com", "http": {"paths": []}},
                {"host": "a.*.com"}],
                "tls": [{"hosts": ["Bad_Host"], "secretName": "ok"}]}}),
            &mut causes,
        );
        let got = lines(&causes);
        assert_eq!(got.len(), 10, "{got:?}");
        assert_eq!(
            got[0],
            "spec.rules[0].host: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address"
        );
        assert!(got[1].starts_with(
            "spec.rules[0].http.paths[0].path: Invalid value: \"a//b\": must be an absolute path"
        ));
        assert!(got[2].ends_with("must not contain '//'"));
        assert_eq!(
            got[3],
            "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified"
        );
        assert_eq!(
            got[4],
            "spec.rules[0].http.paths[1].backend: Required value: port name or number is required"
        );
        assert!(
            got[5].starts_with(
                "spec.rules[0].http.paths[2].backend.service.name: Invalid value: \"S\""
            )
        );
        assert!(got[6].ends_with("cannot set both port name & port number"));
        assert_eq!(got[7], "spec.rules[1].http.paths: Required value");
        assert!(got[8].starts_with(
            "spec.rules[2].host: Invalid value: \"a.*.com\": a wildcard DNS-1123 subdomain"
        ));
        assert!(got[9].starts_with("spec.tls[0].hosts[0]: Invalid value: \"Bad_Host\""));
    }

    #[test]
    fn ingress_classes_name_a_domain_prefixed_controller_and_scoped_parameters() {
        let mut causes = Vec::new();
        ingress_class(
            &json!({"spec": {"controller": "nginx", "parameters": {"kind": "K", "name": "n", "scope": "Namespace"}}}),
            Some(&json!({"spec": {"controller": "example.com/nginx"}})),
            &mut causes,
        );
        assert_eq!(
            lines(&causes),
            vec![
                "spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")",
                "spec.controller: Invalid value: \"nginx\": field is immutable",
                "spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'",
            ]
        );
        let mut causes = Vec::new();
        ingress_class(
            &json!({"spec": {"controller": "example.com/ingress", "parameters": {"kind": "K", "name": "n", "scope": "Cluster"}}}),
            None,
            &mut causes,
        );
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn cidrs_contain_only_their_own_addresses() {
        let (net, len) = cidr("10.0.0.0/8").expect("cidr");
        assert!(contains(net, len, "10.200.1.1".parse().expect("ip")));
        assert!(!contains(net, len, "11.0.0.1".parse().expect("ip")));
        assert!(!contains(net, len, "::1".parse().expect("ip")));
        let (net, len) = cidr("0.0.0.0/0").expect("cidr");
        assert!(contains(net, len, "8.8.8.8".parse().expect("ip")));
        assert!(cidr("10.0.0.0/33").is_none());
    }
}
