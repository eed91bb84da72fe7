//! The node agent with real runc, overlayfs, cgroups and CNI plugins (as
//! root): pods run, share their network and volumes, restart by policy,
//! survive an agent crash, and leave nothing behind when deleted.

mod common;

use common::cli::Cli;
use common::node::NodeCluster;
use common::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

async fn create(client: &kube::Client, pod: Value) -> Api<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    api
}

async fn status_of(api: &Api<Pod>, name: &str) -> Value {
    let pod = api.get(name).await.expect("get pod");
    serde_json::to_value(pod.status.unwrap_or_default()).expect("status")
}

/// Waits until `check` holds for the pod's status; returns the status.
async fn wait_status(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, async || {
        let s = status_of(api, name).await;
        check(&s).then_some(s)
    })
    .await
}

fn container<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

async fn delete_and_wait(api: &Api<Pod>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("the pod to be gone", async || {
        api.get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

fn log_of(cluster: &NodeCluster, uid: &str, container: &str, attempt: u32) -> String {
    let path = cluster
        .dir
        .path()
        .join(format!("agent/pods/{uid}/logs/{container}/{attempt}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn a_pod_runs_with_shared_network_volumes_and_limits_and_leaves_nothing() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    wait_for("the node to be Ready", async || {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let node = nodes.get_opt(&cluster.node).await.ok()??;
        let ready = node
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
    let api = create(&client, json!({
        "metadata": {"name": "web"},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox",
                "command": ["sh", "-c", "echo made-by-init > /work/index.html"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "containers": [
                {"name": "server", "image": "busybox",
                 "command": ["httpd", "-f", "-p", "8080", "-h", "/work"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                 "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}},
                {"name": "client", "image": "busybox",
                 "command": ["sh", "-c", "trap 'exit 0' TERM; until wget -qO- http://localhost:8080/; do sleep 0.2; done; echo node=$NODE host=$(hostname); while true; do sleep 1; done"],
                 "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
            "volumes": [{"name": "work", "emptyDir": {}}]}})).await;
    let status = wait_status(&api, "web", "web to run", |s| {
        s["phase"] == "Running"
            && s["containerStatuses"]
                .as_array()
                .is_some_and(|a| a.iter().all(|c| c["ready"] == true))
    })
    .await;
    let ip = status["podIP"].as_str().expect("pod IP");
    assert!(
        ip.starts_with(&cluster.pod_prefix),
        "{ip} not in the node's pod CIDR"
    );
    assert_eq!(
        status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(status["qosClass"], "Burstable");
    let uid = api
        .get("web")
        .await
        .expect("get")
        .metadata
        .uid
        .expect("uid");

    // The client reached the server over the pod's shared localhost and saw
    // the file the init container wrote into the shared emptyDir.
    let log = wait_for("the client's output", async || {
        let log = log_of(&cluster, &uid, "client", 0);
        log.contains("host=web").then_some(log)
    })
    .await;
    assert!(log.contains(" stdout F made-by-init"), "{log}");
    assert!(log.contains(&format!("node={}", cluster.node)), "{log}");

    // kubectl logs goes through the API server to the agent's endpoint.
    let kubectl = Cli::kubectl_for(&cluster);
    let out = kubectl.ok(&["logs", "web", "-c", "client"]);
    assert!(out.contains("made-by-init\n"), "{out}");
    assert!(out.contains("host=web\n"), "{out}");
    let out = kubectl.ok(&["logs", "web", "-c", "client", "--tail=1", "--timestamps"]);
    assert!(
        out.ends_with(" host=web\n") && out.lines().count() == 1,
        "{out}"
    );
    let err = kubectl.fails(&["logs", "web", "-c", "client", "--previous"]);
    assert!(err.contains("previous terminated container"), "{err}");

    // The limits reached the container's cgroup.
    let id = container(&status, "server")["containerID"]
        .as_str()
        .expect("id")
        .trim_start_matches("runc://")
        .to_owned();
    let cgroup =
        format!("/sys/fs/cgroup/memory/kubepods/burstable/pod{uid}/{id}/memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&cgroup).unwrap_or_else(|e| panic!("{cgroup}: {e}"));
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let quota = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/cpu/kubepods/burstable/pod{uid}/{id}/cpu.cfs_quota_us"
    ))
    .expect("quota");
    assert_eq!(quota.trim(), "50000");
    assert_eq!(cluster.bridge_ports(), 1);

    delete_and_wait(&api, "web").await;
    assert!(
        cluster.runc_containers().is_empty(),
        "containers left: {:?}",
        cluster.runc_containers()
    );
    let overlays: Vec<String> = cluster
        .mounts()
        .into_iter()
        .filter(|m| m.contains("/pods/"))
        .collect();
    assert!(overlays.is_empty(), "mounts left: {overlays:?}");
    assert_eq!(cluster.bridge_ports(), 0, "a veth is left on the bridge");
    assert!(
        !std::path::Path::new(&format!(
            "/sys/fs/cgroup/memory/kubepods/burstable/pod{uid}"
        ))
        .exists()
    );
    assert!(
        !cluster
            .dir
            .path()
            .join(format!("agent/pods/{uid}"))
            .exists()
    );
}

#[tokio::test]
async fn restart_policies_exit_codes_and_missing_images_are_reported() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let crash = |name: &str, policy: &str, code: i32| {
        json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox",
            "command": ["sh", "-c", format!("echo bye > /dev/termination-log; exit {code}")]}]}})
    };
    let api = create(&client, crash("loops", "Always", 3)).await;
    create(&client, crash("fails", "Never", 2)).await;
    create(&client, crash("succeeds", "OnFailure", 0)).await;
    create(
        &client,
        json!({"metadata": {"name": "oom"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "sleep 1; dd if=/dev/zero of=/dev/null bs=64M count=1"],
            "resources": {"limits": {"memory": "16Mi"}}}]}}),
    )
    .await;
    create(
        &client,
        json!({"metadata": {"name": "noimage"},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/nothing:1"}]}}),
    )
    .await;

    let s = wait_status(&api, "loops", "a restart and back-off", |s| {
        let c = container(s, "main");
        c["restartCount"].as_i64().unwrap_or(0) >= 1
            && c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    assert_eq!(
        container(&s, "main")["lastState"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(s["phase"], "Running");

    let s = wait_status(&api, "fails", "Failed", |s| s["phase"] == "Failed").await;
    let t = &container(&s, "main")["state"]["terminated"];
    assert_eq!(t["exitCode"], 2);
    assert_eq!(t["reason"], "Error");
    assert_eq!(t["message"], "bye\n");
    let s = wait_status(&api, "succeeds", "Succeeded", |s| s["phase"] == "Succeeded").await;
    // Following the log of a finished container ends; the previous run of a
    // restarted one is there too.
    let kubectl = Cli::kubectl_for(&cluster);
    assert_eq!(kubectl.ok(&["logs", "-f", "succeeds"]), "");
    kubectl.ok(&["logs", "loops", "--previous"]);
    assert_eq!(
        container(&s, "main")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(container(&s, "main")["restartCount"], 0);

    let s = wait_status(&api, "oom", "the OOM kill", |s| s["phase"] == "Failed").await;
    let t = &container(&s, "main")["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137);

    let s = wait_status(&api, "noimage", "an image error", |s| {
        container(s, "main")["state"]["waiting"]["reason"] == "ErrImagePull"
    })
    .await;
    assert_eq!(s["phase"], "Pending");

    for name in ["loops", "fails", "succeeds", "oom", "noimage"] {
        delete_and_wait(&api, name).await;
    }
    assert!(cluster.runc_containers().is_empty());
    assert_eq!(cluster.bridge_ports(), 0);
}

#[tokio::test]
async fn containers_survive_an_agent_crash_and_are_adopted_again() {
    let mut cluster = NodeCluster::start();
    let client = cluster.client().await;
    let api = create(&client, json!({"metadata": {"name": "steady"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}})).await;
    let before = wait_status(&api, "steady", "steady to run", |s| {
        container(s, "main")["ready"] == true
    })
    .await;
    let containers = cluster.runc_containers();
    assert_eq!(containers.len(), 1);

    cluster.kill();
    // With the agent gone, the container runs on.
    assert_eq!(cluster.runc_containers(), containers);
    cluster.spawn();
    let client = cluster.client().await;
    let api: Api<Pod> = Api::namespaced(client, "default");
    // The restarted agent reports the same run: not restarted, same start.
    wait_for("the agent to come back", async || {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client().await);
        nodes
            .get_opt(&cluster.node)
            .await
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = status_of(&api, "steady").await;
    assert_eq!(container(&after, "main")["restartCount"], 0);
    assert_eq!(
        container(&after, "main")["state"],
        container(&before, "main")["state"]
    );
    assert_eq!(cluster.runc_containers(), containers);

    delete_and_wait(&api, "steady").await;
    assert!(cluster.runc_containers().is_empty());
}

#[tokio::test]
async fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let api = create(&client, json!({
        "metadata": {"name": "probed"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            // Ready only once /www/ready.html exists (after 3 s): httpGet.
            {"name": "web", "image": "busybox",
             "command": ["sh", "-c", "mkdir -p /www; httpd -p 8080 -h /www; sleep 3; echo ok > /www/ready.html; exec sleep 3600"],
             "ports": [{"name": "http", "containerPort": 8080}],
             "readinessProbe": {"httpGet": {"path": "/ready.html", "port": "http"}, "periodSeconds": 1}},
            // Started once something listens on 9090 (after 2 s): tcpSocket.
            {"name": "late", "image": "busybox",
             "command": ["sh", "-c", "sleep 2; mkdir -p /w; exec httpd -f -p 9090 -h /w"],
             "startupProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1, "failureThreshold": 30}},
            // Alive while /tmp/alive exists (removed after 4 s): exec.
            {"name": "mortal", "image": "busybox",
             "command": ["sh", "-c", "touch /tmp/alive; sleep 4; rm /tmp/alive; exec sleep 3600"],
             "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 2}}]}})).await;

    let first = wait_status(&api, "probed", "web to run", |s| {
        container(s, "web")["state"]["running"].is_object()
    })
    .await;
    assert_eq!(
        container(&first, "web")["ready"],
        false,
        "ready before its readiness probe passed"
    );
    let ready = wait_status(&api, "probed", "web to become ready", |s| {
        container(s, "web")["ready"] == true
    })
    .await;
    assert_eq!(container(&ready, "web")["restartCount"], 0);
    let started = wait_status(&api, "probed", "late to start", |s| {
        container(s, "late")["started"] == true
    })
    .await;
    assert_eq!(container(&started, "late")["ready"], true);
    let restarted = wait_status(&api, "probed", "mortal to be restarted", |s| {
        container(s, "mortal")["restartCount"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    assert!(
        container(&restarted, "mortal")["lastState"]["terminated"]["exitCode"]
            .as_i64()
            .unwrap_or(0)
            > 128
    );
    // The other containers were left alone.
    assert_eq!(container(&restarted, "web")["restartCount"], 0);
    assert_eq!(container(&restarted, "late")["restartCount"], 0);
    delete_and_wait(&api, "probed").await;
    assert!(cluster.runc_containers().is_empty());
}

#[tokio::test]
async fn configmap_updates_reach_mounted_volumes() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let cm =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}}))
            .expect("configmap");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    let api = create(&client, json!({
        "metadata": {"name": "reader"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do echo \"$(cat /cfg/greeting) $GREETING\"; sleep 0.5; done"],
            "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/cfg", "readOnly": true}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]}})).await;
    wait_status(&api, "reader", "reader to run", |s| {
        container(s, "main")["ready"] == true
    })
    .await;
    let uid = api
        .get("reader")
        .await
        .expect("get")
        .metadata
        .uid
        .expect("uid");
    wait_for("the first greeting", async || {
        log_of(&cluster, &uid, "main", 0)
            .contains("stdout F hello hello")
            .then_some(())
    })
    .await;
    let patch = json!({"data": {"greeting": "bonjour"}});
    cms.patch(
        "cfg",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("update configmap");
    // The file changes in the running container; the environment does not.
    wait_for("the updated greeting", async || {
        log_of(&cluster, &uid, "main", 0)
            .contains("stdout F bonjour hello")
            .then_some(())
    })
    .await;
    delete_and_wait(&api, "reader").await;
}

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
            "tty; stty size; exit 7",
        ],
        132,
        43,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("43 132"), "{text}");

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
