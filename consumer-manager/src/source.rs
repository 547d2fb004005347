//! The brokers, as the consumer manager uses them: topic metadata, offset-range
//! reads from partition leaders, offsets, deleting consumed segments, and producing
//! dead letters. Connects lazily, so it can be built before the broker it talks to
//! is serving (standalone runs both in one process).

use pubsub_proto::net::Link;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pubsub_client::{
    Admin, Client, ConsumerRecord, Producer, ProducerConfig, RecordMetadata, Router, Undecodable,
};
use pubsub_proto::ids::PartitionId;
use pubsub_proto::v1;

use crate::decoded::{DecodedBatches, Origin};
use crate::error::{Error, Result};
use crate::fetches::{Fetches, Turn, joined};
use crate::lock::recover;

/// Most bytes asked of a broker per partition read.
const FETCH_MAX_BYTES: u32 = 4 << 20;
/// Attempts at an operation while a partition's leader moves.
const RETRIES: u32 = 20;
/// Failed attempts after which the next bootstrap broker is tried.
const SWITCH_AFTER: u32 = 4;
/// Pause between those attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Records read from a partition, with where the partition stands.
#[derive(Clone)]
pub struct Fetched {
    /// Records at or after the requested offset, in order; shared by every reader
    /// that joined the fetch (decoded and CRC-checked once).
    pub records: Arc<Vec<ConsumerRecord>>,
    /// Set when the read met a batch that cannot be decoded before any record: the
    /// reader must deal with it before the partition can go on. (When records
    /// precede such a batch, only they are returned; the next read meets it first.)
    pub undecodable: Option<Undecodable>,
    /// Consumers never see records at or past this.
    pub high_watermark: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Incarnation of the topic the records belong to (0: the broker does not say).
    pub topic_created_ms: u64,
    /// Bytes of the fetched batches (to size the next fetch by).
    pub bytes: usize,
}

/// What a read of a partition found.
pub enum ReadOutcome {
    /// Records (possibly none).
    Records(Fetched),
    /// The offset is below what retention kept; reading resumes at `log_start`.
    BelowStart {
        /// First offset still stored.
        log_start: u64,
    },
    /// The offset is past the partition's log end: the partition lost records the
    /// reader had positions in (a replaced disk, an unclean election), or it is
    /// another partition of the same name.
    AboveEnd {
        /// Offset the partition's next record will get.
        log_end: u64,
    },
}

/// Reads of partitions led by a broker in the same process (`pubsubd standalone`),
/// without encoding a fetch response, crossing loopback and decoding it again.
pub trait LocalLog: Send + Sync + std::fmt::Debug {
    /// The local broker's answer to `request` if it leads the partition; `None` to
    /// ask the cluster over gRPC instead.
    fn fetch<'a>(
        &'a self,
        request: &'a v1::FetchRequest,
    ) -> futures::future::BoxFuture<'a, Option<Result<v1::FetchResponse, tonic::Status>>>;
}

/// Access to the brokers.
pub struct Source {
    /// Brokers to bootstrap from, tried in turn.
    bootstraps: Vec<String>,
    /// How links to the brokers are secured (the cluster secret, TLS).
    link: Link,
    /// The client of the bootstrap in use; dropped to move to the next one.
    client: tokio::sync::Mutex<Option<Client>>,
    /// Index of the bootstrap to try first.
    turn: AtomicUsize,
    routers: Mutex<HashMap<String, Arc<Router>>>,
    producers: tokio::sync::Mutex<HashMap<String, Producer>>,
    /// Fetches in flight, which readers of the same position join.
    fetches: Fetches<Fetched>,
    /// Batches decoded lately, which later reads of the same bytes take as they are.
    decoded: DecodedBatches,
    /// The broker in this process, read without gRPC where it leads.
    local: Option<Arc<dyn LocalLog>>,
}

impl Source {
    /// Brokers reached through `bootstrap`: one or more `host:port`, comma separated,
    /// over links secured as `link` says; partitions `local` leads are read from it.
    pub fn new(bootstrap: String, link: Link, local: Option<Arc<dyn LocalLog>>) -> Self {
        Source {
            link,
            bootstraps: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            client: tokio::sync::Mutex::new(None),
            turn: AtomicUsize::new(0),
            routers: Mutex::new(HashMap::new()),
            producers: tokio::sync::Mutex::new(HashMap::new()),
            fetches: Fetches::new(),
            decoded: DecodedBatches::default(),
            local,
        }
    }

    async fn client(&self) -> Result<Client> {
        let mut current = self.client.lock().await;
        if let Some(client) = current.as_ref() {
            return Ok(client.clone());
        }
        let first = self.turn.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.bootstraps.len() {
            let address = &self.bootstraps[(first + i) % self.bootstraps.len()];
            match Client::connect_with(address, self.link.clone()).await {
                Ok(client) => {
                    *current = Some(client.clone());
                    return Ok(client);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::BrokersUnreachable {
            bootstraps: self.bootstraps.clone(),
            last,
        })
    }

    /// Moves to the next bootstrap broker (the current one may be down): the client,
    /// the leader caches built on it and the dead-letter producers are dropped.
    async fn switch_bootstrap(&self) {
        if self.bootstraps.len() < 2 {
            return;
        }
        *self.client.lock().await = None;
        self.turn.fetch_add(1, Ordering::Relaxed);
        recover(self.routers.lock()).clear();
        self.producers.lock().await.clear();
    }

    async fn router(&self, topic: &str) -> Result<Arc<Router>> {
        let client = self.client().await?;
        let mut routers = recover(self.routers.lock());
        Ok(routers
            .entry(topic.to_string())
            .or_insert_with(|| Arc::new(Router::new(client, topic)))
            .clone())
    }

    /// Runs an admin call on the bootstrap broker, moving on to the next one while it
    /// fails with an error a retry may cure.
    async fn on_bootstrap<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Admin) -> Fut,
        Fut: std::future::Future<Output = Result<T, pubsub_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            match call(Admin::new(self.client().await?)).await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retriable() && attempt < self.bootstraps.len() => {
                    attempt += 1;
                    self.switch_bootstrap().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A topic's description (partitions, leaders, replicas, config) and brokers.
    pub async fn describe(&self, topic: &str) -> Result<v1::DescribeTopicResponse> {
        let described = self
            .on_bootstrap(|admin| async move { admin.describe_topic(topic).await })
            .await;
        match described {
            Err(Error::Broker(pubsub_client::Error::NotFound { .. })) => {
                Err(Error::TopicNotFound {
                    topic: topic.to_string(),
                })
            }
            other => other,
        }
    }

    /// Every topic, by name, with its incarnation (`created_ms`; 0 from brokers that
    /// do not say) and partition count: one call however many topics there are.
    pub async fn incarnations(&self) -> Result<HashMap<String, (u64, u32)>> {
        let topics = self
            .on_bootstrap(|admin| async move { admin.list_topics().await })
            .await?;
        Ok(topics
            .into_iter()
            .map(|t| (t.name, (t.created_ms, t.partitions)))
            .collect())
    }

    /// Runs `call` against a partition's leader through the SDK's one leader-routed
    /// call, retrying while the leader moves; after each [`SWITCH_AFTER`] failed tries
    /// the bootstrap broker (through which leaders are looked up) may be the one that
    /// is down, so another is taken.
    async fn on_leader<T, F, Fut>(&self, topic: &str, partition: u32, call: F) -> Result<T>
    where
        F: Fn(pubsub_proto::v1::broker_client::BrokerClient<pubsub_proto::net::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, pubsub_client::Error>>,
    {
        let mut rounds = 0;
        loop {
            let router = self.router(topic).await?;
            match router
                .on_leader(PartitionId(partition), SWITCH_AFTER, &call)
                .await
            {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retriable() && rounds < RETRIES / SWITCH_AFTER => {
                    rounds += 1;
                    router.invalidate();
                    self.switch_bootstrap().await;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads a partition from `offset`, waiting up to `wait` for records; a fetch of
    /// the same position in flight for another reader serves this one too (see
    /// `fetches`).
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        wait: Duration,
        max_bytes: u32,
    ) -> Result<ReadOutcome> {
        let request = v1::FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: max_bytes.min(FETCH_MAX_BYTES),
            max_wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
            replica_id: None,
            leader_epoch: 0,
        };
        let deadline = tokio::time::Instant::now() + wait;
        let decode = |response| self.decoded(topic, partition, offset, response);
        let result = match self.fetches.begin(topic, partition, offset, deadline) {
            Turn::Join(done) => match joined(done).await {
                Some(fetched) => Ok(fetched),
                None => self.fetch(request).await.map(decode),
            },
            Turn::Lead(lead) => {
                let result = self.fetch(request).await.map(decode);
                if let Ok(fetched) = &result {
                    lead.publish(fetched.clone());
                }
                result
            }
        };
        match result {
            Ok(fetched) => Ok(ReadOutcome::Records(fetched)),
            Err(Error::Broker(pubsub_client::Error::OutOfRange {
                range: Some((start, end)),
                ..
            })) if offset < start || offset > end => Ok(if offset < start {
                ReadOutcome::BelowStart { log_start: start }
            } else {
                ReadOutcome::AboveEnd { log_end: end }
            }),
            Err(e) => Err(e),
        }
    }

    /// One fetch from the partition's leader: the local broker's log if it leads the
    /// partition, else over gRPC.
    async fn fetch(&self, request: v1::FetchRequest) -> Result<v1::FetchResponse> {
        if let Some(local) = &self.local
            && let Some(answer) = local.fetch(&request).await
        {
            return answer.map_err(|status| pubsub_client::Error::from(status).into());
        }
        let (topic, partition) = (request.topic.clone(), request.partition);
        self.on_leader(&topic, partition, |mut stub| {
            let request = request.clone();
            async move {
                stub.fetch(request)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(pubsub_client::Error::from)
            }
        })
        .await
    }

    /// An offset of a partition: earliest, latest (high watermark) or by time.
    pub async fn offset(
        &self,
        topic: &str,
        partition: u32,
        spec: v1::list_offsets_request::Spec,
    ) -> Result<u64> {
        let request = v1::ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: Some(spec),
        };
        self.on_leader(topic, partition, |mut stub| {
            let request = request.clone();
            async move {
                stub.list_offsets(request)
                    .await
                    .map(|r| r.into_inner().offset)
                    .map_err(pubsub_client::Error::from)
            }
        })
        .await
    }

    /// Asks the broker at `address` to delete its replica's segments below `offset`.
    pub async fn delete_below(
        &self,
        address: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<v1::DeleteRecordsResponse> {
        let mut stub = self.client().await?.broker_stub_at(address)?;
        let response = stub
            .delete_records(v1::DeleteRecordsRequest {
                topic: topic.to_string(),
                partition,
                before_offset: offset,
            })
            .await
            .map_err(pubsub_client::Error::from)?;
        Ok(response.into_inner())
    }

    /// A producer to `topic` with batches of at most `batch_bytes`, creating the topic
    /// (with `partitions` partitions) first when `create` says so and it is missing.
    async fn producer_for(
        &self,
        topic: &str,
        create: Option<u32>,
        batch_bytes: usize,
    ) -> Result<Producer> {
        if let Some(partitions) = create {
            self.create_topic(pubsub_client::NewTopic {
                name: topic.to_string(),
                partitions: partitions.max(1),
                ..Default::default()
            })
            .await?;
        }
        let client = self.client().await?;
        let config = ProducerConfig {
            acks: pubsub_client::Acks::All,
            batch_bytes,
            ..ProducerConfig::default()
        };
        Ok(Producer::new(client, topic, config).await?)
    }

    /// Produces dead letters to `topic` (creating it, with `partitions` partitions, if
    /// missing) and waits until each is stored.
    pub async fn produce(
        &self,
        topic: &str,
        partitions: u32,
        records: Vec<pubsub_client::ProducerRecord>,
    ) -> Result<()> {
        let batch_bytes = ProducerConfig::default().batch_bytes;
        self.send_all(topic, Some(partitions), records, batch_bytes)
            .await?;
        Ok(())
    }

    /// Produces `records` to `topic`, which must exist, in batches of at most
    /// `batch_bytes`, and waits until every one is stored by all in-sync replicas;
    /// returns where each went, in order.
    pub(crate) async fn append(
        &self,
        topic: &str,
        records: Vec<pubsub_client::ProducerRecord>,
        batch_bytes: usize,
    ) -> Result<Vec<RecordMetadata>> {
        self.send_all(topic, None, records, batch_bytes).await
    }

    async fn send_all(
        &self,
        topic: &str,
        create: Option<u32>,
        records: Vec<pubsub_client::ProducerRecord>,
        batch_bytes: usize,
    ) -> Result<Vec<RecordMetadata>> {
        let mut producers = self.producers.lock().await;
        let producer = match producers.entry(topic.to_string()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                entry.insert(self.producer_for(topic, create, batch_bytes).await?)
            }
        };
        let sent = async {
            let mut deliveries = Vec::with_capacity(records.len());
            for record in records {
                deliveries.push(producer.send(record).await?);
            }
            producer.flush().await?;
            let mut stored = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                stored.push(delivery.wait().await?);
            }
            Ok::<_, pubsub_client::Error>(stored)
        }
        .await;
        if sent.is_err() {
            // Built on a bootstrap broker that may be gone: start afresh next time.
            producers.remove(topic);
            drop(producers);
            self.switch_bootstrap().await;
        }
        Ok(sent?)
    }

    /// Creates `topic` as `topic` says; `Ok(false)` if it already exists.
    pub(crate) async fn create_topic(&self, topic: pubsub_client::NewTopic) -> Result<bool> {
        let created = self
            .on_bootstrap(|admin| {
                let topic = topic.clone();
                async move { admin.create_topic(topic).await }
            })
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(Error::Broker(pubsub_client::Error::AlreadyExists { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The records of a fetch of `partition` from `offset`, decoded and CRC-checked
    /// (or as decoded before, see `decoded`). They are slices of the response's
    /// buffer (in process, the segment's memory map: the log never cuts below its high
    /// watermark, which they all are below), or, taken from the cache, of its own copy.
    fn decoded(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        response: v1::FetchResponse,
    ) -> Fetched {
        let origin = Origin {
            topic,
            topic_created_ms: response.topic_created_ms,
            partition,
        };
        let mut records = Vec::new();
        let undecodable = self
            .decoded
            .decode(&origin, &response.records, offset, &mut records)
            .err()
            .filter(|_| records.is_empty());
        Fetched {
            records: Arc::new(records),
            undecodable,
            high_watermark: response.high_watermark,
            log_start_offset: response.log_start_offset,
            topic_created_ms: response.topic_created_ms,
            bytes: response.records.len(),
        }
    }
}

/// A record's headers with their values as bytes.
pub(crate) fn header_pairs(record: &ConsumerRecord) -> Vec<(String, Bytes)> {
    record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect()
}
