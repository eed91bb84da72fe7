//! The configurable admission stages a write passes through: mutating
//! webhooks, then (after the object's own validation) ValidatingAdmissionPolicy
//! and validating webhooks, as upstream orders them.

use kybern_apimachinery::ApiError;
use serde_json::Value;

use super::Ctx;
use crate::admission::match_rules::AdmissionAttempt;
use crate::admission::{validating_policy, webhook};
use crate::object::{self, Object};

impl Ctx {
    /// The admission attempt of a write of the object `(name, namespace)`.
    fn attempt<'a>(
        &'a self,
        operation: &'static str,
        (name, namespace): (&'a str, &'a str),
        object: Option<&'a Object>,
        old: Option<&'a Object>,
    ) -> Result<AdmissionAttempt<'a>, ApiError> {
        Ok(AdmissionAttempt {
            operation,
            group: &self.info.group,
            version: &self.info.version,
            kind: &self.info.kind,
            resource: &self.info.plural,
            subresource: self.path.subresource.as_deref().unwrap_or(""),
            namespace,
            name,
            object,
            old_object: old,
            dry_run: self.query.dry_run()?,
        })
    }

    /// The name and namespace admission reports for a write of `either`.
    fn identity(&self, either: Option<&Object>) -> (String, String) {
        let name = either.map(object::name).unwrap_or_else(|| self.name());
        let namespace = match either.map(object::namespace) {
            Some(ns) if !ns.is_empty() => ns,
            _ => self.namespace(),
        };
        (name.to_owned(), namespace.to_owned())
    }

    /// Runs the mutating admission webhooks over a write of `object` (`None`
    /// on delete), `old` before it.
    pub async fn mutate_admission(
        &self,
        operation: &'static str,
        object: Option<&mut Object>,
        old: Option<&Object>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let (name, namespace) = self.identity(object.as_deref().or(old));
        let attempt = self.attempt(operation, (&name, &namespace), None, old)?;
        let settle = |obj: &mut Value| self.settle_patched(obj);
        webhook::mutate(
            &self.state,
            &self.user,
            &attempt,
            object,
            &settle,
            warnings,
            &self.audit,
        )
        .await
    }

    /// An object a webhook patched, decoded again: unknown fields pruned,
    /// defaults applied (upstream decodes a patched object with defaulting).
    fn settle_patched(&self, obj: &mut Value) {
        if let Some(schema) = self.info.custom.as_ref().and_then(|c| c.schema.as_ref()) {
            crate::crd::schema::prune(obj, schema);
            crate::crd::schema::default(obj, schema);
            return;
        }
        if let Some(Ok(decoded)) = crate::typed::check(&self.info, obj) {
            decoded.prune(obj);
        }
        crate::defaults::apply(&self.info, obj);
    }

    /// Admission of a CONNECT (exec, port-forward): webhooks and policies
    /// see the options object (`PodExecOptions`, `PodPortForwardOptions`)
    /// as upstream sends it; patches have nothing to change.
    pub async fn connect_admission(
        &self,
        kind: &'static str,
        options: &Value,
    ) -> Result<(), ApiError> {
        let (name, namespace) = (self.name().to_owned(), self.namespace().to_owned());
        let mut attempt = self.attempt("CONNECT", (&name, &namespace), Some(options), None)?;
        attempt.kind = kind;
        let mut warnings = Vec::new();
        let mut copy = options.clone();
        let ignore = |_: &mut Value| {};
        webhook::mutate(
            &self.state,
            &self.user,
            &attempt,
            Some(&mut copy),
            &ignore,
            &mut warnings,
            &self.audit,
        )
        .await?;
        validating_policy::admit(
            &self.state,
            &self.user,
            &attempt,
            &mut warnings,
            &self.audit,
        )
        .await?;
        webhook::validate(
            &self.state,
            &self.user,
            &attempt,
            &mut warnings,
            &self.audit,
        )
        .await
    }

    /// Runs the validating admission policies, then the validating webhooks,
    /// over a write of `object` (`old` before it), as `operation`.
    pub async fn validate_admission(
        &self,
        operation: &'static str,
        object: Option<&Object>,
        old: Option<&Object>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let (name, namespace) = self.identity(object.or(old));
        let attempt = self.attempt(operation, (&name, &namespace), object, old)?;
        validating_policy::admit(&self.state, &self.user, &attempt, warnings, &self.audit).await?;
        webhook::validate(&self.state, &self.user, &attempt, warnings, &self.audit).await
    }
}
