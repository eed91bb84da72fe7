//! The etcd backend: the same model served by a real etcd cluster, one to one
//! (our revisions are etcd's revisions; our keys are etcd's keys).

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};

use crate::error::StoreError;
use crate::key::{key_successor, prefix_range_end, validate_key, validate_prefix, validate_value};
use crate::store::{Store, WatchStream};
use crate::types::{
    DeleteResponse, Event, EventKind, GetResponse, KeyValue, Precondition, RangeRequest,
    RangeResponse, Revision,
};

/// Options for [`EtcdStore::connect`].
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
    /// Timeout for each request.
    pub request_timeout: Duration,
}

impl EtcdOptions {
    /// Defaults for the given endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A store backed by an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    watch: WatchClient,
}

/// Largest gRPC message accepted from etcd. gRPC's default, 4 MiB, is smaller than
/// an unpaginated list of a few thousand objects; kube-apiserver lifts it the same way.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

/// Maps an etcd client error, recognising etcd's revision errors.
fn etcd_error(err: etcd_client::Error, revision: Revision) -> StoreError {
    if let etcd_client::Error::GRpcStatus(status) = &err {
        let msg = status.message();
        if msg.contains("required revision has been compacted") {
            return StoreError::Compacted { revision };
        }
        if msg.contains("required revision is a future revision") {
            return StoreError::FutureRevision {
                revision,
                current: 0,
            };
        }
        if msg.contains("request is too large") {
            return StoreError::ValueTooLarge {
                size: 0,
                limit: crate::MAX_VALUE_BYTES,
            };
        }
    }
    StoreError::Backend(err.to_string())
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd response without header".into()))
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| StoreError::Corrupt("etcd holds a key that is not UTF-8".into()))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

impl EtcdStore {
    /// Connects to the cluster.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        let client = Client::connect(&options.endpoints, Some(opts))
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to etcd: {e}")))?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let watch = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        Ok(EtcdStore { client, kv, watch })
    }

    fn kv(&self) -> KvClient {
        self.kv.clone()
    }

    /// Runs `then` if `compare` holds. On failure returns `Ok(Err(current))`, the
    /// key's current value (read in the same transaction), for the caller to judge.
    async fn txn(
        &self,
        key: &str,
        compare: Compare,
        then: TxnOp,
    ) -> Result<Result<etcd_client::TxnResponse, Option<KeyValue>>, StoreError> {
        let txn = Txn::new()
            .when([compare])
            .and_then([then])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.kv().txn(txn).await.map_err(|e| etcd_error(e, 0))?;
        if resp.succeeded() {
            return Ok(Ok(resp));
        }
        let current = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(to_kv).transpose()?,
            _ => None,
        };
        Ok(Err(current))
    }
}

/// The error for a failed `ModRevision` comparison.
fn mod_revision_failed(key: &str, expected: Revision, current: Option<KeyValue>) -> StoreError {
    match current {
        None => StoreError::NotFound {
            key: key.to_owned(),
        },
        Some(kv) => StoreError::Conflict {
            key: key.to_owned(),
            expected,
            current: Some(Box::new(kv)),
        },
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str, revision: Revision) -> Result<GetResponse, StoreError> {
        validate_key(key)?;
        let resp = self
            .kv()
            .get(key, Some(GetOptions::new().with_revision(revision)))
            .await
            .map_err(|e| etcd_error(e, revision))?;
        let kv = resp.kvs().first().map(to_kv).transpose()?;
        let head = header_revision(resp.header())?;
        Ok(GetResponse {
            kv,
            revision: if revision > 0 { revision } else { head },
        })
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        validate_prefix(&request.prefix)?;
        let start: Vec<u8> = match &request.start_after {
            Some(after) => {
                validate_prefix(after)?;
                key_successor(after)
            }
            None => request.prefix.as_bytes().to_vec(),
        };
        let mut opts = GetOptions::new()
            .with_range(prefix_range_end(&request.prefix))
            .with_revision(request.revision);
        if request.limit > 0 {
            opts = opts.with_limit(request.limit as i64);
        }
        let resp = self
            .kv()
            .get(start, Some(opts))
            .await
            .map_err(|e| etcd_error(e, request.revision))?;
        let kvs = resp
            .kvs()
            .iter()
            .map(to_kv)
            .collect::<Result<Vec<_>, _>>()?;
        let head = header_revision(resp.header())?;
        Ok(RangeResponse {
            more: resp.more(),
            count: resp.count().max(0) as u64,
            revision: if request.revision > 0 {
                request.revision
            } else {
                head
            },
            kvs,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        precondition: Precondition,
    ) -> Result<Revision, StoreError> {
        validate_key(key)?;
        validate_value(&value)?;
        match precondition {
            Precondition::None => {
                let resp = self
                    .kv()
                    .put(key, value.to_vec(), None)
                    .await
                    .map_err(|e| etcd_error(e, 0))?;
                header_revision(resp.header())
            }
            Precondition::Absent => {
                let compare = Compare::create_revision(key, CompareOp::Equal, 0);
                match self
                    .txn(key, compare, TxnOp::put(key, value.to_vec(), None))
                    .await?
                {
                    Ok(resp) => header_revision(resp.header()),
                    Err(_) => Err(StoreError::AlreadyExists {
                        key: key.to_owned(),
                    }),
                }
            }
            Precondition::ModRevision(expected) => {
                let compare = Compare::mod_revision(key, CompareOp::Equal, expected);
                match self
                    .txn(
                        key,
                        compare,
                        TxnOp::put(key, value.to_vec(), Some(PutOptions::new())),
                    )
                    .await?
                {
                    Ok(resp) => header_revision(resp.header()),
                    Err(current) => Err(mod_revision_failed(key, expected, current)),
                }
            }
        }
    }

    async fn delete(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> Result<DeleteResponse, StoreError> {
        validate_key(key)?;
        let (compare, expected) = match precondition {
            // A key that exists has a create revision above 0.
            Precondition::None => (Compare::create_revision(key, CompareOp::Greater, 0), None),
            Precondition::ModRevision(rev) => {
                (Compare::mod_revision(key, CompareOp::Equal, rev), Some(rev))
            }
            Precondition::Absent => {
                let current = self.get(key, 0).await?.kv;
                return Err(match current {
                    None => StoreError::NotFound {
                        key: key.to_owned(),
                    },
                    Some(kv) => StoreError::Conflict {
                        key: key.to_owned(),
                        expected: 0,
                        current: Some(Box::new(kv)),
                    },
                });
            }
        };
        let then = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        match self.txn(key, compare, then).await? {
            Ok(resp) => {
                let revision = header_revision(resp.header())?;
                let prev = match resp.op_responses().first() {
                    Some(TxnOpResponse::Delete(del)) => {
                        del.prev_kvs().first().map(to_kv).transpose()?
                    }
                    _ => None,
                };
                let prev = prev.ok_or_else(|| StoreError::NotFound {
                    key: key.to_owned(),
                })?;
                Ok(DeleteResponse { revision, prev })
            }
            Err(current) => Err(match expected {
                None => StoreError::NotFound {
                    key: key.to_owned(),
                },
                Some(expected) => mod_revision_failed(key, expected, current),
            }),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        validate_prefix(prefix)?;
        if start_revision < 0 {
            return Err(StoreError::Compacted {
                revision: start_revision,
            });
        }
        if start_revision > 1 {
            // etcd reports a compacted start only inside the stream; ask first, so
            // callers see the error at once, as with the sqlite backend.
            let probe = GetOptions::new()
                .with_revision(start_revision - 1)
                .with_count_only();
            match self.kv().get(prefix, Some(probe)).await {
                Ok(_) => {}
                Err(e) => match etcd_error(e, start_revision) {
                    StoreError::FutureRevision { .. } => {}
                    other => return Err(other),
                },
            }
        }
        let opts = WatchOptions::new()
            .with_range(prefix_range_end(prefix))
            .with_start_revision(start_revision)
            .with_prev_key();
        let stream = self
            .watch
            .clone()
            .watch(prefix, Some(opts))
            .await
            .map_err(|e| etcd_error(e, start_revision))?;
        let mut state = WatchState {
            stream,
            pending: VecDeque::new(),
            done: false,
            start_revision,
        };
        // Wait until etcd has registered the watch, so that "from now" means from
        // the moment this call returns.
        match next_response(&mut state).await {
            Ok(true) => {}
            Ok(false) => return Err(StoreError::Backend("etcd closed the watch".into())),
            Err(err) => return Err(err),
        }
        Ok(Box::pin(futures::stream::unfold(state, next_event)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.kv()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| etcd_error(e, revision))?;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .kv()
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| etcd_error(e, 0))?;
        header_revision(resp.header())
    }

    async fn db_size(&self) -> Result<u64, StoreError> {
        let status = self
            .client
            .maintenance_client()
            .status()
            .await
            .map_err(|e| etcd_error(e, 0))?;
        Ok(status.db_size().max(0) as u64)
    }
}

/// State of one etcd watch, unfolded into a stream of events.
struct WatchState {
    stream: etcd_client::WatchStream,
    pending: VecDeque<Event>,
    done: bool,
    start_revision: Revision,
}

async fn next_event(mut state: WatchState) -> Option<(Result<Event, StoreError>, WatchState)> {
    loop {
        if let Some(event) = state.pending.pop_front() {
            return Some((Ok(event), state));
        }
        if state.done {
            return None;
        }
        match next_response(&mut state).await {
            Ok(true) => {}
            Ok(false) => {
                state.done = true;
                return Some((
                    Err(StoreError::Backend("etcd closed the watch".into())),
                    state,
                ));
            }
            Err(err) => {
                state.done = true;
                state.pending.clear();
                return Some((Err(err), state));
            }
        }
    }
}

/// Reads one watch response into `state.pending`. Returns false when the stream ended.
async fn next_response(state: &mut WatchState) -> Result<bool, StoreError> {
    let resp = match state.stream.message().await {
        Ok(Some(resp)) => resp,
        Ok(None) => return Ok(false),
        Err(e) => return Err(etcd_error(e, state.start_revision)),
    };
    if resp.canceled() {
        return Err(if resp.compact_revision() > 0 {
            StoreError::Compacted {
                revision: state.start_revision,
            }
        } else {
            StoreError::Backend(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            ))
        });
    }
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let prev = ev.prev_kv().map(to_kv).transpose()?;
        let event = match ev.event_type() {
            EventType::Put => Event {
                kind: EventKind::Put,
                kv: to_kv(kv)?,
                prev,
            },
            EventType::Delete => {
                let mut kv = to_kv(kv)?;
                kv.value = Bytes::new();
                kv.create_revision = 0;
                Event {
                    kind: EventKind::Delete,
                    kv,
                    prev,
                }
            }
        };
        state.pending.push_back(event);
    }
    Ok(true)
}
