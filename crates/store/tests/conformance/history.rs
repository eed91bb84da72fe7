//! Conformance cases about reading past revisions under churn.

use std::collections::BTreeSet;

use kybern_store::{Precondition, RangeRequest, Revision};

use crate::cases::{S, b};

/// After a deterministic mix of creates, updates and deletes, every page read
/// at every past revision counts exactly the keys that lived then from its
/// start key on, whatever changed since.
pub async fn past_counts_follow_creates_and_deletes(s: S) {
    let keys: Vec<String> = (0..12).map(|i| format!("/churn/{i:02}")).collect();
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut states: Vec<(Revision, BTreeSet<String>)> = Vec::new();
    // A small linear congruential generator: the same operations on every backend.
    let mut seed: u64 = 7;
    for _ in 0..80 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = &keys[(seed >> 33) as usize % keys.len()];
        let rev = if live.contains(key) && (seed >> 20).is_multiple_of(3) {
            live.remove(key);
            s.delete(key, Precondition::None)
                .await
                .expect("delete")
                .revision
        } else {
            live.insert(key.clone());
            s.put(key, b("v"), Precondition::None).await.expect("put")
        };
        states.push((rev, live.clone()));
    }
    for (rev, alive) in &states {
        for start_after in [None, Some("/churn/03"), Some("/churn/08")] {
            let page = s
                .range(RangeRequest {
                    prefix: "/churn/".into(),
                    start_after: start_after.map(str::to_owned),
                    limit: 1,
                    revision: *rev,
                })
                .await
                .expect("range at a past revision");
            let want = alive
                .iter()
                .filter(|k| start_after.is_none_or(|a| k.as_str() > a))
                .count() as u64;
            assert_eq!(page.count, want, "count at {rev} after {start_after:?}");
            assert_eq!(page.kvs.len() as u64, want.min(1));
        }
    }
}
