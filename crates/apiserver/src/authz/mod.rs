//! Authorization: what an authenticated request asks for (its attributes),
//! impersonation, and the Node and RBAC decisions in front of every handler.

pub mod component_policy;
pub mod controller_policy;
pub mod escalation;
pub mod node;
pub mod policy;
pub mod rbac;
pub mod rbac_index;
pub mod reconcile;
pub mod review;
pub mod rules;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kybern_apimachinery::{ApiError, StatusReason};

pub use rules::{Attributes, PolicyRule};

use crate::auth::UserInfo;
use crate::request::{Query, ResourcePath};
use crate::response::ErrorResponse;
use crate::server::ApiState;

/// Subresources reached through a connection upgrade: creating a session
/// whatever the method (upstream requires `create` for WebSocket GETs too).
const CONNECT: &[&str] = &["exec", "attach", "portforward"];

/// What a request asks for, as upstream's `RequestInfoFactory` reads it.
pub fn request_attributes(method: &Method, uri: &Uri) -> Attributes {
    let Some(path) = ResourcePath::parse(uri.path()) else {
        let verb = match *method {
            Method::HEAD => "get".to_owned(),
            ref m => m.as_str().to_ascii_lowercase(),
        };
        return Attributes {
            verb,
            path: uri.path().to_owned(),
            ..Attributes::default()
        };
    };
    let query = Query::parse(uri.query());
    let sub = path.subresource.clone().unwrap_or_default();
    let mut name = path.name.clone().unwrap_or_default();
    let verb = match *method {
        _ if CONNECT.contains(&sub.as_str()) => "create",
        Method::GET | Method::HEAD if name.is_empty() && query.flag("watch") => "watch",
        Method::GET | Method::HEAD if name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    };
    // A list or watch of one object by name may be granted by resourceNames.
    if matches!(verb, "list" | "watch")
        && let Some(sel) = query.get("fieldSelector")
    {
        for term in sel.split(',') {
            if let Some(n) = term
                .strip_prefix("metadata.name==")
                .or_else(|| term.strip_prefix("metadata.name="))
            {
                name = n.to_owned();
            }
        }
    }
    // A namespace is its own namespace: a RoleBinding there may grant it.
    let namespace = match &path.namespace {
        Some(ns) => ns.clone(),
        None if path.group.is_empty() && path.resource == "namespaces" => name.clone(),
        None => String::new(),
    };
    Attributes {
        verb: verb.to_owned(),
        resource_request: true,
        namespace,
        api_group: path.group,
        resource: path.resource,
        subresource: sub,
        name,
        path: uri.path().to_owned(),
    }
}

/// 403 for a denied request, worded as upstream.
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let why = if a.resource_request {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            user.name, a.verb, a.api_group
        )
    } else {
        format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path)
    };
    let why = if reason.is_empty() {
        why
    } else {
        format!("{why}: {reason}")
    };
    if !a.resource_request {
        return ApiError::forbidden(format!("forbidden: {why}"));
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let subject = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} {:?}", a.name)
    };
    let mut err = ApiError::forbidden(format!("{subject} is forbidden: {why}"));
    err.kind = Some(a.resource.clone());
    if !a.api_group.is_empty() {
        err.group = Some(a.api_group.clone());
    }
    if !a.name.is_empty() {
        err.name = Some(a.name.clone());
    }
    err
}

/// The authorizer chain, as upstream's `--authorization-mode=Node,RBAC`:
/// the Node authorizer for node agents, then RBAC. A refusal's reason (for
/// the 403) is in `reason`.
pub async fn decide(
    state: &ApiState,
    user: &UserInfo,
    attrs: &Attributes,
) -> Result<rbac::Decision, ApiError> {
    let mut why = String::new();
    if let Some(name) = node::node_of(user) {
        match node::authorize(state, name, attrs).await? {
            node::NodeDecision::Allow => {
                return Ok(rbac::Decision {
                    allowed: true,
                    reason: String::new(),
                });
            }
            node::NodeDecision::Deny(reason) => {
                return Ok(rbac::Decision {
                    allowed: false,
                    reason,
                });
            }
            node::NodeDecision::NoOpinion(reason) => why = reason,
        }
    }
    let decision = rbac::authorize(state, user, attrs).await?;
    if decision.allowed {
        return Ok(decision);
    }
    Ok(rbac::Decision {
        allowed: false,
        reason: why,
    })
}

/// Authorizes `attrs` for `user`, as an error when denied.
pub async fn check(state: &ApiState, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
    let decision = decide(state, user, attrs).await?;
    if decision.allowed {
        Ok(())
    } else {
        Err(forbidden(user, attrs, &decision.reason))
    }
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// The user to act as: the authenticated one, or the one it impersonates
/// (`Impersonate-User`, `-Group`, `-Uid`) if it may.
async fn effective_user(
    state: &ApiState,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let users = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let uids = header_values(headers, "impersonate-uid");
    if users.is_empty() {
        if groups.is_empty() && uids.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::new(
            StatusReason::BadRequest,
            "requested impersonation of groups or a uid without impersonating a user",
        ));
    }
    let name = users[0].clone();
    let ask = |group: &str, resource: &str, namespace: &str, name: &str| Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        namespace: namespace.into(),
        api_group: group.into(),
        resource: resource.into(),
        name: name.into(),
        ..Attributes::default()
    };
    let mut new_groups = groups.clone();
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            check(state, &user, &ask("", "serviceaccounts", ns, sa)).await?;
            if groups.is_empty() {
                new_groups = vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
        }
        None => check(state, &user, &ask("", "users", "", &name)).await?,
    }
    for g in &groups {
        check(state, &user, &ask("", "groups", "", g)).await?;
    }
    let uid = uids.first().cloned().unwrap_or_default();
    if !uid.is_empty() {
        check(
            state,
            &user,
            &ask("authentication.k8s.io", "uids", "", &uid),
        )
        .await?;
    }
    if name != "system:anonymous" && !new_groups.iter().any(|g| g == "system:authenticated") {
        new_groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name,
        uid,
        groups: new_groups,
    })
}

/// Middleware: resolves impersonation and authorizes the request for the
/// user authentication put in its extensions. Requests without a user
/// (the plain-HTTP debugging listener) pass unchecked.
pub async fn authorize(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return next.run(req).await;
    };
    let audit = req
        .extensions()
        .get::<crate::audit::AuditContext>()
        .cloned()
        .unwrap_or_default();
    let user = match effective_user(&state, user.clone(), req.headers()).await {
        Ok(u) if u != user => {
            audit.impersonated(&u);
            u
        }
        Ok(u) => u,
        Err(e) => return ErrorResponse(e).into_response(),
    };
    let attrs = request_attributes(req.method(), req.uri());
    let decision = decide(&state, &user, &attrs).await;
    if let Ok(d) = &decision {
        audit.annotate(
            "authorization.k8s.io/decision",
            if d.allowed { "allow" } else { "forbid" },
        );
        audit.annotate("authorization.k8s.io/reason", d.reason.clone());
    }
    match decision {
        Ok(d) if d.allowed => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Ok(d) => {
            tracing::debug!(user = %user.name, verb = %attrs.verb, resource = %attrs.resource,
                namespace = %attrs.namespace, path = %attrs.path, "forbidden");
            ErrorResponse(forbidden(&user, &attrs, &d.reason)).into_response()
        }
        Err(e) => ErrorResponse(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, uri: &str) -> Attributes {
        request_attributes(&method, &uri.parse().expect("uri"))
    }

    #[test]
    fn verbs_and_scopes_from_requests() {
        let a = attrs(Method::GET, "/api/v1/namespaces/dev/pods");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", "dev"));
        let a = attrs(Method::GET, "/api/v1/namespaces/dev/pods?watch=true");
        assert_eq!(a.verb, "watch");
        let a = attrs(
            Method::GET,
            "/api/v1/namespaces/dev/pods?watch=1&fieldSelector=metadata.name%3Dweb",
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "web"));
        let a = attrs(Method::DELETE, "/apis/apps/v1/namespaces/dev/deployments");
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let a = attrs(
            Method::GET,
            "/api/v1/namespaces/dev/pods/web/exec?command=sh",
        );
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("create", "exec")
        );
        let a = attrs(Method::GET, "/api/v1/namespaces/dev");
        assert_eq!(
            (a.resource.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("namespaces", "dev", "dev")
        );
        let a = attrs(Method::GET, "/apis/apps/v1");
        assert!(!a.resource_request);
        assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", "/apis/apps/v1"));
    }

    #[test]
    fn forbidden_messages_match_upstream() {
        let user = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
        };
        let e = forbidden(
            &user,
            &attrs(Method::GET, "/api/v1/namespaces/dev/pods"),
            "",
        );
        assert_eq!(
            e.message,
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"dev\""
        );
        assert_eq!(e.code(), 403);
        let e = forbidden(
            &user,
            &attrs(
                Method::DELETE,
                "/apis/apps/v1/namespaces/dev/deployments/web",
            ),
            "",
        );
        assert_eq!(
            e.message,
            "deployments.apps \"web\" is forbidden: User \"alice\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"dev\""
        );
        let e = forbidden(&user, &attrs(Method::GET, "/api/v1/nodes"), "");
        assert!(e.message.ends_with("at the cluster scope"), "{}", e.message);
        let e = forbidden(&user, &attrs(Method::GET, "/metrics"), "");
        assert_eq!(
            e.message,
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
    }
}
