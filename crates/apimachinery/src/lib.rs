//! Kubernetes' object model, as the API server needs it: `Status` errors, label and
//! field selectors, and the name and label rules of upstream's validation.
//!
//! Pure logic with no I/O and no knowledge of storage or HTTP, so that every rule
//! is unit-tested here against upstream's documented behaviour.

pub mod fields;
pub mod labels;
pub mod names;
pub mod status;

pub use status::{ApiError, Cause, StatusReason};
