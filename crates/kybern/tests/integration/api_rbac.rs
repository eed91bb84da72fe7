//! RBAC through the real server, kubectl and kube-rs: the bootstrap roles,
//! aggregation of `admin`/`edit`/`view`, a matrix of identities × verbs ×
//! resources against upstream's rules, enforcement of real requests, the
//! escalation check, impersonation and the review APIs.

use crate::common;
use crate::common::cli::Cli;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const TOKENS: &str = "\
viewer-token,alice,1001
editor-token,bob,1002
admin-token,carol,1003
nobody-token,dave,1004
reader-token,erin,1005,\"auditors\"
";

async fn token_client(server: &common::Server, token: &str) -> kube::Client {
    common::client_with_token(&server.kubeconfig(), token).await
}

pub(crate) fn can_i(cli: &Cli, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let out = cli.run(&full);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(said == "yes" || said == "no", "{full:?}: {out:?}");
    assert_eq!(out.status.success(), said == "yes", "{out:?}");
    said == "yes"
}

/// What upstream's `view`, `edit` and `admin` allow in a namespace, for the
/// verbs and resources the matrix asks about.
fn upstream_allows(role: &str, verb: &str, resource: &str) -> bool {
    let read = matches!(verb, "get" | "list" | "watch");
    let viewable = matches!(
        resource,
        "pods" | "pods/log" | "configmaps" | "services" | "deployments" | "jobs" | "resourcequotas"
    );
    let editable = matches!(
        resource,
        "pods" | "pods/exec" | "configmaps" | "secrets" | "services" | "deployments" | "jobs"
    );
    let rbac = matches!(resource, "roles" | "rolebindings");
    match role {
        "view" => read && viewable,
        "edit" => read && viewable || editable,
        "admin" => read && viewable || editable || rbac,
        _ => false,
    }
}

/// (group, resource, subresource, list path in team-a) the matrix covers.
const RESOURCES: &[(&str, &str, &str, &str)] = &[
    ("", "pods", "", "/api/v1/namespaces/team-a/pods"),
    ("", "pods", "log", ""),
    ("", "pods", "exec", ""),
    ("", "configmaps", "", "/api/v1/namespaces/team-a/configmaps"),
    ("", "secrets", "", "/api/v1/namespaces/team-a/secrets"),
    ("", "services", "", "/api/v1/namespaces/team-a/services"),
    (
        "",
        "resourcequotas",
        "",
        "/api/v1/namespaces/team-a/resourcequotas",
    ),
    (
        "apps",
        "deployments",
        "",
        "/apis/apps/v1/namespaces/team-a/deployments",
    ),
    ("batch", "jobs", "", "/apis/batch/v1/namespaces/team-a/jobs"),
    (
        "rbac.authorization.k8s.io",
        "roles",
        "",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles",
    ),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        "",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings",
    ),
];

async fn self_review(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
) -> bool {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {"resourceAttributes": {
        "namespace": "team-a", "verb": verb, "group": group, "resource": resource, "subresource": sub}}}))
    .expect("review");
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("review answered");
    answer.status.expect("status").allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_bindings_and_reviews_follow_upstream() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    let server = common::Server::start_cluster(&["--token-file", tokens.to_str().expect("path")]);
    let admin = Cli::kubectl(&server);
    admin.ok(&["create", "namespace", "team-a"]);
    admin.ok(&["create", "namespace", "team-b"]);
    for (user, role) in [("alice", "view"), ("bob", "edit"), ("carol", "admin")] {
        admin.ok(&[
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            "-n",
            "team-a",
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ]);
    }
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "auditors-view",
        "--clusterrole=view",
        "--group=auditors",
    ]);

    // The aggregation controller fills `admin`, `edit` and `view` in.
    let roles: Api<ClusterRole> = Api::all(server.client().await);
    for name in ["view", "edit", "admin"] {
        common::wait_for(&format!("{name} aggregated"), async || {
            let r = roles.get(name).await.ok()?;
            r.rules.filter(|r| !r.is_empty()).map(|_| ())
        })
        .await;
    }
    // A new role labelled for `view` joins it.
    admin.ok_stdin(&["apply", "-f", "-"], r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]}"#);
    // ... and through `edit`, `admin` too.
    common::wait_for("widgets in admin", async || {
        let r = roles.get("admin").await.ok()?;
        r.rules?
            .iter()
            .any(|r| r.resources.as_deref() == Some(&["widgets".to_owned()]))
            .then_some(())
    })
    .await;

    // The matrix: every identity, verb and resource through kube-rs
    // SelfSubjectAccessReviews, a real list of each resource, and a sample
    // through `kubectl auth can-i`.
    let users = [
        ("viewer-token", "view"),
        ("editor-token", "edit"),
        ("admin-token", "admin"),
        ("nobody-token", "none"),
    ];
    let verbs = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    for (token, role) in users {
        let client = token_client(&server, token).await;
        for verb in verbs {
            for (group, resource, sub, _) in RESOURCES {
                let shown = if sub.is_empty() {
                    (*resource).to_owned()
                } else {
                    format!("{resource}/{sub}")
                };
                let said = self_review(&client, verb, group, resource, sub).await;
                assert_eq!(
                    said,
                    upstream_allows(role, verb, &shown),
                    "{role} {verb} {shown}"
                );
            }
        }
        for (_, resource, _, path) in RESOURCES.iter().filter(|r| !r.3.is_empty()) {
            let got = client
                .request_text(http::Request::get(*path).body(Vec::new()).expect("request"))
                .await;
            match got {
                Ok(_) => assert!(
                    upstream_allows(role, "list", resource),
                    "{role} listed {resource}"
                ),
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.code, 403, "{role} {resource}: {s:?}");
                    assert!(
                        !upstream_allows(role, "list", resource),
                        "{role} refused {resource}"
                    );
                }
                Err(e) => panic!("{role} {resource}: {e}"),
            }
        }
        let cli = Cli::kubectl_with_token(&server, token);
        assert_eq!(
            can_i(&cli, &["delete", "secrets", "-n", "team-a"]),
            upstream_allows(role, "delete", "secrets")
        );
        assert_eq!(
            can_i(
                &cli,
                &["create", "pods", "--subresource=exec", "-n", "team-a"]
            ),
            upstream_allows(role, "create", "pods/exec")
        );
        assert_eq!(
            can_i(
                &cli,
                &[
                    "create",
                    "rolebindings.rbac.authorization.k8s.io",
                    "-n",
                    "team-a"
                ]
            ),
            upstream_allows(role, "create", "rolebindings")
        );
        // Nothing in the other namespace, nothing cluster-wide.
        assert!(!can_i(&cli, &["list", "pods", "-n", "team-b"]), "{role}");
        assert!(!can_i(&cli, &["list", "nodes"]), "{role}");
        // Everyone may ask who they are and what they may do.
        assert!(can_i(
            &cli,
            &["create", "selfsubjectaccessreviews.authorization.k8s.io"]
        ));
    }

    // Real requests are held to the same rules.
    let alice = token_client(&server, "viewer-token").await;
    let pods: Api<Pod> = Api::namespaced(alice.clone(), "team-a");
    pods.list(&ListParams::default())
        .await
        .expect("view lists pods");
    let maps: Api<ConfigMap> = Api::namespaced(alice.clone(), "team-a");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("cm");
    match maps.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team-a\""
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let other: Api<Pod> = Api::namespaced(alice.clone(), "team-b");
    assert!(
        matches!(other.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
    let bob = Cli::kubectl_with_token(&server, "editor-token");
    bob.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "team-a",
        "--from-literal=k=v",
    ]);
    let err = Cli::kubectl_with_token(&server, "viewer-token")
        .fails(&["get", "secret", "s", "-n", "team-a"]);
    assert!(
        err.contains("secrets \"s\" is forbidden: User \"alice\" cannot get resource \"secrets\""),
        "{err}"
    );
    // A cluster-wide binding to a group reaches every namespace.
    let erin = Cli::kubectl_with_token(&server, "reader-token");
    erin.ok(&["get", "pods", "-A"]);
    assert!(!can_i(&erin, &["get", "secrets", "-n", "team-b"]));

    // Escalation: carol (admin) may hand out edit in team-a, not more than she holds.
    let carol = Cli::kubectl_with_token(&server, "admin-token");
    carol.ok(&[
        "create",
        "rolebinding",
        "dave-edit",
        "-n",
        "team-a",
        "--clusterrole=edit",
        "--user=dave",
    ]);
    let dave = Cli::kubectl_with_token(&server, "nobody-token");
    assert!(can_i(&dave, &["create", "pods", "-n", "team-a"]));
    let err = carol.fails(&[
        "create",
        "rolebinding",
        "dave-root",
        "-n",
        "team-a",
        "--clusterrole=cluster-admin",
        "--user=dave",
    ]);
    assert!(
        err.contains("attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let err = carol.fails(&[
        "create",
        "role",
        "nodes",
        "-n",
        "team-a",
        "--verb=get",
        "--resource=nodes,secrets",
    ]);
    assert!(err.contains("not currently held"), "{err}");
    carol.ok(&[
        "create",
        "role",
        "cm-reader",
        "-n",
        "team-a",
        "--verb=get",
        "--resource=configmaps",
    ]);
    let err = bob.fails(&[
        "create",
        "role",
        "r",
        "-n",
        "team-a",
        "--verb=get",
        "--resource=pods",
    ]);
    assert!(err.contains("forbidden"), "{err}");

    // `can-i --list` shows the rules of `view`, `edit` and `admin`,
    // `whoami` the identity.
    let listing = |token: &str| {
        let list = Cli::kubectl_with_token(&server, token)
            .ok(&["auth", "can-i", "--list", "-n", "team-a"]);
        move |res: &str| {
            list.lines()
                .find(|l| l.split_whitespace().next() == Some(res))
                .map(str::to_owned)
        }
    };
    let writes = |l: Option<String>| {
        l.is_some_and(|l| {
            ["create", "delete", "patch", "update"]
                .iter()
                .all(|v| l.contains(v))
        })
    };
    for (token, rbac) in [("editor-token", false), ("admin-token", true)] {
        let line = listing(token);
        for res in [
            "pods",
            "secrets",
            "configmaps",
            "deployments.apps",
            "jobs.batch",
        ] {
            assert!(writes(line(res)), "{token} {res}: {:?}", line(res));
        }
        assert!(
            line("pods/exec").is_some_and(|l| l.contains("create")),
            "{token}"
        );
        assert!(
            line("namespaces").is_some_and(|l| !l.contains("create")),
            "{token}"
        );
        for res in [
            "roles.rbac.authorization.k8s.io",
            "rolebindings.rbac.authorization.k8s.io",
        ] {
            assert_eq!(writes(line(res)), rbac, "{token} {res}: {:?}", line(res));
        }
        assert_eq!(
            line("localsubjectaccessreviews.authorization.k8s.io").is_some(),
            rbac,
            "{token}"
        );
        assert!(
            line("nodes").is_none() && line("clusterroles.rbac.authorization.k8s.io").is_none()
        );
    }
    let list = Cli::kubectl_with_token(&server, "viewer-token")
        .ok(&["auth", "can-i", "--list", "-n", "team-a"]);
    let line = |res: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(res))
            .map(str::to_owned)
    };
    assert!(
        line("pods").is_some_and(|l| l.contains("[get list watch]")),
        "{list}"
    );
    assert!(
        line("selfsubjectaccessreviews.authorization.k8s.io")
            .is_some_and(|l| l.contains("[create]")),
        "{list}"
    );
    assert!(line("secrets").is_none(), "{list}");
    assert!(list.contains("[/api/*]"), "{list}");
    let who = carol.ok(&["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_str(&who).expect("json");
    assert_eq!(who["status"]["userInfo"]["username"], "carol");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!(["system:authenticated"])
    );

    // Impersonation: the admin may act as alice and gets only her rights;
    // alice may not act as anyone.
    admin.ok(&["get", "pods", "-n", "team-a", "--as=alice"]);
    let err = admin.fails(&["get", "secrets", "-n", "team-a", "--as=alice"]);
    assert!(
        err.contains("User \"alice\" cannot list resource \"secrets\""),
        "{err}"
    );
    let err = Cli::kubectl_with_token(&server, "viewer-token")
        .fails(&["get", "pods", "-n", "team-a", "--as=bob"]);
    assert!(
        err.contains("cannot impersonate resource \"users\""),
        "{err}"
    );

    // A SubjectAccessReview about another user, from the admin. kubectl
    // validates kinds without a PATCH operation on its side, against the
    // protobuf OpenAPI v2, where `metadata` must not be required.
    let sar = admin.ok_stdin(&["create", "-o", "json", "-f", "-"], r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "bob", "resourceAttributes": {"namespace": "team-a", "verb": "create", "group": "apps", "resource": "deployments"}}}"#);
    let sar: serde_json::Value = serde_json::from_str(&sar).expect("json");
    assert_eq!(sar["status"]["allowed"], true, "{sar}");
    assert!(
        sar["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("RoleBinding \"team-a/bob-edit\"")),
        "{sar}"
    );
    // Discovery stays open to every authenticated user, metrics do not.
    dave.ok(&["get", "--raw", "/apis"]);
    let err = dave.fails(&["get", "--raw", "/metrics"]);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
}
