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
