//! The CertificateSigningRequest API's own rules (certificates.k8s.io/v1):
//! the requester recorded in the spec, the request, signer and usages
//! checked, what the `approval` and `status` subresources may change, and
//! who may approve or sign for a signer.

use base64::Engine;
use kybern_apimachinery::{ApiError, Cause};
use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::authz::rules::Attributes;
use crate::object::Object;

/// The group of the API.
pub const GROUP: &str = "certificates.k8s.io";

/// Whether `(group, plural)` is the CertificateSigningRequest resource.
pub fn is_csr(group: &str, plural: &str) -> bool {
    group == GROUP && plural == "certificatesigningrequests"
}

/// Key usages upstream accepts in `spec.usages`.
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// On create: the spec names who asked, whatever the body said.
pub fn admit_create(user: &UserInfo, obj: &mut Object) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let spec = &mut obj["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.groups);
    if user.uid.is_empty() {
        if let Some(s) = spec.as_object_mut() {
            s.remove("uid");
        }
    } else {
        spec["uid"] = json!(user.uid);
    }
    if let Some(s) = spec.as_object_mut() {
        s.remove("extra");
    }
}

/// On update: the spec never changes; the `approval` subresource changes
/// only the conditions. (The `status` subresource is the generic one.)
pub fn prepare_update(new: &mut Object, old: &Object, subresource: Option<&str>) {
    match subresource {
        Some("approval") => {
            let conditions = new.pointer("/status/conditions").cloned();
            let rv = new.pointer("/metadata/resourceVersion").cloned();
            *new = old.clone();
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            match conditions {
                Some(c) => new["status"]["conditions"] = c,
                None => {
                    if let Some(s) = new["status"].as_object_mut() {
                        s.remove("conditions");
                    }
                }
            }
            if let Some(rv) = rv {
                new["metadata"]["resourceVersion"] = rv;
            }
        }
        Some(_) => {}
        None => {
            if let Some(spec) = old.get("spec") {
                new["spec"] = spec.clone();
            }
        }
    }
}

/// The PEM text of `spec.request` (base64 in JSON).
pub fn request_pem(obj: &Object) -> Option<String> {
    let b64 = obj.pointer("/spec/request")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Validation of a CSR, as upstream's `ValidateCertificateSigningRequest`.
pub fn validate(obj: &Object) -> Vec<Cause> {
    let mut causes = Vec::new();
    match obj.pointer("/spec/request").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.request", "")),
        Some(_) => {
            let parsed = request_pem(obj)
                .filter(|pem| pem.contains("-----BEGIN CERTIFICATE REQUEST-----"))
                .map(|pem| rcgen::CertificateSigningRequestParams::from_pem(&pem));
            let problem = match parsed {
                None => Some("PEM block type must be CERTIFICATE REQUEST".to_owned()),
                Some(Err(e)) => Some(format!("invalid certificate request: {e}")),
                Some(Ok(_)) => None,
            };
            if let Some(p) = problem {
                causes.push(Cause::invalid("spec.request", &json!("<omitted>"), p));
            }
        }
    }
    match obj.pointer("/spec/signerName").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.signerName", "")),
        Some(signer) => {
            let well_formed = signer.split_once('/').is_some_and(|(domain, path)| {
                !path.is_empty()
                    && kybern_apimachinery::names::dns1123_subdomain(domain).is_empty()
                    && domain.contains('.')
            });
            if !well_formed {
                causes.push(Cause::invalid(
                    "spec.signerName",
                    &json!(signer),
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ));
            }
        }
    }
    match obj.pointer("/spec/usages").and_then(Value::as_array) {
        None => causes.push(Cause::required("spec.usages", "")),
        Some(usages) if usages.is_empty() => {
            causes.push(Cause::required("spec.usages", ""));
        }
        Some(usages) => {
            for (i, u) in usages.iter().enumerate() {
                if !u.as_str().is_some_and(|u| USAGES.contains(&u)) {
                    causes.push(Cause::not_supported(format!("spec.usages[{i}]"), u, USAGES));
                }
            }
        }
    }
    if let Some(seconds) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        && seconds < 600
    {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            &json!(seconds),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let conditions = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (i, c) in conditions.iter().enumerate() {
        let type_ = c["type"].as_str().unwrap_or_default();
        if type_.is_empty() {
            causes.push(Cause::required(format!("status.conditions[{i}].type"), ""));
        } else if !seen.insert(type_.to_owned()) {
            causes.push(Cause::duplicate(
                format!("status.conditions[{i}].type"),
                &json!(type_),
            ));
        }
    }
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| c["type"] == t && c["status"] != "False")
    };
    if has("Approved") && has("Denied") {
        causes.push(Cause::invalid(
            "status.conditions",
            &json!(conditions),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    causes
}

/// Who writes the `approval` subresource must be allowed to `approve`, and
/// who writes `status` to `sign`, for the request's signer (`signers`
/// named by the signer, or by its domain and `*`), as upstream's
/// CertificateApproval and CertificateSigning admission plugins.
pub async fn authorize_subresource(
    state: &crate::ApiState,
    user: &UserInfo,
    stored: &Object,
    subresource: &str,
) -> Result<(), ApiError> {
    let verb = match subresource {
        "approval" => "approve",
        "status" => "sign",
        _ => return Ok(()),
    };
    let signer = stored
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let domain_wildcard = signer
        .split_once('/')
        .map(|(d, _)| format!("{d}/*"))
        .unwrap_or_default();
    for name in [signer.to_owned(), domain_wildcard] {
        let attrs = Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: String::new(),
            api_group: GROUP.into(),
            resource: "signers".into(),
            subresource: String::new(),
            name,
            path: String::new(),
        };
        if crate::authz::decide(state, user, &attrs).await?.allowed {
            return Ok(());
        }
    }
    Err(ApiError::forbidden(format!(
        "user not permitted to {verb} requests with signerName {signer:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_b64() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let csr = params.serialize_request(&key).expect("csr");
        base64::engine::general_purpose::STANDARD.encode(csr.pem().expect("pem"))
    }

    fn csr() -> Object {
        json!({"metadata": {"name": "c"}, "spec": {"request": request_b64(),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            "username": "mallory", "groups": ["system:masters"]}})
    }

    #[test]
    fn a_well_formed_request_passes_and_a_broken_one_does_not() {
        assert_eq!(validate(&csr()), vec![]);
        let mut bad = csr();
        bad["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD.encode("nope"));
        bad["spec"]["signerName"] = json!("no-domain");
        bad["spec"]["usages"] = json!(["client auth", "flying"]);
        bad["spec"]["expirationSeconds"] = json!(60);
        let fields: Vec<String> = validate(&bad).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            [
                "spec.request",
                "spec.signerName",
                "spec.usages[1]",
                "spec.expirationSeconds"
            ]
        );
        let mut both = csr();
        both["status"] = json!({"conditions": [{"type": "Approved", "status": "True"},
            {"type": "Denied", "status": "True"}]});
        assert_eq!(validate(&both).len(), 1);
    }

    #[test]
    fn the_requester_is_who_asked_and_the_spec_stays() {
        let mut obj = csr();
        let user = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec!["system:bootstrappers".into()],
        };
        admit_create(&user, &mut obj);
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(obj["spec"]["groups"], json!(["system:bootstrappers"]));
        let mut changed = obj.clone();
        changed["spec"]["signerName"] = json!("kubernetes.io/kube-apiserver-client");
        changed["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let mut update = changed.clone();
        prepare_update(&mut update, &obj, None);
        assert_eq!(update["spec"], obj["spec"]);
        let mut approval = changed;
        prepare_update(&mut approval, &obj, Some("approval"));
        assert_eq!(approval["spec"], obj["spec"]);
        assert_eq!(approval["status"]["conditions"][0]["type"], "Approved");
    }
}
