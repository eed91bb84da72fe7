//! The watch cache's objects kept compressed: each object's JSON as LZ4
//! against a reference, the JSON of a sibling of the same shape.
//!
//! A cluster's objects come in families that differ in a few bytes: the pods
//! of one ReplicaSet share their template, labels, owner and most of their
//! `managedFields`, and differ in names, uids, addresses and times. Against a
//! sibling's JSON a 3.6 KB pod packs into about a hundred bytes, where LZ4
//! alone gets it to half; so at 20,000 pods the cache holds a few megabytes
//! instead of a hundred. Unpacking takes well under a microsecond, paid by
//! lists and resumed watches only: live watch events carry the JSON as
//! encoded.

use std::collections::HashMap;

use bytes::Bytes;

/// Objects smaller than this are kept as they are: their header and a
/// reference would cost about what packing saves.
const MIN_PACKED: usize = 256;
/// Objects larger than this are kept as they are: LZ4 looks back at most
/// 64 KiB, and objects this large are few.
const MAX_PACKED: usize = 64 * 1024;
/// An object that packs to no less than 1/`MIN_RATIO` of its size shows
/// that the reference no longer resembles its family: it becomes the next.
const MIN_RATIO: usize = 4;
/// Families remembered per resource before the table starts over (objects
/// keep their own references either way). This bounds what the table holds
/// of families long gone (a deleted ReplicaSet's reference) to 1,024
/// objects' JSON per resource.
const MAX_FAMILIES: usize = 1_024;

/// One object's JSON, packed or whole.
#[derive(Debug, Clone)]
pub struct PackedJson(Form);

#[derive(Debug, Clone)]
enum Form {
    /// The JSON itself (small, large, or a family's reference).
    Whole(Bytes),
    /// LZ4 of the JSON with `reference` as its dictionary.
    Packed {
        bytes: Box<[u8]>,
        len: u32,
        reference: Bytes,
    },
}

impl PackedJson {
    /// The JSON kept as it is.
    pub fn whole(json: Bytes) -> Self {
        PackedJson(Form::Whole(json))
    }

    /// The JSON. Packed forms are only made by [`Packer::pack`], which checks
    /// that they unpack; a form that does not anyway (a defect) is logged and
    /// read as an empty object rather than taking the server down.
    pub fn json(&self) -> Bytes {
        match &self.0 {
            Form::Whole(b) => b.clone(),
            Form::Packed {
                bytes,
                len,
                reference,
            } => match lz4_flex::block::decompress_with_dict(bytes, *len as usize, reference) {
                Ok(v) => Bytes::from(v),
                Err(e) => {
                    tracing::error!(error = %e, "cached object does not unpack");
                    Bytes::from_static(b"{}")
                }
            },
        }
    }

    /// Bytes held for this object alone (a shared reference not counted).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        match &self.0 {
            Form::Whole(b) => b.len(),
            Form::Packed { bytes, .. } => bytes.len(),
        }
    }
}

/// Packs one resource's objects, choosing each family's reference.
#[derive(Debug, Default)]
pub struct Packer {
    references: HashMap<String, Bytes>,
}

impl Packer {
    /// Packs `json`, an object of family `family` (see [`family_of`]).
    pub fn pack(&mut self, family: &str, json: Bytes) -> PackedJson {
        if json.len() < MIN_PACKED || json.len() > MAX_PACKED {
            return PackedJson::whole(json);
        }
        if let Some(reference) = self.references.get(family) {
            let bytes = lz4_flex::block::compress_with_dict(&json, reference);
            let good = bytes.len() * MIN_RATIO < json.len();
            if good && unpacks_to(&bytes, reference, &json) {
                return PackedJson(Form::Packed {
                    bytes: bytes.into_boxed_slice(),
                    len: json.len() as u32,
                    reference: reference.clone(),
                });
            }
        }
        if self.references.len() >= MAX_FAMILIES && !self.references.contains_key(family) {
            self.references.clear();
        }
        self.references.insert(family.to_owned(), json.clone());
        PackedJson::whole(json)
    }
}

fn unpacks_to(bytes: &[u8], reference: &[u8], json: &[u8]) -> bool {
    lz4_flex::block::decompress_with_dict(bytes, json.len(), reference).is_ok_and(|v| v == json)
}

/// The family an object belongs to, for choosing its reference: its
/// controller's uid (the pods of one ReplicaSet, StatefulSet or Job), else
/// its `generateName`, else its namespace.
pub fn family_of(obj: &serde_json::Value) -> &str {
    let meta = &obj["metadata"];
    let controller = meta["ownerReferences"].as_array().and_then(|owners| {
        owners
            .iter()
            .find(|o| o["controller"].as_bool() == Some(true))
            .and_then(|o| o["uid"].as_str())
    });
    controller
        .or_else(|| meta["generateName"].as_str())
        .or_else(|| meta["namespace"].as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str) -> Bytes {
        let v = json!({
            "metadata": {"name": name, "namespace": "bench", "generateName": "web-7c5d-",
                "uid": format!("uid-{name}"), "labels": {"app": "web", "pod-template-hash": "7c5d"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7c5d",
                    "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "registry.local/app:1",
                "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}},
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T20:00:01Z"}]},
        });
        Bytes::from(serde_json::to_vec(&v).expect("encodes"))
    }

    #[test]
    fn siblings_pack_small_against_the_first_and_unpack_exactly() {
        let mut packer = Packer::default();
        let first = pod("web-7c5d-aaaaa", "10.0.0.1");
        let family = family_of(&serde_json::from_slice(&first).expect("json")).to_owned();
        assert_eq!(family, "rs-uid");
        let kept = packer.pack(&family, first.clone());
        assert_eq!(
            kept.held(),
            first.len(),
            "the first of a family is its reference"
        );
        assert_eq!(kept.json(), first);
        for (name, ip) in [
            ("web-7c5d-bbbbb", "10.0.0.2"),
            ("web-7c5d-ccccc", "10.0.3.77"),
        ] {
            let json = pod(name, ip);
            let packed = packer.pack(&family, json.clone());
            assert!(
                packed.held() * 5 < json.len(),
                "{} of {}",
                packed.held(),
                json.len()
            );
            assert_eq!(packed.json(), json);
        }
    }

    #[test]
    fn an_unlike_object_becomes_its_familys_next_reference() {
        let mut packer = Packer::default();
        packer.pack("f", pod("a", "10.0.0.1"));
        let unlike = Bytes::from(
            serde_json::to_vec(&json!({"data": (0..40).map(|i| format!("{i:x}-{}", i * 7919)).collect::<Vec<_>>()}))
                .expect("encodes"),
        );
        let kept = packer.pack("f", unlike.clone());
        assert_eq!(kept.held(), unlike.len());
        assert_eq!(kept.json(), unlike);
        // The next like it packs against it.
        let mut similar: serde_json::Value = serde_json::from_slice(&unlike).expect("json");
        similar["data"][3] = json!("changed");
        let similar = Bytes::from(serde_json::to_vec(&similar).expect("encodes"));
        let packed = packer.pack("f", similar.clone());
        assert!(packed.held() < similar.len() / 4);
        assert_eq!(packed.json(), similar);
    }

    #[test]
    fn small_and_large_objects_stay_whole() {
        let mut packer = Packer::default();
        for json in [
            Bytes::from_static(b"{\"metadata\":{\"name\":\"x\"}}"),
            Bytes::from(vec![b' '; MAX_PACKED + 1]),
        ] {
            let kept = packer.pack("", json.clone());
            assert_eq!(kept.held(), json.len());
            assert_eq!(kept.json(), json);
        }
        assert!(packer.references.is_empty());
    }

    #[test]
    fn families_fall_back_from_controller_to_generate_name_to_namespace() {
        let of = |v: serde_json::Value| family_of(&v).to_owned();
        assert_eq!(
            of(json!({"metadata": {"namespace": "ns", "generateName": "g-",
                "ownerReferences": [{"uid": "other"}, {"uid": "ctl", "controller": true}]}})),
            "ctl"
        );
        assert_eq!(
            of(json!({"metadata": {"namespace": "ns", "generateName": "g-",
                "ownerReferences": [{"uid": "other"}]}})),
            "g-"
        );
        assert_eq!(of(json!({"metadata": {"namespace": "ns"}})), "ns");
        assert_eq!(of(json!({"metadata": {}})), "");
        assert_eq!(of(json!(null)), "");
    }
}
