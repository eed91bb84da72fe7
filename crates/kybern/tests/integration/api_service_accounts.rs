//! ServiceAccount tokens through the real server: TokenRequest (`kubectl
//! create token`), what a token may do under RBAC, binding to a pod,
//! TokenReview, the OIDC discovery documents, and the token volume every
//! new pod gets.

use crate::common;
use crate::common::cli::Cli;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

async fn status_of<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_and_expire_with_their_bindings() {
    let server = common::Server::start();
    let kubectl = Cli::kubectl(&server);
    let admin = server.client().await;
    kubectl.ok(&["create", "namespace", "apps"]);
    kubectl.ok(&["create", "serviceaccount", "reader", "-n", "apps"]);
    // A Role of our own: this server runs no controllers, so the aggregated
    // `view` ClusterRole stays empty here.
    kubectl.ok(&[
        "create",
        "role",
        "reader",
        "-n",
        "apps",
        "--verb=get,list,watch",
        "--resource=pods,configmaps",
    ]);
    kubectl.ok(&[
        "create",
        "rolebinding",
        "reader",
        "-n",
        "apps",
        "--role=reader",
        "--serviceaccount=apps:reader",
    ]);

    // `kubectl create token`: the token is the account, with its rights.
    let token = kubectl.ok(&["create", "token", "reader", "-n", "apps"]);
    let token = token.trim();
    let client = common::client_with_token(&server.kubeconfig(), token).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    assert_eq!(
        status_of(pods.list(&ListParams::default()).await).await,
        200
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "apps");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains(
                    "User \"system:serviceaccount:apps:reader\" cannot list resource \"secrets\""
                ),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        status_of(elsewhere.list(&ListParams::default()).await).await,
        403
    );
    let who = Cli::kubectl_with_token(&server, token).ok(&["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_str(&who).expect("json");
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:apps:reader"
    );
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:apps",
            "system:authenticated"
        ])
    );

    // TokenReview tells who a token is; a forged one is nobody.
    let reviews: Api<TokenReview> = Api::all(admin.clone());
    let review = |t: &str| -> TokenReview {
        serde_json::from_value(json!({"spec": {"token": t}})).expect("review")
    };
    let answer = reviews
        .create(&PostParams::default(), &review(token))
        .await
        .expect("review");
    let status = answer.status.expect("status");
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some("system:serviceaccount:apps:reader")
    );
    let mut forged: Vec<String> = token.split('.').map(str::to_owned).collect();
    forged[2] = forged[2].chars().rev().collect();
    let answer = reviews
        .create(&PostParams::default(), &review(&forged.join(".")))
        .await
        .expect("review");
    assert_eq!(answer.status.expect("status").authenticated, Some(false));
    let bad = common::client_with_token(&server.kubeconfig(), &forged.join(".")).await;
    let bad_pods: Api<Pod> = Api::namespaced(bad, "apps");
    assert_eq!(
        status_of(bad_pods.list(&ListParams::default()).await).await,
        401
    );

    // Bad requests: too short a life, an account that does not exist.
    let err = kubectl.fails(&["create", "token", "reader", "-n", "apps", "--duration=60s"]);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = kubectl.fails(&["create", "token", "ghost", "-n", "apps"]);
    assert!(err.contains("serviceaccounts \"ghost\" not found"), "{err}");

    // A new pod gets its account's token volume mounted; one that opts out
    // gets none, and runs as `default`.
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"serviceAccountName": "reader", "containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod");
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "apps");
    let created = admin_pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let spec = created.spec.expect("spec");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .expect("token volume");
    let sources = volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.clone())
        .expect("sources");
    assert_eq!(
        sources[0]
            .service_account_token
            .as_ref()
            .map(|t| t.path.as_str()),
        Some("token")
    );
    let mount = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("mount");
    assert_eq!(
        mount.mount_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(mount.read_only, Some(true));
    let opted_out: Pod = serde_json::from_value(json!({"metadata": {"name": "q"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod");
    let q = admin_pods
        .create(&PostParams::default(), &opted_out)
        .await
        .expect("create pod");
    let q = q.spec.expect("spec");
    assert_eq!(q.service_account_name.as_deref(), Some("default"));
    assert!(q.volumes.unwrap_or_default().is_empty());

    // A token bound to the pod dies with it.
    let uid = created.metadata.uid.clone().expect("uid");
    let bound = kubectl.ok(&[
        "create",
        "token",
        "reader",
        "-n",
        "apps",
        "--bound-object-kind=Pod",
        "--bound-object-name=p",
        &format!("--bound-object-uid={uid}"),
    ]);
    let bound_client = common::client_with_token(&server.kubeconfig(), bound.trim()).await;
    let bound_pods: Api<Pod> = Api::namespaced(bound_client, "apps");
    assert_eq!(
        status_of(bound_pods.list(&ListParams::default()).await).await,
        200
    );
    admin_pods
        .delete("p", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    common::wait_for("pod gone", async || {
        admin_pods
            .get_opt("p")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    // The authenticator reads the watch cache, which may trail the delete
    // by an event (upstream caches a token's user for ten seconds), so the
    // token must die soon, not at once.
    common::wait_for("bound token refused", async || {
        (status_of(bound_pods.list(&ListParams::default()).await).await == 401).then_some(())
    })
    .await;
    // ... and every token dies with its account.
    kubectl.ok(&["delete", "serviceaccount", "reader", "-n", "apps"]);
    common::wait_for("account token refused", async || {
        (status_of(pods.list(&ListParams::default()).await).await == 401).then_some(())
    })
    .await;

    // OIDC discovery, readable by service accounts.
    let config: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", "/.well-known/openid-configuration"]))
            .expect("json");
    assert_eq!(
        config["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let jwks: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", "/openid/v1/jwks"])).expect("json");
    assert_eq!(jwks["keys"][0]["kty"], "EC");
}
