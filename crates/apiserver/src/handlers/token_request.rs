//! `serviceaccounts/token` (TokenRequest): a signed, time-limited token for
//! a ServiceAccount, optionally bound to a Pod or Secret so that it dies
//! with it. `kubectl create token` and the node agent's projected volumes
//! use it.

use axum::body::Body;
use axum::http::StatusCode;
use kybern_apimachinery::{ApiError, Cause};
use serde_json::{Value, json};

use super::{Ctx, body};
use crate::object;
use crate::response::{ApiResult, json as json_response};
use crate::service_account_token::{BoundRef, Claims, ISSUER, KubernetesClaim, now};

/// Upstream's default lifetime, and the shortest it accepts.
const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;
/// The longest lifetime given out (upstream caps at its configured maximum).
const MAX_SECONDS: i64 = 48 * 3600;

fn invalid(field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        "",
        vec![Cause::invalid(field, value, why)],
    )
}

/// POST `.../serviceaccounts/{name}/token`.
pub async fn create(ctx: &Ctx, request: Body) -> ApiResult {
    let signer = ctx
        .state
        .token_signer
        .get()
        .ok_or_else(|| ApiError::internal("no service account token issuer configured"))?;
    let bytes = body::read(request).await?;
    let mut req = body::decode_object(&ctx.headers, &bytes)?;
    let ns = ctx.namespace().to_owned();
    let sa = ctx.state.objects.get(&ctx.info, &ns, ctx.name()).await?;
    let spec = req.get("spec").cloned().unwrap_or(Value::Null);
    let seconds = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_SECONDS,
        v => v
            .as_i64()
            .ok_or_else(|| invalid("spec.expirationSeconds", v, "must be an integer"))?,
    };
    if seconds < MIN_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(seconds),
            "may not specify a duration less than 10 minutes",
        )
        .into());
    }
    let seconds = u64::try_from(seconds.min(MAX_SECONDS)).unwrap_or(3600);
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => vec![ISSUER.to_owned()],
    };
    let mut claim = KubernetesClaim {
        namespace: ns.clone(),
        serviceaccount: BoundRef {
            name: ctx.name().to_owned(),
            uid: object::meta_str(&sa, "uid").to_owned(),
        },
        pod: None,
        secret: None,
    };
    let bound = &spec["boundObjectRef"];
    let node = crate::authz::node::node_of(&ctx.user);
    let node_refused = |why: &str| -> ApiError {
        ApiError::forbidden(format!(
            "serviceaccounts {:?} is forbidden: {why}",
            ctx.name()
        ))
    };
    if node.is_some() && bound["kind"].as_str() != Some("Pod") {
        // NodeRestriction: a node's tokens are for its own pods only.
        return Err(node_refused("node requested token not bound to a pod").into());
    }
    if bound.is_object() {
        let kind = bound["kind"].as_str().unwrap_or_default();
        let name = bound["name"].as_str().unwrap_or_default();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    &json!(other),
                    "supported values: \"Pod\", \"Secret\"",
                )
                .into());
            }
        };
        let info = super::pod_log::core_resource(ctx, plural)?;
        let obj = ctx.state.objects.get(&info, &ns, name).await?;
        if let Some(node) = node
            && obj["spec"]["nodeName"].as_str() != Some(node)
        {
            return Err(node_refused(
                "node requested token bound to a pod scheduled on a different node",
            )
            .into());
        }
        let pod_account = obj["spec"]["serviceAccountName"]
            .as_str()
            .filter(|a| !a.is_empty())
            .unwrap_or("default");
        if node.is_some() && pod_account != ctx.name() {
            return Err(node_refused(
                "node requested token bound to a pod that runs as another service account",
            )
            .into());
        }
        let uid = object::meta_str(&obj, "uid").to_owned();
        if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                "",
                plural,
                name,
                &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
            )
            .into());
        }
        let r = BoundRef {
            name: name.to_owned(),
            uid,
        };
        if kind == "Pod" {
            claim.pod = Some(r);
        } else {
            claim.secret = Some(r);
        }
    }
    let issued = now();
    let claims = Claims {
        aud: audiences.clone(),
        exp: issued + seconds,
        iat: issued,
        nbf: issued,
        iss: ISSUER.to_owned(),
        jti: uuid::Uuid::new_v4().to_string(),
        sub: format!("system:serviceaccount:{ns}:{}", ctx.name()),
        kubernetes: claim,
    };
    let token = signer.sign(&claims);
    let expires = chrono::DateTime::from_timestamp(i64::try_from(claims.exp).unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": ctx.name(), "namespace": ns, "creationTimestamp": null});
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(seconds);
    if !bound.is_object() {
        req["spec"]["boundObjectRef"] = Value::Null;
    }
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(json_response(StatusCode::CREATED, &req))
}
