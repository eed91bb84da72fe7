//! ValidatingAdmissionPolicy through the real server and kubectl: CEL
//! validations that bindings put into force (Deny with upstream's 422
//! message, Warn as a warning), narrowed by namespace selectors, with
//! parameters from a ConfigMap, on create, update and delete; a policy whose
//! CEL does not compile is refused; removing a binding lifts it.

use crate::common;
use std::time::{Duration, Instant};

use crate::common::cli::Cli;

const REPLICA_LIMIT: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: demo-policy.example.com
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments"]
  validations:
  - expression: "object.spec.replicas <= 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: demo-binding-test.example.com
spec:
  policyName: demo-policy.example.com
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: test
"#;

const TEAM_LABEL: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: team-label
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["*"]
      operations: ["CREATE"]
      resources: ["deployments"]
  variables:
  - name: team
    expression: "has(object.metadata.labels) && 'team' in object.metadata.labels ? object.metadata.labels['team'] : ''"
  validations:
  - expression: "variables.team != ''"
    message: every deployment needs a team label
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: team-label-warn
spec:
  policyName: team-label
  validationActions: [Warn, Audit]
"#;

const REPLICA_CAP: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replica-cap
spec:
  paramKind:
    apiVersion: v1
    kind: ConfigMap
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE", "DELETE"]
      resources: ["deployments"]
  validations:
  - expression: "request.operation != 'DELETE' || !has(oldObject.metadata.labels) || !('protected' in oldObject.metadata.labels)"
    message: protected deployments stay
    reason: Forbidden
  - expression: "request.operation == 'DELETE' || object.spec.replicas <= int(params.data.maxReplicas)"
    messageExpression: "'at most ' + params.data.maxReplicas + ' replicas here'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-cap-capped
spec:
  policyName: replica-cap
  validationActions: [Deny]
  paramRef:
    name: replica-cap
    namespace: default
    parameterNotFoundAction: Deny
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: capped
"#;

/// Runs kubectl until it fails (policies reach the server's admission
/// through its watch of them), and returns what it said.
fn refused(kubectl: &Cli, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = kubectl.run(args);
        if !out.status.success() {
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        // Admitted before the policy was seen: undo and try again.
        if args[0] == "create" {
            let _ = kubectl.run(&["delete", args[1], args[2], "-n", args[args.len() - 1]]);
        }
        assert!(Instant::now() < deadline, "never refused: {args:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn deployment(name: &str, replicas: &str, ns: &str) -> Vec<String> {
    [
        "create",
        "deployment",
        name,
        "--image=busybox",
        "--replicas",
        replicas,
        "-n",
        ns,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn bound_policies_deny_warn_and_take_parameters() {
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    for (ns, env) in [("test", "test"), ("prod", "prod"), ("capped", "capped")] {
        kubectl.ok(&["create", "namespace", ns]);
        kubectl.ok(&["label", "namespace", ns, &format!("environment={env}")]);
    }
    kubectl.ok_stdin(&["apply", "-f", "-"], REPLICA_LIMIT);

    // Deny, in the namespaces the binding selects, on create and update.
    let big = deployment("big", "10", "test");
    let err = refused(&kubectl, &args(&big));
    assert!(
        err.contains("deployments.apps \"big\" is forbidden: ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"),
        "{err}"
    );
    kubectl.ok(&args(&deployment("big", "10", "prod")));
    kubectl.ok(&args(&deployment("small", "3", "test")));
    let err = kubectl.fails(&[
        "patch",
        "deployment",
        "small",
        "-n",
        "test",
        "-p",
        r#"{"spec":{"replicas":9}}"#,
    ]);
    // A 422 Invalid whose cause is the message, as kubectl shows upstream's.
    assert!(
        err.contains("The deployments \"small\" is invalid: : ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression"),
        "{err}"
    );
    let replicas = kubectl.ok(&[
        "get",
        "deployment",
        "small",
        "-n",
        "test",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas.trim(), "3", "the refused update changed nothing");

    // Warn: admitted, with upstream's warning.
    kubectl.ok_stdin(&["apply", "-f", "-"], TEAM_LABEL);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    let warned = loop {
        n += 1;
        let name = format!("unlabelled-{n}");
        let out = kubectl.run(&args(&deployment(&name, "1", "prod")));
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("Warning") || Instant::now() > deadline {
            break stderr;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        warned.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'team-label' with binding 'team-label-warn': every deployment needs a team label"),
        "{warned}"
    );

    // Parameters: refused while the ConfigMap is missing, then by its value.
    kubectl.ok_stdin(&["apply", "-f", "-"], REPLICA_CAP);
    let three = deployment("three", "3", "capped");
    let err = refused(&kubectl, &args(&three));
    assert!(
        err.contains("no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{err}"
    );
    kubectl.ok(&[
        "create",
        "configmap",
        "replica-cap",
        "-n",
        "default",
        "--from-literal=maxReplicas=2",
    ]);
    let err = refused(&kubectl, &args(&three));
    assert!(
        err.contains(
            "ValidatingAdmissionPolicy 'replica-cap' with binding 'replica-cap-capped' denied request: at most 2 replicas here"
        ),
        "{err}"
    );
    kubectl.ok(&args(&deployment("two", "2", "capped")));
    // Delete sees the old object; the Forbidden reason gives a 403.
    kubectl.ok(&[
        "label",
        "deployment",
        "two",
        "-n",
        "capped",
        "protected=yes",
    ]);
    let err = kubectl.fails(&["delete", "deployment", "two", "-n", "capped"]);
    assert!(
        err.contains("deployments.apps \"two\" is forbidden: ValidatingAdmissionPolicy 'replica-cap' with binding 'replica-cap-capped' denied request: protected deployments stay"),
        "{err}"
    );
    kubectl.ok(&["get", "deployment", "two", "-n", "capped"]);

    // A policy whose CEL does not compile is refused as Invalid.
    let broken = REPLICA_LIMIT
        .replace("demo-policy.example.com", "broken")
        .replace("object.spec.replicas <= 5", "object.spec.replicas <=");
    let broken = broken.split("---").next().unwrap_or_default();
    let err = kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(broken))
        .stderr;
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("spec.validations[0].expression: Invalid value")
            && err.contains("compilation failed"),
        "{err}"
    );

    // Removing the binding lifts the policy.
    kubectl.ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "demo-binding-test.example.com",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !kubectl.run(&args(&big)).status.success() {
        assert!(Instant::now() < deadline, "the policy still applies");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = kubectl.ok(&["get", "validatingadmissionpolicies", "-o", "name"]);
    assert!(listed.contains(
        "validatingadmissionpolicy.admissionregistration.k8s.io/demo-policy.example.com"
    ));
}
