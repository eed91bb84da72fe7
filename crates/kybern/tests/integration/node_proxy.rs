//! The `pods/proxy` and `services/proxy` subresources on a `kybern up` node
//! (as root, real runc and CNI): the API server reaches a pod's IP, or a
//! ready pod behind a service, through `kubectl get --raw` and through
//! `kubectl proxy`, and answers with upstream's errors when it cannot.

use std::io::BufRead;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, wait_status};
use crate::common::wait_for;

/// Reads the address from `kubectl proxy`'s first line.
fn proxy_port(child: &mut std::process::Child) -> u16 {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("kubectl proxy output");
    // "Starting to serve on 127.0.0.1:PORT"
    line.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// A plain HTTP/1.0 GET on loopback: the status line and the body.
async fn http_get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to kubectl proxy");
    // kubectl proxy serves only requests addressed to localhost.
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tcp.read_to_string(&mut answer),
    )
    .await
    .expect("an answer in time")
    .expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn pods_and_services_are_reached_through_their_proxy_subresources() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let pods = create(&client, json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "mkdir -p /www/docs && echo hello-through-proxy > /www/index.html && echo deeper > /www/docs/page.txt && exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"periodSeconds": 1, "tcpSocket": {"port": 8080}}}]}})).await;
    wait_status(&pods, "web", "web to be ready", |s| {
        container(s, "main")["ready"] == true
    })
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(service).expect("service"),
        )
        .await
        .expect("create service");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    wait_for("the service's endpoints", async || {
        let eps = endpoints.get_opt("web").await.ok().flatten()?;
        let eps = serde_json::to_value(eps).ok()?;
        eps["subsets"][0]["addresses"][0]["ip"]
            .is_string()
            .then_some(())
    })
    .await;

    // The pod, at its first declared port and at one named in the id.
    let base = "/api/v1/namespaces/default";
    for id in ["web", "web:8080", "http:web:8080"] {
        let out = kubectl.ok(&[
            "get",
            "--raw",
            &format!("{base}/pods/{id}/proxy/index.html"),
        ]);
        assert_eq!(out.trim(), "hello-through-proxy", "pods/{id}");
    }
    let out = kubectl.ok(&[
        "get",
        "--raw",
        &format!("{base}/pods/web/proxy/docs/page.txt"),
    ]);
    assert_eq!(out.trim(), "deeper");
    // The service, by port name and by port number.
    for id in ["web:http", "web:80"] {
        let out = kubectl.ok(&[
            "get",
            "--raw",
            &format!("{base}/services/{id}/proxy/index.html"),
        ]);
        assert_eq!(out.trim(), "hello-through-proxy", "services/{id}");
    }

    // Upstream's errors: a port the service lacks, an unnamed port where
    // the service names its ports, a pod port nothing listens on, a bad id.
    let err = kubectl.fails(&["get", "--raw", &format!("{base}/services/web:82/proxy/")]);
    assert!(
        err.contains("no service port 82 found for service \"web\""),
        "{err}"
    );
    let err = kubectl.fails(&["get", "--raw", &format!("{base}/services/web/proxy/")]);
    assert!(
        err.contains("no endpoints available for service \"web\""),
        "{err}"
    );
    let err = kubectl.fails(&["get", "--raw", &format!("{base}/pods/web:9/proxy/")]);
    assert!(err.contains("error trying to reach service"), "{err}");
    let err = kubectl.fails(&["get", "--raw", &format!("{base}/pods/ftp:web:21/proxy/")]);
    assert!(err.contains("invalid pod request"), "{err}");
    let err = kubectl.fails(&["get", "--raw", &format!("{base}/pods/absent/proxy/")]);
    assert!(err.contains("pods \"absent\" not found"), "{err}");

    // The subresources are discovered as upstream lists them.
    let discovery: Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", "/api/v1"])).expect("discovery");
    for (name, kind) in [
        ("pods/proxy", "PodProxyOptions"),
        ("services/proxy", "ServiceProxyOptions"),
    ] {
        let entry = discovery["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .unwrap_or_else(|| panic!("{name} is not discovered"));
        assert_eq!(entry["kind"], kind, "{name}");
    }

    // `kubectl proxy`, as users reach cluster services: a bare `.../proxy`
    // is redirected to `.../proxy/`, and the service answers beneath it.
    let mut child = kubectl
        .command(&["proxy", "--port=0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl proxy");
    let port = proxy_port(&mut child);
    let (status, body) =
        http_get(port, &format!("{base}/services/web:http/proxy/index.html")).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body.trim(), "hello-through-proxy");
    let (status, _) = http_get(port, &format!("{base}/pods/web/proxy")).await;
    assert!(status.contains(" 301 "), "{status}");
    let (status, body) = http_get(port, &format!("{base}/pods/web/proxy/")).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body.trim(), "hello-through-proxy", "the backend's root");
    let _ = child.kill();
    let _ = child.wait();
}
