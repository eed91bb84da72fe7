//! Certificates a node asks the cluster for: a CertificateSigningRequest
//! for `system:node:NAME` in `system:nodes` with a fresh key, waited on
//! until the signer answers, as the kubelet's certificate manager does.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};

use crate::AgentError;

/// The signer of node agents' client certificates.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of node agents' serving certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// How long a request is waited on before giving up.
const WAIT: Duration = Duration::from_secs(300);
/// How often the request is looked at while waiting.
const POLL: Duration = Duration::from_millis(200);

/// What a node asks for.
#[derive(Clone, Debug)]
pub struct CertificateAsk {
    /// The node's name: the subject is `system:node:NAME`.
    pub node: String,
    /// The signer (`KUBELET_CLIENT` or `KUBELET_SERVING`).
    pub signer: &'static str,
    /// Key usages, upstream's spelling (`digital signature`, `client auth`, ...).
    pub usages: &'static [&'static str],
    /// DNS names to cover (serving certificates only).
    pub dns_names: Vec<String>,
    /// IP addresses to cover (serving certificates only).
    pub ips: Vec<IpAddr>,
}

impl CertificateAsk {
    /// The node's client certificate.
    pub fn client(node: &str) -> Self {
        CertificateAsk {
            node: node.to_owned(),
            signer: KUBELET_CLIENT,
            usages: &["digital signature", "client auth"],
            dns_names: Vec::new(),
            ips: Vec::new(),
        }
    }

    /// The node's serving certificate for its name and `ips`. ECDSA keys
    /// need no `key encipherment`, as the kubelet asks for them.
    pub fn serving(node: &str, ips: Vec<IpAddr>) -> Self {
        CertificateAsk {
            node: node.to_owned(),
            signer: KUBELET_SERVING,
            usages: &["digital signature", "server auth"],
            dns_names: vec![node.to_owned()],
            ips,
        }
    }

    /// A new key and the PEM request for it.
    fn request_pem(&self) -> Result<(rcgen::KeyPair, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(self.dns_names.clone())?;
        params
            .subject_alt_names
            .extend(self.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("system:node:{}", self.node),
        );
        let pem = params.serialize_request(&key)?.pem()?;
        Ok((key, pem))
    }
}

fn refused(what: impl std::fmt::Display) -> AgentError {
    AgentError::Certificate(what.to_string())
}

/// Asks the cluster, through `client`, for the certificate `ask` describes
/// and waits until it is signed: the certificate and its key (PEM).
pub async fn request(
    client: kube::Client,
    ask: &CertificateAsk,
) -> Result<(String, String), AgentError> {
    let (key, pem) = ask.request_pem().map_err(refused)?;
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": ask.signer, "usages": ask.usages}}))
    .map_err(refused)?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, node = %ask.node, signer = ask.signer, "waiting for a certificate");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = api.get(&name).await?.status.unwrap_or_default();
        if let Some(c) = status.certificate.filter(|c| !c.0.is_empty()) {
            let certificate = String::from_utf8(c.0).map_err(refused)?;
            tracing::info!(csr = %name, node = %ask.node, signer = ask.signer, "certificate issued");
            return Ok((certificate, key.serialize_pem()));
        }
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| matches!(c.type_.as_str(), "Denied" | "Failed") && c.status != "False")
        {
            return Err(refused(format!(
                "certificate request {name} {}: {}",
                c.type_.to_lowercase(),
                c.message.clone().unwrap_or_default()
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(refused(format!(
                "certificate request {name} not signed after {WAIT:?}: is it approved?"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_request_names_the_node_and_its_addresses() {
        let ask = CertificateAsk::serving("n1", vec!["10.0.0.7".parse().expect("ip")]);
        let (_, pem) = ask.request_pem().expect("request");
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).expect("parses");
        let sans = &parsed.params.subject_alt_names;
        assert!(sans.contains(&rcgen::SanType::DnsName("n1".try_into().expect("dns"))));
        assert!(sans.contains(&rcgen::SanType::IpAddress("10.0.0.7".parse().expect("ip"))));
        let cn = parsed
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .expect("cn");
        assert_eq!(
            cn,
            &rcgen::DnValue::Utf8String("system:node:n1".into()),
            "subject"
        );
    }

    #[test]
    fn a_client_request_has_no_alternative_names() {
        let (_, pem) = CertificateAsk::client("n1").request_pem().expect("request");
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).expect("parses");
        assert!(parsed.params.subject_alt_names.is_empty());
    }
}
