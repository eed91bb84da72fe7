//! How the watch cache holds an object and a change: the JSON (packed), the
//! labels and fields selectors read, and the watch line every live watcher
//! shares.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kybern_store::{EventKind, Revision};
use serde_json::Value;

use crate::handlers::list::{field_of, selectable_fields};
use crate::object;
use crate::packed_json::{PackedJson, Packer, family_of};
use crate::packed_strings::PackedStrings;
use crate::registry::ResourceInfo;
use crate::request::ListOptions;
use crate::written::Prepared;

/// What the cache selects an object by, taken from it once.
#[derive(Debug)]
pub struct IndexedFields {
    /// `metadata.labels`, as keys and values in turn.
    pub labels: PackedStrings,
    /// The kind's selectable fields (beyond name and namespace).
    pub field_names: &'static [&'static str],
    /// Their values, in that order (empty where the object has none).
    pub fields: PackedStrings,
}

impl IndexedFields {
    /// The labels and selectable fields of `obj`, of `info`'s kind.
    pub fn of(info: &ResourceInfo, obj: &Value) -> Self {
        let field_names = selectable_fields(info);
        let values: Vec<String> = field_names
            .iter()
            .map(|f| field_of(obj, f).unwrap_or_default())
            .collect();
        let labels = object::labels(obj).and_then(Value::as_object);
        let labels = labels
            .into_iter()
            .flatten()
            .flat_map(|(k, v)| [k.as_str(), v.as_str().unwrap_or_default()]);
        IndexedFields {
            labels: PackedStrings::new(labels),
            field_names,
            fields: PackedStrings::new(values.iter().map(String::as_str)),
        }
    }

    /// The value of the selectable field `name` (beyond name and namespace).
    pub fn field(&self, name: &str) -> Option<&str> {
        let i = self.field_names.iter().position(|f| *f == name)?;
        self.fields.get(i)
    }
}

/// One object as the cache holds it.
#[derive(Debug)]
pub struct CachedObject {
    /// Store key (`<resource prefix>[<namespace>/]<name>`), shared with the
    /// cache's index; name and namespace are read from it.
    pub key: Arc<str>,
    /// Whether the key holds a namespace segment.
    pub namespaced: bool,
    /// The labels and selectable fields.
    pub index: IndexedFields,
    /// The object as JSON, with its `resourceVersion`, packed.
    body: PackedJson,
    /// That `resourceVersion`: the store revision of the object's last change.
    pub revision: Revision,
}

impl CachedObject {
    /// The cached form of `obj`, its JSON kept whole (for caches of few objects).
    pub fn new(info: &ResourceInfo, key: &str, obj: &Value, revision: Revision) -> Self {
        let json = Bytes::from(serde_json::to_vec(obj).unwrap_or_default());
        let index = IndexedFields::of(info, obj);
        Self::with_json(info, key, index, revision, PackedJson::whole(json))
    }

    /// The cached form of `obj`, packed by `packer`, and the watch line
    /// `{"type":<line_type>,"object":<json>}\n` for live watchers, encoded
    /// once for both.
    pub(crate) fn with_line(
        info: &ResourceInfo,
        key: &str,
        obj: &Value,
        revision: Revision,
        line_type: &'static str,
        packer: &mut Packer,
    ) -> (Self, Bytes) {
        let encoded = serde_json::to_vec(obj).unwrap_or_default();
        // Exact-size, so that a whole object keeps no growth slack.
        let mut framed = BytesMut::with_capacity(encoded.len() + line_type.len() + 24);
        watch_line_into(line_type, &encoded, &mut framed);
        let line = framed.freeze();
        let json = line.slice(line_prefix(line_type)..line.len() - 2);
        let body = packer.pack(family_of(obj), json);
        let index = IndexedFields::of(info, obj);
        (Self::with_json(info, key, index, revision, body), line)
    }

    /// As [`CachedObject::with_line`], for an object this server wrote and
    /// prepared (see [`crate::written`]): nothing is decoded or encoded.
    pub(crate) fn from_written(
        info: &ResourceInfo,
        key: &str,
        written: Prepared,
        revision: Revision,
        line_type: &'static str,
        packer: &mut Packer,
    ) -> Option<(Self, Bytes)> {
        let stored = &written.encoded.bytes;
        let mut framed = BytesMut::with_capacity(stored.len() + line_type.len() + 48);
        open_line(line_type, &mut framed);
        if !written.encoded.with_rv_into(revision, &mut framed) {
            return None;
        }
        close_line(&mut framed);
        let line = framed.freeze();
        let json = line.slice(line_prefix(line_type)..line.len() - 2);
        let body = packer.pack(&written.family, json);
        let object = Self::with_json(info, key, written.index, revision, body);
        Some((object, line))
    }

    fn with_json(
        info: &ResourceInfo,
        key: &str,
        index: IndexedFields,
        revision: Revision,
        body: PackedJson,
    ) -> Self {
        CachedObject {
            key: Arc::from(key),
            namespaced: info.namespaced(),
            index,
            body,
            revision,
        }
    }

    /// The object as JSON, with its `resourceVersion`.
    pub fn json(&self) -> Bytes {
        self.body.json()
    }

    /// Bytes this object's JSON holds in the cache.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.body.held()
    }

    /// `metadata.name`: the key's last segment (names hold no `/`).
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }

    /// `metadata.namespace`: the key's second-to-last segment, for namespaced kinds.
    pub fn namespace(&self) -> &str {
        if !self.namespaced {
            return "";
        }
        self.key.rsplit('/').nth(1).unwrap_or_default()
    }

    /// The value of the selectable field `name` (beyond name and namespace).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.index.field(name)
    }

    /// Whether the object passes the request's selectors.
    pub fn matches(&self, opts: &ListOptions) -> bool {
        opts.labels.matches_with(|k| self.index.labels.value_of(k))
            && opts.fields.matches(|f| match f {
                "metadata.name" => Some(self.name().to_owned()),
                "metadata.namespace" => Some(self.namespace().to_owned()),
                other => self.field(other).map(str::to_owned),
            })
    }
}

/// One change, as the cache fans it out.
#[derive(Debug)]
pub struct CachedEvent {
    /// Store revision of the change.
    pub revision: Revision,
    /// Put or delete.
    pub kind: EventKind,
    /// The object after the change; for a delete, the last state with the
    /// delete's revision as its `resourceVersion`.
    pub object: Arc<CachedObject>,
    /// The object before the change.
    pub prev: Option<Arc<CachedObject>>,
}

impl CachedEvent {
    /// The event type an unfiltered watcher sees.
    pub fn natural_type(&self) -> &'static str {
        match (self.kind, &self.prev) {
            (EventKind::Delete, _) => "DELETED",
            (EventKind::Put, Some(_)) => "MODIFIED",
            (EventKind::Put, None) => "ADDED",
        }
    }
}

/// A change as it happens: the event, and its watch line as every
/// unfiltered JSON watcher receives it, shared (a refcount per watcher, not
/// a copy). The line lives as long as some watcher has yet to read it; the
/// ring keeps only the packed event.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    /// The change.
    pub event: Arc<CachedEvent>,
    line: Bytes,
}

impl LiveEvent {
    pub(super) fn new(event: Arc<CachedEvent>, line: Bytes, line_type: &'static str) -> Self {
        let kind = event.natural_type();
        let line = if kind == line_type {
            line
        } else {
            let json = line.slice(line_prefix(line_type)..line.len() - 2);
            let mut b = BytesMut::new();
            watch_line_into(kind, &json, &mut b);
            b.freeze()
        };
        LiveEvent { event, line }
    }

    /// `{"type":<natural type>,"object":<json>}\n`.
    pub fn line(&self) -> Bytes {
        self.line.clone()
    }

    /// The object's JSON: a slice of the line, not unpacked again.
    pub fn json(&self) -> Bytes {
        let start = line_prefix(self.event.natural_type());
        self.line.slice(start..self.line.len() - 2)
    }
}

/// Length of `{"type":"<kind>","object":`.
pub(super) fn line_prefix(kind: &str) -> usize {
    kind.len() + 20
}

/// Appends one JSON watch line for an object already encoded as JSON.
pub fn watch_line_into(kind: &str, json: &[u8], out: &mut BytesMut) {
    out.reserve(json.len() + kind.len() + 24);
    open_line(kind, out);
    out.put_slice(json);
    close_line(out);
}

/// `{"type":"<kind>","object":`, [`line_prefix`] bytes.
fn open_line(kind: &str, out: &mut BytesMut) {
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"object\":");
}

/// The end of a watch line after its object.
fn close_line(out: &mut BytesMut) {
    out.put_slice(b"}\n");
}
