//! Server-side apply on custom resources follows the CRD's schema: lists of
//! `x-kubernetes-list-type: map` are owned item by item by their keys, sets
//! element by element, and every other list (whatever its field is called)
//! whole, as upstream's structured merge does.

use crate::common;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {
                        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                            "items": {"type": "string"}},
                        "containers": {"type": "array", "items": {"type": "object",
                            "properties": {"name": {"type": "string"}, "image": {"type": "string"}}}}
                    }},
                    "status": {"type": "object", "properties": {
                        "conditions": {"type": "array",
                            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                            "items": {"type": "object", "required": ["type", "status"], "properties": {
                                "type": {"type": "string"}, "status": {"type": "string"},
                                "reason": {"type": "string"}}}}
                    }}
                }
            }}}]}
    }))
    .expect("crd")
}

fn gadget(body: Value) -> Value {
    let mut obj = json!({"apiVersion": "example.com/v1", "kind": "Gadget",
        "metadata": {"name": "g"}});
    if let (Some(o), Some(b)) = (obj.as_object_mut(), body.as_object()) {
        o.extend(b.clone());
    }
    obj
}

fn manager(name: &str) -> PatchParams {
    PatchParams::apply(name)
}

fn condition_types(obj: &DynamicObject) -> Vec<String> {
    obj.data["status"]["conditions"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|c| c["type"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_merges_custom_resource_lists_by_schema() {
    let server = common::Server::start();
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd())
        .await
        .expect("create CRD");
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Gadget");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "gadgets"),
    );
    let first =
        gadget(json!({"spec": {"tags": ["a"], "containers": [{"name": "c", "image": "one"}]}}));
    common::wait_for("the gadgets API", async || {
        api.patch("g", &manager("alice"), &Patch::Apply(&first))
            .await
            .ok()
    })
    .await;

    // A set: bob's tag joins alice's.
    let both = api
        .patch(
            "g",
            &manager("bob"),
            &Patch::Apply(&gadget(json!({"spec": {"tags": ["b"]}}))),
        )
        .await
        .expect("tags are a set");
    assert_eq!(both.data["spec"]["tags"], json!(["a", "b"]));

    // A list with no list type is atomic even when its items have names.
    let err = api
        .patch(
            "g",
            &manager("bob"),
            &Patch::Apply(&gadget(
                json!({"spec": {"containers": [{"name": "d", "image": "two"}]}}),
            )),
        )
        .await
        .expect_err("containers are atomic here");
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}");
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains(".spec.containers") && status.message.contains("alice"),
        "{}",
        status.message
    );

    // Two controllers apply their own conditions through the status subresource.
    let status_of = |t: &str| {
        gadget(json!({"status": {"conditions": [{"type": t, "status": "True", "reason": t}]}}))
    };
    let status_api = |m: &str| PatchParams::apply(m).force();
    api.patch_status(
        "g",
        &status_api("ready-ctl"),
        &Patch::Apply(&status_of("Ready")),
    )
    .await
    .expect("ready condition");
    let two = api
        .patch_status(
            "g",
            &status_api("synced-ctl"),
            &Patch::Apply(&status_of("Synced")),
        )
        .await
        .expect("synced condition");
    assert_eq!(condition_types(&two), ["Ready", "Synced"]);
    let entries = two.metadata.managed_fields.clone().unwrap_or_default();
    let owners: Vec<String> = entries
        .clone()
        .into_iter()
        .filter(|e| {
            e.fields_v1.as_ref().is_some_and(|f| {
                f.0["f:status"]["f:conditions"]
                    .get(r#"k:{"type":"Synced"}"#)
                    .is_some()
            })
        })
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(owners, ["synced-ctl"], "{entries:?}");

    // Ready's controller stops applying its condition: only Ready goes.
    let gone = api
        .patch_status(
            "g",
            &status_api("ready-ctl"),
            &Patch::Apply(&gadget(json!({"status": {}}))),
        )
        .await
        .expect("drop ready");
    assert_eq!(condition_types(&gone), ["Synced"]);
}
