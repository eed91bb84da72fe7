//! The in-tree plugins, one file per plugin (the small node filters share one),
//! and the default binder.

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod matching;
pub mod node_affinity;
pub mod node_basics;
pub mod node_resources;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{Api, PostParams};

use crate::cache::PodInfo;
use crate::framework::{BindPlugin, Code, Plugin, Status};

/// `DefaultBinder`: POSTs a `Binding` to the pod's `binding` subresource.
pub struct DefaultBinder;

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }
}

impl BindPlugin for DefaultBinder {
    fn bind<'a>(
        &'a self,
        client: &'a kube::Client,
        pod: &'a PodInfo,
        node: &'a str,
    ) -> BoxFuture<'a, Status> {
        async move {
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
            let binding = Binding {
                metadata: kube::core::ObjectMeta {
                    name: Some(pod.name.clone()),
                    namespace: Some(pod.namespace.clone()),
                    uid: Some(pod.uid.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(node.to_owned()),
                    ..Default::default()
                },
            };
            match api
                .create_subresource::<Binding, serde_json::Value>(
                    "binding",
                    &pod.name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => Status::ok(),
                Err(e) => Status::new(Code::Error, format!("binding rejected: {e}")),
            }
        }
        .boxed()
    }
}
