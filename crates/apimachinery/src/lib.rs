//! Kubernetes' object model, as the API server and its clients need it: `Status`
//! errors, label and field selectors, resource quantities, what a pod requests and what a quota counts
//! of it (and which pods its scopes cover), the name and label rules of upstream's validation, and the identity
//! in a client certificate.
//!
//! Pure logic with no I/O (TLS appears only as a certificate-verification policy) and no knowledge of storage or HTTP, so that every rule
//! is unit-tested here against upstream's documented behaviour.

pub mod bootstrap_token;
pub mod cached_pod;
pub mod cron;
pub mod events;
pub mod fields;
pub mod go_text;
pub mod labels;
pub mod names;
pub mod quantity;
pub mod quota_scope;
pub mod resources;
pub mod status;
pub mod tls;
pub mod x509;

pub use status::{ApiError, Cause, ForeignStatus, StatusReason};

/// This machine's architecture as Go (and so Kubernetes) names it: `amd64`,
/// `arm64`, or Rust's name for any other.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
