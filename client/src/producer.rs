//! The producer: batches records per partition, compresses, pipelines batches over
//! one ordered stream per partition, retries, and reports each record's offset.
//!
//! Records flow through a bounded queue into one accumulator task that keeps a
//! [`BatchBuilder`] per partition and closes a batch when it reaches `batch_bytes` or
//! has waited `linger`. A closed batch goes to its partition's sender task
//! (`producer/sender.rs`), which keeps up to `max_in_flight` batches outstanding on a
//! `ProduceStream` to the partition's leader. The broker answers
//! a stream's requests in order and ends the stream after a failed one, so batches
//! after a failure are never appended ahead of it: the sender reopens the stream and
//! resends them, in order, after the retry.
//!
//! Delivery: at least once. A batch whose answer was lost with the connection is
//! sent again and may be stored twice; idempotent producers (issue 5) remove that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pubsub_proto::ids::PartitionId;
use pubsub_storage::{BatchBuilder, Compression, Header, ProducerStamp};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::connection::Client;
use crate::error::{Error, Result};
use crate::record::ProducerRecord;
use crate::routing::Router;
use pubsub_proto::partitioner::partition_for_key;

mod sender;

use sender::PartitionSender;

/// How many replicas must have a batch before it counts as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Acks {
    /// Do not wait for an answer; offsets are not reported.
    None,
    /// The leader has appended it.
    #[default]
    Leader,
    /// Every in-sync replica has it.
    All,
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "none" | "0" => Ok(Acks::None),
            "leader" | "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!(
                "unknown acks {other:?}: expected none, leader or all"
            )),
        }
    }
}

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Close a batch once its encoded size would pass this (before compression).
    pub batch_bytes: usize,
    /// Close a batch once its first record has waited this long, checked every
    /// `linger / 2` and at least every millisecond: 0, the default, closes a batch
    /// within a millisecond. At a million records a second that is still a batch of
    /// about a thousand, and the broker shares one fsync among a stream's requests in
    /// flight, so a longer linger buys latency, not throughput (docs/performance.md).
    pub linger: Duration,
    /// Codec applied to each batch.
    pub compression: Compression,
    /// Acknowledgement level.
    pub acks: Acks,
    /// Batches outstanding per partition.
    pub max_in_flight: usize,
    /// Retries of a batch that failed with a retriable error.
    pub retries: u32,
    /// First retry delay; doubles per attempt up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// Cap on the retry delay.
    pub retry_backoff_max: Duration,
    /// Number batches per partition so the broker drops a retried batch it already
    /// stored and refuses one out of order (an idempotent producer).
    pub idempotence: bool,
    /// How often the producer looks for partitions added to its topic, and starts
    /// using them (Kafka's `metadata.max.age.ms`).
    pub metadata_max_age: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_bytes: 256 << 10,
            linger: Duration::ZERO,
            compression: Compression::None,
            acks: Acks::Leader,
            max_in_flight: 4,
            retries: 8,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(2),
            idempotence: true,
            metadata_max_age: Duration::from_secs(30),
        }
    }
}

/// Where a sent record was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: PartitionId,
    /// Its offset; `None` with `Acks::None`.
    pub offset: Option<u64>,
}

/// The outcome of one batch, shared by all its records.
type BatchOutcome = Option<Result<Option<u64>>>;

/// Resolves to a record's [`RecordMetadata`] once its batch is acknowledged.
pub struct Delivery {
    outcome: watch::Receiver<BatchOutcome>,
    partition: u32,
    index: u32,
}

impl Delivery {
    /// Waits for the record's batch to be acknowledged (or to fail for good).
    pub async fn wait(mut self) -> Result<RecordMetadata> {
        let outcome = self
            .outcome
            .wait_for(|o| o.is_some())
            .await
            .map_err(|_| Error::Closed)?;
        match outcome.as_ref() {
            Some(Ok(base)) => Ok(RecordMetadata {
                partition: PartitionId(self.partition),
                offset: base.map(|b| b + u64::from(self.index)),
            }),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::Closed),
        }
    }
}

/// Sends records to one topic. Cheap to clone; all clones feed the same batches.
///
/// Records go straight into the partition's open batch under a lock (no hand-over
/// between tasks per record); a background task closes batches whose linger expired.
/// Call [`Producer::flush`] before dropping the last clone to wait for everything sent;
/// dropping it still sends what is queued, but nobody waits for the answers.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    accumulator: tokio::sync::Mutex<Option<Accumulator>>,
    /// The topic's partition count as last seen; only grows.
    partitions: AtomicU32,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Send the batches still open; their records were accepted by `send`.
        if let (Some(mut accumulator), Ok(runtime)) = (
            self.accumulator.get_mut().take(),
            tokio::runtime::Handle::try_current(),
        ) {
            runtime.spawn(async move {
                accumulator.close_all().await;
            });
        }
    }
}

impl Producer {
    /// A producer for `topic`; learns the partition count from the server.
    pub async fn new(client: Client, topic: &str, config: ProducerConfig) -> Result<Producer> {
        let description = crate::admin::Admin::new(client.clone())
            .describe_topic(topic)
            .await?;
        let partitions = description.topic.map_or(0, |t| t.partitions.len() as u32);
        if partitions == 0 {
            return Err(Error::Decode(format!("topic {topic:?} has no partitions")));
        }
        if config.max_in_flight == 0 || config.batch_bytes == 0 {
            return Err(Error::InvalidArgument(
                "max_in_flight and batch_bytes must be positive".into(),
            ));
        }
        let tick = (config.linger / 2).max(Duration::from_millis(1));
        let max_age = config.metadata_max_age;
        let accumulator = Accumulator::new(client.clone(), topic.to_string(), partitions, config);
        let shared = Arc::new(Shared {
            accumulator: tokio::sync::Mutex::new(Some(accumulator)),
            partitions: AtomicU32::new(partitions),
        });
        tokio::spawn(linger(Arc::downgrade(&shared), tick));
        let watch = watch_partitions(Arc::downgrade(&shared), client, topic.to_string(), max_age);
        tokio::spawn(watch);
        Ok(Producer { shared })
    }

    /// Number of partitions of the topic, as last seen.
    pub fn partitions(&self) -> u32 {
        self.shared.partitions.load(Ordering::Acquire)
    }

    /// Adds a record to its partition's batch; waits only while that partition has
    /// `max_in_flight` batches outstanding and one more full. The returned [`Delivery`]
    /// resolves once the record is stored.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        if let Some(PartitionId(p)) = record.partition
            && p >= self.partitions()
        {
            return Err(Error::InvalidArgument(format!(
                "partition {p} does not exist: the topic has {} partitions",
                self.partitions()
            )));
        }
        let mut guard = self.shared.accumulator.lock().await;
        let accumulator = guard.as_mut().ok_or(Error::Closed)?;
        Ok(accumulator.add(record).await)
    }

    /// Sends everything queued so far now, without waiting for linger, and waits
    /// until all of it is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let waits = {
            let mut guard = self.shared.accumulator.lock().await;
            guard.as_mut().ok_or(Error::Closed)?.close_all().await
        };
        for mut wait in waits {
            let _ = wait.wait_for(|o| o.is_some()).await;
        }
        Ok(())
    }
}

/// Closes batches whose linger expired, until the producer is gone.
async fn linger(shared: std::sync::Weak<Shared>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut guard = shared.accumulator.lock().await;
        match guard.as_mut() {
            Some(accumulator) => accumulator.close_expired().await,
            None => return,
        }
    }
}

/// Looks for added partitions every `period` and hands them to the accumulator, until
/// the producer is gone. A failed lookup is tried again next period.
async fn watch_partitions(
    shared: std::sync::Weak<Shared>,
    client: Client,
    topic: String,
    period: Duration,
) {
    let admin = crate::admin::Admin::new(client);
    loop {
        tokio::time::sleep(period).await;
        if shared.strong_count() == 0 {
            return;
        }
        let Ok(description) = admin.describe_topic(&topic).await else {
            continue;
        };
        let seen = description.topic.map_or(0, |t| t.partitions.len() as u32);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if seen > shared.partitions.load(Ordering::Acquire) {
            let mut guard = shared.accumulator.lock().await;
            if let Some(accumulator) = guard.as_mut() {
                accumulator.grow(seen);
                shared.partitions.store(seen, Ordering::Release);
            }
        }
    }
}

/// A batch being filled for one partition.
struct OpenBatch {
    builder: BatchBuilder,
    outcome: watch::Sender<BatchOutcome>,
    opened: Instant,
}

/// A closed batch on its way to the broker.
struct ClosedBatch {
    bytes: Bytes,
    records: u32,
    outcome: watch::Sender<BatchOutcome>,
    attempts: u32,
    /// Sent at least once: the broker may hold it, so it keeps its numbering for good
    /// (renumbered, a stored copy could not be recognized and would be duplicated).
    sent: bool,
}

struct Accumulator {
    client: Client,
    /// This producer's id for idempotence (random, so no coordinator is needed), or -1.
    producer_id: i64,
    router: Arc<Router>,
    topic: String,
    config: ProducerConfig,
    open: Vec<Option<OpenBatch>>,
    senders: Vec<Option<mpsc::Sender<ClosedBatch>>>,
    /// Outcome of each partition's newest closed batch: batches of a partition finish
    /// in order, so waiting for it waits for all of them.
    last_closed: Vec<Option<watch::Receiver<BatchOutcome>>>,
    sticky: u32,
    partitions: u32,
}

impl Accumulator {
    fn new(client: Client, topic: String, partitions: u32, config: ProducerConfig) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let producer_id = if config.idempotence {
            pubsub_proto::ids::random_producer_id()
        } else {
            -1
        };
        Accumulator {
            producer_id,
            router: Arc::new(Router::new(client.clone(), &topic)),
            client,
            topic,
            config,
            open: (0..partitions).map(|_| None).collect(),
            senders: (0..partitions).map(|_| None).collect(),
            last_closed: (0..partitions).map(|_| None).collect(),
            sticky: seed % partitions,
            partitions,
        }
    }

    /// Starts using partitions up to `partitions` (the topic gained some).
    fn grow(&mut self, partitions: u32) {
        let count = partitions as usize;
        self.open.resize_with(count, || None);
        self.senders.resize_with(count, || None);
        self.last_closed.resize_with(count, || None);
        self.partitions = partitions;
    }

    async fn add(&mut self, record: ProducerRecord) -> Delivery {
        let partition = match (record.partition, &record.key) {
            (Some(PartitionId(p)), _) => p,
            (None, Some(key)) => partition_for_key(key, self.partitions),
            (None, None) => self.sticky,
        };
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(k, v)| Header {
                key: k,
                value: Some(v),
            })
            .collect();
        let size =
            BatchBuilder::record_bytes(record.key.as_deref(), record.value.as_deref(), &headers);
        let full = self.open[partition as usize].as_ref().is_some_and(|b| {
            !b.builder.is_empty() && b.builder.estimated_bytes() + size > self.config.batch_bytes
        });
        if full {
            self.close(partition).await;
        }
        let batch = self.open[partition as usize].get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(),
            outcome: watch::Sender::new(None),
            opened: Instant::now(),
        });
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let index = batch.builder.len();
        batch.builder.push(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        let delivery = Delivery {
            outcome: batch.outcome.subscribe(),
            partition,
            index,
        };
        if batch.builder.estimated_bytes() >= self.config.batch_bytes {
            self.close(partition).await;
        }
        delivery
    }

    async fn close_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<u32> = (0..self.partitions)
            .filter(|&p| {
                self.open[p as usize]
                    .as_ref()
                    .is_some_and(|b| b.opened + self.config.linger <= now)
            })
            .collect();
        for partition in expired {
            self.close(partition).await;
        }
    }

    /// Closes every open batch; returns the outcome of each partition's newest batch.
    async fn close_all(&mut self) -> Vec<watch::Receiver<BatchOutcome>> {
        for partition in 0..self.partitions {
            self.close(partition).await;
        }
        self.last_closed.iter().flatten().cloned().collect()
    }

    /// Encodes the partition's open batch and hands it to the partition's sender.
    async fn close(&mut self, partition: u32) -> Option<watch::Receiver<BatchOutcome>> {
        let mut open = self.open[partition as usize].take()?;
        if partition == self.sticky {
            self.sticky = (self.sticky + 1) % self.partitions;
        }
        let wait = open.outcome.subscribe();
        self.last_closed[partition as usize] = Some(wait.clone());
        // An idempotent producer's sender stamps id and sequence as it first sends,
        // and computes the CRC then: once per batch.
        let seal = self.producer_id < 0;
        let records = open.builder.len();
        let bytes = match open
            .builder
            .finish(self.config.compression, ProducerStamp::NONE, seal)
        {
            Ok(Some(bytes)) => Bytes::from(bytes),
            Ok(None) => return None,
            Err(e) => {
                open.outcome
                    .send_replace(Some(Err(Error::InvalidArgument(e.to_string()))));
                return Some(wait);
            }
        };
        let sender = self.sender(partition);
        let batch = ClosedBatch {
            bytes,
            records,
            outcome: open.outcome,
            attempts: 0,
            sent: false,
        };
        if let Err(mpsc::error::SendError(batch)) = sender.send(batch).await {
            batch.outcome.send_replace(Some(Err(Error::Closed)));
        }
        Some(wait)
    }

    fn sender(&mut self, partition: u32) -> mpsc::Sender<ClosedBatch> {
        self.senders[partition as usize]
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.max_in_flight);
                let sender = PartitionSender::new(
                    self.client.clone(),
                    self.router.clone(),
                    &self.topic,
                    partition,
                    self.config.clone(),
                    self.producer_id,
                );
                tokio::spawn(sender.run(rx));
                tx
            })
            .clone()
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it): the
/// timestamp records get when the caller sets none.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
