//! Admission webhooks through the real server, kubectl and a real HTTPS
//! webhook: configurations validated and defaulted as upstream; validating
//! webhooks refuse with the webhook's status (create, update, delete),
//! narrowed by namespace selectors; mutating webhooks patch objects (also in
//! dry runs) and pass warnings on; the review carries what upstream sends;
//! failurePolicy, timeouts and malformed answers; a webhook behind a Service
//! reached through its EndpointSlice.

use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::common;
use crate::common::cli::Cli;
use crate::common::webhook::WebhookServer;

fn configmap(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).into(), json!(v)))
        .collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
    .to_string()
}

fn hook(name: &str, url: &str, ca: &str, rule: Value, extra: Value) -> Value {
    let mut h = json!({"name": name, "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": url, "caBundle": ca}, "rules": [rule]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        h[k] = v.clone();
    }
    h
}

fn rule(resource: &str, operations: &[&str]) -> Value {
    json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": operations,
        "resources": [resource]})
}

fn configuration(kind: &str, name: &str, hooks: Vec<Value>) -> String {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "webhooks": hooks})
    .to_string()
}

/// Waits until the configuration is in force: a create of a probe config map
/// in `namespace` labelled `deny=yes` is refused.
async fn wait_until_refusing(client: &kube::Client, namespace: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut n = 0;
    common::wait_for("the validating webhook to be in force", async || {
        n += 1;
        let probe: ConfigMap =
            serde_json::from_str(&configmap(&format!("probe-{n}"), &[("deny", "yes")])).ok()?;
        api.create(&PostParams::default(), &probe).await.err()
    })
    .await;
}

#[tokio::test]
async fn webhooks_mutate_validate_and_fail_as_configured() {
    let webhook = WebhookServer::start(&["127.0.0.1"]);
    let server = common::Server::start();
    let client = server.client().await;
    let kubectl = Cli::kubectl(&server);
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", webhook.port);
    let ca = webhook.ca_bundle.clone();

    // Configurations are validated as upstream validates them.
    let bad = configuration(
        "ValidatingWebhookConfiguration",
        "bad",
        vec![
            json!({"name": "deny", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "http://127.0.0.1/x"}}),
        ],
    );
    let out = kubectl.run_with_stdin(&["create", "-f", "-"], Some(&bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("should be a domain with at least three segments separated by dots")
            && stderr.contains("'https' is the only allowed URL scheme"),
        "{stderr}"
    );

    for ns in ["hooked", "plain"] {
        kubectl.ok(&["create", "namespace", ns]);
    }
    kubectl.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    // Created before the webhooks, to be deleted under them.
    kubectl.ok_stdin(
        &["create", "-n", "hooked", "-f", "-"],
        &configmap("doomed", &[("deny", "yes")]),
    );

    let validating = configuration(
        "ValidatingWebhookConfiguration",
        "labels.kybern.test",
        vec![hook(
            "validate.kybern.test",
            &url("/validate"),
            &ca,
            rule("configmaps", &["CREATE", "UPDATE", "DELETE"]),
            json!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}}}),
        )],
    );
    let mutating = configuration(
        "MutatingWebhookConfiguration",
        "labels.kybern.test",
        vec![hook(
            "mutate.kybern.test",
            &url("/mutate"),
            &ca,
            rule("configmaps", &["CREATE"]),
            json!({"objectSelector": {"matchLabels": {"mutate": "yes"}}}),
        )],
    );
    kubectl.ok_stdin(&["create", "-f", "-"], &validating);
    kubectl.ok_stdin(&["create", "-f", "-"], &mutating);
    let stored = kubectl.ok(&[
        "get",
        "validatingwebhookconfiguration",
        "labels.kybern.test",
        "-o",
        "json",
    ]);
    let stored: Value = serde_json::from_str(&stored).expect("json");
    let h = &stored["webhooks"][0];
    assert_eq!(
        (
            h["failurePolicy"].as_str(),
            h["timeoutSeconds"].as_i64(),
            h["rules"][0]["scope"].as_str()
        ),
        (Some("Fail"), Some(10), Some("*")),
        "upstream's defaults: {h}"
    );
    assert_eq!(stored["metadata"]["generation"], 1);
    let listed = kubectl.ok(&["get", "mutatingwebhookconfigurations"]);
    assert!(
        listed.contains("WEBHOOKS") && listed.contains("labels.kybern.test"),
        "{listed}"
    );
    wait_until_refusing(&client, "hooked").await;

    // Refused with the webhook's status, in namespaces the selector takes.
    let out = kubectl.run_with_stdin(
        &["create", "-n", "hooked", "-f", "-"],
        Some(&configmap("refused", &[("deny", "yes")])),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error from server (Forbidden)")
            && stderr.contains("admission webhook \"validate.kybern.test\" denied the request: objects labelled deny=yes are refused"),
        "{stderr}"
    );
    kubectl.ok_stdin(
        &["create", "-n", "plain", "-f", "-"],
        &configmap("elsewhere", &[("deny", "yes")]),
    );

    // Mutated, with the webhook's warning, and the review as upstream's.
    let out = kubectl.run_with_stdin(
        &["create", "-n", "hooked", "-f", "-"],
        Some(&configmap("labelled", &[("mutate", "yes")])),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: labelled by the test webhook"),
        "{stderr}"
    );
    let labels = kubectl.ok(&[
        "get",
        "cm",
        "labelled",
        "-n",
        "hooked",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("\"mutated-by\":\"test-webhook\""),
        "{labels}"
    );
    kubectl.ok_stdin(
        &["create", "-n", "hooked", "-f", "-"],
        &configmap("unlabelled", &[]),
    );
    let labels = kubectl.ok(&[
        "get",
        "cm",
        "unlabelled",
        "-n",
        "hooked",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!labels.contains("mutated-by"), "{labels}");
    let reviews = webhook.reviews("/mutate");
    let request = &reviews.last().expect("a mutate review")["request"];
    assert_eq!(
        reviews.last().map(|r| &r["apiVersion"]),
        Some(&json!("admission.k8s.io/v1"))
    );
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["namespace"], "hooked");
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(request["resource"]["resource"], "configmaps");
    assert_eq!(request["object"]["metadata"]["name"], "labelled");
    assert_eq!(request["dryRun"], false);
    assert!(request["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        request["userInfo"]["groups"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("system:masters"))),
        "{request}"
    );

    // A server-side dry run is mutated too, says so, and stores nothing.
    let dry = kubectl.ok_stdin(
        &[
            "create",
            "-n",
            "hooked",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        &configmap("dry", &[("mutate", "yes")]),
    );
    assert!(dry.contains("test-webhook"), "{dry}");
    let reviews = webhook.reviews("/mutate");
    assert_eq!(
        reviews.last().map(|r| &r["request"]["dryRun"]),
        Some(&json!(true))
    );
    let missing = kubectl.fails(&["get", "cm", "dry", "-n", "hooked"]);
    assert!(missing.contains("NotFound"), "{missing}");

    // Updates and deletes are reviewed with the old object.
    let refused = kubectl.fails(&["label", "cm", "unlabelled", "-n", "hooked", "deny=yes"]);
    assert!(refused.contains("denied the request"), "{refused}");
    let reviews = webhook.reviews("/validate");
    let update = &reviews.last().expect("a validate review")["request"];
    assert_eq!(update["operation"], "UPDATE");
    assert_eq!(update["oldObject"]["metadata"]["name"], "unlabelled");
    assert_eq!(update["options"]["kind"], "UpdateOptions");
    let refused = kubectl.fails(&["delete", "cm", "doomed", "-n", "hooked"]);
    assert!(refused.contains("denied the request"), "{refused}");
    kubectl.ok(&["get", "cm", "doomed", "-n", "hooked"]);

    // A webhook that cannot be reached refuses under Fail, not under Ignore;
    // one that is too slow or answers another request fails the same way.
    let closed = common::free_port();
    let failing = configuration(
        "ValidatingWebhookConfiguration",
        "failing.kybern.test",
        vec![
            hook(
                "down.kybern.test",
                &format!("https://127.0.0.1:{closed}/validate"),
                &ca,
                rule("secrets", &["CREATE"]),
                json!({}),
            ),
            hook(
                "slow.kybern.test",
                &url("/slow"),
                &ca,
                rule("serviceaccounts", &["CREATE"]),
                json!({"timeoutSeconds": 1}),
            ),
            hook(
                "liar.kybern.test",
                &url("/bad-uid"),
                &ca,
                rule("services", &["CREATE"]),
                json!({}),
            ),
        ],
    );
    kubectl.ok_stdin(&["create", "-f", "-"], &failing);
    let secret_refusal = common::wait_for("the failing webhook to be in force", async || {
        let out = kubectl.run(&[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            "plain",
            "--from-literal=a=b",
        ]);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    assert!(
        secret_refusal.contains(&format!(
            "Internal error occurred: failed calling webhook \"down.kybern.test\": failed to call webhook: Post \"https://127.0.0.1:{closed}/validate?timeout=10s\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )),
        "{secret_refusal}"
    );
    let slow = kubectl.fails(&["create", "serviceaccount", "sa1", "-n", "plain"]);
    assert!(
        slow.contains("failed calling webhook \"slow.kybern.test\"")
            && slow.contains("context deadline exceeded"),
        "{slow}"
    );
    let liar = kubectl.fails(&[
        "create",
        "service",
        "clusterip",
        "svc1",
        "-n",
        "plain",
        "--tcp=80",
    ]);
    assert!(
        liar.contains("received invalid webhook response: expected response.uid="),
        "{liar}"
    );
    kubectl.ok(&[
        "patch",
        "validatingwebhookconfiguration",
        "failing.kybern.test",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]"#,
    ]);
    common::wait_for("the webhook to fail open", async || {
        let out = kubectl.run(&[
            "create",
            "secret",
            "generic",
            "s2",
            "-n",
            "plain",
            "--from-literal=a=b",
        ]);
        out.status.success().then_some(())
    })
    .await;
    let generation = kubectl.ok(&[
        "get",
        "validatingwebhookconfiguration",
        "failing.kybern.test",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, "2");

    // CONNECT: an exec is reviewed with its PodExecOptions, and refused.
    let connect = configuration(
        "ValidatingWebhookConfiguration",
        "connect.kybern.test",
        vec![hook(
            "exec.kybern.test",
            &url("/deny-all"),
            &ca,
            rule("pods/exec", &["CONNECT"]),
            json!({}),
        )],
    );
    kubectl.ok_stdin(&["create", "-f", "-"], &connect);
    kubectl.ok(&[
        "run",
        "box",
        "-n",
        "plain",
        "--image=busybox",
        "--restart=Never",
    ]);
    let refused = common::wait_for("the exec webhook to be in force", async || {
        let out = kubectl.run(&["exec", "box", "-n", "plain", "--", "ls", "-l"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr.contains("exec.kybern.test").then_some(stderr)
    })
    .await;
    assert!(
        refused.contains("admission webhook \"exec.kybern.test\" denied the request: no entry"),
        "{refused}"
    );
    let reviews = webhook.reviews("/deny-all");
    let exec = &reviews.last().expect("an exec review")["request"];
    assert_eq!(
        (
            exec["operation"].as_str(),
            exec["subResource"].as_str(),
            exec["kind"]["kind"].as_str()
        ),
        (Some("CONNECT"), Some("exec"), Some("PodExecOptions"))
    );
    assert_eq!(exec["object"]["command"], json!(["ls", "-l"]));
    assert_eq!(exec["name"], "box");
}

/// A bridge with one address, removed on drop: the webhook's endpoint must
/// be a routable address (upstream refuses loopback ones), and this kernel
/// may lack the dummy link type.
struct AddressedBridge {
    name: String,
}

impl AddressedBridge {
    fn add(name: &str, address: &str) -> Self {
        let link = AddressedBridge {
            name: name.to_owned(),
        };
        for args in [
            vec!["link", "add", name, "type", "bridge"],
            vec!["addr", "add", address, "dev", name],
            vec!["link", "set", name, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        link
    }
}

impl Drop for AddressedBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

#[tokio::test]
async fn a_webhook_behind_a_service_is_reached_through_its_endpoints() {
    let webhook = WebhookServer::start(&["hooks.webhooks.svc"]);
    let octet = webhook.port % 250 + 1;
    let address = format!("10.254.{octet}.1");
    let _link = AddressedBridge::add(&format!("kbwh{}", webhook.port), &format!("{address}/32"));
    let server = common::Server::start();
    let client = server.client().await;
    let kubectl = Cli::kubectl(&server);
    kubectl.ok(&["create", "namespace", "webhooks"]);
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hooks", "namespace": "webhooks"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hooks-1", "namespace": "webhooks",
            "labels": {"kubernetes.io/service-name": "hooks"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": webhook.port, "protocol": "TCP"}]});
    kubectl.ok_stdin(&["create", "-f", "-"], &service.to_string());
    kubectl.ok_stdin(&["create", "-f", "-"], &slice.to_string());
    let by_service = configuration(
        "ValidatingWebhookConfiguration",
        "service.kybern.test",
        vec![json!({"name": "svc.kybern.test", "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "hooks", "namespace": "webhooks",
                "path": "/validate"}, "caBundle": webhook.ca_bundle},
            "rules": [rule("configmaps", &["CREATE"])]})],
    );
    kubectl.ok_stdin(&["create", "-f", "-"], &by_service);
    kubectl.ok(&["create", "namespace", "apps"]);
    wait_until_refusing(&client, "apps").await;
    let refused = kubectl.run_with_stdin(
        &["create", "-n", "apps", "-f", "-"],
        Some(&configmap("refused", &[("deny", "yes")])),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("admission webhook \"svc.kybern.test\" denied the request"),
        "{stderr}"
    );
    kubectl.ok_stdin(
        &["create", "-n", "apps", "-f", "-"],
        &configmap("fine", &[]),
    );
    assert!(!webhook.reviews("/validate").is_empty());

    // Without endpoints the call fails, and Fail refuses.
    kubectl.ok(&["delete", "endpointslice", "hooks-1", "-n", "webhooks"]);
    let missing = common::wait_for("the endpoints to be gone", async || {
        let out = kubectl.run_with_stdin(
            &["create", "-n", "apps", "-f", "-"],
            Some(&configmap("unreached", &[])),
        );
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    assert!(
        missing.contains("no endpoints available for service \"hooks\""),
        "{missing}"
    );
}
