//! Latency samples and their percentiles.

use std::time::Duration;

/// A set of latency samples.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// An empty set with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Samples(Vec::with_capacity(n))
    }

    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// The samples, sorted.
    pub fn into_sorted(mut self) -> Vec<Duration> {
        self.0.sort_unstable();
        self.0
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (0..=100), by nearest rank; zero when empty.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

/// CPU time the whole machine has spent busy (every process, the kernel
/// included), in seconds, from `/proc/stat`: what a phase of a benchmark
/// costs is the difference across it.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let jiffies: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = jiffies
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, j)| j)
        .sum();
    // USER_HZ is 100 on every Linux architecture Kybern builds for.
    busy / 100.0
}

/// Delivery latencies: for each watcher's `(event, arrival)` pairs, the time
/// since the event was `sent`. Fails unless there are `expected` of them
/// (every watcher saw every event).
pub fn deliveries<K: Eq + std::hash::Hash>(
    seen: Vec<Vec<(K, std::time::Instant)>>,
    sent: &std::collections::HashMap<K, std::time::Instant>,
    expected: usize,
) -> anyhow::Result<Samples> {
    let mut all = Samples::with_capacity(expected);
    for (event, at) in seen.into_iter().flatten() {
        if let Some(t0) = sent.get(&event) {
            all.push(at.saturating_duration_since(*t0));
        }
    }
    anyhow::ensure!(
        all.len() == expected,
        "watchers saw {} of {expected} events",
        all.len()
    );
    Ok(all)
}

/// Milliseconds with three decimals, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        assert_eq!(s.percentile(50.0), Duration::from_millis(50));
        assert_eq!(s.percentile(99.0), Duration::from_millis(99));
        assert_eq!(s.percentile(100.0), Duration::from_millis(100));
        assert_eq!(Samples::default().percentile(50.0), Duration::ZERO);
    }
}
