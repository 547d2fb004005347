//! The producer: batches records per partition, compresses, pipelines batches over
//! one ordered stream per partition, retries, and reports each record's offset.
//!
//! Records flow through a bounded queue into one accumulator task that keeps a
//! [`BatchBuilder`] per partition and closes a batch when it reaches `batch_bytes` or
//! has waited `linger`. A closed batch goes to its partition's sender task, which keeps
//! up to `max_in_flight` batches outstanding on a `ProduceStream`. The broker answers
//! a stream's requests in order and ends the stream after a failed one, so batches
//! after a failure are never appended ahead of it: the sender reopens the stream and
//! resends them, in order, after the retry.
//!
//! Delivery: at least once. A batch whose answer was lost with the connection is
//! sent again and may be stored twice; idempotent producers (issue 5) remove that.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pubsub_proto::v1;
use pubsub_storage::{BatchBuilder, Compression, Header, ProducerStamp};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::connection::Client;
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::record::ProducerRecord;
use crate::routing::Router;

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
    /// Close a batch once its first record has waited this long.
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
    /// Records queued before `send` waits: bounds the producer's memory.
    pub queue_records: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_bytes: 256 << 10,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            acks: Acks::Leader,
            max_in_flight: 4,
            retries: 8,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(2),
            queue_records: 65_536,
        }
    }
}

/// Where a sent record was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: u32,
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
                partition: self.partition,
                offset: base.map(|b| b + u64::from(self.index)),
            }),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::Closed),
        }
    }
}

enum Command {
    Send(ProducerRecord, oneshot::Sender<Delivery>),
    Flush(oneshot::Sender<()>),
}

/// Sends records to one topic. Cheap to clone; all clones feed the same batches.
#[derive(Clone)]
pub struct Producer {
    commands: mpsc::Sender<Command>,
    partitions: u32,
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
        let (commands, inbox) = mpsc::channel(config.queue_records.max(1));
        let accumulator = Accumulator::new(client, topic.to_string(), partitions, config);
        tokio::spawn(accumulator.run(inbox));
        Ok(Producer {
            commands,
            partitions,
        })
    }

    /// Number of partitions of the topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Queues a record; waits only while the queue is full. The returned [`Delivery`]
    /// resolves once the record is stored.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        if let Some(p) = record.partition
            && p >= self.partitions
        {
            return Err(Error::InvalidArgument(format!(
                "partition {p} does not exist: the topic has {} partitions",
                self.partitions
            )));
        }
        let (reply, delivery) = oneshot::channel();
        self.commands
            .send(Command::Send(record, reply))
            .await
            .map_err(|_| Error::Closed)?;
        delivery.await.map_err(|_| Error::Closed)
    }

    /// Sends everything queued so far now, without waiting for linger, and waits
    /// until all of it is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .await
            .map_err(|_| Error::Closed)?;
        wait.await.map_err(|_| Error::Closed)
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
    outcome: watch::Sender<BatchOutcome>,
    attempts: u32,
}

struct Accumulator {
    client: Client,
    router: Arc<Router>,
    topic: String,
    config: ProducerConfig,
    open: Vec<Option<OpenBatch>>,
    senders: Vec<Option<mpsc::Sender<ClosedBatch>>>,
    sticky: u32,
    partitions: u32,
}

impl Accumulator {
    fn new(client: Client, topic: String, partitions: u32, config: ProducerConfig) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Accumulator {
            router: Arc::new(Router::new(client.clone(), &topic)),
            client,
            topic,
            config,
            open: (0..partitions).map(|_| None).collect(),
            senders: (0..partitions).map(|_| None).collect(),
            sticky: seed % partitions,
            partitions,
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        loop {
            let deadline = self
                .open
                .iter()
                .flatten()
                .map(|b| b.opened + self.config.linger)
                .min();
            let command = tokio::select! {
                command = inbox.recv() => command,
                _ = sleep_until(deadline) => {
                    self.close_expired().await;
                    continue;
                }
            };
            match command {
                Some(Command::Send(record, reply)) => {
                    let delivery = self.add(record).await;
                    let _ = reply.send(delivery);
                }
                Some(Command::Flush(done)) => {
                    let waits = self.close_all().await;
                    tokio::spawn(async move {
                        for mut wait in waits {
                            let _ = wait.wait_for(|o| o.is_some()).await;
                        }
                        let _ = done.send(());
                    });
                }
                None => {
                    self.close_all().await;
                    return;
                }
            }
        }
    }

    async fn add(&mut self, record: ProducerRecord) -> Delivery {
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
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

    async fn close_all(&mut self) -> Vec<watch::Receiver<BatchOutcome>> {
        let mut waits = Vec::new();
        for partition in 0..self.partitions {
            if let Some(wait) = self.close(partition).await {
                waits.push(wait);
            }
        }
        waits
    }

    /// Encodes the partition's open batch and hands it to the partition's sender.
    async fn close(&mut self, partition: u32) -> Option<watch::Receiver<BatchOutcome>> {
        let open = self.open[partition as usize].take()?;
        if partition == self.sticky {
            self.sticky = (self.sticky + 1) % self.partitions;
        }
        let wait = open.outcome.subscribe();
        let bytes = match open
            .builder
            .build(self.config.compression, ProducerStamp::NONE)
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
            outcome: open.outcome,
            attempts: 0,
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
                let sender = PartitionSender {
                    client: self.client.clone(),
                    router: self.router.clone(),
                    topic: self.topic.clone(),
                    partition,
                    config: self.config.clone(),
                };
                tokio::spawn(sender.run(rx));
                tx
            })
            .clone()
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends one partition's batches over an ordered stream, keeping several in flight.
struct PartitionSender {
    client: Client,
    router: Arc<Router>,
    topic: String,
    partition: u32,
    config: ProducerConfig,
}

/// Why a stream session ended.
enum SessionEnd {
    /// The batch queue closed and nothing is outstanding.
    Done,
    /// The stream failed; outstanding batches are to be resent after a backoff.
    Retry,
}

impl PartitionSender {
    async fn run(self, mut queue: mpsc::Receiver<ClosedBatch>) {
        let mut outstanding: VecDeque<ClosedBatch> = VecDeque::new();
        let mut failures = 0u32;
        loop {
            match self
                .session(&mut queue, &mut outstanding, &mut failures)
                .await
            {
                SessionEnd::Done => return,
                SessionEnd::Retry => {
                    failures += 1;
                    let backoff = self
                        .config
                        .retry_backoff
                        .saturating_mul(1 << failures.min(16))
                        .min(self.config.retry_backoff_max);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    fn request(&self, batch: &ClosedBatch, correlation_id: u64) -> v1::ProduceRequest {
        let acks = match self.config.acks {
            Acks::None => v1::Acks::None,
            Acks::Leader => v1::Acks::Leader,
            Acks::All => v1::Acks::All,
        };
        v1::ProduceRequest {
            topic: self.topic.clone(),
            partition: self.partition,
            acks: acks as i32,
            batches: vec![batch.bytes.clone()],
            correlation_id,
        }
    }

    /// One stream: resend what is outstanding, then pipeline new batches until the
    /// queue closes or the stream fails.
    async fn session(
        &self,
        queue: &mut mpsc::Receiver<ClosedBatch>,
        outstanding: &mut VecDeque<ClosedBatch>,
        failures: &mut u32,
    ) -> SessionEnd {
        let leader = match self.router.leader(self.partition).await {
            Ok(address) => address,
            Err(error) => return self.fail_attempt(outstanding, error),
        };
        let mut stub = match self.client.broker_stub_at(&leader) {
            Ok(stub) => stub,
            Err(error) => return self.fail_attempt(outstanding, error),
        };
        let (requests, request_stream) = mpsc::channel(self.config.max_in_flight + 1);
        let open = stub.produce_stream(tokio_stream::wrappers::ReceiverStream::new(request_stream));
        for (i, batch) in outstanding.iter().enumerate() {
            if requests.send(self.request(batch, i as u64)).await.is_err() {
                break;
            }
        }
        let mut responses = match open.await {
            Ok(response) => response.into_inner(),
            Err(status) => return self.fail_attempt(outstanding, Error::from(status)),
        };
        let mut queue_open = true;
        loop {
            if !queue_open && outstanding.is_empty() {
                return SessionEnd::Done;
            }
            tokio::select! {
                batch = queue.recv(), if queue_open && outstanding.len() < self.config.max_in_flight => match batch {
                    Some(batch) => {
                        let request = self.request(&batch, 0);
                        if self.config.acks == Acks::None {
                            batch.outcome.send_replace(Some(Ok(None)));
                        }
                        outstanding.push_back(batch);
                        if requests.send(request).await.is_err() {
                            return SessionEnd::Retry;
                        }
                    }
                    None => queue_open = false,
                },
                response = responses.next() => match response {
                    Some(Ok(response)) => {
                        let Some(batch) = outstanding.pop_front() else {
                            return SessionEnd::Retry;
                        };
                        match response.error {
                            None => {
                                *failures = 0;
                                let base = response.base_offsets.first().copied();
                                batch.outcome.send_replace(Some(Ok(base)));
                            }
                            Some(error) => {
                                // The broker ends the stream after a failed request;
                                // later batches were not appended and are resent.
                                outstanding.push_front(batch);
                                let code = tonic::Code::from_i32(error.code);
                                let error = Error::Server { code, message: error.message, valid_range: None };
                                return self.fail_attempt(outstanding, error);
                            }
                        }
                    }
                    Some(Err(status)) => return self.fail_attempt(outstanding, Error::from(status)),
                    None => return self.fail_attempt(outstanding, Error::Transport {
                        address: self.client.address().to_string(),
                        message: "produce stream closed".into(),
                    }),
                },
            }
        }
    }

    /// Charges an attempt to the first outstanding batch; fails it for good if the
    /// error is not retriable or it is out of retries.
    fn fail_attempt(&self, outstanding: &mut VecDeque<ClosedBatch>, error: Error) -> SessionEnd {
        // The leader may have moved: look it up again before the next attempt.
        self.router.invalidate();
        if let Some(first) = outstanding.front_mut() {
            first.attempts += 1;
            if !error.is_retriable() || first.attempts > self.config.retries {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %error, "batch failed");
                if let Some(batch) = outstanding.pop_front() {
                    batch.outcome.send_replace(Some(Err(error)));
                }
            } else {
                tracing::debug!(topic = %self.topic, partition = self.partition, error = %error, "retrying batch");
            }
        }
        SessionEnd::Retry
    }
}
