//! `ImageLocality`: prefers nodes that already hold the pod's images, by their
//! size and by how many nodes hold them (an image on every node says little),
//! as upstream scores it. Nodes report images in `status.images`.

use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{CycleState, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, Status};

const MB: i64 = 1024 * 1024;
/// Below this, the images present are worth nothing (upstream's `minThreshold`).
const MIN_THRESHOLD: i64 = 23 * MB;
/// Above this per container, more image bytes add nothing.
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

const SCORE: &str = "ImageLocality/score";

/// The `ImageLocality` score plugin.
pub struct ImageLocality;

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
}

/// A container image name as upstream compares it: `:latest` when untagged.
pub fn normalized_image(name: &str) -> String {
    let tag = name.rfind(':');
    let path = name.rfind('/');
    let untagged = match (tag, path) {
        (None, _) => true,
        (Some(t), Some(p)) => t < p,
        (Some(_), None) => false,
    };
    if untagged && !name.contains('@') {
        format!("{name}:latest")
    } else {
        name.to_owned()
    }
}

/// What the score reads: each of the pod's images with the share of nodes
/// holding it, and how many containers the pod has.
struct Images {
    spread: Vec<(String, f64)>,
    containers: i64,
}

fn pod_images(pod: &PodInfo) -> Vec<String> {
    pod.pod
        .spec
        .as_ref()
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter_map(|c| c.image.as_deref())
        .map(normalized_image)
        .collect()
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        cache: &ClusterCache,
    ) -> Status {
        if !cache.reports_images() {
            return Status::skip();
        }
        let total = cache.node_count();
        let images = pod_images(pod);
        let spread: Vec<(String, f64)> = images
            .iter()
            .filter_map(|i| {
                let holding = cache.nodes_with_image(i);
                (holding > 0 && total > 0).then(|| (i.clone(), holding as f64 / total as f64))
            })
            .collect();
        if spread.is_empty() {
            return Status::skip();
        }
        state.write(
            SCORE,
            Images {
                spread,
                containers: images.len() as i64,
            },
        );
        Status::ok()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(images) = state.read::<Images>(SCORE) else {
            return 0;
        };
        let sum: i64 = images
            .spread
            .iter()
            .filter_map(|(name, share)| Some((*node.images.get(name)? as f64 * share) as i64))
            .sum();
        let max = MAX_CONTAINER_THRESHOLD * images.containers.max(1);
        let sum = sum.clamp(MIN_THRESHOLD, max);
        MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_upstream_normalizes_them() {
        assert_eq!(normalized_image("nginx"), "nginx:latest");
        assert_eq!(normalized_image("nginx:1.25"), "nginx:1.25");
        assert_eq!(
            normalized_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalized_image("app@sha256:abc"), "app@sha256:abc");
    }
}
