//! Decoding built-in kinds into their typed form (k8s-openapi) to find what a
//! JSON body holds that the kind does not: unknown fields (for
//! `fieldValidation`) and wrong types (always a 400, as upstream's decoder).

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

fn path_string(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        Path::Map { parent, key } => {
            let p = path_string(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

fn decode<T: DeserializeOwned>(body: &Value) -> Result<Decoded, String> {
    let mut unknown = Vec::new();
    let mut segs = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(body, |path| {
        unknown.push(path_string(&path));
        let mut s = Vec::new();
        segments(&path, &mut s);
        segs.push(s);
    });
    result.map_err(|e| e.to_string())?;
    Ok(Decoded {
        unknown,
        segments: segs,
    })
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
pub fn check(info: &ResourceInfo, body: &Value) -> Option<Result<Decoded, String>> {
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
        let found = check(&d, &body).expect("typed").expect("decodes");
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
        assert!(check(&d, &wrong).expect("typed").is_err());
        let clean = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
        let cm = reg.get("", "v1", "configmaps").expect("cm");
        assert_eq!(check(&cm, &clean), Some(Ok(Decoded::default())));
    }
}
