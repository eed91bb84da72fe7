//! The tries of a read-modify-write: as upstream's `GuaranteedUpdate` with a
//! cached object, the first starts from the watch cache's copy, the rest from
//! the store, and an ending other than a successful write is only answered
//! once it was reached from the stored object.

use kybern_apimachinery::ApiError;

use super::Ctx;
use crate::object::Object;

/// Store reads a read-modify-write makes before giving up on a busy object.
pub(super) const MAX_ATTEMPTS: usize = 16;

/// How one try ended.
pub(super) enum Attempt<T> {
    /// Written (or, in a dry run, what would have been).
    Written(T),
    /// Nothing to write: the object already is as asked.
    Unchanged(T),
    /// The object changed since it was read (the store's 409).
    Conflict(ApiError),
}

/// The objects the tries start from, in turn.
pub(super) struct Reads<'a> {
    ctx: &'a Ctx,
    namespace: &'a str,
    name: &'a str,
    cached: Option<Object>,
    reads: usize,
}

impl<'a> Reads<'a> {
    /// Tries of `namespace/name`; the first from the cache's copy unless
    /// `fresh` (a dry run answers with what the stored object would become).
    pub(super) fn new(ctx: &'a Ctx, namespace: &'a str, name: &'a str, fresh: bool) -> Self {
        let cached = if fresh {
            None
        } else {
            ctx.state.cached_copy(&ctx.info, namespace, name)
        };
        Reads {
            ctx,
            namespace,
            name,
            cached,
            reads: 0,
        }
    }

    /// The object the next try starts from and whether it was read from
    /// the store; `None` once the store reads are used up.
    pub(super) async fn next(&mut self) -> Result<Option<(Object, bool)>, ApiError> {
        if let Some(old) = self.cached.take() {
            return Ok(Some((old, false)));
        }
        if self.reads == MAX_ATTEMPTS {
            return Ok(None);
        }
        self.reads += 1;
        let info = &self.ctx.info;
        let old = self
            .ctx
            .state
            .objects
            .get(info, self.namespace, self.name)
            .await?;
        Ok(Some((old, true)))
    }
}

/// The answer a try's `outcome` gives, or `None` to try again: a try from
/// the cache's copy is answered only when it wrote, since that copy may trail
/// the store; a conflict is retried when `retry_conflicts`.
pub(super) fn settle<T>(
    outcome: Result<Attempt<T>, ApiError>,
    from_store: bool,
    retry_conflicts: bool,
) -> Option<Result<T, ApiError>> {
    match outcome {
        Ok(Attempt::Written(done)) => Some(Ok(done)),
        Ok(Attempt::Conflict(_)) if retry_conflicts => None,
        _ if !from_store => None,
        Ok(Attempt::Unchanged(done)) => Some(Ok(done)),
        Ok(Attempt::Conflict(e)) | Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict() -> ApiError {
        ApiError::stale("", "pods", "p")
    }

    #[test]
    fn a_try_from_the_cache_is_answered_only_when_it_wrote() {
        let answered = |o: Result<Attempt<u8>, ApiError>, store, retry| {
            settle(o, store, retry).map(|r| r.map_err(|e| e.code()))
        };
        assert_eq!(answered(Ok(Attempt::Written(1)), false, false), Some(Ok(1)));
        assert_eq!(answered(Ok(Attempt::Unchanged(1)), false, false), None);
        assert_eq!(
            answered(Ok(Attempt::Conflict(conflict())), false, false),
            None
        );
        assert_eq!(answered(Err(conflict()), false, false), None);
        assert_eq!(
            answered(Ok(Attempt::Unchanged(2)), true, false),
            Some(Ok(2))
        );
        assert_eq!(
            answered(Ok(Attempt::Conflict(conflict())), true, true),
            None
        );
        assert_eq!(
            answered(Ok(Attempt::Conflict(conflict())), true, false),
            Some(Err(409))
        );
        assert_eq!(answered(Err(conflict()), true, true), Some(Err(409)));
    }
}
