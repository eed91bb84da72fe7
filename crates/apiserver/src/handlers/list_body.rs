//! JSON list bodies written in chunks: the head (`kind`, `apiVersion`,
//! `metadata`), then the items as they are encoded or as the watch cache holds
//! them. A list of 100,000 objects never exists as one buffer, nor as 100,000
//! decoded objects at once.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::cache::CachedObject;

/// Items are sent in chunks of about this size.
const CHUNK: usize = 64 * 1024;

/// `{"kind":...,"apiVersion":...,"metadata":...,"items":[` for a list head.
fn opening(head: &Value) -> Bytes {
    let mut v = serde_json::to_vec(head).unwrap_or_else(|_| b"{}".to_vec());
    v.pop(); // the closing brace
    if v.len() > 1 {
        v.push(b',');
    }
    v.extend_from_slice(b"\"items\":[");
    Bytes::from(v)
}

/// A 200 `application/json` response whose body is `chunks` as they come.
pub(super) fn json_stream(chunks: impl futures::Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures::StreamExt;
    let mut resp = Response::new(Body::from_stream(
        chunks.map(Ok::<_, std::convert::Infallible>),
    ));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Items encoded one by one into chunks, for a list read from the store.
#[derive(Default)]
pub struct EncodedItems {
    chunks: Vec<Bytes>,
    current: BytesMut,
    count: usize,
}

impl EncodedItems {
    /// Encodes one item.
    pub fn push(&mut self, item: &Value) {
        if self.count > 0 {
            self.current.put_u8(b',');
        }
        self.count += 1;
        let mut w = (&mut self.current).writer();
        if serde_json::to_writer(&mut w, item).is_err() {
            // A Value always serializes; keep the array well-formed regardless.
            self.current.put_slice(b"null");
        }
        if self.current.len() >= CHUNK {
            self.chunks.push(self.current.split().freeze());
        }
    }

    /// The list response: `head` (an object without `items`) with these items.
    pub fn into_response(mut self, head: &Value) -> Response {
        self.current.put_slice(b"]}");
        self.chunks.push(self.current.freeze());
        let all = std::iter::once(opening(head)).chain(self.chunks);
        json_stream(futures::stream::iter(all))
    }
}

/// The list response for cached objects: their stored JSON, copied into
/// chunks only as the client reads.
/// With `partial` (a `meta.k8s.io` apiVersion), each item is sent in its
/// metadata-only form.
pub fn cached_response(
    head: &Value,
    items: Vec<Arc<CachedObject>>,
    partial: Option<&'static str>,
) -> Response {
    let first = opening(head);
    let rest = futures::stream::unfold((items, 0usize), move |(items, mut i)| async move {
        if i > items.len() {
            return None;
        }
        let mut buf = BytesMut::with_capacity(CHUNK + 1024);
        while i < items.len() && buf.len() < CHUNK {
            if i > 0 {
                buf.put_u8(b',');
            }
            match partial {
                Some(v) => crate::partial_metadata::json_into(&items[i].json(), v, &mut buf),
                None => buf.put_slice(&items[i].json()),
            }
            i += 1;
        }
        if i == items.len() {
            buf.put_slice(b"]}");
            i += 1; // done after this chunk
        }
        Some((buf.freeze(), (items, i)))
    });
    json_stream(futures::StreamExt::chain(
        futures::stream::once(async move { first }),
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn body_of(resp: Response) -> Value {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("valid JSON")
    }

    #[tokio::test]
    async fn encoded_items_make_valid_lists_of_any_length() {
        let head =
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}});
        for n in [0usize, 1, 2, 500] {
            let mut items = EncodedItems::default();
            for i in 0..n {
                items.push(&json!({"name": i, "pad": "x".repeat(300)}));
            }
            let v = body_of(items.into_response(&head)).await;
            assert_eq!(v["kind"], "PodList");
            assert_eq!(v["metadata"]["resourceVersion"], "7");
            assert_eq!(v["items"].as_array().map(Vec::len), Some(n));
            if n > 0 {
                assert_eq!(v["items"][n - 1]["name"], n - 1);
            }
        }
    }

    #[tokio::test]
    async fn cached_items_make_valid_lists_of_any_length() {
        let head = json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}});
        let info = crate::registry::Registry::with_builtins()
            .get("", "v1", "configmaps")
            .expect("configmaps");
        for n in [0usize, 1, 2, 500] {
            let items = (0..n)
                .map(|i| {
                    Arc::new(CachedObject::new(
                        &info,
                        &format!("/registry/core/configmaps/ns/n{i}"),
                        &json!({"name": i, "pad": "y".repeat(300)}),
                        7,
                    ))
                })
                .collect::<Vec<_>>();
            if let Some(o) = items.first() {
                assert_eq!((o.namespace(), o.name()), ("ns", "n0"));
            }
            let v = body_of(cached_response(&head, items, None)).await;
            assert_eq!(v["kind"], "ConfigMapList");
            assert_eq!(v["items"].as_array().map(Vec::len), Some(n));
            if n > 0 {
                assert_eq!(v["items"][n - 1]["name"], n - 1);
            }
        }
    }
}
