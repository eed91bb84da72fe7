//! kube-rs with server-side apply and strategic merge patch: field managers,
//! conflicts and `force`, apply as create, ownership in managedFields.

use crate::common;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn deployment(replicas: i32, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}},
                         "spec": {"containers": [{"name": "main", "image": image}]}}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_conflicts_force_and_strategic_patch() {
    let server = common::Server::start();
    let client = server.client().await;
    let api: Api<Deployment> = Api::namespaced(client, "default");

    // Apply creates the object; the manager owns what it applied.
    let alice = PatchParams::apply("alice");
    let created = api
        .patch("app", &alice, &Patch::Apply(deployment(1, "img:1")))
        .await
        .expect("apply creates");
    let managed = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("alice"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    // Bob applies the same value: shared, no conflict. A different value: 409.
    let bob = PatchParams::apply("bob");
    api.patch("app", &bob, &Patch::Apply(deployment(1, "img:1")))
        .await
        .expect("same value is shared");
    let err = api
        .patch("app", &bob, &Patch::Apply(deployment(4, "img:1")))
        .await
        .expect_err("conflict");
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert!(
                s.message.contains("conflict with \"alice\"")
                    && s.message.contains(".spec.replicas"),
                "{}",
                s.message
            );
        }
        other => panic!("expected a Status, got {other}"),
    }
    let forced = api
        .patch(
            "app",
            &bob.clone().force(),
            &Patch::Apply(deployment(4, "img:1")),
        )
        .await
        .expect("force");
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(4));

    // Alice re-applies without replicas: Bob's value stays. Bob co-owns the
    // image (he applied the same value), so changing it conflicts with him.
    let mut without_replicas = deployment(0, "img:1");
    without_replicas["spec"]
        .as_object_mut()
        .map(|s| s.remove("replicas"));
    let after = api
        .patch("app", &alice, &Patch::Apply(without_replicas.clone()))
        .await
        .expect("alice reapplies");
    assert_eq!(after.spec.and_then(|s| s.replicas), Some(4));
    without_replicas["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2");
    match api
        .patch("app", &alice, &Patch::Apply(without_replicas))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert!(s.message.contains("conflict with \"bob\""), "{}", s.message)
        }
        other => panic!("expected a conflict with bob, got {other:?}"),
    }

    // Missing field manager is refused; force on a non-apply patch too.
    let err = api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Apply(deployment(1, "x")),
        )
        .await
        .expect_err("needs a manager");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err}"
    );

    // Strategic merge patch merges containers by name.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:1"}]}}}});
    let patched = api
        .patch("app", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("strategic");
    let names: Vec<String> = patched
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["main", "side"]);

    // dry-run apply changes nothing.
    let dry = PatchParams::apply("alice").dry_run().force();
    api.patch("app", &dry, &Patch::Apply(deployment(9, "img:9")))
        .await
        .expect("dry run");
    let now = api.get("app").await.expect("get");
    assert_eq!(now.spec.and_then(|s| s.replicas), Some(4));
}

/// kubectl 1.35 asks `/api` and `/apis` for aggregated discovery first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_lists_every_group() {
    let server = common::Server::start();
    let client = server.client().await;
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let get = |path: &str| {
        http::Request::get(path)
            .header("Accept", accept)
            .body(Vec::new())
            .expect("request")
    };
    let apis: serde_json::Value = client.request(get("/apis")).await.expect("/apis");
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
    let apps = apis["items"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["metadata"]["name"] == "apps"))
        .expect("apps group");
    let deployments = apps["versions"][0]["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["resource"] == "deployments"))
        .expect("deployments");
    assert_eq!(deployments["scope"], "Namespaced");
    assert_eq!(deployments["responseKind"]["kind"], "Deployment");
    assert!(deployments["subresources"].as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["subresource"] == "scale" && s["responseKind"]["kind"] == "Scale")
    }));
    let core: serde_json::Value = client.request(get("/api")).await.expect("/api");
    assert_eq!(core["items"][0]["metadata"]["name"], "");
    assert!(
        core["items"][0]["versions"][0]["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["resource"] == "pods"))
    );
}

/// Ports are one item per number and protocol, as upstream keys them for
/// server-side apply: dropping 53/TCP from the applied configuration
/// removes only it, and moving 53/UDP to TCP replaces the item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_keys_ports_by_number_and_protocol() {
    let server = common::Server::start();
    let client = server.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, "default");
    let dns = |ports: serde_json::Value| {
        let mut d = deployment(1, "dns:1");
        d["spec"]["template"]["spec"]["containers"][0]["ports"] = ports;
        d
    };
    let service = |ports: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
               "spec": {"selector": {"app": "app"}, "ports": ports}})
    };
    let both = json!([
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9153}]);
    let ops = PatchParams::apply("ops");
    let made = deployments
        .patch("app", &ops, &Patch::Apply(dns(both)))
        .await
        .expect("apply");
    let fields = serde_json::to_string(&made.metadata.managed_fields).expect("json");
    assert!(
        fields.contains(r#"k:{\"containerPort\":53,\"protocol\":\"UDP\"}"#)
            && fields.contains(r#"k:{\"containerPort\":9153,\"protocol\":\"TCP\"}"#),
        "{fields}"
    );
    services
        .patch(
            "dns",
            &ops,
            &Patch::Apply(service(json!([
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]))),
        )
        .await
        .expect("apply service");

    let ports_of = |d: &Deployment| {
        let c = &d
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0];
        c.ports
            .iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.container_port,
                    p.protocol.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
    };
    let udp_only = json!([
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "metrics", "containerPort": 9153}]);
    let d = deployments
        .patch("app", &ops, &Patch::Apply(dns(udp_only)))
        .await
        .expect("apply without 53/TCP");
    assert_eq!(ports_of(&d), ["53/UDP", "9153/TCP"]);
    let s = services
        .patch(
            "dns",
            &ops,
            &Patch::Apply(service(json!([
            {"name": "dns", "port": 53, "protocol": "UDP"}]))),
        )
        .await
        .expect("apply service without 53/TCP");
    let service_ports: Vec<String> = s
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(service_ports, ["53/UDP"]);

    let moved = json!([
        {"name": "dns", "containerPort": 53, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9153}]);
    let d = deployments
        .patch("app", &ops, &Patch::Apply(dns(moved)))
        .await
        .expect("apply 53/TCP instead");
    let mut ports = ports_of(&d);
    ports.sort();
    assert_eq!(ports, ["53/TCP", "9153/TCP"]);
}
