//! The Pod Security Standards checks against upstream's wording.

use serde_json::json;

use super::checks::{Level, violations};
use super::*;

fn summary_of(level: Level, pod: &Value) -> String {
    summary(&violations(level, &pod["metadata"], &pod["spec"]))
}

#[test]
fn a_plain_pod_meets_baseline_and_fails_restricted_as_upstream_says() {
    let pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
    assert_eq!(summary_of(Level::Baseline, &pod), "");
    assert_eq!(
        summary_of(Level::Restricted, &pod),
        "allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), \
unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), \
runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true), \
seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
}

#[test]
fn baseline_refuses_the_host_and_privilege() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {
        "hostNetwork": true, "hostPID": true,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"},
            {"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
        "containers": [
            {"name": "a", "image": "x", "securityContext": {"privileged": true,
                "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}},
            {"name": "b", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"privileged": true}}]}});
    assert_eq!(
        summary_of(Level::Baseline, &pod),
        "non-default capabilities (container \"a\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add), \
host namespaces (hostNetwork=true, hostPID=true), \
hostPath volumes (volume \"root\"), \
hostPort (container \"b\" uses hostPort 8080), \
privileged (containers \"a\", \"b\" must not set securityContext.privileged=true), \
forbidden sysctls (kernel.msgmax)"
    );
    assert_eq!(summary_of(Level::Privileged, &pod), "");
}

#[test]
fn a_hardened_pod_meets_restricted() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "t", "projected": {"sources": []}}, {"name": "e", "emptyDir": {}}],
        "containers": [{"name": "app", "image": "x", "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}});
    assert_eq!(summary_of(Level::Restricted, &pod), "");
    let mut root = pod.clone();
    root["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
    root["spec"]["volumes"][1] = json!({"name": "h", "hostPath": {"path": "/tmp"}});
    assert_eq!(
        summary_of(Level::Restricted, &root),
        "hostPath volumes (volume \"h\"), \
restricted volume types (volume \"h\" uses restricted volume type \"hostPath\"), \
runAsUser=0 (container \"app\" must not set runAsUser=0)"
    );
}

#[test]
fn namespace_labels_pick_levels_and_versions() {
    let labels = json!({"pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "v1.30",
        "pod-security.kubernetes.io/warn": "strict"});
    let enforce = ModePolicy::from_labels(&labels, "enforce");
    assert_eq!(enforce.label(), "baseline:v1.30");
    // A typo is read as the strictest level.
    assert_eq!(
        ModePolicy::from_labels(&labels, "warn").level,
        Level::Restricted
    );
    assert_eq!(
        ModePolicy::from_labels(&labels, "audit").level,
        Level::Privileged
    );
    assert_eq!(
        ModePolicy::from_labels(
            &json!({"pod-security.kubernetes.io/enforce-version": "1.30"}),
            "enforce"
        )
        .version,
        "latest"
    );
}
