//! Deleting a CRD deletes its objects first, as upstream does: the CRD waits,
//! `Terminating`, on the `customresourcecleanup.apiextensions.k8s.io`
//! finalizer while the objects go (an object's own finalizers still hold
//! it), creates are refused meanwhile, and the CRD and its API go last.

use crate::common;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::json;

const HOLD: &str = "example.com/hold";

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .expect("crd")
}

fn gizmo(name: &str, finalizers: &[&str]) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Gizmo",
        "metadata": {"name": name, "finalizers": finalizers}}))
    .expect("gizmo")
}

fn terminating(crd: &CustomResourceDefinition) -> Option<(String, String)> {
    crd.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Terminating")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_crd_deletes_its_objects_first() {
    let server = common::Server::start();
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd())
        .await
        .expect("create CRD");
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Gizmo");
    let gizmos: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "gizmos"),
    );
    common::wait_for("the gizmos API is served", async || {
        gizmos
            .create(&PostParams::default(), &gizmo("held", &[HOLD]))
            .await
            .ok()
    })
    .await;
    gizmos
        .create(&PostParams::default(), &gizmo("free", &[]))
        .await
        .expect("create free");

    crds.delete("gizmos.example.com", &DeleteParams::default())
        .await
        .expect("delete CRD");
    let waiting = crds.get("gizmos.example.com").await.expect("CRD stays");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .contains(&"customresourcecleanup.apiextensions.k8s.io".to_owned()),
        "{:?}",
        waiting.metadata.finalizers
    );
    assert_eq!(terminating(&waiting).map(|t| t.0).as_deref(), Some("True"));

    // The free object goes; the held one is marked and waits for its finalizer.
    common::wait_for("the free gizmo is deleted", async || {
        gizmos
            .get_opt("free")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    // Objects go one at a time, so the held one may be marked a moment later.
    let held = common::wait_for("the held gizmo is marked deleting", async || {
        gizmos
            .get("held")
            .await
            .ok()
            .filter(|g| g.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert_eq!(
        held.metadata.finalizers.as_deref(),
        Some(&[HOLD.to_owned()][..])
    );
    let crd = crds.get("gizmos.example.com").await.expect("CRD waits");
    assert_eq!(
        terminating(&crd),
        Some(("True".to_owned(), "InstanceDeletionInProgress".to_owned()))
    );

    // No new object while terminating: 405, upstream's message.
    match gizmos
        .create(&PostParams::default(), &gizmo("late", &[]))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (405, "MethodNotAllowed"));
            assert_eq!(
                s.message,
                "create not allowed while custom resource definition is terminating"
            );
        }
        other => panic!("expected 405, got {other:?}"),
    }

    // The held object's controller lets go: the object, the CRD and the API go.
    gizmos
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release held");
    common::wait_for("the CRD is removed", async || {
        crds.get_opt("gizmos.example.com")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    common::wait_for("the gizmos API is gone", async || {
        matches!(
            gizmos.list(&ListParams::default()).await,
            Err(kube::Error::Api(s)) if s.code == 404
        )
        .then_some(())
    })
    .await;
}
