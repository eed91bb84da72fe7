//! Reaching into pods on a `kybern up` node (as root, real runc): `kubectl
//! exec` with and without a terminal, `attach`, logs across rotations, the
//! service account token a pod carries, `port-forward`, `top`, and who the
//! agent's own port lets in.

use crate::common;
use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, delete_and_wait, wait_status};
use crate::common::wait_for;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

/// Reads the local port from kubectl port-forward's first line.
fn forwarded_port(child: &mut std::process::Child) -> u16 {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(stdout);
    reader.read_line(&mut line).expect("port-forward output");
    // kubectl goes on writing a line per connection: keep its pipe open.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

async fn http_get(port: u16) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the forwarded port");
    tcp.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tcp.read_to_string(&mut answer),
    )
    .await
    .expect("an answer in time")?;
    Ok(answer)
}

#[tokio::test]
async fn exec_and_port_forward_reach_into_the_pod() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    // httpd listens on the pod's localhost only: port-forward must enter
    // the pod's network namespace to reach it.
    let api = create(&client, json!({
        "metadata": {"name": "box"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"],
            "readinessProbe": {"periodSeconds": 1, "exec": {"command": ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]}}}]}})).await;
    wait_status(&api, "box", "box to run", |s| {
        container(s, "main")["ready"] == true
    })
    .await;

    // Output streams apart, and the exit code comes back as kubectl's own.
    let out = kubectl.run(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{out:?}"
    );
    // Standard input reaches the process, and its end ends `cat`.
    let echoed = kubectl.ok_stdin(&["exec", "-i", "box", "--", "cat"], "one\ntwo\n");
    assert_eq!(echoed, "one\ntwo\n");
    let err = kubectl.fails(&["exec", "box", "-c", "nope", "--", "true"]);
    assert!(err.contains("container nope is not valid"), "{err}");
    // On a terminal: the container sees one, of the client's size.
    let out = kubectl.run_on_terminal(
        &[
            "exec",
            "-it",
            "box",
            "--",
            "sh",
            "-c",
            // runc sizes the container's terminal just after starting the
            // process, so the first look may find it still 0x0; and runc
            // 1.1's terminal copy can drop what a process writes just
            // before it exits, so the answer waits a moment. Busybox's
            // `stty size` reports a 0x0 terminal as an error yet exits 0,
            // so only two non-zero numbers end the wait.
            "tty; for i in $(seq 100); do s=$(stty size 2>&1); case \"$s\" in [1-9]*' '[1-9]*) break;; esac; sleep 0.1; done; echo \"$s\"; sleep 0.5; exit 7",
        ],
        132,
        43,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("43 132"), "{text}");

    // The service account volume: the pod's namespace, the cluster CA, and
    // a token that is the pod's account (`default`, with no rights yet).
    let sa_file = |name: &str| {
        kubectl.ok(&[
            "exec",
            "box",
            "--",
            "cat",
            &format!("/var/run/secrets/kubernetes.io/serviceaccount/{name}"),
        ])
    };
    assert_eq!(sa_file("namespace"), "default");
    assert!(
        sa_file("ca.crt").contains("BEGIN CERTIFICATE"),
        "no CA in the pod"
    );
    let token = sa_file("token");
    let as_pod = common::client_with_token(&cluster.kubeconfig(), token.trim()).await;
    let pods_as_pod: Api<Pod> = Api::default_namespaced(as_pod.clone());
    match pods_as_pod.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message
                    .contains("\"system:serviceaccount:default:default\" cannot list"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // Granted `view`, it reads pods, and still not secrets.
    kubectl.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    wait_for("the pod's token to read pods", async || {
        pods_as_pod.list(&ListParams::default()).await.ok()
    })
    .await;
    let secrets_as_pod: Api<Secret> = Api::default_namespaced(as_pod);
    assert!(matches!(
        secrets_as_pod.list(&ListParams::default()).await,
        Err(kube::Error::Api(s)) if s.code == 403
    ));

    // port-forward: two connections in turn through one kubectl.
    let mut pf = kubectl
        .command(&["port-forward", "pod/box", ":8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("port-forward");
    let port = forwarded_port(&mut pf);
    for _ in 0..2 {
        let answer = http_get(port).await.expect("an answer through the tunnel");
        assert!(answer.contains("hello-from-pod"), "{answer}");
    }
    let _ = pf.kill();
    let _ = pf.wait();
    // Nothing listens on 9090: the connection is closed, not left hanging.
    let mut pf = kubectl
        .command(&["port-forward", "pod/box", ":9090"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("port-forward");
    let port = forwarded_port(&mut pf);
    // (kubectl may reset the connection or close it.)
    let answer = http_get(port).await.unwrap_or_default();
    assert!(!answer.contains("hello-from-pod"), "{answer}");
    let _ = pf.kill();
    let _ = pf.wait();
    delete_and_wait(&api, "box").await;
}

/// `GET https://127.0.0.1:port{path}` with a client certificate, if any,
/// by curl: the status and body, or `None` when TLS refused the caller.
fn agent_get(port: u16, path: &str, cert: Option<&(PathBuf, PathBuf)>) -> Option<(u16, String)> {
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"]);
    if let Some((crt, key)) = cert {
        curl.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let out = curl
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_owned()))
}

#[tokio::test]
async fn the_agent_port_serves_only_whom_the_api_server_authorizes() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let nodes: Api<Node> = Api::all(client);
    let port = wait_for("the node to publish its agent port", async || {
        let node = nodes.list(&ListParams::default()).await.ok()?.items.pop()?;
        let port = node.status?.daemon_endpoints?.kubelet_endpoint?.port;
        u16::try_from(port).ok().filter(|p| *p > 0)
    })
    .await;

    // The agent itself runs as the node, which the Node authorizer confines
    // to what its pods use.
    let kc = kube::config::Kubeconfig::read_from(cluster.dir.path().join("node.kubeconfig"))
        .expect("node kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("node config");
    let as_node = kube::Client::try_from(config).expect("node client");
    let secrets: Api<Secret> = Api::default_namespaced(as_node);
    match secrets.get("unused").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains(&format!(
                    "User \"system:node:{}\" cannot get resource \"secrets\"",
                    cluster.node
                )),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }

    // No certificate: TLS refuses the connection.
    assert_eq!(agent_get(port, "/stats/summary", None), None);
    // A certificate from the cluster CA names a user; RBAC decides.
    let mallory = cluster.user_certificate("mallory", &["devs"]);
    let (code, body) = agent_get(port, "/stats/summary", Some(&mallory)).expect("answer");
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body.trim(),
        "Forbidden (user=mallory, verb=get, resource=nodes, subresource(s)=[stats])"
    );
    let (code, body) =
        agent_get(port, "/containerLogs/default/p/c", Some(&mallory)).expect("answer");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("subresource(s)=[proxy]"), "{body}");
    // A user granted `nodes/stats` reads stats, and nothing else.
    kubectl.ok(&[
        "create",
        "clusterrole",
        "node-stats",
        "--verb=get",
        "--resource=nodes/stats",
    ]);
    kubectl.ok(&[
        "create",
        "clusterrolebinding",
        "node-stats",
        "--clusterrole=node-stats",
        "--user=monitor",
    ]);
    let monitor = cluster.user_certificate("monitor", &[]);
    let (code, body) = wait_for("stats for the monitor", async || {
        agent_get(port, "/stats/summary", Some(&monitor)).filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("\"node\""), "{body}");
    let (code, _) = agent_get(port, "/containerLogs/default/p/c", Some(&monitor)).expect("answer");
    assert_eq!(code, 403);
}

#[tokio::test]
async fn kubectl_top_shows_a_busy_container() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let api = create(&client, json!({
        "metadata": {"name": "busy", "labels": {"app": "busy"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "spin", "image": "busybox",
            "command": ["sh", "-c", "while :; do :; done"]}]}})).await;
    wait_status(&api, "busy", "busy to run", |s| {
        container(s, "spin")["ready"] == true
    })
    .await;
    // CPU use is a rate over the agent's samples: it shows after two.
    let millicores = wait_for("the container's CPU use", async || {
        let out = kubectl.run(&[
            "top",
            "pod",
            "-l",
            "app=busy",
            "--no-headers",
            "--containers",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // "busy   spin   987m   0Mi"
        let cpu = text
            .split_whitespace()
            .nth(2)?
            .strip_suffix('m')?
            .parse::<u64>()
            .ok()?;
        (cpu > 0).then_some(cpu)
    })
    .await;
    assert!(
        millicores >= 200,
        "a spinning shell uses most of a core, not {millicores}m"
    );
    let nodes = kubectl.ok(&["top", "node", "--no-headers"]);
    assert!(nodes.contains('%'), "{nodes}");
    let err = kubectl.fails(&["top", "pod", "nothing-here"]);
    assert!(err.contains("not found"), "{err}");
    delete_and_wait(&api, "busy").await;
}

#[tokio::test]
async fn container_logs_rotate_and_kubectl_logs_reads_the_current_file() {
    let cluster = NodeCluster::start_configured(
        None,
        &[
            "--container-log-max-size",
            "4Ki",
            "--container-log-max-files",
            "2",
        ],
    );
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let api = create(&client, json!({
        "metadata": {"name": "chatty"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "i=0; while [ $i -lt 400 ]; do echo \"line $i of the chatty container\"; i=$((i+1)); done; echo done; exec sleep 3600"]}]}})).await;
    wait_status(&api, "chatty", "the container to run", |s| {
        container(s, "c")["state"]["running"].is_object()
    })
    .await;
    let uid = api
        .get("chatty")
        .await
        .expect("pod")
        .metadata
        .uid
        .expect("uid");
    let logs = cluster.dir.path().join(format!("agent/pods/{uid}/logs/c"));
    let current = logs.join("0.log");
    wait_for("the last line in the log", || {
        let current = current.clone();
        async move {
            std::fs::read_to_string(current)
                .unwrap_or_default()
                .contains(" stdout F done\n")
                .then_some(())
        }
    })
    .await;
    let mut files: Vec<String> = std::fs::read_dir(&logs)
        .expect("log dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "the current log and one rotated: {files:?}");
    assert_eq!(files[0], "0.log");
    assert!(files[1].starts_with("0.log.2"), "{files:?}");
    for f in &files {
        let size = std::fs::metadata(logs.join(f)).expect("size").len();
        assert!(size <= 4096, "{f} holds {size} bytes");
    }
    // kubectl logs reads the current file, as upstream: the end, not the start.
    let out = kubectl.ok(&["logs", "chatty"]);
    assert!(
        out.ends_with("line 399 of the chatty container\ndone\n"),
        "{out}"
    );
    assert!(!out.contains("line 0 of"), "{out}");
    delete_and_wait(&api, "chatty").await;
}

#[tokio::test]
async fn kubectl_attach_talks_to_a_running_container() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let kubectl = Cli::kubectl_for(&cluster);
    let api = create(&client, json!({
        "metadata": {"name": "talker"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox", "stdin": true,
                "command": ["sh", "-c", "echo before; while read line; do [ \"$line\" = quit ] && break; echo \"got $line\"; echo \"err $line\" >&2; done; echo bye"]}]}})).await;
    wait_status(&api, "talker", "the container to run", |s| {
        container(s, "c")["state"]["running"].is_object()
    })
    .await;
    // What the container wrote before the attach is not replayed; what it
    // answers to our input is, on the right streams; the session ends with
    // the container.
    let out = kubectl.run_with_stdin(
        &["attach", "-i", "talker", "-c", "c"],
        Some("hello\nquit\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "got hello\nbye\n", "stderr: {stderr}");
    assert!(stderr.contains("err hello\n"), "{stderr}");
    let done = wait_status(&api, "talker", "the container to finish", |s| {
        s["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(container(&done, "c")["state"]["terminated"]["exitCode"], 0);
    let late = kubectl.run(&["attach", "talker", "-c", "c"]);
    assert!(!late.status.success(), "attached to a finished pod");
    delete_and_wait(&api, "talker").await;
}
