//! The two ways a write changes ownership: an update takes the fields it
//! changed from everyone; an apply owns exactly what it applies, conflicts with
//! other owners of a field it sets to a different value, and removes what it
//! applied before and no longer does.

use serde_json::Value;

use super::{
    Conflict, Domain, Entry, FieldSet, Types, entries, fields_of, fields_v1_of, merge, remove_at,
    set_created_entry, set_entries, value_at,
};
use crate::object::{self, Object};

/// Who writes, and through what.
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The apiVersion of the request.
    pub api_version: &'a str,
    /// The subresource written through ("" for the main resource).
    pub subresource: &'a str,
    /// The part of the object the write may touch.
    pub domain: Domain,
    /// The kind's type: how its lists and maps are owned.
    pub types: Types<'a>,
}

fn entry_index(list: &[Entry], w: &Writer<'_>, operation: &str) -> Option<usize> {
    list.iter().position(|e| {
        e.manager == w.manager
            && e.operation == operation
            && e.subresource == w.subresource
            && (operation == "Apply" || e.api_version == w.api_version)
    })
}

fn upsert(list: &mut Vec<Entry>, w: &Writer<'_>, operation: &str, fields: FieldSet) {
    let time = object::now_rfc3339();
    match entry_index(list, w, operation) {
        Some(i) => {
            if list[i].fields != fields {
                list[i].time = time;
            }
            list[i].fields = fields;
            list[i].api_version = w.api_version.to_string();
        }
        None => list.push(new_entry(w, operation, time, fields)),
    }
}

/// A new entry of `w` for `operation`, changed at `time`.
fn new_entry(w: &Writer<'_>, operation: &str, time: String, fields: FieldSet) -> Entry {
    Entry {
        manager: w.manager.to_string(),
        operation: operation.to_string(),
        api_version: w.api_version.to_string(),
        time,
        subresource: w.subresource.to_string(),
        fields,
    }
}

/// The object's entries, their fields reconciled with the kind's type.
fn reconciled_entries(obj: &Object, w: &Writer<'_>) -> Vec<Entry> {
    let mut list = entries(obj);
    for e in &mut list {
        e.fields = super::types::reconcile(std::mem::take(&mut e.fields), w.types);
    }
    list
}

/// Records a create or update: the writer owns every field it changed, which
/// no other manager owns any longer; fields the object no longer has are owned
/// by nobody. `old` is `None` on create.
pub fn record_update(new: &mut Object, old: Option<&Object>, w: &Writer<'_>) {
    // A client that sends an empty list clears ownership, as upstream allows.
    if new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        object::remove_meta(new, "managedFields");
        return;
    }
    let Some(old) = old else {
        // A create changes every field it sets, and nobody else owns any.
        let header = new_entry(w, "Update", object::now_rfc3339(), FieldSet::new());
        set_created_entry(new, &header, fields_v1_of(new, w.domain, w.types));
        return;
    };
    let mut list = reconciled_entries(old, w);
    let now = fields_of(new, w.domain, w.types);
    let changed: FieldSet = now
        .into_iter()
        .filter(|p| {
            // A node itself changes only by appearing.
            if p.last().is_some_and(|l| l == ".") {
                value_at(old, p).is_none()
            } else {
                value_at(old, p) != value_at(new, p)
            }
        })
        .collect();
    for e in &mut list {
        e.fields
            .retain(|p| !changed.contains(p) && value_at(new, p).is_some());
    }
    if !changed.is_empty() {
        let mut mine = entry_index(&list, w, "Update")
            .map(|i| list[i].fields.clone())
            .unwrap_or_default();
        mine.extend(changed);
        upsert(&mut list, w, "Update", mine);
    }
    list.retain(|e| !e.fields.is_empty());
    set_entries(new, &list);
}

/// Applies `config` as `w.manager` onto `live` (`None`: the object does not
/// exist yet). Returns the merged object with its managedFields, or the
/// conflicts when `force` is false.
pub fn apply(
    live: Option<&Object>,
    config: &Object,
    w: &Writer<'_>,
    force: bool,
) -> Result<Object, Vec<Conflict>> {
    let config = &super::types::with_key_defaults(config, w.types);
    let empty = Value::Object(Default::default());
    let base = live.unwrap_or(&empty);
    let mut list = reconciled_entries(base, w);
    let applied = fields_of(config, w.domain, w.types);
    let mine = entry_index(&list, w, "Apply");
    let mut conflicts = Vec::new();
    for (i, e) in list.iter_mut().enumerate() {
        if Some(i) == mine {
            continue;
        }
        let clashing: Vec<_> = e
            .fields
            .intersection(&applied)
            .filter(|p| p.last().map(String::as_str) != Some("."))
            .filter(|p| value_at(base, p) != value_at(config, p))
            .cloned()
            .collect();
        if force {
            e.fields.retain(|p| !clashing.contains(p));
        } else {
            conflicts.extend(clashing.iter().map(|p| Conflict {
                manager: e.manager.clone(),
                api_version: e.api_version.clone(),
                field: super::display(p),
            }));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut merged = base.clone();
    let mut body = config.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    merge(&mut merged, &body, w.types);
    // What this manager applied before and no longer applies goes, unless
    // another manager owns it (or something inside it).
    let before = mine.map(|i| list[i].fields.clone()).unwrap_or_default();
    let others: Vec<&FieldSet> = list
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != mine)
        .map(|(_, e)| &e.fields)
        .collect();
    let mut dropped: Vec<_> = before.difference(&applied).cloned().collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in dropped {
        let node: &[String] = match path.split_last() {
            Some((last, parent)) if last == "." => parent,
            _ => &path,
        };
        let owned_elsewhere = others
            .iter()
            .any(|set| set.iter().any(|p| p.starts_with(node)))
            || applied.iter().any(|p| p.starts_with(node));
        if !owned_elsewhere {
            remove_at(&mut merged, &path);
        }
    }
    upsert(&mut list, w, "Apply", applied);
    list.retain(|e| !e.fields.is_empty());
    set_entries(&mut merged, &list);
    Ok(merged)
}
