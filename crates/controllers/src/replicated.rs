//! What the replica controller needs from the kinds it manages: a
//! ReplicaSet, or a ReplicationController (the same controller upstream,
//! through conversion), seen through one trait.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use kube::Resource;
use kybern_apimachinery::labels::Selector;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind that keeps a number of pods from a template.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The kind named in the pods' controller references.
    const KIND: &'static str;
    /// The component its Events come from (upstream's controller name).
    const EVENT_SOURCE: &'static str;
    /// The selector; `None` for a malformed or empty one, which selects nothing.
    fn selector(&self) -> Option<Selector>;
    /// `spec.replicas` (defaulted to 1).
    fn replicas(&self) -> i32;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// `spec.template`.
    fn template(&self) -> Option<PodTemplateSpec>;
    /// The status, in ReplicaSet form (the fields are the same).
    fn replica_status(&self) -> Option<ReplicaSetStatus>;
}

impl Replicated for ReplicaSet {
    const KIND: &'static str = "ReplicaSet";
    const EVENT_SOURCE: &'static str = "replicaset-controller";

    fn selector(&self) -> Option<Selector> {
        let sel = serde_json::to_value(&self.spec.as_ref()?.selector).ok()?;
        let s = Selector::from_label_selector(&sel).ok()?;
        // An empty selector would select every pod; upstream rejects it.
        (!s.is_empty()).then_some(s)
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<PodTemplateSpec> {
        self.spec.as_ref()?.template.clone()
    }

    fn replica_status(&self) -> Option<ReplicaSetStatus> {
        self.status.clone()
    }
}

impl Replicated for ReplicationController {
    const KIND: &'static str = "ReplicationController";
    const EVENT_SOURCE: &'static str = "replication-controller";

    fn selector(&self) -> Option<Selector> {
        // An RC's selector is a plain map; unset, it is the template's labels.
        let spec = self.spec.as_ref()?;
        let labels = match &spec.selector {
            Some(s) if !s.is_empty() => s.clone(),
            _ => spec.template.as_ref()?.metadata.as_ref()?.labels.clone()?,
        };
        let sel = serde_json::json!({ "matchLabels": labels });
        let s = Selector::from_label_selector(&sel).ok()?;
        (!s.is_empty()).then_some(s)
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<PodTemplateSpec> {
        self.spec.as_ref()?.template.clone()
    }

    fn replica_status(&self) -> Option<ReplicaSetStatus> {
        let v = serde_json::to_value(self.status.as_ref()?).ok()?;
        serde_json::from_value(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_replication_controller_selects_by_its_map_or_template_labels() {
        let rc: ReplicationController = serde_json::from_value(json!({"spec": {
            "template": {"metadata": {"labels": {"app": "x"}}}}}))
        .expect("rc");
        let sel = rc.selector().expect("selector");
        assert_eq!(sel.requirements.len(), 1);
        assert_eq!(rc.replicas(), 1);
        let rs: ReplicaSet = serde_json::from_value(json!({"spec": {"selector": {}}})).expect("rs");
        assert!(rs.selector().is_none(), "an empty selector selects nothing");
    }
}
