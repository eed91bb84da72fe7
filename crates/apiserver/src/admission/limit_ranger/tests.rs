use serde_json::json;

use super::*;

fn range(items: Value) -> Value {
    json!({"metadata": {"name": "limits"}, "spec": {"limits": items}})
}

fn pod(containers: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "team"}, "spec": {"containers": containers}})
}

#[test]
fn containers_get_the_defaults_they_leave_out() {
    let ranges = [range(json!([{"type": "Container",
        "default": {"cpu": "500m", "memory": "256Mi"},
        "defaultRequest": {"cpu": "100m"},
        "max": {"cpu": "1", "ephemeral-storage": "1Gi"}}]))];
    let mut p = pod(json!([
        {"name": "a"},
        {"name": "b", "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": "300m"}}}
    ]));
    apply_defaults(&ranges, &mut p);
    let a = &p["spec"]["containers"][0]["resources"];
    // The request of memory comes from its default limit; the limit of
    // ephemeral storage from the max.
    assert_eq!(
        a["requests"],
        json!({"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"})
    );
    assert_eq!(
        a["limits"],
        json!({"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "1Gi"})
    );
    let b = &p["spec"]["containers"][1]["resources"];
    assert_eq!(b["requests"]["cpu"], "200m");
    assert_eq!(b["limits"]["cpu"], "300m");
    assert_eq!(
        p["metadata"]["annotations"][ANNOTATION],
        "LimitRanger plugin set: cpu, ephemeral-storage, memory request for container a; \
         cpu, ephemeral-storage, memory limit for container a; \
         ephemeral-storage, memory request for container b; \
         ephemeral-storage, memory limit for container b"
    );
    assert!(violations(&ranges, &p).is_empty());
}

#[test]
fn container_bounds_are_held_with_upstream_messages() {
    let ranges = [range(json!([{"type": "Container",
        "min": {"memory": "64Mi"}, "max": {"cpu": "1"},
        "maxLimitRequestRatio": {"cpu": "2"}}]))];
    let p = pod(json!([{"name": "a", "resources": {
        "requests": {"cpu": "500m", "memory": "32Mi"}, "limits": {"cpu": "2"}}}]));
    assert_eq!(
        violations(&ranges, &p),
        [
            "minimum memory usage per Container is 64Mi, but request is 32Mi",
            "maximum cpu usage per Container is 1, but limit is 2",
            "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
        ]
    );
    let bare = pod(json!([{"name": "a"}]));
    assert_eq!(
        violations(&ranges, &bare),
        [
            "minimum memory usage per Container is 64Mi.  No request is specified",
            "maximum cpu usage per Container is 1.  No limit is specified",
            "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0",
        ]
    );
}

#[test]
fn a_pod_is_held_to_its_total() {
    let ranges = [range(json!([{"type": "Pod", "max": {"memory": "1Gi"}}]))];
    let two = |each: &str| {
        pod(json!([
            {"name": "a", "resources": {"limits": {"memory": each}}},
            {"name": "b", "resources": {"limits": {"memory": each}}}
        ]))
    };
    assert!(violations(&ranges, &two("512Mi")).is_empty());
    assert_eq!(
        violations(&ranges, &two("768Mi")),
        ["maximum memory usage per Pod is 1Gi, but limit is 1536Mi"]
    );
}

#[test]
fn claims_are_held_to_their_storage_bounds() {
    let item = json!({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}});
    let errs = |requests: Value| {
        let mut errs = Vec::new();
        check_claim(&item, &requests, &mut errs);
        errs
    };
    assert!(errs(json!({"storage": "1536Mi"})).is_empty());
    assert_eq!(
        errs(json!({"storage": "5Gi"})),
        vec!["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
    );
    assert_eq!(
        errs(json!({"storage": "500Mi"})),
        vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
    );
    assert_eq!(
        errs(json!({})),
        vec![
            "minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified",
            "maximum storage usage per PersistentVolumeClaim is 2Gi.  No request is specified"
        ]
    );
}
