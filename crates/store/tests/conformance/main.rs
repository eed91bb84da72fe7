//! One conformance suite for the `Store` trait, run against every backend: the
//! embedded sqlite store and a real etcd server started from Debian's package.

mod backend;
mod cases;
mod history;

/// Declares each case once per backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Backend::sqlite();
                    crate::cases::$case(backend.store()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Backend::etcd().await;
                    crate::cases::$case(backend.store()).await;
                }
            )*
        }
    };
}

conformance!(
    create_get_update_delete,
    revisions_strictly_increase,
    unconditional_put_keeps_create_revision,
    range_pages_with_continue_and_count,
    range_is_limited_to_its_prefix,
    reads_at_past_revisions,
    future_revision_is_refused,
    watch_replays_from_an_old_revision,
    watch_from_now_sees_only_later_events,
    watch_filters_by_prefix,
    watch_under_concurrent_writers_has_no_gap_or_duplicate,
    compaction_refuses_older_reads_and_watches,
    values_up_to_the_limit_and_a_clear_error_above,
    empty_and_invalid_keys_are_rejected,
    conflicting_writers_exactly_one_wins,
    past_counts_follow_creates_and_deletes,
);
