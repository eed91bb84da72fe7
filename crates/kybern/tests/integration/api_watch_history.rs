//! Watches resumed from before the watch cache's history: answered, as
//! upstream's watch cache answers them, with one ERROR event (410 Expired) on
//! which clients relist, not with a watch fed from the store.

use crate::common;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;

/// Comfortably more events than the cache's ring holds (10,000 per resource).
const PAST_THE_RING: usize = 11_000;

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_watch_cache_is_expired() {
    let server = common::Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    // A list from the cache loads it (caches load on first use), so that the
    // creates below pass through its ring.
    api.list(&ListParams::default().match_any())
        .await
        .expect("list");
    let first = api
        .create(&PostParams::default(), &cm("first"))
        .await
        .expect("create");
    let old = first.metadata.resource_version.expect("rv");
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in (w..PAST_THE_RING).step_by(32) {
                    api.create(&PostParams::default(), &cm(&format!("c{i:05}")))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let latest = api
        .create(&PostParams::default(), &cm("latest"))
        .await
        .expect("create")
        .metadata
        .resource_version
        .expect("rv");

    // From before the ring: one ERROR event with upstream's 410 Expired.
    let mut stale = api
        .watch(&WatchParams::default().timeout(30), &old)
        .await
        .expect("the watch is answered")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), stale.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an event")
    {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
            assert!(e.message.contains("too old resource version"), "{e:?}");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // From within the ring: served as before.
    let mut fresh = api
        .watch(&WatchParams::default().timeout(30), &latest)
        .await
        .expect("watch")
        .boxed();
    api.create(&PostParams::default(), &cm("after"))
        .await
        .expect("create");
    match tokio::time::timeout(Duration::from_secs(10), fresh.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an event")
    {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("after")),
        other => panic!("expected ADDED after, got {other:?}"),
    }
}
