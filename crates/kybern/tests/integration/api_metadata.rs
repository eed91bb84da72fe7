//! Metadata-only reads (`as=PartialObjectMetadata[List]`), as metadata
//! informers make them: kube-rs's `Api<PartialObjectMeta<K>>` and client-go's
//! metadata client, which asks for protobuf first.

use crate::common;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use serde_json::{Value, json};

/// A value only the whole object carries.
const PAYLOAD: &str = "payload-only-in-data";

const JSON_ONE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const JSON_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
/// client-go's metadata client's Accept for lists.
const CLIENT_GO_LIST: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

/// GETs `path` with `accept`; the content type and the body.
async fn get(client: &kube::Client, path: &str, accept: &str) -> (String, Vec<u8>) {
    let req = http::Request::get(path)
        .header(http::header::ACCEPT, accept)
        .body(kube::client::Body::empty())
        .expect("request");
    let resp = client.send(req).await.expect("send");
    assert_eq!(resp.status(), 200, "{path} with {accept}");
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (content_type, body.to_vec())
}

async fn get_json(client: &kube::Client, path: &str, accept: &str) -> Value {
    let (content_type, body) = get(client, path, accept).await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    serde_json::from_slice(&body).expect("JSON")
}

fn assert_partial(item: &Value, name: &str) {
    assert_eq!(item["kind"], "PartialObjectMetadata", "{item}");
    assert_eq!(item["apiVersion"], "meta.k8s.io/v1", "{item}");
    assert_eq!(item["metadata"]["name"], name, "{item}");
    assert!(item.get("data").is_none(), "{item}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_gets_lists_and_watches() {
    let server = common::Server::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("meta".into()),
            labels: Some([("tier".to_owned(), "one".to_owned())].into()),
            ..Default::default()
        },
        data: Some([("k".to_owned(), PAYLOAD.to_owned())].into()),
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let created_rv = created.metadata.resource_version.expect("rv");

    // kube-rs: get_metadata and list_metadata see the metadata-only kinds.
    let one = api.get_metadata("meta").await.expect("get_metadata");
    let types = one.types.expect("typed");
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadata")
    );
    assert_eq!(one.metadata.labels.expect("labels")["tier"], "one");
    let listed = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list_metadata");
    assert_eq!(listed.types.kind, "PartialObjectMetadataList");
    assert!(
        listed
            .items
            .iter()
            .any(|i| i.metadata.name.as_deref() == Some("meta"))
    );

    // JSON, one object and lists from the watch cache (rv=0) and the store.
    let path = "/api/v1/namespaces/default/configmaps";
    assert_partial(
        &get_json(&client, &format!("{path}/meta"), JSON_ONE).await,
        "meta",
    );
    for query in ["?resourceVersion=0", "", "?limit=10"] {
        let list = get_json(&client, &format!("{path}{query}"), JSON_LIST).await;
        assert_eq!(list["kind"], "PartialObjectMetadataList", "{list}");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1", "{list}");
        assert!(list["metadata"]["resourceVersion"].is_string(), "{list}");
        let items = list["items"].as_array().expect("items");
        let item = items.iter().find(|i| i["metadata"]["name"] == "meta");
        assert_partial(item.expect("listed"), "meta");
    }
    // The list form on a get is passed over: the whole object, as upstream.
    let whole = get_json(&client, &format!("{path}/meta"), CLIENT_GO_LIST).await;
    assert_eq!(whole["kind"], "ConfigMap");
    assert_eq!(whole["data"]["k"], PAYLOAD);

    // client-go's metadata client: protobuf first, answered in protobuf.
    let (content_type, body) = get(&client, path, CLIENT_GO_LIST).await;
    assert_eq!(content_type, "application/vnd.kubernetes.protobuf");
    assert!(body.starts_with(b"k8s\0"));
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("PartialObjectMetadataList"), "{text}");
    assert!(text.contains("tier") && !text.contains(PAYLOAD), "{text}");

    // A watch from before an update sees it in metadata-only form, with
    // metadata-only bookmarks.
    let patch = json!({"metadata": {"labels": {"tier": "two"}}});
    api.patch("meta", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let query =
        format!("?watch=1&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={created_rv}");
    let (_, body) = get(&client, &format!("{path}{query}"), JSON_ONE).await;
    let events: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("event JSON"))
        .collect();
    let modified = events
        .iter()
        .find(|e| e["type"] == "MODIFIED")
        .unwrap_or_else(|| panic!("no MODIFIED event in {events:?}"));
    assert_partial(&modified["object"], "meta");
    assert_eq!(modified["object"]["metadata"]["labels"]["tier"], "two");
    for e in &events {
        assert_eq!(e["object"]["kind"], "PartialObjectMetadata", "{e}");
    }
}
