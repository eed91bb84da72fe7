//! The Node authorizer and NodeRestriction through the real server: a node
//! (client certificate `system:node:NAME` in `system:nodes`) reads only
//! what pods bound to it use, and writes only itself and its pods' status.

use crate::common;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The status code of a call: 200 for success.
fn code<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// The `Status` message of a refused call.
fn refusal<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{}", s.message);
            s.message
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

async fn create<K>(api: &Api<K>, value: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_only_what_its_pods_use() {
    let server = common::Server::start();
    let admin = server.client().await;
    let ns = "apps";
    create(
        &Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone()),
        json!({"metadata": {"name": ns}}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    for name in ["mine", "theirs", "loose", "pull"] {
        create(
            &secrets,
            json!({"metadata": {"name": name}, "stringData": {"k": "v"}}),
        )
        .await;
    }
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    for name in ["mine-env", "theirs-env"] {
        create(
            &maps,
            json!({"metadata": {"name": name}, "data": {"k": "v"}}),
        )
        .await;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    for name in ["runner", "other"] {
        create(&accounts, json!({"metadata": {"name": name}})).await;
    }
    let nodes: Api<Node> = Api::all(admin.clone());
    for name in ["n1", "n2"] {
        create(&nodes, json!({"metadata": {"name": name}})).await;
    }
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let pod = |name: &str, node: &str, secret: &str, map: &str, account: &str| {
        json!({"metadata": {"name": name}, "spec": {"nodeName": node,
            "serviceAccountName": account,
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}],
            "containers": [{"name": "c", "image": "busybox",
                "envFrom": [{"configMapRef": {"name": map}}]}]}})
    };
    create(&pods, pod("p1", "n1", "mine", "mine-env", "runner")).await;
    create(&pods, pod("p2", "n2", "theirs", "theirs-env", "other")).await;

    // The node's credentials, as an administrator issues them.
    let path = server.dir.path().join("n1.kubeconfig");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args([
            "kubeconfig",
            "--client-name",
            "system:node:n1",
            "--org",
            "system:nodes",
        ])
        .args(["--server", &server.url, "--data-dir"])
        .arg(server.dir.path())
        .arg("--out")
        .arg(&path)
        .output()
        .expect("kybern kubeconfig");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kc = kube::config::Kubeconfig::read_from(&path).expect("node kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let n1 = kube::Client::try_from(config).expect("client");

    // Reads: only what pods on n1 use, and one object at a time.
    let n1_secrets: Api<Secret> = Api::namespaced(n1.clone(), ns);
    assert_eq!(code(n1_secrets.get("mine").await), 200);
    assert_eq!(code(n1_secrets.get("pull").await), 200);
    let message = refusal(n1_secrets.get("theirs").await);
    assert_eq!(
        message,
        "secrets \"theirs\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"apps\": no relationship found between node 'n1' and this object"
    );
    refusal(n1_secrets.get("loose").await);
    refusal(n1_secrets.list(&ListParams::default()).await);
    assert_eq!(
        code(
            n1_secrets
                .list(&ListParams::default().fields("metadata.name=mine"))
                .await
        ),
        200
    );
    let n1_maps: Api<ConfigMap> = Api::namespaced(n1.clone(), ns);
    assert_eq!(code(n1_maps.get("mine-env").await), 200);
    refusal(n1_maps.get("theirs-env").await);
    // Pods and nodes it may read (the `system:node` rules).
    let n1_pods: Api<Pod> = Api::namespaced(n1.clone(), ns);
    assert_eq!(code(n1_pods.list(&ListParams::default()).await), 200);

    // Pod status: its own pods only; no creating pods.
    let status = Patch::Merge(json!({"status": {"phase": "Running"}}));
    assert_eq!(
        code(
            n1_pods
                .patch_status("p1", &PatchParams::default(), &status)
                .await
        ),
        200
    );
    let message = refusal(
        n1_pods
            .patch_status("p2", &PatchParams::default(), &status)
            .await,
    );
    assert!(
        message.contains(
            "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        ),
        "{message}"
    );
    let message = refusal(
        n1_pods
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod("p3", "n1", "mine", "mine-env", "runner"))
                    .expect("pod"),
            )
            .await,
    );
    assert!(message.contains("can only create mirror pods"), "{message}");
    refusal(n1_pods.delete("p2", &Default::default()).await);

    // Its own Node and Lease, nobody else's.
    let n1_nodes: Api<Node> = Api::all(n1.clone());
    let label = Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}}));
    assert_eq!(
        code(n1_nodes.patch("n1", &PatchParams::default(), &label).await),
        200
    );
    let message = refusal(n1_nodes.patch("n2", &PatchParams::default(), &label).await);
    assert!(
        message.contains("node \"n1\" is not allowed to modify node \"n2\""),
        "{message}"
    );
    refusal(
        n1_nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "n3"}})).expect("node"),
            )
            .await,
    );
    let leases: Api<Lease> = Api::namespaced(n1.clone(), "kube-node-lease");
    let lease = |name: &str| -> Lease {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"holderIdentity": name}}),
        )
        .expect("lease")
    };
    assert_eq!(
        code(leases.create(&PostParams::default(), &lease("n1")).await),
        200
    );
    refusal(leases.create(&PostParams::default(), &lease("n2")).await);

    // Tokens: for the accounts of its pods, bound to those pods.
    let n1_accounts: Api<ServiceAccount> = Api::namespaced(n1.clone(), ns);
    let p1_uid = pods.get("p1").await.expect("p1").metadata.uid;
    let token = |pod: &str, uid: Option<String>| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": pod, "uid": uid}}})
    };
    let issued: Result<Value, _> = n1_accounts
        .create_subresource(
            "token",
            "runner",
            &PostParams::default(),
            &token("p1", p1_uid),
        )
        .await;
    assert!(
        issued.expect("token for its own pod")["status"]["token"].is_string(),
        "no token"
    );
    let unbound = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": []}});
    let message = refusal(
        n1_accounts
            .create_subresource::<Value, Value>("token", "runner", &PostParams::default(), &unbound)
            .await,
    );
    assert!(
        message.contains("node requested token not bound to a pod"),
        "{message}"
    );
    refusal(
        n1_accounts
            .create_subresource::<Value, Value>(
                "token",
                "other",
                &PostParams::default(),
                &token("p2", None),
            )
            .await,
    );

    // Access reviews see the same rules.
    let kubectl = common::cli::Cli::kubectl(&server);
    let can_i = |what: &str| {
        let out = kubectl.run(&[
            "auth",
            "can-i",
            "get",
            what,
            "-n",
            ns,
            "--as=system:node:n1",
            "--as-group=system:nodes",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(can_i("secret/mine"), "yes");
    // (kubectl adds the authorizer's reason, as upstream's union authorizer
    // passes the Node authorizer's on.)
    assert_eq!(
        can_i("secret/theirs"),
        "no - no relationship found between node 'n1' and this object"
    );
}
