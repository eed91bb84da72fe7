//! CEL validation rules in a CRD's schema (`x-kubernetes-validations`):
//! rules that do not compile are refused with the CRD, objects that break a
//! rule are refused with upstream's 422, and transition rules guard updates.

use crate::common;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

fn crd(replicas_rule: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": replicas_rule, "message": "replicas must not be below minReplicas"},
                        {"rule": "self.replicas <= 10", "reason": "FieldValueForbidden",
                         "fieldPath": ".replicas", "messageExpression": "'at most 10 replicas, not ' + string(self.replicas)"}
                    ],
                    "properties": {
                        "replicas": {"type": "integer"},
                        "minReplicas": {"type": "integer"},
                        "storageClass": {"type": "string", "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "storageClass is immutable"}
                        ]}
                    }
                }}
            }}}]}
    }))
    .expect("crd")
}

/// The 422's causes as (field, message).
fn causes(err: kube::Error) -> Vec<(String, String)> {
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}");
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    status
        .details
        .map(|d| d.causes)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.field, c.message))
        .collect()
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec}))
    .expect("widget")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_validation_rules_guard_creates_and_updates() {
    let server = common::Server::start();
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());

    let err = crds
        .create(&PostParams::default(), &crd("self.minReplicas <="))
        .await
        .expect_err("a rule that does not compile");
    let got = causes(err);
    assert!(
        got.iter().any(|(f, m)| f
            == "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
            && m.contains("compilation failed")),
        "{got:?}"
    );

    crds.create(
        &PostParams::default(),
        &crd("!has(self.minReplicas) || self.replicas >= self.minReplicas"),
    )
    .await
    .expect("create CRD");
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    // The API is served once the CRD is established.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let created = loop {
        match api
            .create(
                &PostParams::default(),
                &widget(
                    "w",
                    json!({"replicas": 2, "minReplicas": 1, "storageClass": "fast"}),
                ),
            )
            .await
        {
            Ok(w) => break w,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(created.data["spec"]["replicas"], 2);

    let err = api
        .create(
            &PostParams::default(),
            &widget("bad", json!({"replicas": 20, "minReplicas": 30})),
        )
        .await
        .expect_err("breaks both rules");
    assert_eq!(
        causes(err),
        [
            (
                "spec".to_owned(),
                "Invalid value: \"object\": replicas must not be below minReplicas".to_owned()
            ),
            (
                "spec.replicas".to_owned(),
                "Forbidden: at most 10 replicas, not 20".to_owned()
            ),
        ]
    );

    // A transition rule: storageClass may not change; other fields may.
    let patch = |spec: Value| json!({"spec": spec});
    let err = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&patch(json!({"storageClass": "slow"}))),
        )
        .await
        .expect_err("immutable");
    assert_eq!(
        causes(err),
        [(
            "spec.storageClass".to_owned(),
            "Invalid value: \"string\": storageClass is immutable".to_owned()
        )]
    );
    let scaled = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&patch(json!({"replicas": 5}))),
        )
        .await
        .expect("scale within the rules");
    assert_eq!(scaled.data["spec"]["replicas"], 5);
    assert_eq!(scaled.data["spec"]["storageClass"], "fast");
}
