//! More of kubectl 1.35 against the real server: the `create` subcommands
//! (protobuf bodies), server-side apply with conflicts, `diff`, `explain`,
//! `describe`, client-side validation (of `List` files too), `--watch`,
//! deletion with finalizers and cascade policies, and `debug` adding an
//! ephemeral container or copying the pod.

use crate::common;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::cli::Cli;

fn setup() -> (common::Server, Cli) {
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    (server, kubectl)
}

#[test]
fn create_subcommands_send_protobuf() {
    let (_server, k) = setup();
    k.ok(&["create", "namespace", "team"]);
    k.ok(&[
        "create",
        "configmap",
        "conf",
        "-n",
        "team",
        "--from-literal=color=blue",
        "--from-literal=size=2",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "team",
        "--from-literal=password=s3cr3t",
    ]);
    k.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team",
        "--image=registry.local/web:1",
        "--replicas=3",
        "--port=8080",
    ]);
    let cm: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "cm", "conf", "-n", "team", "-o", "json"]))
            .expect("json");
    assert_eq!(
        cm["data"],
        serde_json::json!({"color": "blue", "size": "2"})
    );
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "creds",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.password}"
        ]),
        "czNjcjN0",
        "secret bytes travel as protobuf bytes and read back as base64"
    );
    let d: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "team",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .expect("json");
    assert_eq!(d["spec"]["replicas"], 3);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.local/web:1");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    // A conflict comes back as a protobuf Status kubectl can read.
    let err = k.fails(&["create", "configmap", "conf", "-n", "team"]);
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );
}

const APPLIED: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
  labels: {app: ssa}
spec:
  replicas: 2
  selector: {matchLabels: {app: ssa}}
  template:
    metadata: {labels: {app: ssa}}
    spec:
      containers:
      - name: c
        image: registry.local/c:1
";

#[test]
fn server_side_apply_owns_fields_and_conflicts() {
    let (_server, k) = setup();
    let out = k.ok_stdin(&["apply", "--server-side", "-f", "-"], APPLIED);
    assert!(out.contains("serverside-applied"), "{out}");
    // Another manager takes spec.replicas; re-applying a different value conflicts.
    k.ok(&[
        "patch",
        "deploy",
        "ssa",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
        "--field-manager=scaler",
    ]);
    let changed = APPLIED.replace("replicas: 2", "replicas: 3");
    let out = k.run_with_stdin(&["apply", "--server-side", "-f", "-"], Some(&changed));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "apply should conflict");
    assert!(
        err.contains("conflict with \"scaler\"") && err.contains(".spec.replicas"),
        "{err}"
    );
    k.ok_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &changed,
    );
    assert_eq!(
        k.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let managers = k.ok(&[
        "get",
        "deploy",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("kubectl"), "{managers}");
    // Dropping a label from the applied config removes it.
    let fewer = changed.replace("  labels: {app: ssa}\n", "");
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], &fewer);
    assert_eq!(
        k.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.metadata.labels}"]),
        ""
    );

    // diff asks the server for a dry-run apply: no difference, then one.
    let file = k.home().join("ssa.yaml");
    std::fs::write(&file, &fewer).expect("write");
    let f = file.to_str().expect("path");
    let same = k.run(&["diff", "--server-side", "-f", f]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    std::fs::write(&file, fewer.replace("c:1", "c:2")).expect("write");
    let differs = k.run(&["diff", "--server-side", "-f", f]);
    assert_eq!(
        differs.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&differs.stderr)
    );
    assert!(String::from_utf8_lossy(&differs.stdout).contains("registry.local/c:2"));
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "ssa",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "registry.local/c:1",
        "diff must not write"
    );
}

#[test]
fn explain_describe_and_validation() {
    let (_server, k) = setup();
    let explained = k.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        explained.contains("rollingUpdate") && explained.contains("DeploymentStrategy"),
        "{explained}"
    );
    let pods = k.ok(&["explain", "pods.spec.containers.image"]);
    assert!(
        pods.contains("FIELD: image") || pods.contains("image"),
        "{pods}"
    );

    k.ok(&["create", "configmap", "described", "--from-literal=k=v"]);
    let described = k.ok(&["describe", "configmap", "described"]);
    assert!(
        described.contains("Name:") && described.contains("described") && described.contains("k:"),
        "{described}"
    );
    k.ok(&["create", "deployment", "dd", "--image=registry.local/x:1"]);
    let described = k.ok(&["describe", "deployment", "dd"]);
    assert!(
        described.contains("registry.local/x:1") && described.contains("Replicas:"),
        "{described}"
    );

    // Unknown fields: kubectl asks the server for strict validation.
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {a: b}\nbogus: 1\n";
    let out = k.run_with_stdin(&["apply", "-f", "-"], Some(bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown field \"bogus\""),
        "{err}"
    );

    // A `List` kubectl validates itself, against the protobuf form of
    // /openapi/v2: what `kubectl get -o yaml` writes applies back.
    let listed = k.ok(&["get", "configmap,deployment", "-o", "yaml"]);
    assert!(listed.contains("kind: List"), "{listed}");
    let applied = k.ok_stdin(&["apply", "-f", "-"], &listed);
    assert!(
        applied.contains("configmap/described") && applied.contains("deployment.apps/dd"),
        "{applied}"
    );
    let bad_list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: in-list}\n  datum: {a: b}\n";
    let out = k.run_with_stdin(&["create", "-f", "-"], Some(bad_list));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("unknown field \"datum\" in io.k8s.api.core.v1.ConfigMap"),
        "{err}"
    );
    // The JSON form lists the operations too, in Swagger 2.0's shape.
    let v2: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v2"])).expect("v2 document");
    let patch = &v2["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch", "{patch}");
    assert!(
        patch["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "body"
                && p["schema"]["$ref"]
                    == "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch")),
        "{patch}"
    );
    let good_list = bad_list.replace("datum", "data");
    k.ok_stdin(&["create", "-f", "-"], &good_list);
    k.ok(&["get", "configmap", "in-list"]);
}

#[test]
fn watch_and_delete_with_finalizers_and_cascade() {
    let (_server, k) = setup();
    let mut watcher = k
        .command(&["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start watch");
    std::thread::sleep(Duration::from_millis(800));
    k.ok(&["create", "configmap", "watched"]);
    std::thread::sleep(Duration::from_millis(800));
    watcher.kill().expect("stop watch");
    let mut seen = String::new();
    watcher
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut seen)
        .expect("read");
    let _ = watcher.wait();
    assert!(seen.contains("configmap/watched"), "{seen}");

    // A finalizer holds the object; `delete` waits until it is removed.
    k.ok_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n");
    let mut deleting = k
        .command(&["delete", "configmap", "held", "--timeout=60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start delete");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        deleting.try_wait().expect("poll").is_none(),
        "delete returned while a finalizer holds the object"
    );
    assert!(
        !k.ok(&[
            "get",
            "cm",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty()
    );
    k.ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = deleting.try_wait().expect("poll") {
            break s;
        }
        assert!(Instant::now() < deadline, "delete --wait did not return");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    assert!(k.fails(&["get", "cm", "held"]).contains("not found"));

    // Cascade policies are recorded as upstream's finalizers.
    k.ok(&[
        "create",
        "deployment",
        "orphaned",
        "--image=registry.local/x:1",
    ]);
    k.ok(&[
        "delete",
        "deployment",
        "orphaned",
        "--cascade=orphan",
        "--wait=false",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "orphaned",
            "-o",
            "jsonpath={.metadata.finalizers}"
        ]),
        r#"["orphan"]"#
    );
    k.ok(&["create", "deployment", "fg", "--image=registry.local/x:1"]);
    k.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "fg",
            "-o",
            "jsonpath={.metadata.finalizers}"
        ]),
        r#"["foregroundDeletion"]"#
    );
    k.ok(&["create", "deployment", "bg", "--image=registry.local/x:1"]);
    k.ok(&["delete", "deployment", "bg", "--cascade=background"]);
    assert!(k.fails(&["get", "deploy", "bg"]).contains("not found"));
}

/// `kubectl debug` adds its container with a strategic merge patch of
/// `pods/ephemeralcontainers` (no node runs it here: the API's part), and
/// `kubectl debug --copy-to` makes a copy of the pod with the new container.
#[test]
fn debug_adds_an_ephemeral_container_or_a_copy() {
    let (_server, k) = setup();
    k.ok(&[
        "run",
        "target",
        "--image=registry.local/app:1",
        "--restart=Never",
    ]);
    let out = k.run(&[
        "debug",
        "target",
        "--image=busybox",
        "--container=debugger",
        "--target=target",
        "--",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let jsonpath = "jsonpath={.spec.ephemeralContainers[0].name} \
        {.spec.ephemeralContainers[0].targetContainerName} \
        {.spec.ephemeralContainers[0].command[0]}";
    assert_eq!(
        k.ok(&["get", "pod", "target", "-o", jsonpath]),
        "debugger target true"
    );
    k.ok(&[
        "debug",
        "target",
        "--image=busybox",
        "--copy-to=target-copy",
        "--container=shell",
        "--",
        "sleep",
        "1",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "target-copy",
            "-o",
            "jsonpath={.spec.containers[*].name}"
        ]),
        "target shell"
    );
}
