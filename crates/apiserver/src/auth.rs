//! Authentication: who is making a request. x509 client certificates (CN is the
//! user, each O a group) and bearer tokens (a static token file, bootstrap
//! tokens, ServiceAccount tokens); anonymous requests reach only the health
//! and version endpoints and a GET of `kube-public/cluster-info`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kybern_apimachinery::{ApiError, StatusReason};

use crate::response::ErrorResponse;
use crate::server::ApiState;

/// An authenticated identity, as upstream's `user.Info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID, if known.
    pub uid: String,
    /// Groups, including `system:authenticated` for authenticated users.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The caller on the unauthenticated debugging listener: upstream's
    /// insecure-port user, in `system:masters`.
    pub fn unsecured() -> Self {
        UserInfo {
            name: "system:unsecured".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo { name, uid, groups }
    }
}

/// The identity a TLS connection's verified client certificate carries; put in
/// each request's extensions by the TLS server.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

/// Reads the user from a DER certificate: CN is the name, each O a group.
pub fn identity_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (name, groups) = kybern_apimachinery::x509::subject_identity(der)?;
    Some(UserInfo::authenticated(name, String::new(), groups))
}

/// Why the token file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("token file {path}: {reason}")]
pub struct TokenFileError {
    path: String,
    reason: String,
}

/// Bearer tokens known to the server.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
}

/// Splits one CSV line, honouring double quotes (groups are a quoted list).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

impl Authenticator {
    /// Reads upstream's static token file format: `token,user,uid[,"group1,group2"]`.
    pub fn from_token_file(path: &Path) -> Result<Self, TokenFileError> {
        let err = |reason: String| TokenFileError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(err(format!(
                    "line {}: expected token,user,uid[,groups]",
                    i + 1
                )));
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                f[0].clone(),
                UserInfo::authenticated(f[1].clone(), f[2].clone(), groups),
            );
        }
        Ok(Authenticator { tokens })
    }

    /// Adds one token.
    pub fn add_token(&mut self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self.tokens.insert(
            token.to_owned(),
            UserInfo::authenticated(user.to_owned(), String::new(), groups),
        );
    }

    /// The user a bearer token stands for, if any.
    pub fn by_token(&self, token: &str) -> Option<UserInfo> {
        // Tokens are compared whole; a map lookup leaks no prefix information
        // an attacker could use beyond what hashing exposes.
        self.tokens.get(token).cloned()
    }
}

/// Paths anonymous users may reach (upstream's `system:public-info-viewer`).
fn public_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// The one object anonymous users may read, through RBAC like anyone else:
/// `kube-public/cluster-info`, which a joining node fetches before it knows
/// whether it may trust the server with its bootstrap token.
fn cluster_info_path(req: &Request) -> bool {
    use kybern_apimachinery::bootstrap_token::{CLUSTER_INFO, PUBLIC_NAMESPACE};
    req.method() == axum::http::Method::GET
        && req.uri().path()
            == format!("/api/v1/namespaces/{PUBLIC_NAMESPACE}/configmaps/{CLUSTER_INFO}")
}

fn unauthorized() -> Response {
    ErrorResponse(ApiError::new(StatusReason::Unauthorized, "Unauthorized")).into_response()
}

/// `metadata.uid` of an object's JSON, reading nothing else into memory.
fn uid_of(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Meta {
        uid: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: Meta,
    }
    serde_json::from_slice::<Object>(json).ok()?.metadata.uid
}

/// The user a ServiceAccount token stands for: its signature, lifetime and
/// audience hold, and the ServiceAccount (and the pod or secret it is bound
/// to) still exist with the UIDs it names.
async fn service_account_user(state: &ApiState, token: &str) -> Option<UserInfo> {
    use crate::service_account_token::ISSUER;
    let claims = state.token_signer.get()?.verify(token)?;
    if !claims.aud.iter().any(|a| a == ISSUER) {
        return None;
    }
    let k = &claims.kubernetes;
    let alive = async |plural: &str, name: &str, uid: &str| -> bool {
        let Some(info) = state.registry.get("", "v1", plural) else {
            return false;
        };
        // The watch cache answers without a store read. It may trail the
        // store by an event: an object deleted this instant may still count
        // (upstream caches a token's user for ten seconds), but a miss or
        // another UID is checked against the store, so that a new token
        // for a new object is never refused.
        if let Some(cache) = state.caches.get(&state.objects, &info) {
            let key = crate::storage::ObjectStore::key(&info, &k.namespace, name);
            if cache
                .get(&key)
                .is_some_and(|cached| uid_of(&cached.json()).as_deref() == Some(uid))
            {
                return true;
            }
        }
        match state.objects.get(&info, &k.namespace, name).await {
            Ok(obj) => crate::object::meta_str(&obj, "uid") == uid,
            Err(_) => false,
        }
    };
    if !alive(
        "serviceaccounts",
        &k.serviceaccount.name,
        &k.serviceaccount.uid,
    )
    .await
    {
        return None;
    }
    if let Some(p) = &k.pod
        && !alive("pods", &p.name, &p.uid).await
    {
        return None;
    }
    if let Some(s) = &k.secret
        && !alive("secrets", &s.name, &s.uid).await
    {
        return None;
    }
    Some(UserInfo::authenticated(
        format!(
            "system:serviceaccount:{}:{}",
            k.namespace, k.serviceaccount.name
        ),
        k.serviceaccount.uid.clone(),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", k.namespace),
        ],
    ))
}

/// The user a bearer token stands for: a static token, a bootstrap token,
/// or a ServiceAccount token.
pub async fn authenticate_token(state: &ApiState, token: &str) -> Option<UserInfo> {
    if let Some(user) = state.authenticator.get().and_then(|a| a.by_token(token)) {
        return Some(user);
    }
    if kybern_apimachinery::bootstrap_token::split(token).is_some() {
        return crate::bootstrap_tokens::authenticate(state, token).await;
    }
    service_account_user(state, token).await
}

/// Middleware: authenticates the request and puts its [`UserInfo`] in the extensions.
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let from_cert = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let user = match (bearer, from_cert) {
        // A presented token must be valid, even alongside a certificate.
        (Some(token), _) => authenticate_token(&state, &token).await,
        (None, Some(u)) => Some(u),
        (None, None) if public_path(req.uri().path()) || cluster_info_path(&req) => {
            Some(UserInfo::anonymous())
        }
        (None, None) => None,
    };
    let Some(user) = user else {
        if let Some(auditor) = state.audit.get() {
            auditor.failed_authentication(&req);
        }
        return unauthorized();
    };
    req.extensions_mut().insert(user);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_token_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "# comment\nabc,alice,1,\"dev,ops\"\nxyz,bob,2\n").expect("write");
        let auth = Authenticator::from_token_file(&path).expect("parse");
        let alice = auth.by_token("abc").expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        assert!(auth.by_token("nope").is_none());
        std::fs::write(&path, "onlytoken\n").expect("write");
        assert!(Authenticator::from_token_file(&path).is_err());
    }

    #[test]
    fn public_paths() {
        assert!(public_path("/healthz") && public_path("/version") && public_path("/readyz/ping"));
        assert!(!public_path("/api") && !public_path("/api/v1/secrets"));
    }
}
