//! The node agent with real runc, overlayfs, cgroups and CNI plugins (as
//! root): pods run, share their network and volumes, restart by policy,
//! survive an agent crash, and leave nothing behind when deleted.

use crate::common::cli::Cli;
use crate::common::node::NodeCluster;
use crate::common::pods::{container, create, delete_and_wait, log_of, status_of, wait_status};
use crate::common::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
async fn a_pod_runs_with_shared_network_volumes_and_limits_and_leaves_nothing() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    crate::common::node::wait_node_ready(&client, &cluster.node).await;
    let api = create(&client, json!({
        "metadata": {"name": "web"},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox",
                "command": ["sh", "-c", "echo made-by-init > /work/index.html; grep web /etc/hosts > /work/seen; ip -4 addr show eth0 >> /work/seen"],
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
    // The first container is created while the network is set up, but its
    // command ran only once the pod had its address and /etc/hosts line.
    let seen = kubectl.ok(&["exec", "web", "-c", "server", "--", "cat", "/work/seen"]);
    assert!(seen.contains(&format!("{ip}\tweb\n")), "{seen}");
    assert!(seen.contains(&format!("inet {ip}/")), "{seen}");
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

    // No registry is reachable: the pull fails, then backs off.
    let s = wait_status(&api, "noimage", "an image error", |s| {
        let reason = &container(s, "main")["state"]["waiting"]["reason"];
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    })
    .await;
    assert_eq!(s["phase"], "Pending");

    // The agent reports what it did as the kubelet's Events.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let about = async |pod: &str, reason: &str| {
        wait_for(&format!("a {reason} Event about {pod}"), async || {
            let list = events.list(&Default::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(pod)
                    && e.reason.as_deref() == Some(reason)
            })
        })
        .await
    };
    let started = about("succeeds", "Started").await;
    assert_eq!(started.message.as_deref(), Some("Started container main"));
    let source = started.source.clone().expect("source");
    assert_eq!(source.component.as_deref(), Some("kubelet"));
    assert_eq!(source.host.as_deref(), Some(cluster.node.as_str()));
    assert_eq!(
        started.involved_object.field_path.as_deref(),
        Some("spec.containers{main}")
    );
    let pulled = about("succeeds", "Pulled").await;
    assert!(
        pulled
            .message
            .as_deref()
            .is_some_and(|m| m.contains("already present on machine")),
        "{pulled:?}"
    );
    about("succeeds", "Created").await;
    let backoff = about("loops", "BackOff").await;
    assert_eq!(backoff.type_.as_deref(), Some("Warning"));
    assert!(
        backoff
            .message
            .as_deref()
            .is_some_and(|m| m
                .starts_with("Back-off restarting failed container main in pod loops_default(")),
        "{backoff:?}"
    );
    let failed = about("noimage", "Failed").await;
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("Failed to pull image \"registry.invalid/nothing:1\"")),
        "{failed:?}"
    );
    let described = Cli::kubectl_for(&cluster).ok(&["describe", "pod", "succeeds"]);
    assert!(described.contains("Started container main"), "{described}");

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
             "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 2}}]}})).await;

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
    // Each failure is an Unhealthy Event saying why, as the kubelet's.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let unhealthy = async |container: &str, start: &str| {
        let field = format!("spec.containers{{{container}}}");
        wait_for(
            &format!("an Unhealthy Event about {container}"),
            async || {
                let list = events.list(&Default::default()).await.ok()?;
                list.items.into_iter().find_map(|e| {
                    (e.involved_object.name.as_deref() == Some("probed")
                        && e.involved_object.field_path.as_deref() == Some(field.as_str())
                        && e.reason.as_deref() == Some("Unhealthy"))
                    .then_some(e.message?)
                    .filter(|m| m.starts_with(start))
                })
            },
        )
        .await
    };
    let why = unhealthy("mortal", "Liveness probe failed: ").await;
    assert!(
        why.contains("/tmp/alive") && why.contains("No such file"),
        "{why}"
    );
    let why = unhealthy("web", "Readiness probe failed: ").await;
    assert_eq!(
        why,
        "Readiness probe failed: HTTP probe failed with statuscode: 404"
    );
    let why = unhealthy("late", "Startup probe failed: ").await;
    assert!(
        why.starts_with("Startup probe failed: dial tcp ")
            && why.ends_with(":9090: connect: connection refused"),
        "{why}"
    );
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
    // The container is created while the volume is fetched, but its command
    // runs only once the file is there: its very first line has it.
    let log = log_of(&cluster, &uid, "main", 0);
    let first = log.lines().find(|l| l.contains(" stdout "));
    assert!(
        first.is_some_and(|l| l.ends_with("stdout F hello hello")),
        "first line {first:?}"
    );
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

#[tokio::test]
async fn lifecycle_hooks_run_after_start_and_before_stop() {
    let cluster = NodeCluster::start();
    let client = cluster.client().await;
    let marks = cluster.dir.path().join("hooks");
    std::fs::create_dir_all(&marks).expect("hooks dir");
    let hook = |cmd: &str| json!({"exec": {"command": ["sh", "-c", cmd]}});
    let api = create(
        &client,
        json!({
        "metadata": {"name": "hooked"},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [
            {"name": "main", "image": "busybox",
             "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
             "volumeMounts": [{"name": "marks", "mountPath": "/marks"}],
             "lifecycle": {"postStart": hook("echo started > /marks/post"),
                           "preStop": hook("echo stopping > /marks/pre")}},
            {"name": "bad-hook", "image": "busybox", "command": ["sleep", "3600"],
             "lifecycle": {"postStart": hook("exit 3")}}],
            "volumes": [{"name": "marks", "hostPath": {"path": marks.to_string_lossy()}}]}}),
    )
    .await;
    // A failed postStart hook kills its container; the restart policy
    // brings it back.
    wait_status(
        &api,
        "hooked",
        "the failing hook's container to restart",
        |s| container(s, "bad-hook")["restartCount"].as_i64() >= Some(1),
    )
    .await;
    let post = std::fs::read_to_string(marks.join("post")).expect("postStart ran");
    assert_eq!(post, "started\n");
    assert!(!marks.join("pre").exists(), "preStop runs only at the end");
    delete_and_wait(&api, "hooked").await;
    let pre = std::fs::read_to_string(marks.join("pre")).expect("preStop ran");
    assert_eq!(pre, "stopping\n");
}
