//! Decoding built-in kinds into their typed form (k8s-openapi) to find what a
//! JSON body holds that the kind does not: unknown fields (for
//! `fieldValidation`) and wrong types (always a 400, as upstream's decoder).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::registry::ResourceInfo;

/// What decoding a body as its kind found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Paths of fields the kind does not have, as upstream writes them (`spec.foo`, `spec.containers[0].bar`).
    pub unknown: Vec<String>,
    /// The same paths as segments, for pruning.
    segments: Vec<Vec<Segment>>,
}

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent, out),
    }
}

impl Decoded {
    /// Removes the unknown fields from `body`, as decoding into the kind's type
    /// does upstream: what a kind does not have is not stored.
    pub fn prune(&self, body: &mut Value) {
        for path in &self.segments {
            remove_at(body, path);
        }
    }
}

fn remove_at(v: &mut Value, path: &[Segment]) {
    match path {
        [] | [Segment::Index(_)] => {}
        [Segment::Key(k)] => {
            if let Some(m) = v.as_object_mut() {
                m.remove(k);
            }
        }
        [first, rest @ ..] => {
            let next = match first {
                Segment::Key(k) => v.get_mut(k.as_str()),
                Segment::Index(i) => v.get_mut(*i),
            };
            if let Some(n) = next {
                remove_at(n, rest);
            }
        }
    }
}

/// A `managedFields` entry as the decoder checks it: `ManagedFieldsEntry`'s
/// fields and types, but `fieldsV1`, which may hold any JSON, is passed over
/// rather than copied into a tree only to be dropped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Read only for their types.
struct CheckedEntry {
    api_version: Option<String>,
    fields_type: Option<String>,
    #[serde(rename = "fieldsV1")]
    fields_v1: Option<AnyJson>,
    manager: Option<String>,
    operation: Option<String>,
    subresource: Option<String>,
    time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Any JSON value, read through and kept nowhere. (`IgnoredAny` would be
/// reported as an unknown field.)
struct AnyJson;

impl<'de> serde::Deserialize<'de> for AnyJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyJsonVisitor)
    }
}

struct AnyJsonVisitor;

impl<'de> serde::de::Visitor<'de> for AnyJsonVisitor {
    type Value = AnyJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_unit<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_none<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<AnyJson, D::Error> {
        AnyJson::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AnyJson, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AnyJson, A::Error> {
        while map.next_entry::<AnyJson, AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
}

fn decode_into<T: DeserializeOwned>(
    body: &Value,
    prefix: &[Segment],
    found: &mut Decoded,
) -> Result<(), String> {
    let result: Result<T, _> = serde_ignored::deserialize(body, |path| {
        let mut s = prefix.to_vec();
        segments(&path, &mut s);
        found.unknown.push(display(&s));
        found.segments.push(s);
    });
    result.map(drop).map_err(|e| e.to_string())
}

/// A path as upstream writes it: `spec.containers[0].bar`.
fn display(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Decodes `body` as `T`. Its `managedFields` are taken out meanwhile and
/// checked on their own as [`CheckedEntry`] values, then put back.
fn decode<T: DeserializeOwned>(body: &mut Value) -> Result<Decoded, String> {
    let mut found = Decoded::default();
    let managed = body
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.get_mut("managedFields"))
        .map(Value::take);
    let result = decode_into::<T>(body, &[], &mut found);
    let Some(managed) = managed else {
        return result.map(|()| found);
    };
    let prefix = [
        Segment::Key("metadata".to_owned()),
        Segment::Key("managedFields".to_owned()),
    ];
    let entries = decode_into::<Option<Vec<CheckedEntry>>>(&managed, &prefix, &mut found);
    if let Some(slot) = body.pointer_mut("/metadata/managedFields") {
        *slot = managed;
    }
    result.and(entries).map(|()| found)
}

macro_rules! decode_kinds {
    ($info:expr, $body:expr; $( ($g:literal, $v:literal, $k:literal) => $t:ty ),* $(,)?) => {
        match ($info.group.as_str(), $info.version.as_str(), $info.kind.as_str()) {
            $( ($g, $v, $k) => Some(decode::<$t>($body)), )*
            _ => None,
        }
    };
}

/// Decodes `body` as `info`'s kind. `None` for kinds without a typed form
/// (custom resources); `Err` with the decoder's message for a wrong type.
pub fn check(info: &ResourceInfo, body: &mut Value) -> Option<Result<Decoded, String>> {
    crate::kinds::with_builtin_kinds!(decode_kinds!(info, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_and_wrong_types() {
        let reg = Registry::with_builtins();
        let d = reg.get("apps", "v1", "deployments").expect("deployments");
        let body = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "bogus": 1},
            "spec": {"replicas": 1, "selector": {}, "extra": true, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}
        });
        let found = check(&d, &mut body.clone())
            .expect("typed")
            .expect("decodes");
        assert_eq!(
            found.unknown,
            vec![
                "metadata.bogus",
                "spec.extra",
                "spec.template.spec.containers[0].imagee"
            ]
        );
        let mut pruned = body.clone();
        found.prune(&mut pruned);
        assert_eq!(
            pruned["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "a"})
        );
        assert!(pruned["spec"].get("extra").is_none() && pruned["metadata"].get("bogus").is_none());
        let wrong = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "three", "selector": {}, "template": {}}});
        assert!(check(&d, &mut wrong.clone()).expect("typed").is_err());
        let clean = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
        let cm = reg.get("", "v1", "configmaps").expect("cm");
        assert_eq!(check(&cm, &mut clean.clone()), Some(Ok(Decoded::default())));
    }

    #[test]
    fn managed_fields_are_checked_apart_and_kept() {
        let reg = Registry::with_builtins();
        let cm = reg.get("", "v1", "configmaps").expect("cm");
        let entry = json!({"manager": "m", "operation": "Update", "apiVersion": "v1",
            "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}}, "extra": 1});
        let mut body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "managedFields": [entry], "bogus": true}, "data": {"a": "b"}});
        let before = body.clone();
        let found = check(&cm, &mut body).expect("typed").expect("decodes");
        assert_eq!(body, before, "the entries are put back");
        assert_eq!(
            found.unknown,
            vec!["metadata.bogus", "metadata.managedFields[0].extra"]
        );
        found.prune(&mut body);
        assert!(body["metadata"]["managedFields"][0].get("extra").is_none());
        assert_eq!(
            body["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
        // Wrong types inside an entry are still the decoder's 400.
        for bad in [
            json!({"time": "yesterday"}),
            json!({"manager": 3}),
            json!("x"),
        ] {
            let mut body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "managedFields": [bad]}});
            assert!(check(&cm, &mut body).expect("typed").is_err());
        }
    }
}
