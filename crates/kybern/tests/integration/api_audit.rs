//! The audit log through the real server, kubectl and kube-rs: a policy
//! picks the level per request (first matching rule), events carry the
//! user, impersonation, the authorization decision, PodSecurity's audit
//! violations and upstream's stages, and Secret values never reach the log;
//! the webhook backend delivers the same events as `EventList`s.

use crate::common;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::cli::Cli;
use serde_json::Value;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: None
  users: ["system:kube-scheduler"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps"]
- level: Request
  resources:
  - group: ""
    resources: ["pods"]
- level: Metadata
"#;

const PRIVILEGED: &str = r#"{"apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "loud"},
  "spec": {"containers": [{"name": "c", "image": "busybox",
      "securityContext": {"privileged": true}}]}}"#;

pub(crate) fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is one JSON event"))
        .collect()
}

/// The first event `matches` picks, waiting for the log writer.
pub(crate) fn find(path: &Path, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(ev) = events(path).into_iter().find(&matches) {
            return ev;
        }
        if Instant::now() > deadline {
            let all = std::fs::read_to_string(path).unwrap_or_default();
            common::print_tail("audit log", &all);
            panic!("no audit event: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is(ev: &Value, verb: &str, resource: &str, name: &str, stage: &str) -> bool {
    ev["verb"] == verb
        && ev["objectRef"]["resource"] == resource
        && (name.is_empty() || ev["objectRef"]["name"] == name)
        && ev["stage"] == stage
}

#[test]
fn the_policy_decides_what_each_request_leaves_in_the_log() {
    let work = tempfile::tempdir().expect("tempdir");
    let policy = work.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let tokens = work.path().join("tokens.csv");
    std::fs::write(&tokens, "bob-token,bob,1001\n").expect("tokens");
    let log = work.path().join("logs").join("audit.log");
    let server = common::Server::start_with(&[
        "--audit-policy-file",
        &policy.to_string_lossy(),
        "--audit-log-path",
        &log.to_string_lossy(),
        "--token-file",
        &tokens.to_string_lossy(),
    ]);
    let kubectl = Cli::kubectl(&server);

    // Metadata for secrets: who created which one, never its value.
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=AuditSecret-9d1e",
    ]);
    let ev = find(&log, "secret create", |e| {
        is(e, "create", "secrets", "db", "ResponseComplete")
    });
    assert_eq!(ev["kind"], "Event");
    assert_eq!(ev["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(ev["level"], "Metadata");
    assert_eq!(ev["user"]["username"], "kybern-admin");
    assert!(
        ev["user"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:masters"))
    );
    assert_eq!(ev["objectRef"]["namespace"], "default");
    assert_eq!(ev["objectRef"]["apiVersion"], "v1");
    assert_eq!(ev["responseStatus"]["code"], 201);
    assert_eq!(ev["sourceIPs"][0], "127.0.0.1");
    assert!(
        ev["userAgent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("kubectl"))
    );
    assert_eq!(ev["annotations"]["authorization.k8s.io/decision"], "allow");
    assert!(ev.get("requestObject").is_none() && ev.get("responseObject").is_none());

    // RequestResponse for config maps: both bodies, without managedFields.
    kubectl.ok(&[
        "create",
        "configmap",
        "notes",
        "--from-literal=note=AuditNote-77",
    ]);
    let ev = find(&log, "configmap create", |e| {
        is(e, "create", "configmaps", "notes", "ResponseComplete")
    });
    assert_eq!(ev["level"], "RequestResponse");
    assert_eq!(ev["requestObject"]["data"]["note"], "AuditNote-77");
    assert_eq!(ev["responseObject"]["data"]["note"], "AuditNote-77");
    assert!(ev["responseObject"]["metadata"]["uid"].is_string());
    assert!(
        ev["responseObject"]["metadata"]
            .get("managedFields")
            .is_none()
    );

    // A refusal: the caller, the 403 Status and the decision.
    let bob = Cli::kubectl_with_token(&server, "bob-token");
    bob.fails(&["get", "secrets"]);
    let ev = find(&log, "bob's list", |e| {
        is(e, "list", "secrets", "", "ResponseComplete") && e["user"]["username"] == "bob"
    });
    assert_eq!(ev["user"]["uid"], "1001");
    assert_eq!(ev["responseStatus"]["code"], 403);
    assert_eq!(ev["responseStatus"]["reason"], "Forbidden");
    assert!(
        ev["responseStatus"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"bob\" cannot list resource \"secrets\""))
    );
    assert_eq!(ev["annotations"]["authorization.k8s.io/decision"], "forbid");

    // Impersonation: the admin acting as bob.
    kubectl.fails(&["get", "configmaps", "--as=bob"]);
    let ev = find(&log, "impersonated list", |e| {
        is(e, "list", "configmaps", "", "ResponseComplete")
            && e["impersonatedUser"]["username"] == "bob"
    });
    assert_eq!(ev["user"]["username"], "kybern-admin");
    assert_eq!(ev["responseStatus"]["code"], 403);

    // A forged token: upstream's failed-authentication event.
    let forged = Cli::kubectl_with_token(&server, "forged-token");
    forged.fails(&["get", "pods"]);
    let ev = find(&log, "401", |e| e["responseStatus"]["code"] == 401);
    assert_eq!(ev["stage"], "ResponseStarted");
    assert_eq!(ev["verb"], "list");
    assert_eq!(ev["user"]["username"], "");

    // PodSecurity's audit mode: admitted, and the violation recorded.
    kubectl.ok(&["create", "namespace", "watched"]);
    kubectl.ok(&[
        "label",
        "namespace",
        "watched",
        "pod-security.kubernetes.io/audit=restricted",
    ]);
    kubectl.ok_stdin(&["apply", "-n", "watched", "-f", "-"], PRIVILEGED);
    let ev = find(&log, "pod create", |e| {
        is(e, "create", "pods", "loud", "ResponseComplete")
    });
    assert_eq!(ev["level"], "Request");
    assert_eq!(
        ev["requestObject"]["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
    assert!(ev.get("responseObject").is_none());
    let violations = ev["annotations"]["pod-security.kubernetes.io/audit-violations"]
        .as_str()
        .unwrap_or_default();
    assert!(
        violations.starts_with("would violate PodSecurity \"restricted:latest\": ")
            && violations.contains(
                "privileged (container \"c\" must not set securityContext.privileged=true)"
            ),
        "{violations}"
    );
    assert_eq!(
        ev["annotations"]["pod-security.kubernetes.io/enforce-policy"],
        "privileged:latest"
    );

    // The Audit-Id header names the request's event; a watch has a
    // ResponseStarted and, when it ends, a ResponseComplete event.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let audit_id = rt.block_on(async {
        use futures::StreamExt;
        use kube::api::{Api, WatchParams};
        let client = server.client().await;
        let req = http::Request::get("/api/v1/namespaces/default/configmaps/notes")
            .body(Vec::new())
            .expect("request");
        let resp = client
            .send(req.map(kube::client::Body::from))
            .await
            .expect("get");
        let id = resp
            .headers()
            .get("audit-id")
            .and_then(|v| v.to_str().ok())
            .expect("an Audit-Id header")
            .to_owned();
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::default_namespaced(client);
        let stream = api
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .expect("watch");
        let seen: Vec<_> = stream.collect().await;
        assert!(!seen.is_empty());
        id
    });
    let ev = find(&log, "get by Audit-Id", |e| e["auditID"] == audit_id);
    assert!(is(&ev, "get", "configmaps", "notes", "ResponseComplete"));
    let started = find(&log, "watch started", |e| {
        is(e, "watch", "configmaps", "", "ResponseStarted")
    });
    let complete = find(&log, "watch complete", |e| {
        e["auditID"] == started["auditID"] && e["stage"] == "ResponseComplete"
    });
    assert_eq!(complete["responseStatus"]["code"], 200);

    // What the policy left out is not there.
    let all = std::fs::read_to_string(&log).expect("log");
    assert!(!all.contains("AuditSecret-9d1e") && !all.contains("QXVkaXRTZWNyZXQtOWQxZQ=="));
    let all = events(&log);
    assert!(all.iter().all(|e| e["stage"] != "RequestReceived"));
    assert!(all.iter().all(|e| {
        !e["requestURI"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/readyz")
    }));
    assert!(
        all.iter()
            .all(|e| e["user"]["username"] != "system:kube-scheduler")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).expect("log").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the log holds request bodies");
}

#[test]
fn a_bad_policy_stops_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "kind: Policy\nrules:\n- level: Everything\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--audit-policy-file")
        .arg(&policy)
        .arg("--audit-log-path")
        .arg(dir.path().join("audit.log"))
        .output()
        .expect("run kybern server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit policy"), "{err}");
}

/// The webhook backend alone: events reach an HTTPS receiver (its CA from
/// the kubeconfig) as `audit.k8s.io/v1` `EventList`s, at the policy's level.
#[test]
fn events_reach_an_audit_webhook_in_batches() {
    let receiver = common::webhook::WebhookServer::start(&["127.0.0.1"]);
    let work = tempfile::tempdir().expect("tempdir");
    let policy = work.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let config = work.path().join("audit-webhook.kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: audit\n  cluster:\n    server: https://127.0.0.1:{}/audit\n    certificate-authority-data: {}\ncontexts:\n- name: audit\n  context: {{cluster: audit, user: ''}}\ncurrent-context: audit\n",
            receiver.port, receiver.ca_bundle
        ),
    )
    .expect("kubeconfig");
    let server = common::Server::start_with(&[
        "--audit-policy-file",
        &policy.to_string_lossy(),
        "--audit-webhook-config-file",
        &config.to_string_lossy(),
        "--audit-webhook-batch-max-wait",
        "200ms",
    ]);
    let kubectl = Cli::kubectl(&server);
    kubectl.ok(&["create", "configmap", "hooked", "--from-literal=k=v"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let event = loop {
        let lists = receiver.reviews("/audit");
        for list in &lists {
            assert_eq!(list["kind"], "EventList", "{list}");
            assert_eq!(list["apiVersion"], "audit.k8s.io/v1", "{list}");
        }
        let found = lists
            .iter()
            .flat_map(|l| l["items"].as_array().cloned().unwrap_or_default())
            .find(|e| is(e, "create", "configmaps", "hooked", "ResponseComplete"));
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no event at the webhook: {lists:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(event["level"], "RequestResponse");
    assert_eq!(event["user"]["username"], "kybern-admin");
    assert_eq!(event["requestObject"]["data"]["k"], "v");
    assert_eq!(event["responseStatus"]["code"], 201);
}
