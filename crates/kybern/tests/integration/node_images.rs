//! Image pulls by the node agent from a local registry (Debian's
//! `docker-registry` on loopback), through a mirror of docker.io and by the
//! registry's own address, with back-off when an image is missing.

use crate::common::cli::Cli;
use crate::common::node::{NodeCluster, busybox_image};
use crate::common::registry::LocalRegistry;
use crate::common::wait_for;

/// A pod's field by JSONPath, through kubectl.
fn field(kubectl: &Cli, pod: &str, path: &str) -> String {
    let out = kubectl.run(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn images_are_pulled_through_mirrors_and_missing_ones_back_off() {
    let registry = LocalRegistry::start();
    registry.push(busybox_image(), "library/busybox:pulled");
    registry.push(busybox_image(), "team/app:v1");
    let host = &registry.host;
    let cluster = NodeCluster::start_with(Some(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://{host}\"]\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"
    )));
    let kubectl = Cli::kubectl_for(&cluster);
    // `busybox:pulled` is not on the node: it comes from the docker.io
    // mirror; the other by the registry's own name.
    let direct = format!("{host}/team/app:v1");
    for (pod, image) in [("mirrored", "busybox:pulled"), ("direct", direct.as_str())] {
        kubectl.ok(&[
            "run",
            pod,
            "--image",
            image,
            "--restart=Never",
            "--",
            "echo",
            &format!("{pod}-ok"),
        ]);
    }
    for pod in ["mirrored", "direct"] {
        wait_for("the pulled image to run to completion", async || {
            (field(&kubectl, pod, "{.status.phase}") == "Succeeded").then_some(())
        })
        .await;
        assert_eq!(kubectl.ok(&["logs", pod]), format!("{pod}-ok\n"));
        let id = field(&kubectl, pod, "{.status.containerStatuses[0].imageID}");
        assert!(id.contains("@sha256:"), "{id}");
    }
    // The node reports the pulled image at its next heartbeat.
    wait_for("the node to list the pulled image", async || {
        let path = "jsonpath={.items[0].status.images[*].names}";
        let images = kubectl.ok(&["get", "nodes", "-o", path]);
        images
            .contains("docker.io/library/busybox:pulled")
            .then_some(())
    })
    .await;

    // A tag the registry does not have: the pull fails, then backs off.
    kubectl.ok(&[
        "run",
        "missing",
        "--image",
        "busybox:absent",
        "--restart=Never",
    ]);
    let path = "{.status.containerStatuses[0].state.waiting.reason}";
    // (ErrImagePull shows from the failure to the worker's next look, a
    // second later; the back-off then lasts 10 s, 20 s, ...)
    wait_for("the back-off", async || {
        (field(&kubectl, "missing", path) == "ImagePullBackOff").then_some(())
    })
    .await;
    let message = field(
        &kubectl,
        "missing",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains("busybox:absent"), "{message}");
    kubectl.ok(&[
        "delete",
        "pod",
        "mirrored",
        "direct",
        "missing",
        "--wait=true",
    ]);
}

/// The names in the node's image store.
fn stored_names(cluster: &NodeCluster) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cluster.dir.path().join("agent/images/refs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test]
async fn unused_images_are_collected_under_disk_pressure() {
    // Any real disk is over 1 %: every unused image older than 15 s goes.
    let cluster = NodeCluster::start_configured(
        None,
        &[
            "--image-gc-high-threshold",
            "1",
            "--image-gc-low-threshold",
            "0",
            "--image-minimum-gc-age",
            "15s",
            "--image-gc-interval",
            "1s",
        ],
    );
    let kubectl = Cli::kubectl_for(&cluster);
    let imported = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args(["image", "import", "--name", "spare", "--data-dir"])
        .arg(cluster.dir.path().join("agent"))
        .arg(busybox_image())
        .output()
        .expect("kybern image import");
    assert!(imported.status.success());
    kubectl.ok(&[
        "run",
        "user",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ]);
    kubectl.ok(&["wait", "--for=condition=Ready", "pod/user", "--timeout=60s"]);
    assert_eq!(
        stored_names(&cluster),
        [
            "docker.io+library+busybox:latest",
            "docker.io+library+spare:latest"
        ]
    );

    // The spare name goes once it is old enough; the one a pod uses stays.
    wait_for("the unused image to be collected", || async {
        (stored_names(&cluster).len() == 1).then_some(())
    })
    .await;
    assert_eq!(stored_names(&cluster), ["docker.io+library+busybox:latest"]);
    wait_for("the node to stop reporting it", || async {
        let images = kubectl.ok(&[
            "get",
            "node",
            &cluster.node,
            "-o",
            "jsonpath={.status.images[*].names}",
        ]);
        (!images.contains("spare") && images.contains("busybox")).then_some(())
    })
    .await;
    assert_eq!(field(&kubectl, "user", "{.status.phase}"), "Running");

    // Once its pod is gone the last image goes too, content and all.
    kubectl.ok(&["delete", "pod", "user", "--grace-period=1", "--wait=true"]);
    wait_for("the last image to be collected", || async {
        stored_names(&cluster).is_empty().then_some(())
    })
    .await;
    let images = cluster.dir.path().join("agent/images");
    wait_for("its blobs and layers to be swept", || async {
        (entries(&images.join("blobs/sha256")) + entries(&images.join("layers/sha256")) == 0)
            .then_some(())
    })
    .await;
}
