//! Metadata-only representations (`Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`),
//! which metadata informers (client-go's, controller-runtime's, kube-rs's
//! `metadata_watcher`, our garbage collector) ask for instead of whole objects.

use axum::http::{HeaderMap, header};
use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// What a request returns: one object (get, and each watch event) or a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `get` and watch events: `PartialObjectMetadata`.
    One,
    /// `list`: `PartialObjectMetadataList`.
    List,
}

/// The `apiVersion` of the metadata-only form the client prefers for this
/// shape, or `None` when it prefers whole objects (or a Table).
///
/// As upstream's negotiation, the Accept entries are tried in order and the
/// first one the server can produce decides: an entry asking for the other
/// shape (`PartialObjectMetadataList` on a get) is passed over, so client-go's
/// `...;as=X,application/json` falls back to the whole object.
pub fn wanted(headers: &HeaderMap, shape: Shape) -> Option<&'static str> {
    let entries = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for entry in entries {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !matches!(
            media,
            "application/json"
                | "application/yaml"
                | "application/vnd.kubernetes.protobuf"
                | "application/*"
                | "*/*"
        ) {
            continue;
        }
        let (mut as_kind, mut group, mut version) = (None, None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("as", k)) => as_kind = Some(k),
                Some(("g", g)) => group = Some(g),
                Some(("v", v)) => version = Some(v),
                _ => {}
            }
        }
        let Some(as_kind) = as_kind else {
            return None; // a whole object is acceptable, and comes first
        };
        if group != Some("meta.k8s.io") {
            continue;
        }
        let api_version = match version {
            Some("v1") => "meta.k8s.io/v1",
            Some("v1beta1") => "meta.k8s.io/v1beta1",
            _ => continue,
        };
        match (as_kind, shape) {
            ("Table", _) => return None,
            ("PartialObjectMetadata", Shape::One) | ("PartialObjectMetadataList", Shape::List) => {
                return Some(api_version);
            }
            _ => continue,
        }
    }
    None
}

/// The metadata-only form of a decoded object.
pub fn of_object(obj: &Value, api_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The `metadata` of an object's JSON, borrowed: the rest is skipped, not decoded.
#[derive(Deserialize)]
struct MetadataOnly<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

/// Appends the metadata-only form of an object held as JSON (the watch
/// cache's bytes), copying its `metadata` as it is.
pub fn json_into(json: &[u8], api_version: &str, out: &mut BytesMut) {
    let metadata = serde_json::from_slice::<MetadataOnly<'_>>(json)
        .ok()
        .and_then(|m| m.metadata)
        .map_or("{}", RawValue::get);
    out.put_slice(b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"");
    out.put_slice(api_version.as_bytes());
    out.put_slice(b"\",\"metadata\":");
    out.put_slice(metadata.as_bytes());
    out.put_u8(b'}');
}

/// The list head of a metadata-only list.
pub fn list_head(api_version: &str, meta: Value) -> Value {
    json!({"kind": "PartialObjectMetadataList", "apiVersion": api_version, "metadata": meta})
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn negotiates_like_upstream() {
        let client_go_list = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(
            wanted(&accept(client_go_list), Shape::List),
            Some("meta.k8s.io/v1")
        );
        // The list form on a get is passed over, down to plain JSON.
        assert_eq!(wanted(&accept(client_go_list), Shape::One), None);
        let kube_rs_watch = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        assert_eq!(
            wanted(&accept(kube_rs_watch), Shape::One),
            Some("meta.k8s.io/v1")
        );
        assert_eq!(wanted(&accept(kube_rs_watch), Shape::List), None);
        // Whole objects first, or a Table first: not metadata.
        let plain_first =
            "application/json,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        assert_eq!(wanted(&accept(plain_first), Shape::One), None);
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(wanted(&accept(table), Shape::List), None);
        // Another group, or an unknown version, is not meta.k8s.io's form.
        let other = "application/json;as=PartialObjectMetadata;g=example.com;v=v1";
        assert_eq!(wanted(&accept(other), Shape::One), None);
        let beta = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1";
        assert_eq!(
            wanted(&accept(beta), Shape::List),
            Some("meta.k8s.io/v1beta1")
        );
        assert_eq!(wanted(&HeaderMap::new(), Shape::One), None);
    }

    #[test]
    fn keeps_only_the_metadata_as_it_was_written() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"x": "é\"y"}, "resourceVersion": "5"},
            "data": {"big": "z".repeat(1000)}});
        let bytes = serde_json::to_vec(&obj).expect("json");
        let mut out = BytesMut::new();
        json_into(&bytes, "meta.k8s.io/v1", &mut out);
        let partial: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(partial, of_object(&obj, "meta.k8s.io/v1"));
        assert_eq!(partial["kind"], "PartialObjectMetadata");
        assert_eq!(partial["metadata"]["labels"]["x"], "é\"y");
        assert!(partial.get("data").is_none());
        // Bytes that are not an object still give a well-formed answer.
        let mut out = BytesMut::new();
        json_into(b"not json", "meta.k8s.io/v1", &mut out);
        let partial: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(partial["metadata"], json!({}));
    }
}
