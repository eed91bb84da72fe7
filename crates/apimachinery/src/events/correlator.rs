//! What client-go's `EventCorrelator` decides before an Event is written:
//! repeats fold into one Event's `count`, many messages of one reason about
//! one object fold into a "combined" Event, and each source may say only so
//! much about each object (a token bucket), so a busy controller cannot
//! flood the store with Events.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;

/// Events one source may post about one object at once (client-go's burst).
const SPAM_BURST: f64 = 25.0;
/// How fast that allowance refills: one Event every five minutes.
const SPAM_REFILL_PER_SECOND: f64 = 1.0 / 300.0;
/// Distinct messages of one reason about one object before they combine.
const AGGREGATE_AFTER: usize = 10;
/// How long a run of similar Events counts towards combining.
const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// Entries each table keeps (client-go's LRU size).
const TABLE_SIZE: usize = 4096;
/// What a combined Event's message starts with.
const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// The parts of an Event the correlator looks at.
pub struct EventFacts<'a> {
    /// The component that reports (`source.component`).
    pub component: &'a str,
    /// The node it reports from (`source.host`), if any.
    pub host: &'a str,
    /// What the Event is about.
    pub object: &'a ObjectReference,
    /// `Normal` or `Warning`.
    pub type_: &'a str,
    /// The machine-readable reason.
    pub reason: &'a str,
    /// The message for humans.
    pub message: &'a str,
}

/// What to write for an Event that is not dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlated {
    /// The key its Event is remembered by, for [`EventCorrelator::written`].
    pub key: String,
    /// The message to write: the Event's own, or marked as combined.
    pub message: String,
    /// An Event already written for the key (its name and count), whose
    /// count this one bumps instead of creating another.
    pub previous: Option<(String, i32)>,
}

/// A run of similar Events: the messages seen, and when the run was last fed.
struct Similar {
    messages: HashSet<String>,
    last: Instant,
}

/// A token bucket for one source and object.
struct Allowance {
    tokens: f64,
    at: Instant,
}

impl Allowance {
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * SPAM_REFILL_PER_SECOND).min(SPAM_BURST)
    }
}

/// Client-go's correlator: aggregation, then the count fold, then the
/// spam filter, over tables bounded to a few thousand entries each.
#[derive(Default)]
pub struct EventCorrelator {
    similar: HashMap<String, Similar>,
    written: HashMap<String, (String, i32)>,
    allowances: HashMap<String, Allowance>,
}

fn object_key(component: &str, host: &str, o: &ObjectReference) -> String {
    let parts = [
        component,
        host,
        o.kind.as_deref().unwrap_or_default(),
        o.namespace.as_deref().unwrap_or_default(),
        o.name.as_deref().unwrap_or_default(),
        o.uid.as_deref().unwrap_or_default(),
        o.api_version.as_deref().unwrap_or_default(),
    ];
    // A separator no name can hold keeps distinct objects apart.
    parts.join("\u{0}")
}

impl EventCorrelator {
    /// Decides about one Event observed at `now`: `None` drops it.
    pub fn correlate(&mut self, e: &EventFacts<'_>, now: Instant) -> Option<Correlated> {
        let object = object_key(e.component, e.host, e.object);
        let aggregate = format!("{object}\u{0}{}\u{0}{}", e.type_, e.reason);
        bound(&mut self.similar, |s| {
            now.saturating_duration_since(s.last) > AGGREGATE_WINDOW
        });
        let run = self
            .similar
            .entry(aggregate.clone())
            .or_insert_with(|| Similar {
                messages: HashSet::new(),
                last: now,
            });
        if now.saturating_duration_since(run.last) > AGGREGATE_WINDOW {
            run.messages.clear();
        }
        run.last = now;
        if run.messages.len() < AGGREGATE_AFTER {
            run.messages.insert(e.message.to_owned());
        }
        let (key, message) = if run.messages.len() < AGGREGATE_AFTER {
            let field = e.object.field_path.as_deref().unwrap_or_default();
            (
                format!("{aggregate}\u{0}{field}\u{0}{}", e.message),
                e.message.to_owned(),
            )
        } else {
            (aggregate, format!("{COMBINED_PREFIX}{}", e.message))
        };
        bound(&mut self.allowances, |a| a.refilled(now) >= SPAM_BURST);
        let allowance = self.allowances.entry(object).or_insert(Allowance {
            tokens: SPAM_BURST,
            at: now,
        });
        let tokens = allowance.refilled(now);
        if tokens < 1.0 {
            return None;
        }
        *allowance = Allowance {
            tokens: tokens - 1.0,
            at: now,
        };
        let previous = self.written.get(&key).cloned();
        Some(Correlated {
            key,
            message,
            previous,
        })
    }

    /// Remembers that the Event for `key` now exists as `name` with `count`.
    pub fn written(&mut self, key: String, name: String, count: i32) {
        if !self.written.contains_key(&key) {
            bound(&mut self.written, |_| false);
        }
        self.written.insert(key, (name, count));
    }

    /// Forgets the Event for `key`, whose write failed.
    pub fn forget(&mut self, key: &str) {
        self.written.remove(key);
    }
}

/// Makes room in a full table: first by dropping entries `stale` says hold
/// nothing a fresh entry would not, and if that frees nothing, everything.
fn bound<V>(table: &mut HashMap<String, V>, stale: impl Fn(&V) -> bool) {
    if table.len() < TABLE_SIZE {
        return;
    }
    table.retain(|_, v| !stale(v));
    if table.len() >= TABLE_SIZE {
        table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            api_version: Some("v1".into()),
            ..ObjectReference::default()
        }
    }

    fn facts<'a>(object: &'a ObjectReference, reason: &'a str, message: &'a str) -> EventFacts<'a> {
        EventFacts {
            component: "replicaset-controller",
            host: "",
            object,
            type_: "Normal",
            reason,
            message,
        }
    }

    #[test]
    fn a_repeat_bumps_the_count_of_the_first() {
        let mut c = EventCorrelator::default();
        let (p, t) = (pod("a"), Instant::now());
        let first = c
            .correlate(&facts(&p, "Pulled", "pulled"), t)
            .expect("first");
        assert_eq!(first.previous, None);
        assert_eq!(first.message, "pulled");
        c.written(first.key.clone(), "a.1".into(), 1);
        let again = c
            .correlate(&facts(&p, "Pulled", "pulled"), t)
            .expect("again");
        assert_eq!(again.key, first.key);
        assert_eq!(again.previous, Some(("a.1".into(), 1)));
        // Another message, or another object, is another Event.
        let other = c
            .correlate(&facts(&p, "Pulled", "other"), t)
            .expect("other");
        assert_eq!(other.previous, None);
        let q = pod("b");
        assert_eq!(
            c.correlate(&facts(&q, "Pulled", "pulled"), t)
                .expect("b")
                .previous,
            None
        );
    }

    #[test]
    fn many_messages_of_one_reason_combine() {
        let mut c = EventCorrelator::default();
        let (rs, t) = (pod("rs"), Instant::now());
        let mut keys = HashSet::new();
        for i in 0..AGGREGATE_AFTER - 1 {
            let m = format!("Created pod: p{i}");
            let out = c
                .correlate(&facts(&rs, "SuccessfulCreate", &m), t)
                .expect("kept");
            assert_eq!(out.message, m);
            keys.insert(out.key);
        }
        assert_eq!(
            keys.len(),
            AGGREGATE_AFTER - 1,
            "each message its own Event"
        );
        let tenth = c
            .correlate(&facts(&rs, "SuccessfulCreate", "Created pod: p9"), t)
            .expect("kept");
        assert_eq!(
            tenth.message,
            "(combined from similar events): Created pod: p9"
        );
        c.written(tenth.key.clone(), "rs.combined".into(), 1);
        let eleventh = c
            .correlate(&facts(&rs, "SuccessfulCreate", "Created pod: p10"), t)
            .expect("kept");
        assert_eq!(
            eleventh.key, tenth.key,
            "later ones fold into the combined one"
        );
        assert_eq!(eleventh.previous, Some(("rs.combined".into(), 1)));
        // Once the run has been quiet for the window, messages stand alone again.
        let later = t + AGGREGATE_WINDOW + Duration::from_secs(1);
        let fresh = c
            .correlate(&facts(&rs, "SuccessfulCreate", "Created pod: p11"), later)
            .expect("kept");
        assert_eq!(fresh.message, "Created pod: p11");
    }

    #[test]
    fn a_source_says_only_so_much_about_one_object() {
        let mut c = EventCorrelator::default();
        let (rs, t) = (pod("rs"), Instant::now());
        let kept = (0..100)
            .filter(|i| {
                let m = format!("m{i}");
                c.correlate(&facts(&rs, "R", &m), t).is_some()
            })
            .count();
        assert_eq!(kept, 25, "the burst, then nothing");
        // Another object has its own allowance.
        assert!(c.correlate(&facts(&pod("other"), "R", "m"), t).is_some());
        // One more after five minutes.
        let later = t + Duration::from_secs(301);
        assert!(c.correlate(&facts(&rs, "R", "m"), later).is_some());
        assert!(c.correlate(&facts(&rs, "R", "m"), later).is_none());
    }

    #[test]
    fn tables_stay_bounded() {
        let mut c = EventCorrelator::default();
        let t = Instant::now();
        for i in 0..3 * TABLE_SIZE {
            let p = pod(&format!("p{i}"));
            let out = c.correlate(&facts(&p, "R", "m"), t).expect("kept");
            c.written(out.key, format!("p{i}.1"), 1);
        }
        assert!(c.similar.len() <= TABLE_SIZE);
        assert!(c.allowances.len() <= TABLE_SIZE);
        assert!(c.written.len() <= TABLE_SIZE);
    }
}
