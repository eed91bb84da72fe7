//! A CRD with a structural schema: pruning, defaulting and validation of its
//! objects, the status and scale subresources, printer columns in
//! `kubectl get`, two served versions with `None` conversion, and `explain`.

use crate::common;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;

fn crd() -> CustomResourceDefinition {
    let schema = json!({"openAPIV3Schema": {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "description": "How big the gadget is."},
                    "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                    "replicas": {"type": "integer", "default": 1},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }
            },
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}, "phase": {"type": "string"}}}
        }
    }});
    let version = |name: &str, storage: bool| {
        json!({
            "name": name, "served": true, "storage": storage, "schema": schema,
            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
            ]
        })
    };
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [version("v1", true), version("v2", false)]}
    }))
    .expect("crd")
}

async fn established(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd())
        .await
        .expect("create CRD");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = crds.get("gadgets.example.com").await.expect("get");
        if c.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not Established");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn api(client: &kube::Client, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("example.com", version, "Gadget");
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "gadgets"),
    )
}

fn gadget(spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Gadget",
        "metadata": {"name": "g"}, "spec": spec}))
    .expect("object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_subresources_columns_and_versions() {
    let server = common::Server::start();
    let client = server.client().await;
    established(&client).await;
    let v1 = api(&client, "v1");

    // Invalid: wrong type, value out of range, missing required field.
    for (spec, field) in [
        (json!({"size": "big"}), "spec.size"),
        (json!({"size": 0}), "spec.size"),
        (json!({"size": 2, "color": "green"}), "spec.color"),
        (json!({"color": "red"}), "spec.size"),
    ] {
        match v1
            .create(&PostParams::default(), &gadget(spec.clone()))
            .await
        {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{spec}");
                assert!(s.message.contains(field), "{spec}: {}", s.message);
            }
            other => panic!("{spec} should be invalid, got {other:?}"),
        }
    }

    // Defaults fill in; unknown fields are pruned except where preserved.
    let created = v1
        .create(
            &PostParams::default(),
            &gadget(json!({"size": 2, "bogus": 1, "free": {"any": [1, 2]}})),
        )
        .await
        .expect("create");
    assert_eq!(created.data["spec"]["color"], "red");
    assert_eq!(created.data["spec"]["replicas"], 1);
    assert!(created.data["spec"].get("bogus").is_none());
    assert_eq!(created.data["spec"]["free"]["any"], json!([1, 2]));

    // Status goes through /status only.
    let status = json!({"status": {"phase": "Ready", "replicas": 1}});
    v1.patch_status("g", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    v1.patch(
        "g",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Ignored"}})),
    )
    .await
    .expect("main");
    assert_eq!(
        v1.get("g").await.expect("get").data["status"]["phase"],
        "Ready"
    );

    // Scale reads and writes the CRD's replica paths.
    let scale = v1.get_scale("g").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(scale.status.map(|s| s.replicas), Some(1));
    v1.patch_scale(
        "g",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("scale");
    assert_eq!(v1.get("g").await.expect("get").data["spec"]["replicas"], 4);

    // The same object through the other served version.
    let v2 = api(&client, "v2");
    let other = v2.get("g").await.expect("v2 get");
    assert_eq!(
        other.types.as_ref().map(|t| t.api_version.as_str()),
        Some("example.com/v2")
    );
    assert_eq!(other.data["spec"]["size"], 2);

    // kubectl: printer columns and explain from the CRD schema.
    let k = common::cli::Cli::kubectl(&server);
    let table = k.ok(&["get", "gadgets"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, vec!["NAME", "SIZE", "COLOR", "PHASE"], "{table}");
    assert!(table.lines().nth(1).is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["g", "2", "red", "Ready"]), "{table}");
    let explained = k.ok(&["explain", "gadgets.spec.size"]);
    assert!(explained.contains("How big the gadget is"), "{explained}");
}
