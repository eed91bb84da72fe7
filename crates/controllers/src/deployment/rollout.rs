//! The strategies: RollingUpdate (surge up the new set, scale down the old
//! within maxUnavailable), Recreate (old pods gone before new ones start),
//! proportional scaling of a rollout in flight, and the revision history limit.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DeleteParams;

use super::hash::{
    DESIRED_REPLICAS, MAX_REPLICAS, annotation_int, available_replicas, revision_of, spec_replicas,
};
use super::{Rollout, Which, ignore_not_found};
use crate::ControllerError;
use crate::pods::controller_of;
use crate::queue::ReconcileResult;

/// An int-or-percent of `total`, rounded up or down.
pub fn resolve(value: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let percent = |s: &str| s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok());
    let v = match value {
        Some(IntOrString::Int(i)) => return (*i).max(0),
        Some(IntOrString::String(s)) => percent(s),
        None => percent(default),
    };
    let Some(p) = v else { return 0 };
    let scaled = i64::from(total) * p;
    let r = if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    };
    i32::try_from(r.max(0)).unwrap_or(i32::MAX)
}

impl Rollout<'_> {
    fn rolling(&self) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDeployment> {
        self.d
            .spec
            .as_ref()?
            .strategy
            .as_ref()?
            .rolling_update
            .as_ref()
    }

    fn is_rolling(&self) -> bool {
        self.d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.type_.as_deref())
            != Some("Recreate")
    }

    /// Pods allowed above `replicas` during a rollout (0 for Recreate).
    pub(crate) fn max_surge(&self) -> i32 {
        if !self.is_rolling() {
            return 0;
        }
        let (surge, unavailable) = self.surge_and_unavailable();
        let _ = unavailable;
        surge
    }

    /// Pods allowed below `replicas` during a rollout.
    pub(crate) fn max_unavailable(&self) -> i32 {
        if !self.is_rolling() {
            return 0;
        }
        self.surge_and_unavailable().1.min(self.replicas())
    }

    fn surge_and_unavailable(&self) -> (i32, i32) {
        let r = self.rolling();
        let n = self.replicas();
        let surge = resolve(r.and_then(|r| r.max_surge.as_ref()), "25%", n, true);
        let unavailable = resolve(r.and_then(|r| r.max_unavailable.as_ref()), "25%", n, false);
        // Both zero would never make progress; upstream allows one unavailable.
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }

    /// What the new set should have now (`current` when it does not exist yet).
    pub(crate) fn new_replicas(&self, current: i32) -> i32 {
        let current = self.new.as_ref().map_or(current, spec_replicas);
        if !self.is_rolling() {
            return self.replicas();
        }
        let total: i32 = self.all().map(spec_replicas).sum();
        let max_total = self.replicas() + self.max_surge();
        if total >= max_total {
            return current;
        }
        current + (max_total - total).min((self.replicas() - current).max(0))
    }

    /// RollingUpdate: scale the new set up, then the old ones down.
    pub(crate) async fn rolling_update(&mut self) -> ReconcileResult<ControllerError> {
        self.ensure_new(true).await?;
        if self.created_new {
            return self.sync_status().await;
        }
        let want = self.replicas();
        let new_now = self.new.as_ref().map_or(0, spec_replicas);
        if new_now > want {
            self.scale(Which::New, want).await?;
            return self.sync_status().await;
        }
        if new_now < want {
            let target = self.new_replicas(new_now);
            if self.scale(Which::New, target).await? {
                return self.sync_status().await;
            }
        }
        if self.scale_down_old().await? {
            return self.sync_status().await;
        }
        if self.complete() {
            self.cleanup().await?;
        }
        self.sync_status().await
    }

    /// Scales old sets down as far as maxUnavailable allows: first their
    /// unavailable pods, then available ones, oldest set first.
    async fn scale_down_old(&mut self) -> Result<bool, ControllerError> {
        let old_total: i32 = self.old.iter().map(spec_replicas).sum();
        if old_total == 0 {
            return Ok(false);
        }
        let all_total: i32 = self.all().map(spec_replicas).sum();
        let min_available = self.replicas() - self.max_unavailable();
        let new_unavailable = self
            .new
            .as_ref()
            .map_or(0, |rs| spec_replicas(rs) - available_replicas(rs));
        let max_scaled_down = all_total - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut changed = false;
        // Unhealthy replicas first: removing them costs no availability.
        let mut cleaned = 0;
        for i in 0..self.old.len() {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = &self.old[i];
            let unhealthy = spec_replicas(rs) - available_replicas(rs);
            if unhealthy <= 0 {
                continue;
            }
            let n = unhealthy.min(max_scaled_down - cleaned);
            let to = spec_replicas(rs) - n;
            changed |= self.scale(Which::Old(i), to).await?;
            cleaned += n;
        }
        // A set just scaled down may still report the pods it is removing
        // as available: count no more than it keeps, or the next sync
        // removes them again from another set and dips below min_available.
        let available: i32 = self
            .all()
            .map(|rs| available_replicas(rs).min(spec_replicas(rs)))
            .sum();
        if available <= min_available {
            return Ok(changed);
        }
        let budget = available - min_available;
        let mut done = 0;
        for i in 0..self.old.len() {
            if done >= budget {
                break;
            }
            let current = spec_replicas(&self.old[i]);
            if current == 0 {
                continue;
            }
            let n = current.min(budget - done);
            changed |= self.scale(Which::Old(i), current - n).await?;
            done += n;
        }
        Ok(changed)
    }

    /// Recreate: every old pod gone, then the new set at full size.
    pub(crate) async fn recreate(&mut self) -> ReconcileResult<ControllerError> {
        self.ensure_new(false).await?;
        let mut scaled = false;
        for i in 0..self.old.len() {
            scaled |= self.scale(Which::Old(i), 0).await?;
        }
        if scaled || self.old_pods_running() {
            return self.sync_status().await;
        }
        self.ensure_new(true).await?;
        if !self.created_new {
            self.scale(Which::New, self.replicas()).await?;
        }
        if self.complete() {
            self.cleanup().await?;
        }
        self.sync_status().await
    }

    /// Whether any pod of an old set has not finished.
    fn old_pods_running(&self) -> bool {
        let old: Vec<&str> = self
            .old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        self.ctl.pods.in_namespace(self.ns()).iter().any(|p| {
            controller_of(&p.metadata).is_some_and(|o| old.contains(&o.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
    }

    /// Whether `replicas` changed since the active sets were last scaled.
    pub(crate) fn is_scaling_event(&self) -> bool {
        let want = i64::from(self.replicas());
        self.all()
            .filter(|rs| spec_replicas(rs) > 0)
            .filter_map(|rs| annotation_int(rs, DESIRED_REPLICAS))
            .any(|d| d != want)
    }

    /// A paused Deployment or a change of `replicas`: scale without rolling.
    pub(crate) async fn scale_only(&mut self) -> ReconcileResult<ControllerError> {
        self.ensure_new(false).await?;
        self.scale_proportionally().await?;
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused {
            self.cleanup().await?;
        }
        self.sync_status().await
    }

    /// Upstream's `scale`: one active set takes the new size; otherwise the
    /// difference is shared among the sets in proportion to their size.
    async fn scale_proportionally(&mut self) -> Result<(), ControllerError> {
        let want = self.replicas();
        let active: Vec<Which> = self
            .which_all()
            .into_iter()
            .filter(|w| self.get(*w).is_some_and(|rs| spec_replicas(rs) > 0))
            .collect();
        let single = match active.as_slice() {
            [one] => Some(*one),
            [] if self.new.is_some() => Some(Which::New),
            [] if !self.old.is_empty() => Some(self.latest_old()),
            _ => None,
        };
        if let Some(which) = single {
            self.scale(which, want).await?;
            return Ok(());
        }
        if self.saturated() {
            for i in 0..self.old.len() {
                self.scale(Which::Old(i), 0).await?;
            }
            return Ok(());
        }
        if !self.is_rolling() {
            return Ok(());
        }
        let allowed = if want > 0 { want + self.max_surge() } else { 0 };
        let total: i32 = self.all().map(spec_replicas).sum();
        let to_add = allowed - total;
        if to_add == 0 {
            return Ok(());
        }
        // Larger sets first; among equals, newer first when growing, older when shrinking.
        let mut order = self.which_all();
        order.sort_by(|a, b| {
            let (ra, rb) = (self.get(*a), self.get(*b));
            let size =
                |r: Option<&k8s_openapi::api::apps::v1::ReplicaSet>| r.map_or(0, spec_replicas);
            let age =
                |r: Option<&k8s_openapi::api::apps::v1::ReplicaSet>| r.and_then(super::created);
            size(rb).cmp(&size(ra)).then_with(|| {
                if to_add > 0 {
                    age(rb).cmp(&age(ra))
                } else {
                    age(ra).cmp(&age(rb))
                }
            })
        });
        let surge_total = want + self.max_surge();
        let mut sizes: Vec<(Which, i32)> = Vec::new();
        let mut added = 0;
        for w in &order {
            let Some(rs) = self.get(*w) else { continue };
            let current = spec_replicas(rs);
            let mut share = 0;
            if current > 0 && to_add != added {
                let fraction = if want == 0 {
                    -current
                } else {
                    let annotated = annotation_int(rs, MAX_REPLICAS)
                        .and_then(|v| i32::try_from(v).ok())
                        .filter(|v| *v > 0)
                        .unwrap_or_else(|| {
                            self.d
                                .status
                                .as_ref()
                                .and_then(|s| s.replicas)
                                .unwrap_or(0)
                                .max(1)
                        });
                    let scaled =
                        (i64::from(current) * i64::from(surge_total) + i64::from(annotated) - 1)
                            / i64::from(annotated);
                    i32::try_from(scaled).unwrap_or(i32::MAX) - current
                };
                let left = to_add - added;
                share = if to_add > 0 {
                    fraction.min(left)
                } else {
                    fraction.max(left)
                };
            }
            added += share;
            sizes.push((*w, current + share));
        }
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
        for (w, size) in sizes {
            self.scale(w, size.max(0)).await?;
        }
        Ok(())
    }

    fn which_all(&self) -> Vec<Which> {
        let mut v = Vec::new();
        if self.new.is_some() {
            v.push(Which::New);
        }
        v.extend((0..self.old.len()).map(Which::Old));
        v
    }

    fn get(&self, w: Which) -> Option<&k8s_openapi::api::apps::v1::ReplicaSet> {
        match w {
            Which::New => self.new.as_ref(),
            Which::Old(i) => self.old.get(i),
        }
    }

    fn latest_old(&self) -> Which {
        let i = (0..self.old.len())
            .max_by_key(|i| (super::created(&self.old[*i]), revision_of(&self.old[*i])))
            .unwrap_or(0);
        Which::Old(i)
    }

    /// The new set is at full size and fully available.
    fn saturated(&self) -> bool {
        let want = self.replicas();
        self.new.as_ref().is_some_and(|rs| {
            spec_replicas(rs) == want
                && annotation_int(rs, DESIRED_REPLICAS) == Some(i64::from(want))
                && available_replicas(rs) == want
        })
    }

    /// Deletes old sets beyond `revisionHistoryLimit` that have no pods left.
    async fn cleanup(&mut self) -> Result<(), ControllerError> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut idle: Vec<usize> = (0..self.old.len())
            .filter(|i| {
                let rs = &self.old[*i];
                spec_replicas(rs) == 0
                    && rs.status.as_ref().map_or(0, |s| s.replicas) == 0
                    && rs.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|i| (revision_of(&self.old[*i]), super::created(&self.old[*i])));
        let excess = idle.len() - limit;
        for i in idle.into_iter().take(excess) {
            let name = self.old[i].metadata.name.clone().unwrap_or_default();
            ignore_not_found(self.api.delete(&name, &DeleteParams::default()).await)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(resolve(Some(&pct), "0%", 10, true), 3);
        assert_eq!(resolve(Some(&pct), "0%", 10, false), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(4)), "0%", 10, false), 4);
        assert_eq!(resolve(None, "25%", 1, true), 1);
        assert_eq!(resolve(None, "25%", 1, false), 0);
    }
}
