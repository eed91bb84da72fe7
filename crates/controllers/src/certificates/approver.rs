//! The approver (upstream's csrapproving): node client requests after a
//! SubjectAccessReview of their requester, as upstream; and, beyond
//! upstream (which leaves them to an administrator or a third-party
//! approver), a node's own serving request when it names only the
//! addresses that node reports.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::SanType;
use serde_json::json;

use super::{
    KUBELET_CLIENT, KUBELET_SERVING, Request, is_node_client, is_serving, parse, usages,
    with_condition,
};
use crate::ControllerError;

/// Approves `csr` when it is a node's request that may be approved
/// without a human; leaves every other request as it is.
pub(super) async fn approve(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
) -> Result<(), ControllerError> {
    match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT => approve_node_client(client, csr).await,
        KUBELET_SERVING => approve_node_serving(client, csr).await,
        _ => Ok(()),
    }
}

/// Approves a node client request when its requester may create one: a
/// node renewing its own certificate (`selfnodeclient`), or a bootstrap
/// identity asking for a node's (`nodeclient`).
async fn approve_node_client(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
) -> Result<(), ControllerError> {
    let Ok(request) = parse(csr) else {
        return Ok(());
    };
    if !is_node_client(csr, &request) {
        return Ok(());
    }
    let username = csr.spec.username.clone().unwrap_or_default();
    let subresource = if username == request.common_name {
        "selfnodeclient"
    } else {
        "nodeclient"
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            uid: csr.spec.uid.clone(),
            groups: csr.spec.groups.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = reviews.create(&PostParams::default(), &review).await?;
    if !answer.status.is_some_and(|s| s.allowed) {
        return Ok(());
    }
    approve_with(
        client,
        csr,
        "Auto approving kubelet client certificate after SubjectAccessReview.",
    )
    .await
}

/// Approves a node's serving request when the node asks for itself and
/// every name it asks for is the node's name or one of the addresses in
/// its status: the API server dials those addresses and checks the
/// certificate names the node it dials.
async fn approve_node_serving(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
) -> Result<(), ControllerError> {
    let Ok(request) = parse(csr) else {
        return Ok(());
    };
    let Some(node_name) = request.common_name.strip_prefix("system:node:") else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get_opt(node_name).await?;
    let name = csr.metadata.name.clone().unwrap_or_default();
    if let Some(why) = serving_refusal(csr, &request, node.as_ref()) {
        tracing::info!(csr = %name, reason = %why, "leaving a serving certificate request for a human");
        return Ok(());
    }
    approve_with(
        client,
        csr,
        "Auto approving kubelet serving certificate: it names only the node and its addresses.",
    )
    .await
}

/// Why a kubelet serving request is not approved automatically, or `None`
/// when it is.
fn serving_refusal(
    csr: &CertificateSigningRequest,
    request: &Request,
    node: Option<&Node>,
) -> Option<String> {
    let requester = csr.spec.username.as_deref().unwrap_or_default();
    let in_nodes = csr
        .spec
        .groups
        .iter()
        .flatten()
        .any(|g| g == "system:nodes");
    if requester != request.common_name || !in_nodes {
        return Some(format!("{requester} does not ask for itself"));
    }
    if request.organizations != ["system:nodes"] {
        return Some("the subject's organization is not system:nodes".into());
    }
    let usages = usages(csr);
    if !is_serving(&usages) {
        return Some(format!("usages {usages:?} are not a serving certificate's"));
    }
    let Some(node) = node else {
        return Some(format!("node {} does not exist", request.common_name));
    };
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let addresses: Vec<(&str, &str)> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    let sans = &request.params.params.subject_alt_names;
    if sans.is_empty() {
        return Some("it names no host".into());
    }
    for san in sans {
        let allowed = match san {
            SanType::DnsName(dns) => {
                dns.as_str() == node_name
                    || addresses.iter().any(|(t, a)| {
                        matches!(*t, "Hostname" | "InternalDNS" | "ExternalDNS")
                            && a.eq_ignore_ascii_case(dns.as_str())
                    })
            }
            SanType::IpAddress(ip) => addresses.iter().any(|(t, a)| {
                matches!(*t, "InternalIP" | "ExternalIP")
                    && a.parse::<std::net::IpAddr>().is_ok_and(|a| a == *ip)
            }),
            _ => false,
        };
        if !allowed {
            return Some(format!("{san:?} is not among the node's addresses"));
        }
    }
    None
}

/// Adds the `Approved` condition through the `approval` subresource.
async fn approve_with(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    message: &str,
) -> Result<(), ControllerError> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let requester = csr.spec.username.as_deref().unwrap_or_default();
    tracing::info!(csr = %name, %requester, signer = %csr.spec.signer_name, "approving node certificate");
    let conditions = with_condition(csr, "Approved", "AutoApproved", message);
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let patch = json!({"status": {"conditions": conditions}});
    api.patch_subresource(
        "approval",
        &name,
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn serving_request(user: &str, cn: &str, names: &[&str]) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let pem = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        serde_json::from_value(json!({"metadata": {"name": "r"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": KUBELET_SERVING, "usages": ["digital signature", "server auth"],
            "username": user, "groups": ["system:nodes", "system:authenticated"]}}))
        .expect("csr object")
    }

    fn node(name: &str, ip: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {"addresses": [
            {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "host-a"}]}}))
        .expect("node")
    }

    fn refusal(csr: &CertificateSigningRequest, node: Option<&Node>) -> Option<String> {
        serving_refusal(csr, &parse(csr).expect("parse"), node)
    }

    #[test]
    fn a_node_asking_for_its_own_names_is_approved() {
        let csr = serving_request(
            "system:node:n1",
            "system:node:n1",
            &["n1", "10.0.0.7", "host-a"],
        );
        assert_eq!(refusal(&csr, Some(&node("n1", "10.0.0.7"))), None);
    }

    #[test]
    fn other_nodes_names_addresses_or_requesters_are_left_for_a_human() {
        let n1 = node("n1", "10.0.0.7");
        // Another node's address.
        let csr = serving_request("system:node:n1", "system:node:n1", &["n1", "10.0.0.8"]);
        assert!(refusal(&csr, Some(&n1)).is_some());
        // A name the node does not have.
        let csr = serving_request("system:node:n1", "system:node:n1", &["kubernetes.default"]);
        assert!(refusal(&csr, Some(&n1)).is_some());
        // Asked for by someone else.
        let csr = serving_request("system:node:n2", "system:node:n1", &["n1"]);
        assert!(refusal(&csr, Some(&n1)).is_some());
        // No such node.
        let csr = serving_request("system:node:n1", "system:node:n1", &["n1"]);
        assert!(refusal(&csr, None).is_some());
        // Nothing to serve.
        let csr = serving_request("system:node:n1", "system:node:n1", &[]);
        assert!(refusal(&csr, Some(&n1)).is_some());
    }
}
