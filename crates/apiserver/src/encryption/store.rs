//! A [`Store`] that seals values on the way in and opens them on the way
//! out, following an [`EncryptionConfig`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use kybern_store::{
    DeleteResponse, Event, GetResponse, KeyValue, Precondition, RangeRequest, RangeResponse,
    Revision, Store, StoreError, WatchStream,
};

use super::config::EncryptionConfig;

type Result<T> = std::result::Result<T, StoreError>;

/// Wraps a store with encryption at rest.
pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    config: Arc<EncryptionConfig>,
}

impl EncryptingStore {
    /// Seals what `inner` stores as `config` says.
    pub fn new(inner: Arc<dyn Store>, config: Arc<EncryptionConfig>) -> Self {
        EncryptingStore { inner, config }
    }
}

/// Opens one stored key-value in place. A value that cannot be opened is a
/// backend error: the API answers 500, as upstream does, and nothing is
/// served in its stead.
fn open(config: &EncryptionConfig, kv: &mut KeyValue) -> Result<()> {
    if kv.value.is_empty() {
        return Ok(());
    }
    match config.open(&kv.key, &kv.value) {
        Ok(Some(plain)) => {
            kv.value = Bytes::from(plain);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(StoreError::Backend(e.to_string())),
    }
}

fn open_event(config: &EncryptionConfig, mut event: Event) -> Result<Event> {
    open(config, &mut event.kv)?;
    if let Some(prev) = event.prev.as_mut() {
        open(config, prev)?;
    }
    Ok(event)
}

#[async_trait]
impl Store for EncryptingStore {
    async fn get(&self, key: &str, revision: Revision) -> Result<GetResponse> {
        let mut resp = self.inner.get(key, revision).await?;
        if let Some(kv) = resp.kv.as_mut() {
            open(&self.config, kv)?;
        }
        Ok(resp)
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let mut resp = self.inner.range(request).await?;
        for kv in &mut resp.kvs {
            open(&self.config, kv)?;
        }
        Ok(resp)
    }

    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<Revision> {
        let value = match self.config.seal(key, &value) {
            Ok(Some(sealed)) => Bytes::from(sealed),
            Ok(None) => value,
            Err(e) => return Err(StoreError::Backend(e.to_string())),
        };
        self.inner.put(key, value, precondition).await
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<DeleteResponse> {
        let mut resp = self.inner.delete(key, precondition).await?;
        open(&self.config, &mut resp.prev)?;
        Ok(resp)
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        let config = self.config.clone();
        let stream = self.inner.watch(prefix, start_revision).await?;
        Ok(Box::pin(stream.map(move |event| {
            event.and_then(|e| open_event(&config, e))
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    fn shares_written_values(&self) -> bool {
        // Unsealed values pass through; a sealed one's event carries the
        // opened copy, which simply does not match.
        self.inner.shares_written_values()
    }

    async fn db_size(&self) -> Result<u64> {
        self.inner.db_size().await
    }
}
