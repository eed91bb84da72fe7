//! PodSecurity admission through the real server and kubectl: a namespace's
//! `pod-security.kubernetes.io/*` labels refuse or warn about pods that
//! break the Pod Security Standards, with upstream's messages.

use crate::common;
use crate::common::cli::Cli;

const PRIVILEGED: &str = r#"{"apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "evil"},
  "spec": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}],
    "containers": [{"name": "c", "image": "busybox",
      "securityContext": {"privileged": true},
      "volumeMounts": [{"name": "root", "mountPath": "/host"}]}]}}"#;

const HARDENED: &str = r#"{"apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "good"},
  "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
      "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "busybox",
      "securityContext": {"allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]}}}]}}"#;

#[test]
fn namespaces_refuse_or_warn_about_pods_above_their_level() {
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    kubectl.ok(&["create", "namespace", "locked"]);
    kubectl.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);

    // A privileged pod with the host's root mounted is refused, and not stored.
    let out = kubectl.run_with_stdin(&["apply", "-n", "locked", "-f", "-"], Some(PRIVILEGED));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "pods \"evil\" is forbidden: violates PodSecurity \"restricted:latest\": \
hostPath volumes (volume \"root\"), privileged (container \"c\" must not set securityContext.privileged=true), \
allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "restricted volume types (volume \"root\" uses restricted volume type \"hostPath\")"
        ),
        "{err}"
    );
    let listed = kubectl.ok(&["get", "pods", "-n", "locked", "-o", "name"]);
    assert_eq!(listed.trim(), "");
    // A hardened pod is admitted.
    kubectl.ok_stdin(&["apply", "-n", "locked", "-f", "-"], HARDENED);
    kubectl.ok(&["get", "pod", "good", "-n", "locked"]);

    // Baseline lets an ordinary pod in but not the host's root.
    kubectl.ok(&["create", "namespace", "team"]);
    kubectl.ok(&[
        "label",
        "namespace",
        "team",
        "pod-security.kubernetes.io/enforce=baseline",
        "pod-security.kubernetes.io/enforce-version=v1.35",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let out = kubectl.run_with_stdin(&["apply", "-n", "team", "-f", "-"], Some(PRIVILEGED));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("violates PodSecurity \"baseline:v1.35\": hostPath volumes (volume \"root\"), privileged"),
        "{err}"
    );
    // ... and warns, under `warn=restricted`, about what restricted would refuse.
    let out = kubectl.run(&["run", "plain", "-n", "team", "--image=busybox"]);
    assert!(out.status.success(), "{out:?}");
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"),
        "{warning}"
    );

    // Workloads are warned about at apply time, not refused.
    let out = kubectl.run(&[
        "create",
        "deployment",
        "web",
        "-n",
        "locked",
        "--image=busybox",
    ]);
    assert!(out.status.success(), "{out:?}");
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ),
        "{warning}"
    );

    // Unlabelled namespaces are privileged: anything goes.
    kubectl.ok_stdin(&["apply", "-n", "default", "-f", "-"], PRIVILEGED);
}
