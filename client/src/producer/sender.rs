//! One partition's sender: keeps up to `max_in_flight` batches outstanding on a
//! `ProduceStream` to the partition's leader, numbers them for the idempotent
//! producer, and after a failure reopens the stream and resends what is outstanding,
//! in order, once the partition has a new leader or the backoff has passed.

use std::collections::VecDeque;
use std::sync::Arc;

use pubsub_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::{Acks, ClosedBatch, ProducerConfig};
use crate::connection::Client;
use crate::error::Error;
use crate::routing::Router;

/// Sends one partition's batches over an ordered stream, keeping several in flight.
pub(super) struct PartitionSender {
    client: Client,
    router: Arc<Router>,
    topic: String,
    partition: u32,
    config: ProducerConfig,
    producer_id: i64,
    numbering: std::sync::Mutex<Numbering>,
}

/// The producer epoch and next sequence number of one partition's batches.
#[derive(Default)]
struct Numbering {
    epoch: i16,
    next_sequence: i32,
}

/// Why a stream session ended.
enum SessionEnd {
    /// The batch queue closed and nothing is outstanding.
    Done,
    /// The stream failed; outstanding batches are to be resent after a backoff, or
    /// as soon as the partition has a leader other than `failed_leader`.
    Retry { failed_leader: Option<String> },
}

impl PartitionSender {
    /// A sender of `partition`'s batches; nothing is sent until [`run`](Self::run).
    pub(super) fn new(
        client: Client,
        router: Arc<Router>,
        topic: &str,
        partition: u32,
        config: ProducerConfig,
        producer_id: i64,
    ) -> Self {
        PartitionSender {
            client,
            router,
            topic: topic.to_string(),
            partition,
            config,
            producer_id,
            numbering: std::sync::Mutex::new(Numbering::default()),
        }
    }

    /// Sends the batches of `queue` until it closes and nothing is outstanding.
    pub(super) async fn run(self, mut queue: mpsc::Receiver<ClosedBatch>) {
        let mut outstanding: VecDeque<ClosedBatch> = VecDeque::new();
        let mut failures = 0u32;
        loop {
            match self
                .session(&mut queue, &mut outstanding, &mut failures)
                .await
            {
                SessionEnd::Done => return,
                SessionEnd::Retry { failed_leader } => {
                    failures += 1;
                    let backoff = self
                        .config
                        .retry_backoff
                        .saturating_mul(1 << failures.min(16))
                        .min(self.config.retry_backoff_max);
                    match failed_leader {
                        Some(leader) => {
                            self.router
                                .await_new_leader(self.partition, &leader, backoff)
                                .await
                        }
                        None => tokio::time::sleep(backoff).await,
                    }
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
        // A failure must be charged to a batch, or an unreachable leader would be
        // retried forever while batches queue up: have one before connecting.
        if outstanding.is_empty() {
            match queue.recv().await {
                Some(mut batch) => {
                    self.number(&mut batch);
                    outstanding.push_back(batch);
                }
                None => return SessionEnd::Done,
            }
        }
        let leader = match self.router.leader(self.partition).await {
            Ok(address) => address,
            Err(error) => return self.fail_attempt(outstanding, error, None),
        };
        let mut stub = match self.client.broker_stub_at(&leader) {
            Ok(stub) => stub,
            Err(error) => return self.fail_attempt(outstanding, error, Some(&leader)),
        };
        let (requests, request_stream) = mpsc::channel(self.config.max_in_flight + 1);
        let open = stub.produce_stream(tokio_stream::wrappers::ReceiverStream::new(request_stream));
        for (i, batch) in outstanding.iter_mut().enumerate() {
            batch.sent = true;
            if requests.send(self.request(batch, i as u64)).await.is_err() {
                break;
            }
        }
        let mut responses = match open.await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return self.fail_attempt(outstanding, link_error(&leader, status), Some(&leader));
            }
        };
        let mut queue_open = true;
        loop {
            if !queue_open && outstanding.is_empty() {
                return SessionEnd::Done;
            }
            tokio::select! {
                batch = queue.recv(), if queue_open && outstanding.len() < self.config.max_in_flight => match batch {
                    Some(mut batch) => {
                        self.number(&mut batch);
                        batch.sent = true;
                        let request = self.request(&batch, 0);
                        if self.config.acks == Acks::None {
                            batch.outcome.send_replace(Some(Ok(None)));
                        }
                        outstanding.push_back(batch);
                        if requests.send(request).await.is_err() {
                            return SessionEnd::Retry { failed_leader: Some(leader) };
                        }
                    }
                    None => queue_open = false,
                },
                response = responses.next() => match response {
                    Some(Ok(response)) => {
                        let Some(batch) = outstanding.pop_front() else {
                            return SessionEnd::Retry { failed_leader: None };
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
                                let error = Error::from_code(code, error.message, error.leader_address, None);
                                return self.fail_attempt(outstanding, error, Some(&leader));
                            }
                        }
                    }
                    Some(Err(status)) => return self.fail_attempt(outstanding, link_error(&leader, status), Some(&leader)),
                    None => {
                        let closed = Error::Transport { address: leader.clone(), message: "produce stream closed".into() };
                        return self.fail_attempt(outstanding, closed, Some(&leader));
                    }
                },
            }
        }
    }

    /// Gives a batch its producer id, epoch and sequence numbers as it is first sent.
    fn number(&self, batch: &mut ClosedBatch) {
        if self.producer_id < 0 {
            return;
        }
        let Ok(mut numbering) = self.numbering.lock() else {
            return;
        };
        // Unsent batches are unshared, so this rewrites them in place; only a batch
        // renumbered after a failure (its bytes still held by a request) is copied.
        let mut bytes = std::mem::take(&mut batch.bytes)
            .try_into_mut()
            .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
        pubsub_storage::batch::restamp_producer(
            &mut bytes,
            self.producer_id,
            numbering.epoch,
            numbering.next_sequence,
        );
        batch.bytes = bytes.freeze();
        numbering.next_sequence =
            numbering.next_sequence.wrapping_add(batch.records as i32) & i32::MAX;
    }

    /// After a batch failed for good, the ones behind it would leave a gap in the
    /// sequence: start a new producer epoch and number them again from 0.
    fn renumber(&self, outstanding: &mut VecDeque<ClosedBatch>) {
        if self.producer_id < 0 {
            return;
        }
        if let Ok(mut numbering) = self.numbering.lock() {
            numbering.epoch = numbering.epoch.wrapping_add(1) & i16::MAX;
            numbering.next_sequence = 0;
        }
        for batch in outstanding.iter_mut() {
            self.number(batch);
        }
    }

    /// Charges an attempt to the first outstanding batch; fails it for good if the
    /// error is not retriable or it is out of retries. `leader` is the broker the
    /// attempt went to, if it got that far.
    fn fail_attempt(
        &self,
        outstanding: &mut VecDeque<ClosedBatch>,
        error: Error,
        leader: Option<&str>,
    ) -> SessionEnd {
        // The leader may have moved: follow the broker's hint, or look it up again.
        self.router.learn_from(self.partition, &error);
        if let Some(first) = outstanding.front_mut() {
            first.attempts += 1;
            let retriable = error.is_retriable() || error.may_be_metadata_lag();
            if !retriable || first.attempts > self.config.retries {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %error, "batch failed");
                if let Some(batch) = outstanding.pop_front() {
                    batch.outcome.send_replace(Some(Err(error.clone())));
                }
                // Batches already sent have an unknown outcome: they fail with it rather
                // than go out again under new numbers the broker cannot match.
                let unknown = Error::OutcomeUnknown(format!(
                    "sent to partition {} of {:?} behind a batch that failed ({error})",
                    self.partition, self.topic
                ));
                while outstanding.front().is_some_and(|b| b.sent) {
                    if let Some(batch) = outstanding.pop_front() {
                        batch.outcome.send_replace(Some(Err(unknown.clone())));
                    }
                }
                self.renumber(outstanding);
            } else {
                tracing::debug!(topic = %self.topic, partition = self.partition, error = %error, "retrying batch");
            }
        }
        SessionEnd::Retry {
            failed_leader: leader.map(str::to_string),
        }
    }
}

/// The error for a status that ended a produce stream (rather than one answer on it):
/// the link broke or the server failed outside any request, so whatever was in flight
/// has an unknown outcome and is retried with the same numbering, which the broker
/// recognizes if it stored it. h2 reports a peer that vanished as UNKNOWN, INTERNAL or
/// CANCELLED; only a deliberate refusal keeps its code.
fn link_error(leader: &str, status: tonic::Status) -> Error {
    let transient = pubsub_proto::net::is_transient(status.code());
    if (transient && status.code() != tonic::Code::Aborted)
        || status.code() == tonic::Code::Internal
    {
        return Error::Transport {
            address: leader.to_string(),
            message: status.message().to_string(),
        };
    }
    Error::from(status)
}
