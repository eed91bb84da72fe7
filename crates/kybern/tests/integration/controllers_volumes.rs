//! The PersistentVolume binder inside `kybern server`: claims take the
//! volume reserved for them or the smallest that fits (class, modes, size,
//! selector), a claim with no volume waits with upstream's Event and binds
//! when one appears, volumes are released or failed by their reclaim
//! policy, bound claims keep their spec, and kubectl shows it.

use crate::common;
use crate::common::cli::Cli;
use crate::common::{wait_for, wait_for_event};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

async fn add_volume(client: &kube::Client, name: &str, size: &str, extra: Value) {
    let mut pv = json!({"metadata": {"name": name, "labels": {"disk": name}},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "", "hostPath": {"path": format!("/tmp/{name}")}}});
    if let (Some(spec), Some(extra)) = (pv["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let pv: PersistentVolume = serde_json::from_value(pv).expect("pv");
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
}

async fn add_claim(client: &kube::Client, name: &str, size: &str, extra: Value) {
    let mut claim = json!({"metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": size}}}});
    if let (Some(spec), Some(extra)) = (claim["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let claim: PersistentVolumeClaim = serde_json::from_value(claim).expect("claim");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
}

/// Waits until claim `name` is bound; returns the volume's name.
async fn bound_volume(client: &kube::Client, name: &str) -> String {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    wait_for(&format!("claim {name} to be bound"), async || {
        let c = claims.get(name).await.ok()?;
        let bound = c.status.as_ref()?.phase.as_deref() == Some("Bound");
        bound.then(|| c.spec?.volume_name).flatten()
    })
    .await
}

/// Waits until volume `name` is in `phase`; returns it.
async fn volume_in(client: &kube::Client, name: &str, phase: &str) -> PersistentVolume {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    wait_for(&format!("volume {name} to be {phase}"), async || {
        let v = volumes.get(name).await.ok()?;
        (v.status.as_ref()?.phase.as_deref() == Some(phase)).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bind_to_the_volumes_that_fit_them() {
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let client = server.client().await;
    let kubectl = Cli::kubectl(&server);
    add_volume(&client, "small", "1Gi", json!({})).await;
    add_volume(&client, "big", "10Gi", json!({})).await;
    add_volume(
        &client,
        "shared",
        "1Gi",
        json!({"accessModes": ["ReadWriteMany"]}),
    )
    .await;
    add_volume(
        &client,
        "fast",
        "5Gi",
        json!({"storageClassName": "fast",
        "persistentVolumeReclaimPolicy": "Delete"}),
    )
    .await;
    for v in ["small", "big", "shared", "fast"] {
        volume_in(&client, v, "Available").await;
    }

    // The smallest that fits, with the access mode asked for.
    add_claim(&client, "logs", "500Mi", json!({})).await;
    assert_eq!(bound_volume(&client, "logs").await, "small");
    add_claim(
        &client,
        "media",
        "500Mi",
        json!({"accessModes": ["ReadWriteMany"]}),
    )
    .await;
    assert_eq!(bound_volume(&client, "media").await, "shared");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let logs = claims.get("logs").await.expect("claim");
    let status = serde_json::to_value(logs.status).expect("json");
    assert_eq!(status["capacity"]["storage"], "1Gi", "{status}");
    assert_eq!(status["accessModes"], json!(["ReadWriteOnce"]));
    let annotations = logs.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("pv.kubernetes.io/bind-completed")
            .map(String::as_str),
        Some("yes")
    );
    let small = volume_in(&client, "small", "Bound").await;
    let reference = small.spec.and_then(|s| s.claim_ref).expect("claimRef");
    assert_eq!(reference.name.as_deref(), Some("logs"));
    assert_eq!(reference.uid, logs.metadata.uid);

    // Nothing fits: the claim waits, saying why, and binds once a volume
    // that fits appears.
    add_claim(&client, "archive", "20Gi", json!({})).await;
    wait_for_event(
        &client,
        "default",
        ("PersistentVolumeClaim", "archive"),
        "FailedBinding",
        "no persistent volumes available for this claim and no storage class is set",
    )
    .await;
    add_volume(&client, "huge", "50Gi", json!({})).await;
    assert_eq!(bound_volume(&client, "archive").await, "huge");

    // A volume reserved for a claim by name goes to that claim, though a
    // smaller one would fit (the scheduler reserves volumes so for claims
    // that wait for their first consumer).
    add_volume(
        &client,
        "reserved",
        "3Gi",
        json!({"claimRef": {"namespace": "default", "name": "picky"}}),
    )
    .await;
    volume_in(&client, "reserved", "Available").await;
    add_claim(&client, "picky", "100Mi", json!({})).await;
    assert_eq!(bound_volume(&client, "picky").await, "reserved");

    // A class and a selector narrow the choice.
    add_claim(
        &client,
        "db",
        "1Gi",
        json!({"storageClassName": "fast",
        "selector": {"matchLabels": {"disk": "fast"}}}),
    )
    .await;
    assert_eq!(bound_volume(&client, "db").await, "fast");

    // kubectl shows both sides of each binding.
    let pvs = kubectl.ok(&["get", "pv", "small", "--no-headers"]);
    assert!(
        pvs.contains("Bound") && pvs.contains("default/logs"),
        "{pvs}"
    );
    let pvcs = kubectl.ok(&["get", "pvc", "logs", "--no-headers"]);
    assert!(pvcs.contains("Bound") && pvcs.contains("small"), "{pvcs}");
    // A bound claim keeps its volume and modes; only its request may grow,
    // if its class allows expansion, which having none does not.
    for (patch, refusal) in [
        (
            r#"{"spec": {"volumeName": "big"}}"#,
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ),
        (
            r#"{"spec": {"resources": {"requests": {"storage": "1Mi"}}}}"#,
            "field can not be less than status.capacity",
        ),
        (
            r#"{"spec": {"resources": {"requests": {"storage": "2Gi"}}}}"#,
            "persistentvolumeclaims \"logs\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        ),
    ] {
        let err = kubectl.fails(&["patch", "pvc", "logs", "--type=merge", "-p", patch]);
        assert!(err.contains(refusal), "{patch}: {err}");
    }

    // A deleted claim releases its volume: kept (Retain) or failed, since
    // nothing here deletes storage (Delete).
    claims
        .delete("logs", &DeleteParams::default())
        .await
        .expect("delete");
    volume_in(&client, "small", "Released").await;
    claims
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    let fast = volume_in(&client, "fast", "Failed").await;
    let message = fast.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("no deletable volume plugin matched"),
        "{message}"
    );
    // A released volume is not offered again.
    add_claim(&client, "again", "500Mi", json!({})).await;
    assert_eq!(bound_volume(&client, "again").await, "big");
}
