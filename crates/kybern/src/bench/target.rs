//! What a store benchmark drives: a [`Store`] backend, or etcd through its raw
//! client (the baseline), behind one small trait so every workload is written once.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use futures::{Stream, StreamExt};
use kybern_store::{Store, prefix_range_end};

/// A stream of the revisions a watch delivers.
pub type Revisions = Pin<Box<dyn Stream<Item = anyhow::Result<i64>> + Send>>;

/// The operations the store benchmark measures.
#[async_trait]
pub trait BenchTarget: Send + Sync {
    /// Creates `key` if absent; returns its revision.
    async fn create(&self, key: &str, value: Bytes) -> anyhow::Result<i64>;
    /// Reads every key under `prefix`; returns how many.
    async fn range(&self, prefix: &str) -> anyhow::Result<usize>;
    /// Watches `prefix` from now on.
    async fn watch(&self, prefix: &str) -> anyhow::Result<Revisions>;
}

#[async_trait]
impl BenchTarget for Arc<dyn Store> {
    async fn create(&self, key: &str, value: Bytes) -> anyhow::Result<i64> {
        Ok(Store::create(&**self, key, value).await?)
    }

    async fn range(&self, prefix: &str) -> anyhow::Result<usize> {
        Ok(
            Store::range(&**self, kybern_store::RangeRequest::prefix(prefix))
                .await?
                .kvs
                .len(),
        )
    }

    async fn watch(&self, prefix: &str) -> anyhow::Result<Revisions> {
        let stream = Store::watch(&**self, prefix, 0).await?;
        Ok(Box::pin(
            stream.map(|e| e.map(|e| e.revision()).map_err(Into::into)),
        ))
    }
}

/// etcd driven directly with its client: the same requests our etcd backend
/// sends, without our layer.
pub struct RawEtcd(pub etcd_client::Client);

#[async_trait]
impl BenchTarget for RawEtcd {
    async fn create(&self, key: &str, value: Bytes) -> anyhow::Result<i64> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.0.kv_client().txn(txn).await?;
        anyhow::ensure!(resp.succeeded(), "key {key} exists");
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    async fn range(&self, prefix: &str) -> anyhow::Result<usize> {
        let opts = GetOptions::new().with_range(prefix_range_end(prefix));
        // The same response limit as our backend, so both can read a large range.
        let mut kv = self
            .0
            .kv_client()
            .max_decoding_message_size(i32::MAX as usize);
        Ok(kv.get(prefix, Some(opts)).await?.kvs().len())
    }

    async fn watch(&self, prefix: &str) -> anyhow::Result<Revisions> {
        let opts = WatchOptions::new()
            .with_range(prefix_range_end(prefix))
            .with_prev_key();
        let stream = self.0.watch_client().watch(prefix, Some(opts)).await?;
        let revisions = futures::stream::unfold(stream, |mut stream| async move {
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if let Some(ev) = resp.events().first() {
                            let rev = ev.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
                            return Some((Ok(rev), stream));
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e.into()), stream)),
                }
            }
        });
        Ok(Box::pin(revisions))
    }
}
