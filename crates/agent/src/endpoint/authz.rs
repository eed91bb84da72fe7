//! Who may use the agent's endpoint: the caller's client certificate names
//! a user, and the API server decides through a SubjectAccessReview on the
//! node's `nodes/{stats,log,metrics,spec,proxy}` subresource, as the
//! kubelet's webhook authorizer does. Answers are cached (allowed 5 minutes,
//! denied 30 seconds, upstream's defaults), so a busy `kubectl logs -f` or
//! metrics scrape costs one review.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use crate::NodeContext;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// The cache is dropped whole past this many entries: callers are few (the
/// API server, monitoring), so this only bounds a flood of distinct names.
const CACHE_LIMIT: usize = 4096;

/// The caller a connection's verified client certificate names.
#[derive(Clone, Debug)]
pub struct Caller {
    /// User (the certificate's CN).
    pub user: String,
    /// Groups (its Os).
    pub groups: Vec<String>,
}

/// What a request asks of the node, as the kubelet names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAttributes {
    /// The verb, from the HTTP method.
    pub verb: &'static str,
    /// `stats`, `log`, `metrics`, `spec`, or `proxy` for everything else.
    pub subresource: &'static str,
}

/// The kubelet's mapping from a request to the attributes it checks.
pub fn attributes(method: &Method, path: &str) -> NodeAttributes {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else {
        "proxy"
    };
    NodeAttributes { verb, subresource }
}

type CacheKey = (String, Vec<String>, NodeAttributes);

/// Recent answers of the API server.
#[derive(Debug, Default)]
pub struct DecisionCache {
    entries: Mutex<HashMap<CacheKey, (bool, Instant)>>,
}

impl DecisionCache {
    fn get(&self, key: &CacheKey) -> Option<bool> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(allowed, _)| *allowed)
    }

    fn put(&self, key: CacheKey, allowed: bool) {
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
            entries.insert(key, (allowed, Instant::now() + ttl));
        }
    }
}

/// The endpoint's state for authorization.
#[derive(Clone)]
pub struct Gate {
    /// The node.
    pub ctx: Arc<NodeContext>,
    /// Recent decisions.
    pub cache: Arc<DecisionCache>,
}

async fn review(
    ctx: &NodeContext,
    caller: &Caller,
    attrs: &NodeAttributes,
) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(attrs.verb.to_owned()),
                resource: Some("nodes".into()),
                subresource: Some(attrs.subresource.to_owned()),
                name: Some(ctx.node_name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(ctx.client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn refusal(status: StatusCode, what: &str, caller: &Caller, attrs: &NodeAttributes) -> Response {
    let message = format!(
        "{what} (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
        caller.user, attrs.verb, attrs.subresource
    );
    (status, [("content-type", "text/plain")], message).into_response()
}

/// Middleware: lets the request through only if the API server says its
/// caller may do it on this node.
pub async fn authorize(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    };
    let attrs = attributes(req.method(), req.uri().path());
    let key = (caller.user.clone(), caller.groups.clone(), attrs.clone());
    let allowed = match gate.cache.get(&key) {
        Some(allowed) => allowed,
        None => match review(&gate.ctx, &caller, &attrs).await {
            Ok(allowed) => {
                gate.cache.put(key, allowed);
                allowed
            }
            Err(e) => {
                tracing::warn!(user = %caller.user, error = %e, "agent authorization review failed");
                return refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Authorization error",
                    &caller,
                    &attrs,
                );
            }
        },
    };
    if allowed {
        next.run(req).await
    } else {
        tracing::info!(user = %caller.user, verb = attrs.verb, subresource = attrs.subresource, "agent request forbidden");
        refusal(StatusCode::FORBIDDEN, "Forbidden", &caller, &attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_the_kubelets_attributes() {
        let a = |m: Method, p: &str| {
            let a = attributes(&m, p);
            (a.verb, a.subresource)
        };
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/metrics/cadvisor"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/logs/syslog"), ("get", "log"));
        assert_eq!(a(Method::GET, "/spec/"), ("get", "spec"));
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/statsx"), ("get", "proxy"));
    }

    #[test]
    fn denials_are_remembered_for_less_time_than_grants() {
        let cache = DecisionCache::default();
        let key = |u: &str| {
            (
                u.to_owned(),
                vec![],
                NodeAttributes {
                    verb: "get",
                    subresource: "stats",
                },
            )
        };
        assert_eq!(cache.get(&key("a")), None);
        cache.put(key("a"), true);
        cache.put(key("b"), false);
        assert_eq!(cache.get(&key("a")), Some(true));
        assert_eq!(cache.get(&key("b")), Some(false));
        let entries = cache.entries.lock().expect("lock");
        assert!(entries[&key("a")].1 > entries[&key("b")].1);
    }
}
