//! CustomResourceDefinitions through kube-rs: a CRD becomes an API (discovery,
//! CRUD, status subresource), and deleting it removes the API and its objects.

use crate::common;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}
            }]
        }
    }))
    .expect("crd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_becomes_an_api_and_goes_away_with_it() {
    let server = common::Server::start();
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd())
        .await
        .expect("create CRD");

    // Established, as upstream reports it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = crds.get("widgets.example.com").await.expect("get CRD");
        let established = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CRD never became Established"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut w = DynamicObject::new("w1", &ar);
    w.data = serde_json::json!({"spec": {"size": 3}, "status": {"ignored": true}});
    let created = widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create widget");
    assert_eq!(created.data["spec"]["size"], 3);
    assert!(
        created.data.get("status").is_none(),
        "status is not written through the main resource"
    );
    assert_eq!(created.metadata.generation, Some(1));

    widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"ready": true}})),
        )
        .await
        .expect("status patch");
    let got = widgets.get("w1").await.expect("get");
    assert_eq!(got.data["status"]["ready"], true);
    assert_eq!(
        got.metadata.generation,
        Some(1),
        "a status write does not bump generation"
    );
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    // Discovery lists the new group and resource.
    let groups = client.list_api_groups().await.expect("groups");
    assert!(groups.groups.iter().any(|g| g.name == "example.com"));
    let resources = client
        .list_api_group_resources("example.com/v1")
        .await
        .expect("resources");
    let r = resources
        .resources
        .iter()
        .find(|r| r.name == "widgets")
        .expect("widgets in discovery");
    assert_eq!((r.kind.as_str(), r.namespaced), ("Widget", true));
    assert_eq!(r.short_names.as_deref(), Some(&["wd".to_owned()][..]));

    // A bad CRD is refused with the field named.
    let mut bad = crd();
    bad.metadata.name = Some("wrong.example.com".into());
    match crds.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 422 && s.message.contains("metadata.name"),
            "{}",
            s.message
        ),
        other => panic!("expected 422, got {other:?}"),
    }

    // Deleting the CRD removes the API and its objects.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .expect("delete CRD");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match widgets.list(&ListParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the widgets API outlived its CRD"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crds.create(&PostParams::default(), &crd())
        .await
        .expect("recreate CRD");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(list) = widgets.list(&ListParams::default()).await {
            assert!(list.items.is_empty(), "objects of the deleted CRD are gone");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recreated CRD never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
