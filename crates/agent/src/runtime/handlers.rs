//! The node's OCI runtimes by RuntimeClass handler name, and which one a
//! pod runs under: its RuntimeClass's `handler`, or `runc` when it names no
//! class.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;

use super::ContainerRuntime;
use crate::AgentError;

/// The handler of pods that name no RuntimeClass.
pub const DEFAULT_HANDLER: &str = "runc";

/// Runtimes by handler name; [`DEFAULT_HANDLER`] is always present.
#[derive(Clone)]
pub struct RuntimeHandlers {
    default: Arc<dyn ContainerRuntime>,
    others: BTreeMap<String, Arc<dyn ContainerRuntime>>,
}

impl RuntimeHandlers {
    /// Handlers with `default` serving [`DEFAULT_HANDLER`].
    pub fn new(default: Arc<dyn ContainerRuntime>) -> Self {
        RuntimeHandlers {
            default,
            others: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) handler `name`.
    pub fn insert(&mut self, name: &str, runtime: Arc<dyn ContainerRuntime>) {
        if name == DEFAULT_HANDLER {
            self.default = runtime;
        } else {
            self.others.insert(name.to_owned(), runtime);
        }
    }

    /// The runtime of handler `name`, if configured.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ContainerRuntime>> {
        if name == DEFAULT_HANDLER {
            Some(self.default.clone())
        } else {
            self.others.get(name).cloned()
        }
    }

    /// The runtime of handler `name`, or the default one for a handler no
    /// longer configured (its containers are then still stopped somehow).
    pub fn get_or_default(&self, name: &str) -> Arc<dyn ContainerRuntime> {
        self.get(name).unwrap_or_else(|| self.default.clone())
    }

    /// The configured handler names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.others.keys().map(String::as_str).collect();
        names.push(DEFAULT_HANDLER);
        names.sort_unstable();
        names
    }

    /// The handler a pod runs under: its RuntimeClass's, which must exist
    /// and be configured here (the kubelet's sandbox error otherwise).
    pub async fn handler_for(
        &self,
        client: &kube::Client,
        pod: &Pod,
    ) -> Result<String, AgentError> {
        let Some(class) = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|c| !c.is_empty())
        else {
            return Ok(DEFAULT_HANDLER.to_owned());
        };
        let api: Api<RuntimeClass> = Api::all(client.clone());
        let handler = match api.get_opt(class).await? {
            Some(rc) => rc.handler,
            None => {
                return Err(AgentError::Config(format!(
                    "RuntimeClass {class:?} not found"
                )));
            }
        };
        if self.get(&handler).is_some() {
            Ok(handler)
        } else {
            Err(AgentError::Config(format!(
                "failed to get sandbox runtime: no runtime for {handler:?} is configured"
            )))
        }
    }
}
