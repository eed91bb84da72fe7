//! The shape a field has for ownership and apply: whether a list is atomic, a
//! set, or a map keyed by some of its items' fields, and whether a map is
//! owned whole. Built-in kinds answer from upstream's merge keys, chosen by
//! field name; custom resources from their CRD's structural schema
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`), as upstream's structured merge does.

use serde_json::{Map, Value};

use super::SET_LISTS;
use crate::smp;

/// Built-in fields upstream owns whole: label selectors (`+structType=atomic`),
/// `nodeSelector` and a Service's `selector` (`+mapType=atomic`), and the
/// key and field references of environment variables.
const ATOMIC_BUILTIN_MAPS: &[&str] = &[
    "selector",
    "nodeSelector",
    "podSelector",
    "namespaceSelector",
    "labelSelector",
    "configMapKeyRef",
    "secretKeyRef",
    "fieldRef",
    "resourceFieldRef",
];

/// Where in a kind's type a value sits.
#[derive(Clone, Copy, Debug)]
pub enum Types<'a> {
    /// A built-in kind, or any object's `metadata`.
    Builtin,
    /// A custom resource at a node of its schema; `None` where the schema says
    /// nothing (under `x-kubernetes-preserve-unknown-fields`), where lists are
    /// atomic and maps granular.
    Schema(Option<&'a Value>),
}

/// How a list is owned and merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// Owned and replaced whole.
    Atomic,
    /// Scalars owned one by one (`v:` elements) and merged as a union.
    Set,
    /// Items owned one by one by the values of these fields (`k:` elements).
    Map(Vec<MapKey>),
}

/// One key field of a map list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapKey {
    /// The field's name.
    pub name: String,
    /// The schema's default, which an item without the field has as its key
    /// (applied configurations are merged before they are defaulted).
    pub default: Option<Value>,
}

impl MapKey {
    fn named(name: &str) -> MapKey {
        MapKey {
            name: name.to_string(),
            default: None,
        }
    }
}

impl<'a> Types<'a> {
    /// The type of a map's value under `key` (at an object's root,
    /// `metadata` is always the built-in `ObjectMeta`).
    pub fn field(self, key: &str, at_root: bool) -> Types<'a> {
        match self {
            Types::Builtin => Types::Builtin,
            Types::Schema(_) if at_root && key == "metadata" => Types::Builtin,
            Types::Schema(None) => Types::Schema(None),
            Types::Schema(Some(s)) => Types::Schema(
                s.get("properties")
                    .and_then(|p| p.get(key))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object())),
            ),
        }
    }

    /// The type of a list's items.
    pub fn items(self) -> Types<'a> {
        match self {
            Types::Schema(s) => Types::Schema(s.and_then(|s| s.get("items"))),
            Types::Builtin => Types::Builtin,
        }
    }

    /// Whether the map under `field` is owned and replaced whole: for custom
    /// resources `x-kubernetes-map-type: atomic`, for built-in kinds the
    /// structs and maps upstream marks atomic.
    pub fn atomic_map(self, field: &str) -> bool {
        match self {
            Types::Builtin => ATOMIC_BUILTIN_MAPS.contains(&field),
            Types::Schema(Some(s)) => {
                s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
            }
            Types::Schema(None) => false,
        }
    }

    /// How the list under `field` with these items is owned. A map list
    /// whose items do not all carry their keys is atomic.
    pub fn list_kind(self, field: &str, items: &[&Value]) -> ListKind {
        let kind = match self {
            Types::Builtin if SET_LISTS.contains(&field) => ListKind::Set,
            Types::Builtin => match smp::merge_key(field, items) {
                Some(key) => ListKind::Map(builtin_map_keys(key)),
                None => ListKind::Atomic,
            },
            Types::Schema(None) => ListKind::Atomic,
            Types::Schema(Some(s)) => match s.get("x-kubernetes-list-type").and_then(Value::as_str)
            {
                Some("set") => ListKind::Set,
                Some("map") => match crate::crd::schema::list_map_keys(s) {
                    Some(keys) => ListKind::Map(
                        keys.into_iter()
                            .map(|k| MapKey {
                                name: k.to_string(),
                                default: s
                                    .pointer("/items/properties")
                                    .and_then(|p| p.get(k))
                                    .and_then(|p| p.get("default"))
                                    .cloned(),
                            })
                            .collect(),
                    ),
                    None => ListKind::Atomic,
                },
                _ => ListKind::Atomic,
            },
        };
        match kind {
            ListKind::Map(keys) if items.iter().all(|i| key_of(&keys, i).is_some()) => {
                ListKind::Map(keys)
            }
            ListKind::Map(_) => ListKind::Atomic,
            other => other,
        }
    }
}

/// The keys of a built-in map list whose strategic merge key is `merge_key`.
/// Server-side apply names items by upstream's `listMapKey`s, which for a
/// few lists are more than the merge key: ports are told apart by protocol
/// too (DNS serves 53/UDP and 53/TCP side by side), spread constraints by
/// what happens when they cannot be met.
fn builtin_map_keys(merge_key: &str) -> Vec<MapKey> {
    let protocol = || MapKey {
        name: "protocol".into(),
        default: Some(Value::String("TCP".into())),
    };
    match merge_key {
        "containerPort" | "port" => vec![MapKey::named(merge_key), protocol()],
        "topologyKey" => vec![
            MapKey::named("topologyKey"),
            MapKey::named("whenUnsatisfiable"),
        ],
        key => vec![MapKey::named(key)],
    }
}

/// An item's key fields and their values (a missing field has its
/// default), or `None` when one is missing and has no default.
pub fn key_of(keys: &[MapKey], item: &Value) -> Option<Map<String, Value>> {
    keys.iter()
        .map(|k| {
            Some((
                k.name.clone(),
                item.get(&k.name).or(k.default.as_ref())?.clone(),
            ))
        })
        .collect()
}

/// The `k:` element naming an item of a map list (keys in name order, as
/// upstream writes them).
pub fn key_element(keys: &[MapKey], item: &Value) -> Option<String> {
    Some(format!("k:{}", Value::Object(key_of(keys, item)?)))
}

/// Whether two items of a map list are the same item.
pub fn same_item(keys: &[MapKey], a: &Value, b: &Value) -> bool {
    key_of(keys, a).is_some_and(|k| key_of(keys, b).as_ref() == Some(&k))
}

/// A copy of an applied configuration whose map-list items carry their key
/// fields' defaults, so that it names its items as the stored (defaulted)
/// object does.
pub fn with_key_defaults(config: &Value, types: Types<'_>) -> Value {
    let mut out = config.clone();
    if matches!(types, Types::Schema(Some(_))) {
        fill_keys(&mut out, "", types, true);
    }
    out
}

fn fill_keys(v: &mut Value, field: &str, types: Types<'_>, at_root: bool) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                fill_keys(child, k, types.field(k, at_root), false);
            }
        }
        Value::Array(items) => {
            let kind = types.list_kind(field, &items.iter().collect::<Vec<_>>());
            for item in items.iter_mut() {
                if let (ListKind::Map(keys), Some(o)) = (&kind, item.as_object_mut()) {
                    for key in keys {
                        if let (false, Some(d)) = (o.contains_key(&key.name), &key.default) {
                            o.insert(key.name.clone(), d.clone());
                        }
                    }
                }
                fill_keys(item, "", types.items(), false);
            }
        }
        _ => {}
    }
}

/// Cuts owned paths that reach inside a field the type owns whole (a CRD's
/// schema changed, or an older server recorded the field granularly) back to
/// that field, as upstream's `ReconcileFieldSetWithSchema` does. Otherwise an
/// apply would count the inner paths as no longer applied and remove them
/// from the field it just set.
pub fn reconcile(set: super::FieldSet, types: Types<'_>) -> super::FieldSet {
    set.into_iter()
        .map(|mut p| {
            p.truncate(kept_len(&p, types));
            p
        })
        .collect()
}

/// How much of `path` to keep: up to the first field its type owns whole.
/// Built-in lists are never cut: they are never atomic one day and keyed
/// the next.
fn kept_len(path: &[String], types: Types<'_>) -> usize {
    let mut t = types;
    for (i, el) in path.iter().enumerate() {
        let Some(next) = path.get(i + 1) else { break };
        if let Some(field) = el.strip_prefix("f:") {
            t = t.field(field, i == 0);
            let into_items = next.starts_with("k:") || next.starts_with("v:");
            let atomic = if into_items {
                matches!(t, Types::Schema(_)) && t.list_kind(field, &[]) == ListKind::Atomic
            } else {
                t.atomic_map(field)
            };
            if atomic {
                return i + 1;
            }
        } else if el != "." {
            t = t.items();
        }
    }
    path.len()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schemas_name_list_and_map_shapes() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["port", "protocol"],
                    "items": {"type": "object", "properties": {
                        "protocol": {"type": "string", "default": "TCP"}}}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}},
                "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}
        }});
        let root = Types::Schema(Some(&schema));
        let spec = root.field("spec", true);
        let a = json!({"port": 80, "protocol": "TCP"});
        let ports = spec.field("ports", false).list_kind("ports", &[&a]);
        let ListKind::Map(keys) = &ports else {
            panic!("{ports:?}");
        };
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["port", "protocol"]);
        // protocol has a default: an item without it is the TCP item.
        let defaulted = json!({"port": 80});
        assert!(same_item(keys, &a, &defaulted));
        assert_eq!(
            spec.field("ports", false)
                .list_kind("ports", &[&a, &defaulted]),
            ports
        );
        let keyless = json!({"protocol": "TCP"});
        assert_eq!(
            spec.field("ports", false)
                .list_kind("ports", &[&a, &keyless]),
            ListKind::Atomic,
            "an item without a key that has no default makes the list atomic"
        );
        let filled = with_key_defaults(&json!({"spec": {"ports": [{"port": 80}]}}), root);
        assert_eq!(filled["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            spec.field("tags", false).list_kind("tags", &[]),
            ListKind::Set
        );
        assert_eq!(
            spec.field("args", false).list_kind("args", &[]),
            ListKind::Atomic
        );
        // A CR's `containers` is not merged by name unless its schema says so.
        let c = json!({"name": "c"});
        assert_eq!(
            spec.field("free", false)
                .field("containers", false)
                .list_kind("containers", &[&c]),
            ListKind::Atomic
        );
        assert!(spec.field("selector", false).atomic_map("selector"));
        assert!(!spec.atomic_map("spec"));
        assert!(
            !spec.field("free", false).atomic_map("selector"),
            "a custom resource's selector is granular unless its schema says"
        );
        assert!(matches!(root.field("metadata", true), Types::Builtin));
        let keys = [MapKey::named("protocol"), MapKey::named("port")];
        assert_eq!(
            key_element(&keys, &a).as_deref(),
            Some(r#"k:{"port":80,"protocol":"TCP"}"#)
        );
    }

    fn keys_of(kind: ListKind) -> Vec<MapKey> {
        match kind {
            ListKind::Map(keys) => keys,
            other => panic!("not a map list: {other:?}"),
        }
    }

    #[test]
    fn builtins_keep_upstream_merge_keys() {
        let c = json!({"name": "c"});
        assert_eq!(
            Types::Builtin.list_kind("containers", &[&c]),
            ListKind::Map(vec![MapKey::named("name")])
        );
        // Ports are told apart by protocol too, TCP when it is left out.
        let udp = json!({"containerPort": 53, "protocol": "UDP"});
        let tcp = json!({"containerPort": 53});
        let keys = keys_of(Types::Builtin.list_kind("ports", &[&udp, &tcp]));
        assert!(!same_item(&keys, &udp, &tcp));
        assert_eq!(
            key_element(&keys, &tcp).as_deref(),
            Some(r#"k:{"containerPort":53,"protocol":"TCP"}"#)
        );
        let service = json!({"port": 53, "protocol": "UDP", "targetPort": 53});
        assert_eq!(
            key_element(
                &keys_of(Types::Builtin.list_kind("ports", &[&service])),
                &service
            )
            .as_deref(),
            Some(r#"k:{"port":53,"protocol":"UDP"}"#)
        );
        assert_eq!(Types::Builtin.list_kind("finalizers", &[]), ListKind::Set);
        assert_eq!(Types::Builtin.list_kind("args", &[]), ListKind::Atomic);
        assert!(Types::Builtin.atomic_map("selector"));
        assert!(!Types::Builtin.atomic_map("labels"));
    }
}
