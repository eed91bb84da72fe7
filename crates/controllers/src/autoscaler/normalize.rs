//! How the autoscaler turns a metric's proposal into the count it sets:
//! stabilization over recent recommendations, and the rate limits of the
//! HPA's `behavior` (or, without one, upstream's fixed scale-up limit),
//! with the `AbleToScale` and `ScalingLimited` words upstream reports.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};

/// A condition to set: (reason, message).
pub type Said = (&'static str, &'static str);

/// The count to set, and what to say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalized {
    /// The replica count to set.
    pub replicas: i32,
    /// `AbleToScale` (true): the stabilization's reason and message.
    pub able: Said,
    /// `ScalingLimited`: whether a limit applied, its reason and message.
    pub limited: (bool, Said),
}

impl Normalized {
    /// `replicas` for a `stabilized` recommendation: limited when they differ.
    fn limited(replicas: i32, stabilized: i32, able: Said, said: Said) -> Self {
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, said),
        }
    }
}

/// One HPA's history: recent recommendations and (with a `behavior`) the
/// scale changes made, which the windows and policies look back over.
#[derive(Debug, Default)]
pub struct ScaleHistory {
    recommendations: Vec<(i32, Instant)>,
    scale_ups: Vec<(i32, Instant)>,
    scale_downs: Vec<(i32, Instant)>,
}

/// What bounds the count: the HPA's own settings.
pub struct Bounds<'a> {
    /// `minReplicas`.
    pub min: i32,
    /// `maxReplicas`.
    pub max: i32,
    /// The HPA's `behavior`, if it has one.
    pub behavior: Option<&'a HorizontalPodAutoscalerBehavior>,
    /// The scale-down stabilization window without a `behavior` (and for a
    /// `behavior` that leaves it unset): upstream's
    /// `--horizontal-pod-autoscaler-downscale-stabilization`, 5 min.
    pub downscale_window: Duration,
}

const READY: Said = ("ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: Said = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: Said = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN: Said = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: Said = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: Said = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: Said = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: Said = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

fn secs(s: Option<i32>) -> Duration {
    Duration::from_secs(u64::try_from(s.unwrap_or(0)).unwrap_or(0))
}

fn since(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_sub(d)
}

impl ScaleHistory {
    /// Records the current count as the first recommendation, as upstream
    /// does on an HPA's first pass.
    pub fn record_initial(&mut self, current: i32, now: Instant) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current, now));
        }
    }

    /// Records `rec`, reusing the slot of one older than `keep`.
    fn record(&mut self, rec: i32, now: Instant, keep: Duration) {
        let cutoff = since(now, keep);
        match self
            .recommendations
            .iter_mut()
            .find(|(_, at)| cutoff.is_some_and(|c| *at < c))
        {
            Some(slot) => *slot = (rec, now),
            None => self.recommendations.push((rec, now)),
        }
    }

    /// The count to set for a metric's `desired`, from `current`.
    pub fn normalize(
        &mut self,
        current: i32,
        desired: i32,
        bounds: &Bounds,
        now: Instant,
    ) -> Normalized {
        match bounds.behavior {
            None => self.normalize_plain(current, desired, bounds, now),
            Some(b) => self.normalize_with(current, desired, bounds, b, now),
        }
    }

    /// Without a `behavior`: the highest recommendation of the downscale
    /// window, then at most double (or 4) per pass.
    fn normalize_plain(
        &mut self,
        current: i32,
        desired: i32,
        bounds: &Bounds,
        now: Instant,
    ) -> Normalized {
        let cutoff = since(now, bounds.downscale_window);
        let stabilized = self
            .recommendations
            .iter()
            .filter(|(_, at)| cutoff.is_none_or(|c| *at >= c))
            .map(|(r, _)| *r)
            .fold(desired, i32::max);
        self.record(desired, now, bounds.downscale_window);
        let able = if stabilized != desired {
            DOWN_STABILIZED
        } else {
            READY
        };
        let up_limit = current.saturating_mul(2).max(4);
        let (ceiling, over) = if bounds.max > up_limit {
            (up_limit, UP_LIMIT)
        } else {
            (bounds.max, TOO_MANY)
        };
        let (replicas, said) = if stabilized < bounds.min {
            (bounds.min, TOO_FEW)
        } else if stabilized > ceiling {
            (ceiling, over)
        } else {
            (stabilized, WITHIN)
        };
        Normalized::limited(replicas, stabilized, able, said)
    }

    /// With a `behavior`: the scale-up and scale-down stabilization windows,
    /// then the policies' rate limits.
    fn normalize_with(
        &mut self,
        current: i32,
        desired: i32,
        bounds: &Bounds,
        behavior: &HorizontalPodAutoscalerBehavior,
        now: Instant,
    ) -> Normalized {
        let up = scale_up_rules(behavior.scale_up.as_ref());
        let down = scale_down_rules(behavior.scale_down.as_ref(), bounds.downscale_window);
        let up_window = secs(up.stabilization_window_seconds);
        let down_window = secs(down.stabilization_window_seconds);
        let (up_cut, down_cut) = (since(now, up_window), since(now, down_window));
        let (mut up_rec, mut down_rec) = (desired, desired);
        for (rec, at) in &self.recommendations {
            if up_cut.is_none_or(|c| *at > c) {
                up_rec = up_rec.min(*rec);
            }
            if down_cut.is_none_or(|c| *at > c) {
                down_rec = down_rec.max(*rec);
            }
        }
        let stabilized = current.max(up_rec).min(down_rec);
        self.record(desired, now, up_window.max(down_window));
        let able = match stabilized == desired {
            true => READY,
            false if desired >= current => UP_STABILIZED,
            false => DOWN_STABILIZED,
        };
        let (replicas, said) = if stabilized > current {
            let limit = self.up_limit(current, &up, now).max(current);
            let (ceiling, over) = if bounds.max > limit {
                (limit, UP_LIMIT)
            } else {
                (bounds.max, TOO_MANY)
            };
            if stabilized > ceiling {
                (ceiling, over)
            } else {
                (stabilized, WITHIN)
            }
        } else if stabilized < current {
            let limit = self.down_limit(current, &down, now).min(current);
            let (floor, under) = if bounds.min < limit {
                (limit, DOWN_LIMIT)
            } else {
                (bounds.min, TOO_FEW)
            };
            if stabilized < floor {
                (floor, under)
            } else {
                (stabilized, WITHIN)
            }
        } else {
            (stabilized, WITHIN)
        };
        Normalized::limited(replicas, stabilized, able, said)
    }

    /// The count at the start of a policy's period: now's, less what was
    /// added and plus what was removed within it.
    fn period_start(&self, current: i32, period: Duration, now: Instant) -> i32 {
        let cutoff = since(now, period);
        let within = |events: &[(i32, Instant)]| -> i32 {
            events
                .iter()
                .filter(|(_, at)| cutoff.is_none_or(|c| *at > c))
                .map(|(n, _)| *n)
                .sum()
        };
        current - within(&self.scale_ups) + within(&self.scale_downs)
    }

    fn up_limit(&self, current: i32, rules: &HPAScalingRules, now: Instant) -> i32 {
        let proposals = rules.policies.iter().flatten().map(|p| {
            let start = self.period_start(current, secs(Some(p.period_seconds)), now);
            match p.type_.as_str() {
                "Percent" => (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
                _ => start.saturating_add(p.value),
            }
        });
        match rules.select_policy.as_deref() {
            Some("Disabled") => current,
            Some("Min") => proposals.min().unwrap_or(i32::MAX),
            _ => proposals.max().unwrap_or(i32::MIN),
        }
    }

    fn down_limit(&self, current: i32, rules: &HPAScalingRules, now: Instant) -> i32 {
        let proposals = rules.policies.iter().flatten().map(|p| {
            let start = self.period_start(current, secs(Some(p.period_seconds)), now);
            match p.type_.as_str() {
                "Percent" => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
                _ => start.saturating_sub(p.value),
            }
        });
        match rules.select_policy.as_deref() {
            Some("Disabled") => current,
            Some("Min") => proposals.max().unwrap_or(i32::MIN),
            _ => proposals.min().unwrap_or(i32::MAX),
        }
    }

    /// Records a scale change made, for the policies' periods (with a
    /// `behavior` only, as upstream).
    pub fn record_scale(
        &mut self,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        from: i32,
        to: i32,
        now: Instant,
    ) {
        let Some(b) = behavior else { return };
        let (events, rules, change) = if to > from {
            let rules = scale_up_rules(b.scale_up.as_ref());
            (&mut self.scale_ups, rules, to - from)
        } else {
            let rules = scale_down_rules(b.scale_down.as_ref(), Duration::ZERO);
            (&mut self.scale_downs, rules, from - to)
        };
        let longest = rules
            .policies
            .iter()
            .flatten()
            .map(|p| secs(Some(p.period_seconds)))
            .max()
            .unwrap_or_default();
        let cutoff = since(now, longest);
        match events
            .iter_mut()
            .find(|(_, at)| cutoff.is_some_and(|c| *at <= c))
        {
            Some(slot) => *slot = (change, now),
            None => events.push((change, now)),
        }
    }
}

fn policy(type_: &str, value: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: 15,
    }
}

/// Scale-up rules with upstream's defaults for what is unset: no window,
/// the larger of 4 pods or 100% per 15 s.
pub fn scale_up_rules(set: Option<&HPAScalingRules>) -> HPAScalingRules {
    let mut rules = set.cloned().unwrap_or_default();
    rules.stabilization_window_seconds.get_or_insert(0);
    rules.select_policy.get_or_insert_with(|| "Max".into());
    rules
        .policies
        .get_or_insert_with(|| vec![policy("Pods", 4), policy("Percent", 100)]);
    rules
}

/// Scale-down rules with upstream's defaults for what is unset: the
/// controller's downscale window, 100% per 15 s.
pub fn scale_down_rules(set: Option<&HPAScalingRules>, window: Duration) -> HPAScalingRules {
    let mut rules = set.cloned().unwrap_or_default();
    rules
        .stabilization_window_seconds
        .get_or_insert(i32::try_from(window.as_secs()).unwrap_or(i32::MAX));
    rules.select_policy.get_or_insert_with(|| "Max".into());
    rules
        .policies
        .get_or_insert_with(|| vec![policy("Percent", 100)]);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(behavior: Option<&HorizontalPodAutoscalerBehavior>) -> Bounds<'_> {
        Bounds {
            min: 1,
            max: 20,
            behavior,
            downscale_window: Duration::from_secs(300),
        }
    }

    #[test]
    fn without_behavior_scale_up_at_most_doubles() {
        let mut h = ScaleHistory::default();
        let now = Instant::now();
        h.record_initial(3, now);
        let n = h.normalize(3, 15, &bounds(None), now);
        assert_eq!(n.replicas, 6);
        assert_eq!(n.limited, (true, UP_LIMIT));
        assert_eq!(n.able, READY);
        // From one replica the limit is 4, and the maximum bounds it first.
        let mut small = bounds(None);
        small.max = 3;
        let n = ScaleHistory::default().normalize(1, 9, &small, now);
        assert_eq!((n.replicas, n.limited), (3, (true, TOO_MANY)));
    }

    #[test]
    fn without_behavior_scale_down_waits_out_the_window() {
        let mut h = ScaleHistory::default();
        let start = Instant::now();
        h.record_initial(5, start);
        let later = start + Duration::from_secs(60);
        let n = h.normalize(5, 2, &bounds(None), later);
        assert_eq!(n.replicas, 5, "the recommendation of 5 a minute ago holds");
        assert_eq!(n.able, DOWN_STABILIZED);
        let much_later = start + Duration::from_secs(400);
        let n = h.normalize(5, 2, &bounds(None), much_later);
        assert_eq!(n.replicas, 2, "the recommendation of 5 has left the window");
        assert_eq!(n.limited, (false, WITHIN));
    }

    #[test]
    fn a_behavior_limits_by_its_policies_and_remembers_changes() {
        let behavior = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                policies: Some(vec![policy("Pods", 2)]),
                ..Default::default()
            }),
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(0),
                policies: Some(vec![policy("Percent", 50)]),
                ..Default::default()
            }),
        };
        let b = bounds(Some(&behavior));
        let mut h = ScaleHistory::default();
        let t0 = Instant::now();
        let n = h.normalize(2, 10, &b, t0);
        assert_eq!((n.replicas, n.limited), (4, (true, UP_LIMIT)));
        h.record_scale(Some(&behavior), 2, 4, t0);
        // Within the same 15 s period the two pods added count already.
        let n = h.normalize(4, 10, &b, t0 + Duration::from_secs(5));
        assert_eq!(n.replicas, 4);
        // After it, two more.
        let n = h.normalize(4, 10, &b, t0 + Duration::from_secs(20));
        assert_eq!(n.replicas, 6);
        // Down by at most half per period.
        let n = h.normalize(8, 1, &b, t0 + Duration::from_secs(60));
        assert_eq!((n.replicas, n.limited), (4, (true, DOWN_LIMIT)));
        // A disabled direction never moves.
        let off = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                select_policy: Some("Disabled".into()),
                ..Default::default()
            }),
            scale_down: None,
        };
        let n = ScaleHistory::default().normalize(3, 9, &bounds(Some(&off)), t0);
        assert_eq!(n.replicas, 3);
    }

    #[test]
    fn a_scale_up_window_takes_the_lowest_recent_recommendation() {
        let behavior = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                stabilization_window_seconds: Some(60),
                ..Default::default()
            }),
            scale_down: None,
        };
        let b = bounds(Some(&behavior));
        let mut h = ScaleHistory::default();
        let t0 = Instant::now();
        h.record_initial(2, t0);
        let n = h.normalize(2, 6, &b, t0 + Duration::from_secs(10));
        assert_eq!(n.replicas, 2);
        assert_eq!(n.able, UP_STABILIZED);
        let n = h.normalize(2, 6, &b, t0 + Duration::from_secs(80));
        assert_eq!(n.replicas, 6);
    }
}
