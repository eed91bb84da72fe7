//! The API server driven by the real kubectl 1.35 (fetched by scripts/test into
//! .tools/bin, or found through $KUBECTL): apply, get with output formats and
//! selectors, label, annotate, patch, replace, delete, watch, api-resources.

use crate::common;
use crate::common::cli::Cli;

fn setup() -> (common::Server, Cli) {
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    (server, kubectl)
}

const MANIFEST: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {app: shop, tier: web}
data:
  color: blue
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: extra
  namespace: shop
  labels: {app: shop, tier: db}
data:
  size: small
";

#[test]
fn apply_get_label_patch_delete() {
    let (server, k) = setup();
    let manifest = server.dir.path().join("shop.yaml");
    std::fs::write(&manifest, MANIFEST).expect("write manifest");
    let m = manifest.to_str().expect("utf-8 path");

    let out = k.ok(&["apply", "-f", m]);
    assert!(
        out.contains("namespace/shop created") && out.contains("configmap/settings created"),
        "{out}"
    );
    let again = k.ok(&["apply", "-f", m]);
    assert!(again.contains("configmap/settings unchanged"), "{again}");
    std::fs::write(&manifest, MANIFEST.replace("color: blue", "color: green")).expect("write");
    assert!(
        k.ok(&["apply", "-f", m])
            .contains("configmap/settings configured")
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.color}"
        ]),
        "green"
    );

    let names = k.ok(&[
        "get",
        "configmaps",
        "-n",
        "shop",
        "-l",
        "tier=web",
        "-o",
        "name",
    ]);
    assert_eq!(names.trim(), "configmap/settings");
    let by_field = k.ok(&[
        "get",
        "cm",
        "-A",
        "--field-selector",
        "metadata.name=extra",
        "-o",
        "custom-columns=NS:.metadata.namespace,NAME:.metadata.name",
        "--no-headers",
    ]);
    assert_eq!(
        by_field.split_whitespace().collect::<Vec<_>>(),
        vec!["shop", "extra"]
    );
    let chunked = k.ok(&["get", "cm", "-n", "shop", "--chunk-size=1", "-o", "name"]);
    assert_eq!(chunked.lines().count(), 2, "{chunked}");
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "cm", "extra", "-n", "shop", "-o", "json"]))
            .expect("json");
    assert_eq!(json["data"]["size"], "small");
    assert!(
        k.ok(&["get", "cm", "extra", "-n", "shop", "-o", "yaml"])
            .contains("size: small")
    );

    k.ok(&["label", "cm", "extra", "-n", "shop", "owner=ops"]);
    k.ok(&["annotate", "cm", "extra", "-n", "shop", "note=hello"]);
    k.ok(&[
        "patch",
        "cm",
        "extra",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"size":"large"}}"#,
    ]);
    k.ok(&[
        "patch",
        "cm",
        "extra",
        "-n",
        "shop",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/zone","value":"a"}]"#,
    ]);
    let got: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "cm", "extra", "-n", "shop", "-o", "json"]))
            .expect("json");
    assert_eq!(got["metadata"]["labels"]["owner"], "ops");
    assert_eq!(got["metadata"]["annotations"]["note"], "hello");
    assert_eq!(
        (got["data"]["size"].as_str(), got["data"]["zone"].as_str()),
        (Some("large"), Some("a"))
    );

    let err = k.fails(&["get", "cm", "missing", "-n", "shop"]);
    assert!(
        err.contains("NotFound") && err.contains("configmaps \"missing\" not found"),
        "{err}"
    );

    k.ok(&["delete", "cm", "extra", "-n", "shop"]);
    assert!(
        k.fails(&["get", "cm", "extra", "-n", "shop"])
            .contains("not found")
    );
    k.ok(&["delete", "cm", "-n", "shop", "-l", "app=shop"]);
    assert!(
        k.ok(&["get", "cm", "-n", "shop", "-o", "name"])
            .trim()
            .is_empty()
    );
}

#[test]
fn discovery_and_replace() {
    let (server, k) = setup();
    let resources = k.ok(&["api-resources", "--no-headers"]);
    for line in [
        "deployments",
        "configmaps",
        "leases",
        "customresourcedefinitions",
    ] {
        assert!(
            resources.contains(line),
            "{line} missing from api-resources"
        );
    }
    let versions = k.ok(&["api-versions"]);
    for v in [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "rbac.authorization.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == v),
            "{v} missing from api-versions"
        );
    }
    let ns = k.ok(&["get", "ns", "-o", "name"]);
    assert!(ns.contains("namespace/kube-system"));

    // Server-side tables: upstream's columns for each kind.
    let table = k.ok(&["get", "namespaces"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, vec!["NAME", "STATUS", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("default") && l.contains("Active")),
        "{table}"
    );
    let svc = k.ok(&["get", "services", "-o", "wide"]);
    let header: Vec<&str> = svc
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ],
        "{svc}"
    );
    assert!(
        svc.contains("10.96.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );

    let file = server.dir.path().join("cm.json");
    std::fs::write(&file, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"r","namespace":"default"},"data":{"a":"1"}}"#).expect("write");
    let f = file.to_str().expect("path");
    k.ok(&["create", "-f", f]);
    std::fs::write(&file, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"r","namespace":"default"},"data":{"a":"2"}}"#).expect("write");
    k.ok(&["replace", "-f", f]);
    assert_eq!(k.ok(&["get", "cm", "r", "-o", "jsonpath={.data.a}"]), "2");
    assert!(k.fails(&["create", "-f", f]).contains("AlreadyExists"));
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.local/app:1
        env:
        - {name: MODE, value: blue}
        - {name: LEVEL, value: info}
      - name: sidecar
        image: registry.local/sidecar:1
";

/// Client-side apply of a built-in kind sends strategic merge patches: lists of
/// containers and env vars merge by name, deletions and ordering directives
/// are honoured, and no directive is stored.
#[test]
fn apply_and_patch_strategically() {
    let (server, k) = setup();
    let file = server.dir.path().join("web.yaml");
    let f = file.to_str().expect("path");
    std::fs::write(&file, DEPLOYMENT).expect("write");
    k.ok(&["apply", "-f", f]);
    // Second apply: a new image, one env var dropped, the sidecar removed.
    let changed = DEPLOYMENT
        .replace("app:1", "app:2")
        .replace("        - {name: LEVEL, value: info}\n", "")
        .replace(
            "      - name: sidecar\n        image: registry.local/sidecar:1\n",
            "",
        );
    std::fs::write(&file, changed).expect("write");
    let out = k.ok(&["apply", "-f", f]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let got: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json"])).expect("json");
    let containers = &got["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1), "{containers}");
    assert_eq!(containers[0]["image"], "registry.local/app:2");
    assert_eq!(
        containers[0]["env"],
        serde_json::json!([{"name": "MODE", "value": "blue"}])
    );
    assert!(
        !got.to_string().contains("$setElementOrder"),
        "a directive was stored: {got}"
    );

    // kubectl patch (strategic is its default): merge one container by name.
    k.ok(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#]);
    let got: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json"])).expect("json");
    let env = &got["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &serde_json::json!([{"name": "MODE", "value": "blue"}, {"name": "EXTRA", "value": "1"}])
    );
    assert_eq!(
        got["metadata"]["generation"], 3,
        "each spec change bumps the generation"
    );
    assert_eq!(
        got["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "defaults as upstream"
    );
    assert_eq!(got["spec"]["template"]["spec"]["restartPolicy"], "Always");

    let pod = server.dir.path().join("pod.json");
    std::fs::write(&pod, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#).expect("write");
    k.ok(&["create", "-f", pod.to_str().expect("path")]);
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "solo",
            "-o",
            "jsonpath={.status.phase}/{.status.qosClass}/{.spec.containers[0].imagePullPolicy}"
        ]),
        "Pending/BestEffort/Always"
    );
    let pods = k.ok(&["get", "pods"]);
    assert!(
        pods.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "solo",
                    "0/1",
                    "Pending",
                    "0",
                    l.split_whitespace().last().unwrap_or("")
                ]),
        "{pods}"
    );

    // kubectl scale goes through the scale subresource.
    assert!(
        k.ok(&["scale", "deployment", "web", "--replicas=5"])
            .contains("scaled")
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );

    let table = k.ok(&["get", "deployments"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
}
