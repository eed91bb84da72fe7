//! Field ownership (`metadata.managedFields`) and server-side apply: which
//! manager set which field, conflicts between appliers, and the removal of
//! fields an applier stops applying.
//!
//! A field set is a set of paths in upstream's `FieldsV1` element syntax:
//! `f:<field>` for a map key, `k:{"name":"c"}` for an item of a list merged by
//! key, `v:<json>` for an item of a set-like list, and `.` for a node itself.
//! For built-in kinds lists merge by the same keys as strategic merge patch;
//! for custom resources as their schema's list types say; other lists are
//! atomic (owned and replaced whole), as upstream's schemas make them.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::object::{self, Object};

mod ops;
mod types;

pub use ops::{Writer, apply, record_update};
pub use types::{ListKind, Types};

/// One path to a field, as `FieldsV1` elements.
pub type FieldPath = Vec<String>;
/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

/// The metadata fields nobody owns (identity and server-managed).
const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Lists of strings merged as sets.
const SET_LISTS: &[&str] = &["finalizers"];

/// What part of an object a write may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// Everything but `status` (the main resource of a kind with a status subresource).
    NoStatus,
    /// Only `status` (the status subresource).
    StatusOnly,
    /// The whole object.
    All,
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion the fields were written in.
    pub api_version: String,
    /// When the entry last changed.
    pub time: String,
    /// The subresource written through, if any.
    pub subresource: String,
    /// The owned fields.
    pub fields: FieldSet,
}

/// Reads an object's `managedFields` (malformed entries are dropped).
pub fn entries(obj: &Object) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut fields = FieldSet::new();
            from_fields_v1(e.get("fieldsV1")?, &mut Vec::new(), &mut fields);
            Some(Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                fields,
            })
        })
        .collect()
}

/// Writes `entries` as the object's `managedFields` (none: the field is removed).
pub fn set_entries(obj: &mut Object, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| entry_json(e, to_fields_v1(&e.fields)))
        .collect();
    if list.is_empty() {
        object::remove_meta(obj, "managedFields");
    } else {
        object::set_meta(obj, "managedFields", Value::Array(list));
    }
}

/// One `managedFields` entry as JSON: `e`'s header with `fields_v1` (moved
/// in, not copied) as its fields; `e.fields` is not read.
fn entry_json(e: &Entry, fields_v1: Value) -> Value {
    let mut m = Map::new();
    m.insert("manager".into(), json!(e.manager));
    m.insert("operation".into(), json!(e.operation));
    m.insert("apiVersion".into(), json!(e.api_version));
    m.insert("time".into(), json!(e.time));
    m.insert("fieldsType".into(), json!("FieldsV1"));
    m.insert("fieldsV1".into(), fields_v1);
    if !e.subresource.is_empty() {
        m.insert("subresource".into(), json!(e.subresource));
    }
    Value::Object(m)
}

/// Writes the one entry of an object just created: `header` (whose `fields`
/// are not read) owning `fields_v1`, or no managedFields when that is empty.
pub(super) fn set_created_entry(obj: &mut Object, header: &Entry, fields_v1: Map<String, Value>) {
    if fields_v1.is_empty() {
        object::remove_meta(obj, "managedFields");
    } else {
        let entry = entry_json(header, Value::Object(fields_v1));
        object::set_meta(obj, "managedFields", Value::Array(vec![entry]));
    }
}

fn from_fields_v1(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
    }
    for (k, child) in m {
        path.push(k.clone());
        if k == "." {
            out.insert(path.clone());
        } else {
            from_fields_v1(child, path, out);
        }
        path.pop();
    }
}

/// The `FieldsV1` form of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for el in path {
            let next = node.entry(el.clone()).or_insert_with(|| json!({}));
            let Some(m) = next.as_object_mut() else { break };
            node = m;
        }
    }
    Value::Object(root)
}

/// The top-level fields of `obj` a write in `domain` may own.
fn owned_top_level(obj: &Object, domain: Domain) -> impl Iterator<Item = (&String, &Value)> {
    obj.as_object()
        .into_iter()
        .flatten()
        .filter(move |(k, _)| match k.as_str() {
            "apiVersion" | "kind" => false,
            "status" => domain != Domain::NoStatus,
            _ => domain != Domain::StatusOnly,
        })
}

/// The metadata fields of `meta` anyone may own.
fn owned_metadata(meta: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    meta.iter()
        .filter(|(mk, _)| !UNOWNED_META.contains(&mk.as_str()))
}

/// The fields an object sets, within `domain`.
pub fn fields_of(obj: &Object, domain: Domain, types: Types<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    for (k, v) in owned_top_level(obj, domain) {
        let mut path = vec![format!("f:{k}")];
        if k == "metadata" {
            let Some(meta) = v.as_object() else { continue };
            for (mk, mv) in owned_metadata(meta) {
                path.push(format!("f:{mk}"));
                walk(mv, mk, Types::Builtin, &mut path, &mut out);
                path.pop();
            }
            continue;
        }
        walk(v, k, types.field(k, true), &mut path, &mut out);
    }
    out
}

/// The fields an object sets, within `domain`, as `fieldsV1`: what
/// `to_fields_v1(&fields_of(..))` gives, built as one tree instead of a set
/// of paths (each a list of strings) that is then folded into one. A create
/// owns every field it sets, so this is all its ownership takes.
pub fn fields_v1_of(obj: &Object, domain: Domain, types: Types<'_>) -> Map<String, Value> {
    let mut root = Map::new();
    for (k, v) in owned_top_level(obj, domain) {
        let tree = if k == "metadata" {
            let Some(meta) = v.as_object() else { continue };
            let mut node = Map::new();
            for (mk, mv) in owned_metadata(meta) {
                add_subtree(
                    &mut node,
                    format!("f:{mk}"),
                    subtree(mv, mk, Types::Builtin),
                );
            }
            (!node.is_empty()).then_some(node)
        } else {
            subtree(v, k, types.field(k, true))
        };
        add_subtree(&mut root, format!("f:{k}"), tree);
    }
    root
}

/// The `fieldsV1` tree of what `v` (a value of `field`) sets, relative to
/// its own path: `None` when it sets nothing, as [`walk`] would add no path.
fn subtree(v: &Value, field: &str, types: Types<'_>) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) if !m.is_empty() && !types.atomic_map(field) => {
            let mut node = Map::new();
            node.insert(".".into(), json!({}));
            for (k, child) in m {
                add_subtree(
                    &mut node,
                    format!("f:{k}"),
                    subtree(child, k, types.field(k, false)),
                );
            }
            Some(node)
        }
        Value::Array(items) if !items.is_empty() => {
            let refs: Vec<&Value> = items.iter().collect();
            match types.list_kind(field, &refs) {
                ListKind::Set => Some(
                    items
                        .iter()
                        .map(|item| (format!("v:{item}"), json!({})))
                        .collect(),
                ),
                ListKind::Map(keys) => {
                    let mut node = Map::new();
                    for item in items {
                        if let Some(el) = types::key_element(&keys, item) {
                            add_subtree(&mut node, el, subtree(item, "", types.items()));
                        }
                    }
                    (!node.is_empty()).then_some(node)
                }
                ListKind::Atomic => Some(Map::new()),
            }
        }
        _ => Some(Map::new()),
    }
}

/// Adds `tree` under `key` of `node`, merged with what is there (a list
/// map's items may share a key).
fn add_subtree(node: &mut Map<String, Value>, key: String, tree: Option<Map<String, Value>>) {
    let Some(tree) = tree else { return };
    match node.get_mut(&key) {
        Some(Value::Object(existing)) => {
            for (k, v) in tree {
                let sub = match v {
                    Value::Object(m) => Some(m),
                    _ => None,
                };
                add_subtree(existing, k, sub);
            }
        }
        _ => {
            node.insert(key, Value::Object(tree));
        }
    }
}

fn walk(v: &Value, field: &str, types: Types<'_>, path: &mut FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !types.atomic_map(field) => {
            path.push(".".into());
            out.insert(path.clone());
            path.pop();
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, k, types.field(k, false), path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let refs: Vec<&Value> = items.iter().collect();
            match types.list_kind(field, &refs) {
                ListKind::Set => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                ListKind::Map(keys) => {
                    for item in items {
                        let Some(el) = types::key_element(&keys, item) else {
                            continue;
                        };
                        path.push(el);
                        walk(item, "", types.items(), path, out);
                        path.pop();
                    }
                }
                ListKind::Atomic => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn step<'a>(v: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return v.get(f);
    }
    if el == "." {
        return Some(v);
    }
    let items = v.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    let want: Value = serde_json::from_str(el.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == want)
}

/// The value at a path, if the object has it.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, el| step(v, el))
}

/// Removes the field at `path` (for `.`, the node that holds it).
fn remove_at(obj: &mut Value, path: &[String]) {
    let path = match path.split_last() {
        Some((last, parent)) if last == "." => parent,
        _ => path,
    };
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(container) = parent.iter().try_fold(&mut *obj, |v, el| step_mut(v, el)) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = container.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(target) = step(container, last).cloned()
        && let Some(items) = container.as_array_mut()
    {
        items.retain(|i| *i != target);
    }
}

fn step_mut<'a>(v: &'a mut Value, el: &str) -> Option<&'a mut Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return v.get_mut(f);
    }
    let target = step(v, el)?.clone();
    v.as_array_mut()?.iter_mut().find(|i| **i == target)
}

/// Merges an applied configuration into `live`: maps recursively, sets as a
/// union, map lists item by item, everything else (atomic lists and maps,
/// scalars) replaced.
pub fn merge(live: &mut Value, config: &Value, types: Types<'_>) {
    merge_at(live, config, "", types, true);
}

fn merge_at(live: &mut Value, config: &Value, field: &str, types: Types<'_>, at_root: bool) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !types.atomic_map(field) => {
            for (k, v) in c {
                match l.get_mut(k) {
                    Some(existing) => merge_at(existing, v, k, types.field(k, at_root), false),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let refs: Vec<&Value> = c.iter().chain(l.iter()).collect();
            match types.list_kind(field, &refs) {
                ListKind::Set => {
                    for item in c {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
                ListKind::Map(keys) => {
                    for item in c {
                        match l.iter_mut().find(|i| types::same_item(&keys, i, item)) {
                            Some(existing) => merge_at(existing, item, "", types.items(), false),
                            None => l.push(item.clone()),
                        }
                    }
                }
                ListKind::Atomic => *l = c.clone(),
            }
        }
        (live, config) => *live = config.clone(),
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The apiVersion it wrote in.
    pub api_version: String,
    /// The field, as upstream prints it (`.spec.replicas`).
    pub field: String,
}

/// A path as upstream prints it in conflict messages.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
