//! The controller manager inside `kybern server`, driven through kube-rs and
//! kubectl with simulated nodes: Deployments roll out, scale and roll back;
//! ReplicaSets adopt and release pods; the garbage collector follows each
//! propagation policy; namespaces empty themselves; every namespace gets its
//! default ServiceAccount and root CA.

use crate::common;
use crate::common::wait_for;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;

fn deployment(name: &str, image: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": image}]},
            },
        },
    }))
    .expect("deployment")
}

/// The ReplicaSets a Deployment owns, by name, with their replicas.
async fn sets_of(api: &Api<ReplicaSet>, app: &str) -> Vec<(String, i32, String)> {
    let list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list sets");
    let mut v: Vec<(String, i32, String)> = list
        .items
        .into_iter()
        .map(|rs| {
            let image = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .map(|s| s.containers[0].image.clone().unwrap_or_default())
                .unwrap_or_default();
            (
                rs.metadata.name.unwrap_or_default(),
                rs.spec.and_then(|s| s.replicas).unwrap_or(0),
                image,
            )
        })
        .collect();
    v.sort();
    v
}

async fn rolled_out(api: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    wait_for(&format!("{name} rolled out to {replicas}"), async || {
        let d = api.get(name).await.ok()?;
        let s = d.status.clone()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas);
        done.then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_scale_and_roll_back() {
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "2", "--heartbeat-seconds", "1"]);
    let client = server.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", "registry.local/web:1", 3, strategy),
        )
        .await
        .expect("create");
    let d = rolled_out(&deployments, "web", 3).await;
    let conditions = d.status.and_then(|s| s.conditions).unwrap_or_default();
    let reason = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let first = sets_of(&sets, "web").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let hash = first[0]
        .0
        .strip_prefix("web-")
        .expect("named after the deployment")
        .to_owned();
    let owned = pods
        .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
        .await
        .expect("pods");
    assert_eq!(owned.items.len(), 3);
    for p in &owned.items {
        let owner = &p.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("ReplicaSet", first[0].0.as_str(), Some(true))
        );
    }

    // A new image: a second set takes over, the first is scaled to zero.
    let k = common::cli::Cli::kubectl(&server);
    k.ok(&["set", "image", "deployment/web", "c=registry.local/web:2"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let second = sets_of(&sets, "web").await;
    assert_eq!(second.len(), 2, "{second:?}");
    let by_image =
        |v: &[(String, i32, String)], image: &str| v.iter().find(|s| s.2 == image).map(|s| s.1);
    assert_eq!(by_image(&second, "registry.local/web:2"), Some(3));
    assert_eq!(by_image(&second, "registry.local/web:1"), Some(0));
    let revision = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .cloned()
    };
    assert_eq!(
        revision(&deployments.get("web").await.expect("get")).as_deref(),
        Some("2")
    );

    // Rolling back reuses the first set under a new revision.
    k.ok(&["rollout", "undo", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let third = sets_of(&sets, "web").await;
    assert_eq!(third.len(), 2, "rollback made a new set: {third:?}");
    let reused = third
        .iter()
        .find(|s| s.0 == first[0].0)
        .expect("the first set is still there");
    assert_eq!((reused.1, reused.2.as_str()), (3, "registry.local/web:1"));
    assert_eq!(
        revision(&deployments.get("web").await.expect("get")).as_deref(),
        Some("3")
    );

    // Scaling changes the active set only.
    k.ok(&["scale", "deployment/web", "--replicas=5"]);
    rolled_out(&deployments, "web", 5).await;
    assert_eq!(
        by_image(&sets_of(&sets, "web").await, "registry.local/web:1"),
        Some(5)
    );

    // Each step is told as upstream tells it: the Deployment's Events say
    // which set was scaled and how far, the set's who made its pods.
    let first_set = first[0].0.as_str();
    let scaled = common::wait_for_event(
        &client,
        "default",
        ("Deployment", "web"),
        "ScalingReplicaSet",
        &format!("Scaled up replica set {first_set} from 0 to 3"),
    )
    .await;
    assert_eq!(
        scaled.source.and_then(|s| s.component).as_deref(),
        Some("deployment-controller")
    );
    common::wait_for_event(
        &client,
        "default",
        ("Deployment", "web"),
        "ScalingReplicaSet",
        &format!("Scaled up replica set {first_set} from 3 to 5"),
    )
    .await;
    let created = common::wait_for_event(
        &client,
        "default",
        ("ReplicaSet", first_set),
        "SuccessfulCreate",
        "Created pod: web-",
    )
    .await;
    assert_eq!(
        created.source.and_then(|s| s.component).as_deref(),
        Some("replicaset-controller")
    );
    assert_eq!(created.type_.as_deref(), Some("Normal"));
    let described = k.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("ScalingReplicaSet") && described.contains("deployment-controller"),
        "{described}"
    );

    // Recreate: the old pods are gone before the new set grows.
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                "batch",
                "registry.local/b:1",
                2,
                json!({"type": "Recreate"}),
            ),
        )
        .await
        .expect("create");
    rolled_out(&deployments, "batch", 2).await;
    k.ok(&["set", "image", "deployment/batch", "c=registry.local/b:2"]);
    k.ok(&["rollout", "status", "deployment/batch", "--timeout=60s"]);
    let batch = sets_of(&sets, "batch").await;
    assert_eq!(by_image(&batch, "registry.local/b:2"), Some(2));
    assert_eq!(by_image(&batch, "registry.local/b:1"), Some(0));
}

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.local/x:1"}]},
    }))
    .expect("pod")
}

fn owners(p: &Pod) -> Vec<String> {
    p.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|o| o.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sets_adopt_release_and_replace_pods() {
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "x"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.local/x:1"}]}}},
    }))
    .expect("rs");
    sets.create(&PostParams::default(), &rs)
        .await
        .expect("create rs");
    let first = wait_for("one pod owned by x", async || {
        let list = pods
            .list(&ListParams::default().labels("app=x"))
            .await
            .ok()?;
        let owned: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| owners(p) == ["x"])
            .collect();
        (owned.len() == 1).then(|| owned[0].metadata.name.clone().unwrap_or_default())
    })
    .await;
    assert!(first.starts_with("x-"), "{first}");
    let status = wait_for("status replicas 1", async || {
        let s = sets.get("x").await.ok()?.status?;
        (s.replicas == 1 && s.observed_generation == Some(1)).then_some(s)
    })
    .await;
    assert_eq!(status.ready_replicas, Some(0), "no pod runs without nodes");

    // An orphan the selector matches is adopted; one pod too many, the
    // newer goes. A set only deletes pods it owns, so the orphan's deletion
    // shows it was adopted. Creation times have one-second granularity, so
    // the orphan is made a second later to be the newer one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    pods.create(&PostParams::default(), &pod("orphan", json!({"app": "x"})))
        .await
        .expect("orphan");
    wait_for("the adopted surplus pod deleted", async || {
        pods.get_opt("orphan").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        pods.get_opt(&first).await.expect("get").is_some(),
        "the older pod stays"
    );
    let deleted = common::wait_for_event(
        &client,
        "default",
        ("ReplicaSet", "x"),
        "SuccessfulDelete",
        "Deleted pod: orphan",
    )
    .await;
    assert_eq!(
        deleted.source.and_then(|s| s.component).as_deref(),
        Some("replicaset-controller")
    );

    // A pod relabelled out of the selector is released and replaced.
    pods.patch(
        &first,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .expect("relabel");
    wait_for("the relabelled pod released", async || {
        let p = pods.get(&first).await.ok()?;
        owners(&p).is_empty().then_some(())
    })
    .await;
    wait_for("a replacement", async || {
        let list = pods
            .list(&ListParams::default().labels("app=x"))
            .await
            .ok()?;
        (list.items.iter().filter(|p| owners(p) == ["x"]).count() == 1).then_some(())
    })
    .await;

    // Scaling down deletes; an unscheduled pod goes at once.
    sets.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .expect("scale");
    wait_for("no pods of x", async || {
        let list = pods
            .list(&ListParams::default().labels("app=x"))
            .await
            .ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    assert!(
        pods.get_opt(&first).await.expect("get").is_some(),
        "a released pod is left alone"
    );

    // A set of forty says only so much, as client-go's correlator allows:
    // nine Events of their own, then one that combines the rest and counts
    // them, up to 25 in all about one object.
    let many: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "many"},
        "spec": {"replicas": 40, "selector": {"matchLabels": {"app": "many"}},
                 "template": {"metadata": {"labels": {"app": "many"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.local/x:1"}]}}},
    }))
    .expect("rs");
    sets.create(&PostParams::default(), &many)
        .await
        .expect("create many");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let about_many =
        ListParams::default().fields("involvedObject.name=many,reason=SuccessfulCreate");
    let told = async || -> Option<(usize, i32, usize)> {
        let list = events.list(&about_many).await.ok()?.items;
        let counted = list.iter().map(|e| e.count.unwrap_or(1)).sum();
        let combined = list
            .iter()
            .filter(|e| {
                e.message.as_deref().is_some_and(|m| {
                    m.starts_with("(combined from similar events): Created pod: many-")
                })
            })
            .count();
        Some((list.len(), counted, combined))
    };
    wait_for("forty pods of many, and 25 Events counted", async || {
        let made = pods
            .list(&ListParams::default().labels("app=many"))
            .await
            .ok()?
            .items
            .len();
        let (_, counted, _) = told().await?;
        (made == 40 && counted >= 25).then_some(())
    })
    .await;
    // Whatever was still queued has been written by now.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(told().await, Some((10, 25, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_garbage_collector_follows_each_propagation_policy() {
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let client = server.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let make = async |name: &str, owner: Option<&ConfigMap>| {
        let mut cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm");
        if let Some(o) = owner {
            cm.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                    block_owner_deletion: Some(true),
                    controller: None,
                },
            ]);
        }
        maps.create(&PostParams::default(), &cm)
            .await
            .expect("create")
    };
    let gone = async |name: &str| {
        wait_for(&format!("{name} gone"), async || {
            maps.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    };

    // Background: the owner goes at once, then its dependents.
    let owner = make("bg-owner", None).await;
    make("bg-child", Some(&owner)).await;
    maps.delete("bg-owner", &DeleteParams::background())
        .await
        .expect("delete");
    gone("bg-child").await;

    // Orphan: the dependent stays, without the reference.
    let owner = make("or-owner", None).await;
    make("or-child", Some(&owner)).await;
    maps.delete("or-owner", &DeleteParams::orphan())
        .await
        .expect("delete");
    gone("or-owner").await;
    let child = maps.get("or-child").await.expect("orphan kept");
    assert!(
        child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Foreground: the owner waits, visible, until its dependents are gone;
    // a finalizer on the dependent holds both.
    let owner = make("fg-owner", None).await;
    let child = make("fg-child", Some(&owner)).await;
    maps.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
    )
    .await
    .expect("hold");
    maps.delete("fg-owner", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait_for("the child being deleted", async || {
        maps.get("fg-child")
            .await
            .ok()?
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    let waiting = maps.get("fg-owner").await.expect("owner waits");
    assert_eq!(
        waiting.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_owned()][..])
    );
    maps.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    gone("fg-child").await;
    gone("fg-owner").await;
    drop(child);

    // A dependent whose owner never existed is collected too.
    let mut fake = ConfigMap::default();
    fake.metadata.name = Some("ghost".into());
    fake.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    make("haunted", Some(&fake)).await;
    gone("haunted").await;

    // A Deployment deleted in the foreground takes its ReplicaSet first.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    deployments
        .create(
            &PostParams::default(),
            &deployment("fg", "registry.local/x:1", 1, json!({"type": "Recreate"})),
        )
        .await
        .expect("create");
    wait_for("the set of fg", async || {
        (!sets_of(&sets, "fg").await.is_empty()).then_some(())
    })
    .await;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    deployments.delete("fg", &params).await.expect("delete");
    wait_for("fg and its set gone", async || {
        let d = deployments.get_opt("fg").await.ok()?;
        (d.is_none() && sets_of(&sets, "fg").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_get_their_defaults_and_are_emptied_when_deleted() {
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    wait_for("the default service account", async || {
        accounts.get_opt("default").await.ok()?.map(|_| ())
    })
    .await;
    let root = wait_for("kube-root-ca.crt", async || {
        maps.get_opt("kube-root-ca.crt").await.ok()?
    })
    .await;
    let ca = root
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .expect("ca.crt");
    let pki_ca = std::fs::read_to_string(server.dir.path().join("pki/ca.crt")).expect("server CA");
    assert_eq!(ca.trim(), pki_ca.trim());
    // Deleted, they come back.
    maps.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .expect("delete");
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("the CA map back", async || {
        maps.get_opt("kube-root-ca.crt").await.ok()?.map(|_| ())
    })
    .await;
    wait_for("the account back", async || {
        accounts.get_opt("default").await.ok()?.map(|_| ())
    })
    .await;

    // Content with a finalizer holds the namespace, and its conditions say so.
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .expect("cm");
    maps.create(&PostParams::default(), &held)
        .await
        .expect("create");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "team");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "r"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }))
    .expect("rs");
    sets.create(&PostParams::default(), &rs)
        .await
        .expect("create");
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .expect("delete");
    let conditions = wait_for("finalizers reported", async || {
        let ns = namespaces.get("team").await.ok()?;
        let conds = ns.status?.conditions?;
        conds
            .iter()
            .any(|c| c.type_ == "NamespaceFinalizersRemaining" && c.status == "True")
            .then_some(conds)
    })
    .await;
    let remaining = conditions
        .iter()
        .find(|c| c.type_ == "NamespaceContentRemaining")
        .expect("content condition");
    assert_eq!(remaining.status, "True");
    assert!(
        remaining
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("configmaps has 1 resource instances"),
        "{remaining:?}"
    );
    assert!(
        sets.get_opt("r").await.expect("get").is_none(),
        "the rest is deleted meanwhile"
    );
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    wait_for("the namespace gone", async || {
        namespaces
            .get_opt("team")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoint_slices_and_endpoints() {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let server = common::Server::start_cluster(&[]);
    let _sim = common::sim::start(&server, &["--nodes", "2", "--heartbeat-seconds", "1"]);
    let client = server.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let mut d = deployment(
        "api",
        "registry.local/api:1",
        105,
        json!({"type": "RollingUpdate"}),
    );
    d.spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("spec")
        .containers[0]
        .ports = Some(vec![
        serde_json::from_value(json!({"name": "http", "containerPort": 8080})).expect("port"),
    ]);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "api"},
        "spec": {"selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}))
    .expect("svc");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create svc");
    let of_api = ListParams::default().labels("kubernetes.io/service-name=api");
    let found = wait_for("105 ready endpoints in two slices", async || {
        let list = slices.list(&of_api).await.ok()?.items;
        let ready = list
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        (ready == 105).then_some(list)
    })
    .await;
    let sizes: Vec<usize> = found.iter().map(|s| s.endpoints.len()).collect();
    assert!(
        sizes.len() >= 2 && sizes.iter().all(|n| *n <= 100),
        "{sizes:?}"
    );
    for s in &found {
        let port = &s.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("web"), Some(8080), Some("TCP"))
        );
        assert_eq!(s.address_type, "IPv4");
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("endpointslice-controller.k8s.io")
        );
        let e = &s.endpoints[0];
        assert_eq!(
            e.target_ref.as_ref().and_then(|r| r.kind.as_deref()),
            Some("Pod")
        );
        assert!(
            e.node_name
                .as_deref()
                .unwrap_or_default()
                .starts_with("sim-")
        );
    }
    let ep = endpoints.get("api").await.expect("endpoints");
    let subset = &ep.subsets.expect("subsets")[0];
    assert_eq!(subset.addresses.as_ref().map(Vec::len), Some(105));
    assert_eq!(subset.ports.as_ref().expect("ports")[0].port, 8080);

    // Scaled down, the endpoints follow; the slices are kept, not recreated.
    let names: Vec<_> = found.iter().map(|s| s.metadata.name.clone()).collect();
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale");
    let after = wait_for("two endpoints", async || {
        let list = slices.list(&of_api).await.ok()?.items;
        let n: usize = list.iter().map(|s| s.endpoints.len()).sum();
        // The two survivors may sit in one slice or two: upstream does not
        // move a living endpoint to merge slices, and neither do we.
        let no_empty = list.iter().all(|s| !s.endpoints.is_empty());
        (n == 2 && no_empty).then_some(list)
    })
    .await;
    for s in &after {
        assert!(
            names.contains(&s.metadata.name),
            "slice {:?} is not one of {names:?}: endpoints were moved",
            s.metadata.name
        );
    }

    // Deleting the Service takes its slices (owner references) and Endpoints.
    services
        .delete("api", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("slices and endpoints gone", async || {
        let none = slices.list(&of_api).await.ok()?.items.is_empty();
        (none && endpoints.get_opt("api").await.ok()?.is_none()).then_some(())
    })
    .await;
}
