//! Subscriptions through the consumer manager: create and delete them, read with
//! acks (pull), or receive a push stream with credit-based flow control; presence,
//! history and dead-letter replay.
//!
//! ```no_run
//! # async fn demo() -> pubsub_client::Result<()> {
//! use pubsub_client::{Client, Subscriptions};
//! let client = Client::connect("127.0.0.1:9392").await?;
//! let subscriptions = Subscriptions::new(client);
//! subscriptions.subscribe("orders", "billing", Default::default()).await?;
//! let mut stream = subscriptions.stream("billing", "", 100).await?;
//! while let Some(record) = stream.next_record().await? {
//!     println!("{:?}", record.value);
//!     stream.ack(record.partition, record.offset).await?;
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use pubsub_proto::net::Channel;
use pubsub_proto::v1;
use pubsub_proto::v1::consumer_manager_client::ConsumerManagerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connection::Client;
use crate::error::{Error, Result};

/// Messages queued toward the server on a stream (acks, credits, heartbeats).
const STREAM_QUEUE: usize = 1_024;

/// Subscription operations over a [`Client`] connected to a consumer manager (in
/// standalone, the server's one address).
#[derive(Clone, Debug)]
pub struct Subscriptions {
    stub: ConsumerManagerClient<Channel>,
}

impl Subscriptions {
    /// Subscription operations on `client`'s server.
    pub fn new(client: Client) -> Self {
        Subscriptions {
            stub: client.consumer_manager_stub(),
        }
    }

    /// Creates a durable subscription (or finds the identical existing one).
    pub async fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        options: v1::SubscriptionOptions,
    ) -> Result<v1::SubscribeResponse> {
        Ok(self
            .stub
            .clone()
            .subscribe(v1::SubscribeRequest {
                topic: topic.into(),
                subscription: subscription.into(),
                options: Some(options),
            })
            .await?
            .into_inner())
    }

    /// Deletes a subscription with its offsets.
    pub async fn unsubscribe(&self, topic: &str, subscription: &str) -> Result<()> {
        self.stub
            .clone()
            .unsubscribe(v1::UnsubscribeRequest {
                topic: topic.into(),
                subscription: subscription.into(),
            })
            .await?;
        Ok(())
    }

    /// Subscriptions (of a topic, or one by name; empty strings for all) with lag.
    pub async fn list(&self, topic: &str, subscription: &str) -> Result<Vec<v1::SubscriptionInfo>> {
        Ok(self
            .stub
            .clone()
            .list_subscriptions(v1::ListSubscriptionsRequest {
                topic: topic.into(),
                subscription: subscription.into(),
            })
            .await?
            .into_inner()
            .subscriptions)
    }

    /// Joins a group subscription (or heartbeats with a known member id).
    pub async fn join(&self, subscription: &str, member_id: &str) -> Result<v1::JoinGroupResponse> {
        Ok(self
            .stub
            .clone()
            .join_group(v1::JoinGroupRequest {
                subscription: subscription.into(),
                member_id: member_id.into(),
            })
            .await?
            .into_inner())
    }

    /// Leaves a group at once.
    pub async fn leave(&self, subscription: &str, member_id: &str) -> Result<()> {
        self.stub
            .clone()
            .leave_group(v1::LeaveGroupRequest {
                subscription: subscription.into(),
                member_id: member_id.into(),
            })
            .await?;
        Ok(())
    }

    /// Pull: up to `max` records, waiting up to `wait` for the first.
    pub async fn read(
        &self,
        subscription: &str,
        member_id: &str,
        generation: u64,
        max: u32,
        wait: Duration,
    ) -> Result<v1::ReadResponse> {
        Ok(self
            .stub
            .clone()
            .read(v1::ReadRequest {
                subscription: subscription.into(),
                max_records: max,
                max_wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
                member_id: member_id.into(),
                generation,
            })
            .await?
            .into_inner())
    }

    /// Acknowledges records (durable when this returns).
    pub async fn ack(
        &self,
        subscription: &str,
        member_id: &str,
        generation: u64,
        records: &[(u32, u64)],
    ) -> Result<()> {
        self.stub
            .clone()
            .ack(v1::AckRequest {
                subscription: subscription.into(),
                records: ids(records),
                member_id: member_id.into(),
                generation,
            })
            .await?;
        Ok(())
    }

    /// Gives records back for immediate redelivery.
    pub async fn nack(
        &self,
        subscription: &str,
        member_id: &str,
        generation: u64,
        records: &[(u32, u64)],
    ) -> Result<()> {
        self.stub
            .clone()
            .nack(v1::NackRequest {
                subscription: subscription.into(),
                records: ids(records),
                member_id: member_id.into(),
                generation,
            })
            .await?;
        Ok(())
    }

    /// Moves a subscription's position.
    pub async fn seek(
        &self,
        subscription: &str,
        partition: Option<u32>,
        target: v1::seek_request::Target,
    ) -> Result<Vec<v1::PartitionLag>> {
        Ok(self
            .stub
            .clone()
            .seek(v1::SeekRequest {
                subscription: subscription.into(),
                partition,
                target: Some(target),
            })
            .await?
            .into_inner()
            .partitions)
    }

    /// Who is connected to a topic's subscriptions (or one subscription).
    pub async fn presence(&self, topic: &str, subscription: &str) -> Result<Vec<v1::MemberInfo>> {
        Ok(self
            .stub
            .clone()
            .presence(v1::PresenceRequest {
                topic: topic.into(),
                subscription: subscription.into(),
            })
            .await?
            .into_inner()
            .members)
    }

    /// History of a topic as offset-range reads.
    pub async fn history(&self, request: v1::HistoryRequest) -> Result<Vec<v1::HistoryPartition>> {
        Ok(self
            .stub
            .clone()
            .history(request)
            .await?
            .into_inner()
            .partitions)
    }

    /// Moves dead letters back to the subscription's topic; returns how many.
    pub async fn replay_dead_letters(&self, subscription: &str, max: u64) -> Result<u64> {
        Ok(self
            .stub
            .clone()
            .replay_dead_letters(v1::ReplayDeadLettersRequest {
                subscription: subscription.into(),
                max_records: max,
            })
            .await?
            .into_inner()
            .replayed)
    }

    /// Opens a push stream holding at most `credits` unacknowledged records. A
    /// heartbeat goes out every `heartbeat` so the member stays present while idle.
    ///
    /// Read the stream or drop it: records it has not read hold its connection's
    /// HTTP/2 flow-control window, and other calls over the same [`Client`] wait
    /// behind them. A stream that may sit unread belongs on a `Client` of its own.
    pub async fn stream(
        &self,
        subscription: &str,
        member_id: &str,
        credits: u32,
    ) -> Result<SubscriberStream> {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        let open = v1::StreamRequest {
            kind: Some(v1::stream_request::Kind::Open(v1::StreamOpen {
                subscription: subscription.into(),
                member_id: member_id.into(),
                credits,
            })),
        };
        sender.send(open).await.map_err(|_| Error::Closed)?;
        let inbound = self
            .stub
            .clone()
            .stream(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        let heartbeat = {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let beat = v1::StreamRequest {
                        kind: Some(v1::stream_request::Kind::Heartbeat(true)),
                    };
                    if sender.send(beat).await.is_err() {
                        break;
                    }
                }
            })
        };
        Ok(SubscriberStream {
            inbound,
            sender,
            heartbeat,
            assignment: None,
            skipped: Vec::new(),
        })
    }
}

fn ids(records: &[(u32, u64)]) -> Vec<v1::RecordId> {
    records
        .iter()
        .map(|&(partition, offset)| v1::RecordId { partition, offset })
        .collect()
}

/// An open push stream.
pub struct SubscriberStream {
    inbound: tonic::Streaming<v1::StreamResponse>,
    sender: mpsc::Sender<v1::StreamRequest>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// The latest group assignment received (member id, generation, partitions).
    pub assignment: Option<v1::JoinGroupResponse>,
    /// Retention skips reported since last taken.
    pub skipped: Vec<v1::Skip>,
}

impl Drop for SubscriberStream {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl SubscriberStream {
    /// The next record; `None` when the server ended the stream.
    pub async fn next_record(&mut self) -> Result<Option<v1::DeliveredRecord>> {
        loop {
            let Some(message) = self.inbound.message().await? else {
                return Ok(None);
            };
            match message.kind {
                Some(v1::stream_response::Kind::Record(record)) => return Ok(Some(record)),
                Some(v1::stream_response::Kind::Assignment(assignment)) => {
                    self.assignment = Some(assignment);
                }
                Some(v1::stream_response::Kind::Skipped(skip)) => self.skipped.push(skip),
                None => {}
            }
        }
    }

    async fn send(&self, kind: v1::stream_request::Kind) -> Result<()> {
        self.sender
            .send(v1::StreamRequest { kind: Some(kind) })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Acknowledges a record (returns its credit).
    pub async fn ack(&self, partition: u32, offset: u64) -> Result<()> {
        self.send(v1::stream_request::Kind::Ack(v1::RecordId {
            partition,
            offset,
        }))
        .await
    }

    /// Gives a record back for immediate redelivery.
    pub async fn nack(&self, partition: u32, offset: u64) -> Result<()> {
        self.send(v1::stream_request::Kind::Nack(v1::RecordId {
            partition,
            offset,
        }))
        .await
    }

    /// Grants more credits.
    pub async fn grant(&self, credits: u32) -> Result<()> {
        self.send(v1::stream_request::Kind::Credits(credits)).await
    }

    /// Ends the stream: stops sending and waits until the server has processed every
    /// ack sent before (it closes its side after the member has left).
    pub async fn close(mut self) -> Result<()> {
        self.heartbeat.abort();
        let (sender, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.sender, sender));
        while self.inbound.message().await.ok().flatten().is_some() {}
        Ok(())
    }
}
