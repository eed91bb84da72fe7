//! Objects in the store: key layout, encoding, and the mapping of store errors to
//! API errors. The only module of the server that calls the [`Store`].

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kybern_apimachinery::ApiError;
use kybern_store::{Precondition, RangeRequest, Revision, Store, StoreError, WatchStream};
use serde_json::Value;

use crate::object::{self, Object};
use crate::registry::ResourceInfo;
use crate::written::{Prepared, WrittenObjects};

/// The objects of every resource, over one store.
#[derive(Clone)]
pub struct ObjectStore {
    store: Arc<dyn Store>,
    /// This server's writes, prepared for its watch caches.
    written: Arc<WrittenObjects>,
}

/// An object encoded for the store, with the place its `resourceVersion`
/// goes, so that its JSON as served can be made without encoding it again.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The JSON as stored: without `resourceVersion`.
    pub bytes: Bytes,
    /// The offset just inside `metadata`'s opening brace, and whether the
    /// metadata holds other fields (which the inserted field then precedes).
    hole: Option<(usize, bool)>,
}

impl Encoded {
    /// Appends the object's JSON with `resourceVersion` set to `rev`; false
    /// (nothing appended) for an object without a `metadata` map.
    pub fn with_rv_into(&self, rev: Revision, out: &mut BytesMut) -> bool {
        let Some((at, more)) = self.hole else {
            return false;
        };
        let rv = rev.to_string();
        out.reserve(self.bytes.len() + rv.len() + 22);
        out.put_slice(&self.bytes[..at]);
        out.put_slice(b"\"resourceVersion\":\"");
        out.put_slice(rv.as_bytes());
        out.put_slice(if more { b"\"," } else { b"\"" });
        out.put_slice(&self.bytes[at..]);
        true
    }
}

/// A write's object as the store now holds it, for answering the write with
/// its JSON without encoding the object a second time.
#[derive(Clone, Debug)]
pub struct WrittenJson {
    encoded: Encoded,
    revision: Revision,
}

impl WrittenJson {
    /// The JSON of `obj` if it is the object written (its `resourceVersion`
    /// is the write's); `None` otherwise, or for an object without metadata.
    pub fn of(&self, obj: &Object) -> Option<Bytes> {
        if object::meta_str(obj, "resourceVersion") != self.revision.to_string() {
            return None;
        }
        let mut out = BytesMut::new();
        self.encoded
            .with_rv_into(self.revision, &mut out)
            .then(|| out.freeze())
    }
}

/// One page of a list read.
#[derive(Debug)]
pub struct Page {
    /// The objects, each with its `resourceVersion`.
    pub items: Vec<Object>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// The last key read, when more remain.
    pub last_key: Option<String>,
    /// Keys left after this page in the store (before any filtering).
    pub remaining: u64,
}

/// Maps a store error for `resource`/`name` to the API error upstream would send.
pub fn api_error(err: StoreError, info: &ResourceInfo, name: &str) -> ApiError {
    match err {
        StoreError::NotFound { .. } => ApiError::not_found(&info.group, &info.plural, name),
        StoreError::AlreadyExists { .. } => {
            ApiError::already_exists(&info.group, &info.plural, name)
        }
        StoreError::Conflict { .. } => ApiError::stale(&info.group, &info.plural, name),
        StoreError::Compacted { revision } => {
            ApiError::expired(format!("too old resource version: {revision}"))
        }
        StoreError::FutureRevision { revision, current } => {
            let mut e = ApiError::new(
                kybern_apimachinery::StatusReason::Timeout,
                format!("Too large resource version: {revision}, current: {current}"),
            );
            e.retry_after_seconds = Some(1);
            e
        }
        StoreError::ValueTooLarge { .. } => ApiError::new(
            kybern_apimachinery::StatusReason::RequestEntityTooLarge,
            "Request entity too large: limit is 3145728",
        ),
        StoreError::InvalidKey { reason, .. } => {
            ApiError::bad_request(format!("invalid name: {reason}"))
        }
        StoreError::Closed => ApiError::unavailable("the store is shutting down"),
        other => ApiError::internal(other.to_string()),
    }
}

impl ObjectStore {
    /// Objects over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        ObjectStore {
            store,
            written: Default::default(),
        }
    }

    /// This server's recent writes, for the watch caches to take.
    pub fn written(&self) -> &Arc<WrittenObjects> {
        &self.written
    }

    /// The store itself, for watches and revisions.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The key of one object.
    pub fn key(info: &ResourceInfo, namespace: &str, name: &str) -> String {
        if info.namespaced() {
            format!("{}{namespace}/{name}", info.key_prefix())
        } else {
            format!("{}{name}", info.key_prefix())
        }
    }

    /// The key prefix of a collection: a whole resource, or one namespace of it.
    pub fn prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if info.namespaced() => format!("{}{ns}/", info.key_prefix()),
            _ => info.key_prefix(),
        }
    }

    /// Decodes a stored value and sets its `resourceVersion` from the store.
    pub fn decode(value: &[u8], mod_revision: Revision) -> Result<Object, ApiError> {
        let mut obj: Object = serde_json::from_slice(value)
            .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))?;
        if !obj.is_object() {
            return Err(ApiError::internal("stored object is not a JSON object"));
        }
        object::set_meta(
            &mut obj,
            "resourceVersion",
            Value::String(mod_revision.to_string()),
        );
        Ok(obj)
    }

    /// Encodes an object for storage, removing its `resourceVersion` first (the
    /// store's revision is the version; keeping it inside would be stale at once).
    pub fn encode(obj: &mut Object) -> Result<Encoded, ApiError> {
        object::remove_meta(obj, "resourceVersion");
        let internal = |e: serde_json::Error| ApiError::internal(e.to_string());
        let Value::Object(fields) = &*obj else {
            let bytes = serde_json::to_vec(obj).map_err(internal)?;
            return Ok(Encoded {
                bytes: bytes.into(),
                hole: None,
            });
        };
        // serde_json's own layout, field by field, to learn where `metadata` opens.
        let mut out = Vec::with_capacity(1024);
        let mut hole = None;
        out.push(b'{');
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, name).map_err(internal)?;
            out.push(b':');
            if let (Value::Object(meta), "metadata") = (value, name.as_str()) {
                hole = Some((out.len() + 1, !meta.is_empty()));
            }
            serde_json::to_writer(&mut out, value).map_err(internal)?;
        }
        out.push(b'}');
        Ok(Encoded {
            bytes: out.into(),
            hole,
        })
    }

    /// Encodes `obj` for the store and, when a watch cache will see the
    /// write's event, leaves it that cache prepared; returns the bytes to put.
    fn encode_noting(
        &self,
        info: &ResourceInfo,
        key: &str,
        obj: &mut Object,
    ) -> Result<Encoded, ApiError> {
        let encoded = Self::encode(obj)?;
        if info.watch_cached() && self.store.shares_written_values() {
            self.written
                .note(key, Prepared::new(info, obj, encoded.clone()));
        }
        Ok(encoded)
    }

    /// Reads one object.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Object, ApiError> {
        let key = Self::key(info, namespace, name);
        let resp = self
            .store
            .get(&key, 0)
            .await
            .map_err(|e| api_error(e, info, name))?;
        let kv = resp
            .kv
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        Self::decode(&kv.value, kv.mod_revision)
    }

    /// Reads one page of a collection, at `revision` (0 = current), after `start_after`.
    pub async fn list_page(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        start_after: Option<String>,
        limit: usize,
        revision: Revision,
    ) -> Result<Page, ApiError> {
        let request = RangeRequest {
            prefix: Self::prefix(info, namespace),
            start_after,
            limit,
            revision,
        };
        let resp = self
            .store
            .range(request)
            .await
            .map_err(|e| api_error(e, info, ""))?;
        let last_key = if resp.more {
            resp.kvs.last().map(|kv| kv.key.clone())
        } else {
            None
        };
        let remaining = resp.count.saturating_sub(resp.kvs.len() as u64);
        let items = resp
            .kvs
            .iter()
            .map(|kv| Self::decode(&kv.value, kv.mod_revision))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items,
            revision: resp.revision,
            last_key,
            remaining,
        })
    }

    /// Creates an object; returns it as stored.
    pub async fn create(&self, info: &ResourceInfo, obj: Object) -> Result<Object, ApiError> {
        self.create_with_json(info, obj).await.map(|(obj, _)| obj)
    }

    /// Creates an object; returns it as stored, and its JSON.
    pub async fn create_with_json(
        &self,
        info: &ResourceInfo,
        mut obj: Object,
    ) -> Result<(Object, WrittenJson), ApiError> {
        let name = object::name(&obj).to_owned();
        let key = Self::key(info, object::namespace(&obj), &name);
        let encoded = self.encode_noting(info, &key, &mut obj)?;
        let value = encoded.bytes.clone();
        let revision = self.store.create(&key, value.clone()).await.map_err(|e| {
            self.written.forget(&key, &value);
            api_error(e, info, &name)
        })?;
        Ok((with_rv(obj, revision), WrittenJson { encoded, revision }))
    }

    /// Replaces an object if its revision is still `expected`.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        obj: Object,
        expected: Revision,
    ) -> Result<Object, ApiError> {
        self.update_with_json(info, obj, expected)
            .await
            .map(|(obj, _)| obj)
    }

    /// As [`ObjectStore::update`], returning the object's JSON too.
    pub async fn update_with_json(
        &self,
        info: &ResourceInfo,
        mut obj: Object,
        expected: Revision,
    ) -> Result<(Object, WrittenJson), ApiError> {
        let name = object::name(&obj).to_owned();
        let key = Self::key(info, object::namespace(&obj), &name);
        let encoded = self.encode_noting(info, &key, &mut obj)?;
        let value = encoded.bytes.clone();
        let revision = self
            .store
            .update(&key, value.clone(), expected)
            .await
            .map_err(|e| {
                self.written.forget(&key, &value);
                api_error(e, info, &name)
            })?;
        Ok((with_rv(obj, revision), WrittenJson { encoded, revision }))
    }

    /// Removes an object if its revision is still `expected`; returns it as it was,
    /// with the revision of the delete as its `resourceVersion`.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        expected: Revision,
    ) -> Result<Object, ApiError> {
        let key = Self::key(info, namespace, name);
        let resp = self
            .store
            .delete(&key, Precondition::ModRevision(expected))
            .await
            .map_err(|e| api_error(e, info, name))?;
        let obj = Self::decode(&resp.prev.value, resp.prev.mod_revision)?;
        if info.group.is_empty() && info.plural == "services" {
            crate::service_ips::release(self, &obj).await;
        }
        Ok(with_rv(obj, resp.revision))
    }

    /// Watches a collection from `start` (inclusive).
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        start: Revision,
    ) -> Result<WatchStream, ApiError> {
        self.store
            .watch(&Self::prefix(info, namespace), start)
            .await
            .map_err(|e| api_error(e, info, ""))
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> Result<Revision, ApiError> {
        self.store
            .current_revision()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// Sets `metadata.resourceVersion`.
pub fn with_rv(mut obj: Object, rev: Revision) -> Object {
    object::set_meta(&mut obj, "resourceVersion", Value::String(rev.to_string()));
    obj
}

/// Parses a `resourceVersion` string as sent by a client.
pub fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encoding_is_serde_jsons_and_the_version_goes_inside_metadata() {
        for obj in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v\"q"},
                "metadata": {"name": "c", "resourceVersion": "9", "labels": {"a": "b"}}}),
            json!({"kind": "X", "metadata": {}}),
            json!({"kind": "X", "metadata": {"name": "n"}, "zeta": [1, 2]}),
        ] {
            let mut stored = obj.clone();
            let encoded = ObjectStore::encode(&mut stored).expect("encodes");
            assert_eq!(encoded.bytes, serde_json::to_vec(&stored).expect("json"));
            let mut out = BytesMut::new();
            assert!(encoded.with_rv_into(42, &mut out));
            let served: Value = serde_json::from_slice(&out).expect("valid JSON");
            let decoded = ObjectStore::decode(&encoded.bytes, 42).expect("decodes");
            assert_eq!(served, decoded);
            assert_eq!(served["metadata"]["resourceVersion"], "42");
        }
        // Without a metadata map there is nowhere to put the version.
        let encoded = Encoded {
            bytes: Bytes::from_static(b"{\"kind\":\"X\"}"),
            hole: None,
        };
        let mut out = BytesMut::new();
        assert!(!encoded.with_rv_into(1, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn a_writes_json_answers_only_for_the_object_it_wrote() {
        let mut obj = json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        let encoded = ObjectStore::encode(&mut obj).expect("encodes");
        let written = WrittenJson {
            encoded,
            revision: 7,
        };
        let stored = with_rv(obj, 7);
        let json = written.of(&stored).expect("the object written");
        let served: Value = serde_json::from_slice(&json).expect("valid JSON");
        assert_eq!(served, stored);
        // Another version of it (a later write, or none) is encoded anew.
        assert!(written.of(&with_rv(stored.clone(), 8)).is_none());
        let mut unversioned = stored;
        object::remove_meta(&mut unversioned, "resourceVersion");
        assert!(written.of(&unversioned).is_none());
    }
}
