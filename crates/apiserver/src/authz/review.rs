//! The review APIs, answered on create and never stored:
//! `SelfSubjectAccessReview` (`kubectl auth can-i`), `SubjectAccessReview`,
//! `LocalSubjectAccessReview`, `SelfSubjectRulesReview` (`can-i --list`),
//! `SelfSubjectReview` (`kubectl auth whoami`) and `TokenReview`.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use kybern_apimachinery::{ApiError, Cause};
use serde_json::{Value, json};

use super::rbac;
use super::rules::Attributes;
use crate::auth::UserInfo;
use crate::handlers::Ctx;
use crate::handlers::body;
use crate::response::{ApiResult, json as json_response};

fn invalid(ctx: &Ctx, field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::invalid(
        &ctx.info.group,
        &ctx.info.kind,
        "",
        vec![Cause::invalid(field, value, why)],
    )
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// The attributes a review's spec asks about.
fn asked(ctx: &Ctx, spec: &Value) -> Result<Attributes, ApiError> {
    let (res, non) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    match (res.is_object(), non.is_object()) {
        (true, false) => Ok(Attributes {
            verb: text(res, "verb"),
            resource_request: true,
            namespace: text(res, "namespace"),
            api_group: text(res, "group"),
            resource: text(res, "resource"),
            subresource: text(res, "subresource"),
            name: text(res, "name"),
            path: String::new(),
        }),
        (false, true) => Ok(Attributes {
            verb: text(non, "verb"),
            path: text(non, "path"),
            ..Attributes::default()
        }),
        _ => Err(invalid(
            ctx,
            "spec.resourceAttributes",
            res,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

async fn access_status(ctx: &Ctx, user: &UserInfo, attrs: &Attributes) -> Result<Value, ApiError> {
    let decision = super::decide(&ctx.state, user, attrs).await?;
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    Ok(status)
}

fn user_of_spec(spec: &Value) -> UserInfo {
    let groups = spec["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    UserInfo {
        name: text(spec, "user"),
        uid: text(spec, "uid"),
        groups,
    }
}

fn user_info_json(user: &UserInfo) -> Value {
    let mut v = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = json!(user.uid);
    }
    v
}

async fn rules_status(ctx: &Ctx, namespace: &str) -> Result<Value, ApiError> {
    let rules = rbac::rules_of(&ctx.state, &ctx.user, namespace).await?;
    let mut resource_rules = Vec::new();
    let mut url_rules = Vec::new();
    for r in rules {
        if r.non_resource_urls.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        } else {
            url_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    Ok(json!({"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": false}))
}

/// POST of a review: the review back with its `status` filled in.
pub async fn serve(ctx: &Ctx, method: &Method, request: Body) -> ApiResult {
    if *method != Method::POST || ctx.path.name.is_some() {
        return Err(ApiError::method_not_allowed(
            method.as_str(),
            &ctx.info.group,
            &ctx.info.plural,
        )
        .into());
    }
    let bytes = body::read(request).await?;
    let mut review = body::decode_object(&ctx.headers, &bytes)?;
    crate::strategy::check_type(&ctx.info, &mut review)?;
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let status = match ctx.info.plural.as_str() {
        "selfsubjectaccessreviews" => {
            let attrs = asked(ctx, &spec)?;
            access_status(ctx, &ctx.user, &attrs).await?
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let mut attrs = asked(ctx, &spec)?;
            let subject = user_of_spec(&spec);
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    ctx,
                    "spec.user",
                    &json!(""),
                    "at least one of user or group must be specified",
                )
                .into());
            }
            if ctx.info.plural == "localsubjectaccessreviews" {
                if attrs.namespace.is_empty() {
                    attrs.namespace = ctx.namespace().to_owned();
                } else if attrs.namespace != ctx.namespace() {
                    return Err(invalid(
                        ctx,
                        "spec.resourceAttributes.namespace",
                        &json!(attrs.namespace),
                        "must match metadata.namespace",
                    )
                    .into());
                }
            }
            access_status(ctx, &subject, &attrs).await?
        }
        "selfsubjectrulesreviews" => {
            rules_status(ctx, spec["namespace"].as_str().unwrap_or_default()).await?
        }
        "selfsubjectreviews" => json!({"userInfo": user_info_json(&ctx.user)}),
        "tokenreviews" => {
            let token = spec["token"].as_str().unwrap_or_default();
            match crate::auth::authenticate_token(&ctx.state, token).await {
                Some(user) => json!({"authenticated": true, "user": user_info_json(&user),
                    "audiences": spec.get("audiences").cloned().unwrap_or(json!([]))}),
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        _ => return Err(ApiError::internal("unknown review").into()),
    };
    review["status"] = status;
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(json_response(StatusCode::CREATED, &review))
}
