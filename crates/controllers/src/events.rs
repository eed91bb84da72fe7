//! The Events controllers post, with upstream's reasons and messages, so
//! `kubectl describe` shows what a controller did and why it failed.

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
pub use kybern_apimachinery::events::{EventRecorder, reference_to};

/// An object the controller created (a pod, a Job).
pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
/// An object the controller could not create.
pub const FAILED_CREATE: &str = "FailedCreate";
/// An object the controller deleted.
pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
/// An object the controller could not delete.
pub const FAILED_DELETE: &str = "FailedDelete";
/// A `Normal` Event.
pub const NORMAL: &str = "Normal";
/// A `Warning` Event.
pub const WARNING: &str = "Warning";

/// An API error as Go prints one: the `Status` message alone.
pub fn error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// Reports a pod created for `owner`, or the failure, as upstream's pod
/// control does for ReplicaSets, DaemonSets and Jobs.
pub fn pod_created<K: Resource<DynamicType = ()>>(
    recorder: &EventRecorder,
    owner: &K,
    result: &Result<Pod, kube::Error>,
) {
    let (type_, reason, message) = match result {
        Ok(pod) => (
            NORMAL,
            SUCCESSFUL_CREATE,
            format!(
                "Created pod: {}",
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
        ),
        Err(e) => (
            WARNING,
            FAILED_CREATE,
            format!("Error creating: {}", error_text(e)),
        ),
    };
    recorder.post(reference_to(owner), type_, reason, message);
}

/// Reports a pod of `owner` deleted, or the failure; a pod already gone is
/// neither.
pub fn pod_deleted<K: Resource<DynamicType = ()>, T>(
    recorder: &EventRecorder,
    owner: &K,
    pod: &str,
    result: &Result<T, kube::Error>,
) {
    let (type_, reason, message) = match result {
        Ok(_) => (NORMAL, SUCCESSFUL_DELETE, format!("Deleted pod: {pod}")),
        Err(kube::Error::Api(s)) if s.code == 404 => return,
        Err(e) => (
            WARNING,
            FAILED_DELETE,
            format!("Error deleting: {}", error_text(e)),
        ),
    };
    recorder.post(reference_to(owner), type_, reason, message);
}
