//! The certificate controllers: the approver of node certificates
//! (upstream's csrapproving, `approver`), and the signer (csrsigning) that signs
//! approved requests for the built-in client and kubelet signers with the
//! cluster CA.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::json;

use crate::ControllerError;
use crate::informer::{Informer, next_change};

mod approver;

/// Node agents' client certificates.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Client certificates for any user.
pub const API_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Node agents' serving certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// The longest certificate the signer issues (upstream's
/// `--cluster-signing-duration` default: a year).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before they are signed, for clock skew.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// How often every request is looked at again without a change.
const RESYNC: Duration = Duration::from_secs(30);

/// The CA the signer signs with, as PEM.
#[derive(Clone, Debug)]
pub struct SigningCa {
    /// The CA certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// Runs the approver and, given a CA, the signer, until the process ends.
pub async fn run(client: kube::Client, ca: Option<SigningCa>) {
    let issuer = ca.and_then(|ca| {
        let key = KeyPair::from_pem(&ca.key_pem).ok()?;
        Issuer::from_ca_cert_pem(&ca.cert_pem, key).ok()
    });
    if issuer.is_none() {
        tracing::info!("no signing CA: approved certificate requests stay unsigned");
    }
    let requests: Arc<Informer<CertificateSigningRequest>> =
        Informer::spawn(Api::all(client.clone()));
    let mut changes = requests.subscribe();
    requests.synced().await;
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            change = next_change(&mut changes) => if change.is_none() { return },
        }
        for csr in requests.state() {
            if let Err(e) = reconcile(&client, &csr, issuer.as_ref()).await {
                let name = csr.metadata.name.as_deref().unwrap_or_default();
                tracing::warn!(csr = %name, error = %e, "certificate request");
            }
        }
    }
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status != "False"))
}

async fn reconcile(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    issuer: Option<&Issuer<'static, KeyPair>>,
) -> Result<(), ControllerError> {
    if has_condition(csr, "Denied") || has_condition(csr, "Failed") {
        return Ok(());
    }
    let signed = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if signed {
        return Ok(());
    }
    if !has_condition(csr, "Approved") {
        return approver::approve(client, csr).await;
    }
    match issuer {
        Some(issuer) => sign(client, csr, issuer).await,
        None => Ok(()),
    }
}

/// What the request asks for, parsed.
pub(super) struct Request {
    pub(super) params: CertificateSigningRequestParams,
    pub(super) common_name: String,
    pub(super) organizations: Vec<String>,
}

pub(super) fn parse(csr: &CertificateSigningRequest) -> Result<Request, String> {
    let pem = String::from_utf8(csr.spec.request.0.clone()).map_err(|e| e.to_string())?;
    let params = CertificateSigningRequestParams::from_pem(&pem).map_err(|e| e.to_string())?;
    let text = |v: &DnValue| match v {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_owned(),
        DnValue::Ia5String(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    };
    let mut common_name = String::new();
    let mut organizations = Vec::new();
    for (kind, value) in params.params.distinguished_name.iter() {
        match kind {
            DnType::CommonName => common_name = text(value),
            DnType::OrganizationName => organizations.push(text(value)),
            _ => {}
        }
    }
    Ok(Request {
        params,
        common_name,
        organizations,
    })
}

/// The request's `spec.usages`.
pub(super) fn usages(csr: &CertificateSigningRequest) -> Vec<&str> {
    csr.spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Whether `usages` are a serving certificate's: `server auth`, and
/// nothing but it, `digital signature` and `key encipherment`.
pub(super) fn is_serving(usages: &[&str]) -> bool {
    usages.contains(&"server auth")
        && usages
            .iter()
            .all(|u| matches!(*u, "server auth" | "digital signature" | "key encipherment"))
}

/// Whether a kubelet client request has the shape upstream requires:
/// `system:node:<name>` in `system:nodes`, no alternative names, and only
/// the usages of a client certificate.
pub(super) fn is_node_client(csr: &CertificateSigningRequest, request: &Request) -> bool {
    let usages = usages(csr);
    request.common_name.starts_with("system:node:")
        && request.common_name.len() > "system:node:".len()
        && request.organizations == ["system:nodes"]
        && request.params.params.subject_alt_names.is_empty()
        && usages.contains(&"client auth")
        && usages
            .iter()
            .all(|u| matches!(*u, "client auth" | "digital signature" | "key encipherment"))
}

/// The request's conditions with a new one of `type_` (status `True`).
pub(super) fn with_condition(
    csr: &CertificateSigningRequest,
    type_: &str,
    reason: &str,
    message: &str,
) -> Vec<serde_json::Value> {
    let now = jiff::Timestamp::now().to_string();
    let mut conditions: Vec<serde_json::Value> = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    conditions.push(json!({"type": type_, "status": "True", "reason": reason,
        "message": message, "lastUpdateTime": now, "lastTransitionTime": now}));
    conditions
}

/// The certificate for an approved request, or why the signer refuses it.
fn certificate(
    csr: &CertificateSigningRequest,
    issuer: &Issuer<'static, KeyPair>,
    now: SystemTime,
) -> Result<Option<String>, String> {
    let signer = csr.spec.signer_name.as_str();
    if ![KUBELET_CLIENT, API_CLIENT, KUBELET_SERVING].contains(&signer) {
        // Someone else's signer.
        return Ok(None);
    }
    let mut request = parse(csr)?;
    let usages = usages(csr);
    match signer {
        KUBELET_CLIENT if !is_node_client(csr, &request) => {
            return Err("invalid kubelet client certificate request".into());
        }
        KUBELET_SERVING
            if !(request.common_name.starts_with("system:node:")
                && request.organizations == ["system:nodes"]
                && is_serving(&usages)) =>
        {
            return Err("invalid kubelet serving certificate request".into());
        }
        API_CLIENT
            if usages.contains(&"server auth")
                || !usages.contains(&"client auth")
                || !request.params.params.subject_alt_names.is_empty() =>
        {
            return Err("invalid client certificate request".into());
        }
        _ => {}
    }
    let params = &mut request.params.params;
    params.is_ca = IsCa::ExplicitNoCa;
    if signer != KUBELET_SERVING {
        params.subject_alt_names.clear();
    } else {
        params
            .subject_alt_names
            .retain(|s| matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)));
    }
    params.key_usages = usages
        .iter()
        .filter_map(|u| match *u {
            "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    params.extended_key_usages = usages
        .iter()
        .filter_map(|u| match *u {
            "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
            _ => None,
        })
        .collect();
    let asked = csr
        .spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_DURATION);
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + asked.min(MAX_DURATION)).into();
    let cert = request
        .params
        .signed_by(issuer)
        .map_err(|e| format!("signing: {e}"))?;
    Ok(Some(cert.pem()))
}

async fn sign(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(), ControllerError> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let status = match certificate(csr, issuer, SystemTime::now()) {
        Ok(None) => return Ok(()),
        Ok(Some(pem)) => {
            tracing::info!(csr = %name, signer = %csr.spec.signer_name, "signed certificate");
            let encoded = base64::engine::general_purpose::STANDARD.encode(pem);
            json!({"status": {"certificate": encoded}})
        }
        Err(why) => {
            let conditions = with_condition(csr, "Failed", "SignerValidationFailure", &why);
            json!({"status": {"conditions": conditions}})
        }
    };
    api.patch_subresource(
        "status",
        &name,
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        let cert = params.self_signed(&key).expect("ca");
        Issuer::from_ca_cert_pem(&cert.pem(), key).expect("issuer")
    }

    fn request(
        cn: &str,
        orgs: &[&str],
        signer: &str,
        usages: &[&str],
    ) -> CertificateSigningRequest {
        let key = KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        let pem = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        serde_json::from_value(json!({"metadata": {"name": "r"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer, "usages": usages}}))
        .expect("csr object")
    }

    #[test]
    fn a_node_client_request_is_signed_for_its_node() {
        let csr = request(
            "system:node:n1",
            &["system:nodes"],
            KUBELET_CLIENT,
            &["digital signature", "client auth"],
        );
        assert!(is_node_client(&csr, &parse(&csr).expect("parse")));
        let now = SystemTime::now();
        let pem = certificate(&csr, &ca(), now)
            .expect("signed")
            .expect("a certificate");
        let der = rustls_pemfile_der(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let subject = cert.subject().to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 365);
    }

    #[test]
    fn malformed_or_foreign_requests_are_refused_or_left_alone() {
        // Not a node's name: the kubelet signer refuses it.
        let csr = request("alice", &["system:nodes"], KUBELET_CLIENT, &["client auth"]);
        assert!(!is_node_client(&csr, &parse(&csr).expect("parse")));
        assert!(certificate(&csr, &ca(), SystemTime::now()).is_err());
        // A client certificate may not serve.
        let csr = request("alice", &[], API_CLIENT, &["client auth", "server auth"]);
        assert!(certificate(&csr, &ca(), SystemTime::now()).is_err());
        // Another signer's request is not ours.
        let csr = request("alice", &[], "example.com/mine", &["client auth"]);
        assert_eq!(certificate(&csr, &ca(), SystemTime::now()), Ok(None));
    }

    /// The DER bytes of a one-certificate PEM.
    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64")
    }
}
