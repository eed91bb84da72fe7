//! Unit tests of the cluster cache.

use super::*;

fn node(name: &str) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "10"}}
        }))
        .expect("node"),
    )
}

fn pod(uid: &str, node: Option<&str>) -> Arc<CachedPod> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": "500m"}}}]}
        }))
        .expect("pod"),
    )
}

#[test]
fn assumed_pods_count_until_confirmed_or_forgotten() {
    let mut cache = ClusterCache::default();
    cache.upsert_node(node("n1"));
    let p = PodInfo::new(pod("a", None));
    cache.assume(&p, "n1");
    assert_eq!(cache.node("n1").map(|n| n.requested.milli_cpu), Some(500));
    // The unbound pod seen again (an older event) does not undo the assumption.
    cache.upsert_pod(pod("a", None));
    assert!(cache.is_assumed("a"));
    // The binding observed: confirmed, counted once.
    cache.upsert_pod(pod("a", Some("n1")));
    assert!(!cache.is_assumed("a"));
    assert_eq!(cache.node("n1").map(|n| n.pods.len()), Some(1));
    cache.remove_pod("a");
    assert_eq!(cache.node("n1").map(|n| n.requested.milli_cpu), Some(0));
    // A pod seen on a node before the node itself.
    cache.upsert_pod(pod("b", Some("n2")));
    assert!(cache.node("n2").is_none());
    cache.upsert_node(node("n2"));
    assert_eq!(cache.node("n2").map(|n| n.pods.len()), Some(1));
    assert_eq!(cache.node_count(), 2);
}

fn anti_pod(uid: &str, node: Option<&str>) -> Arc<CachedPod> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname",
                     "labelSelector": {"matchLabels": {"app": "x"}}}]}}}
        }))
        .expect("pod"),
    )
}

fn anti_placed(cache: &ClusterCache) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = cache
        .anti_affinity_pods()
        .map(|(p, n)| (p.uid.clone(), n.name.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn pods_with_required_anti_affinity_are_found_where_they_are() {
    let mut cache = ClusterCache::default();
    cache.upsert_node(node("n1"));
    cache.upsert_node(node("n2"));
    cache.upsert_pod(pod("plain", Some("n1")));
    cache.upsert_pod(anti_pod("a", Some("n1")));
    cache.assume(&PodInfo::new(anti_pod("b", None)), "n1");
    let pair = |u: &str, n: &str| (u.to_owned(), n.to_owned());
    assert_eq!(anti_placed(&cache), [pair("a", "n1"), pair("b", "n1")]);
    // The assumption confirmed, then one pod moved: each counted once.
    cache.upsert_pod(anti_pod("b", Some("n1")));
    cache.upsert_pod(anti_pod("a", Some("n2")));
    assert_eq!(anti_placed(&cache), [pair("a", "n2"), pair("b", "n1")]);
    cache.remove_pod("b");
    cache.remove_pod("plain");
    assert_eq!(anti_placed(&cache), [pair("a", "n2")]);
    cache.remove_pod("a");
    assert!(anti_placed(&cache).is_empty());
    assert!(cache.anti_affinity.is_empty(), "no slot left counted");
}

#[test]
fn occupied_nodes_and_label_ids_follow_churn() {
    let mut cache = ClusterCache::default();
    cache.upsert_node(node("keep"));
    cache.upsert_pod(pod("p", Some("keep")));
    cache.upsert_pod(pod("early", Some("not-yet")));
    // A pod on a node not seen yet is not on an existing node.
    let names = |c: &ClusterCache| {
        let mut v: Vec<String> = c.occupied_nodes().map(|n| n.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&cache), ["keep"]);
    cache.upsert_node(node("not-yet"));
    assert_eq!(names(&cache), ["keep", "not-yet"]);
    cache.remove_pod("early");
    assert_eq!(names(&cache), ["keep"]);
    // Thousands of nodes come and go, each with its own hostname label:
    // the table is rebuilt from the live nodes, whose ids stay right.
    for n in 0..3000 {
        let name = format!("gone-{n}");
        cache.upsert_node(Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}
            }))
            .expect("node"),
        ));
        cache.remove_node(&name);
    }
    assert!(
        cache.label_table().len() < 1100,
        "{}",
        cache.label_table().len()
    );
    cache.upsert_node(Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "keep", "labels": {"zone": "z1"}}
        }))
        .expect("node"),
    ));
    let table = cache.label_table();
    let keep = cache.node("keep").expect("node");
    let zone = table.get("zone").expect("interned");
    assert_eq!(
        crate::topology::domain_of(&keep.label_ids, zone),
        table.get("z1")
    );
}

#[test]
fn nominated_pods_count_on_their_node_only_while_nominated() {
    let mut cache = ClusterCache::default();
    cache.upsert_node(node("n1"));
    cache.upsert_node(node("n2"));
    let waiting = PodInfo::new(pod("waiting", None));
    let other = PodInfo::new(pod("other", None));
    cache.nominate(&waiting, "n1");
    let n1 = cache.node("n1").expect("n1");
    let view = cache.with_nominated(n1, &other).expect("a view of n1");
    assert_eq!(view.requested.milli_cpu, 500);
    // Not for the nominated pod itself, nor on another node.
    assert!(cache.with_nominated(n1, &waiting).is_none());
    assert!(
        cache
            .with_nominated(cache.node("n2").expect("n2"), &other)
            .is_none()
    );
    cache.nominate(&waiting, "n2");
    assert!(
        cache
            .with_nominated(cache.node("n1").expect("n1"), &other)
            .is_none()
    );
    assert!(
        cache
            .with_nominated(cache.node("n2").expect("n2"), &other)
            .is_some()
    );
    cache.clear_nomination("waiting");
    assert!(
        cache
            .with_nominated(cache.node("n2").expect("n2"), &other)
            .is_none()
    );
}
