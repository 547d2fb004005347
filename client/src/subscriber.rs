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

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pubsub_proto::net::{self, Channel};
use pubsub_proto::v1;
use pubsub_proto::v1::consumer_manager_client::ConsumerManagerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connection::Client;
use crate::error::{Error, Result};

/// Messages queued toward the server on a stream (acks, credits, heartbeats).
const STREAM_QUEUE: usize = 1_024;

/// Most times one call follows a consumer manager to another (the owner it names,
/// or the next bootstrap server when one cannot be reached).
const HOPS_MAX: usize = 4;

/// How long a call waits for a subscription nobody serves right now to be served
/// again: longer than a consumer manager's lease, after which its subscriptions move.
const MOVING_FOR: Duration = Duration::from_secs(30);
/// The first pause before a refused call is sent again; it doubles up to
/// [`MOVING_PAUSE_MAX`].
const MOVING_PAUSE_MIN: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a refused call.
const MOVING_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Sends `request` with the stub's `method` to the consumer manager serving
/// `subscription` (see [`Subscriptions::routed`]).
macro_rules! routed {
    ($self:ident, $subscription:expr, $method:ident, $request:ident) => {
        $self.routed($subscription, |mut stub| {
            let request = $request.clone();
            async move { stub.$method(request).await }
        })
    };
}

/// Subscription operations over a [`Client`] connected to a consumer manager (in
/// standalone, the server's one address).
///
/// Where several consumer managers share the subscriptions, each subscription is
/// served by one of them (the owner of its journal partition): a call reaching
/// another is refused naming the owner, and is sent there instead; the owner is
/// remembered per subscription until it fails, when the bootstrap servers are asked
/// again (they name the new owner once it is chosen).
#[derive(Clone, Debug)]
pub struct Subscriptions {
    client: Client,
    /// The owner each subscription was last served by.
    owners: Arc<Mutex<HashMap<String, String>>>,
    /// Push streams take records several to a message.
    batched: bool,
}

impl Subscriptions {
    /// Subscription operations on `client`'s server.
    pub fn new(client: Client) -> Self {
        Subscriptions {
            client,
            owners: Arc::default(),
            batched: true,
        }
    }

    /// Whether push streams take records several to a message (the default) or one
    /// each (as older servers send them; for comparison).
    pub fn batched(mut self, batched: bool) -> Self {
        self.batched = batched;
        self
    }

    /// Where a call about `subscription` goes first: its known owner, else the
    /// server that answered last.
    fn first_address(&self, subscription: &str) -> String {
        let owners = self.owners.lock().ok();
        let known = owners.and_then(|o| o.get(subscription).cloned());
        known.unwrap_or_else(|| self.client.address())
    }

    fn remember(&self, subscription: &str, address: Option<String>) {
        if subscription.is_empty() {
            return;
        }
        if let Ok(mut owners) = self.owners.lock() {
            match address {
                Some(address) => owners.insert(subscription.to_string(), address),
                None => owners.remove(subscription),
            };
        }
    }

    /// Runs `call` on the consumer manager serving `subscription`, following the
    /// owner a refusal names, and moving on to the next bootstrap server when one
    /// cannot be reached. While nobody serves the subscription (a node loading, a dead
    /// owner not yet replaced) the refusals say so, and the call is sent again, with a
    /// growing pause, for up to [`MOVING_FOR`].
    async fn routed<T, F, Fut>(&self, subscription: &str, call: F) -> Result<T>
    where
        F: Fn(ConsumerManagerClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = std::time::Instant::now();
        let mut pause = MOVING_PAUSE_MIN;
        loop {
            let status = match self.follow_owner(subscription, &call).await? {
                Ok(answer) => return Ok(answer),
                Err(status) => status,
            };
            let moving = net::reason(&status) == Some(net::reasons::NOT_SERVING);
            if !moving || started.elapsed() + pause > MOVING_FOR {
                return Err(status.into());
            }
            tracing::debug!(subscription, error = %status.message(), "subscription not served right now; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MOVING_PAUSE_MAX);
        }
    }

    /// One pass of [`Subscriptions::routed`]: from the first address, along the owners
    /// named and the bootstrap list, for at most [`HOPS_MAX`] hops (or the list's
    /// length). The outer error is the client's own (an address that does not parse).
    async fn follow_owner<T, F, Fut>(
        &self,
        subscription: &str,
        call: &F,
    ) -> Result<std::result::Result<T, tonic::Status>>
    where
        F: Fn(ConsumerManagerClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut address = self.first_address(subscription);
        let bootstrap = self.client.addresses();
        let mut hops = 0;
        loop {
            let stub = self.client.consumer_manager_stub_at(&address)?;
            let status = match call(stub).await {
                Ok(response) => {
                    self.remember(subscription, Some(address));
                    return Ok(Ok(response.into_inner()));
                }
                Err(status) => status,
            };
            hops += 1;
            let next = match net::owner_hint(&status) {
                Some(owner) => Some(owner),
                None if net::never_sent(&status) => {
                    self.remember(subscription, None);
                    let at = bootstrap.iter().position(|a| *a == address);
                    let next = at.map_or(0, |i| i + 1);
                    bootstrap.get(next).cloned()
                }
                None => {
                    if status.code() == tonic::Code::Unavailable {
                        self.remember(subscription, None);
                    }
                    None
                }
            };
            match next {
                Some(next) if hops < HOPS_MAX.max(bootstrap.len()) => address = next,
                _ => return Ok(Err(status)),
            }
        }
    }

    /// Creates a durable subscription (or finds the identical existing one).
    pub async fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        options: v1::SubscriptionOptions,
    ) -> Result<v1::SubscribeResponse> {
        let request = v1::SubscribeRequest {
            topic: topic.into(),
            subscription: subscription.into(),
            options: Some(options),
        };
        routed!(self, subscription, subscribe, request).await
    }

    /// Deletes a subscription with its offsets.
    pub async fn unsubscribe(&self, topic: &str, subscription: &str) -> Result<()> {
        let request = v1::UnsubscribeRequest {
            topic: topic.into(),
            subscription: subscription.into(),
        };
        routed!(self, subscription, unsubscribe, request).await?;
        Ok(())
    }

    /// Subscriptions (of a topic, or one by name; empty strings for all) with lag.
    ///
    /// A listing of all asks every consumer manager serving some, and is complete:
    /// while one of them cannot be reached, or some journal partition has no owner
    /// serving it (a dead owner not yet replaced), it is asked again as for a
    /// subscription nobody serves (for up to [`MOVING_FOR`]).
    pub async fn list(&self, topic: &str, subscription: &str) -> Result<Vec<v1::SubscriptionInfo>> {
        let request = v1::ListSubscriptionsRequest {
            topic: topic.into(),
            subscription: subscription.into(),
        };
        if !subscription.is_empty() {
            let answer = routed!(self, subscription, list_subscriptions, request).await?;
            return Ok(answer.subscriptions);
        }
        let started = std::time::Instant::now();
        let mut pause = MOVING_PAUSE_MIN;
        loop {
            let missing = match self.list_everywhere(&request).await? {
                Ok(all) => return Ok(all),
                Err(missing) => missing,
            };
            if started.elapsed() + pause > MOVING_FOR {
                return Err(Error::Unavailable { message: missing });
            }
            tracing::debug!(missing = %missing, "listing incomplete; asking again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MOVING_PAUSE_MAX);
        }
    }

    /// One listing of every subscription: the first consumer manager's answer and
    /// those of the others it names; the inner error says what it missed.
    async fn list_everywhere(
        &self,
        request: &v1::ListSubscriptionsRequest,
    ) -> Result<std::result::Result<Vec<v1::SubscriptionInfo>, String>> {
        let first = routed!(self, "", list_subscriptions, request).await?;
        let mut covered: std::collections::BTreeSet<u32> =
            first.journal_partitions.iter().copied().collect();
        let mut all = first.subscriptions;
        for other in first.other_consumer_managers.iter().take(HOPS_MAX * 64) {
            let mut stub = self.client.consumer_manager_stub_at(other)?;
            match stub.list_subscriptions(request.clone()).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    covered.extend(answer.journal_partitions);
                    all.extend(answer.subscriptions);
                }
                Err(status) if net::is_transient(status.code()) || net::never_sent(&status) => {
                    return Ok(Err(format!(
                        "consumer manager {other} did not list its subscriptions: {}",
                        status.message()
                    )));
                }
                Err(status) => return Err(status.into()),
            }
        }
        // A node serving alone names every partition; one granted none names none.
        let partitions = pubsub_proto::ids::SUBSCRIPTION_STATE_PARTITIONS;
        if (0..partitions).any(|p| !covered.contains(&p)) {
            let missing: Vec<u32> = (0..partitions).filter(|p| !covered.contains(p)).collect();
            return Ok(Err(format!(
                "no consumer manager serves the subscriptions of journal partitions {missing:?} right now"
            )));
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.dedup_by(|a, b| a.name == b.name);
        Ok(Ok(all))
    }

    /// Joins a group subscription (or heartbeats with a known member id).
    pub async fn join(&self, subscription: &str, member_id: &str) -> Result<v1::JoinGroupResponse> {
        let request = v1::JoinGroupRequest {
            subscription: subscription.into(),
            member_id: member_id.into(),
        };
        routed!(self, subscription, join_group, request).await
    }

    /// Leaves a group at once.
    pub async fn leave(&self, subscription: &str, member_id: &str) -> Result<()> {
        let request = v1::LeaveGroupRequest {
            subscription: subscription.into(),
            member_id: member_id.into(),
        };
        routed!(self, subscription, leave_group, request).await?;
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
        let request = v1::ReadRequest {
            subscription: subscription.into(),
            max_records: max,
            max_wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
            member_id: member_id.into(),
            generation,
        };
        routed!(self, subscription, read, request).await
    }

    /// Acknowledges records (durable when this returns).
    pub async fn ack(
        &self,
        subscription: &str,
        member_id: &str,
        generation: u64,
        records: &[(u32, u64)],
    ) -> Result<()> {
        let request = v1::AckRequest {
            subscription: subscription.into(),
            records: ids(records),
            member_id: member_id.into(),
            generation,
        };
        routed!(self, subscription, ack, request).await?;
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
        let request = v1::NackRequest {
            subscription: subscription.into(),
            records: ids(records),
            member_id: member_id.into(),
            generation,
        };
        routed!(self, subscription, nack, request).await?;
        Ok(())
    }

    /// Moves a subscription's position.
    pub async fn seek(
        &self,
        subscription: &str,
        partition: Option<u32>,
        target: v1::seek_request::Target,
    ) -> Result<Vec<v1::PartitionLag>> {
        let request = v1::SeekRequest {
            subscription: subscription.into(),
            partition,
            target: Some(target),
        };
        let answer = routed!(self, subscription, seek, request).await?;
        Ok(answer.partitions)
    }

    /// Who is connected to a topic's subscriptions (or one subscription).
    pub async fn presence(&self, topic: &str, subscription: &str) -> Result<Vec<v1::MemberInfo>> {
        let request = v1::PresenceRequest {
            topic: topic.into(),
            subscription: subscription.into(),
        };
        let answer = routed!(self, subscription, presence, request).await?;
        Ok(answer.members)
    }

    /// History of a topic as offset-range reads.
    pub async fn history(&self, request: v1::HistoryRequest) -> Result<Vec<v1::HistoryPartition>> {
        let answer = routed!(self, "", history, request).await?;
        Ok(answer.partitions)
    }

    /// Moves dead letters back to the subscription's topic; returns how many.
    pub async fn replay_dead_letters(&self, subscription: &str, max: u64) -> Result<u64> {
        let request = v1::ReplayDeadLettersRequest {
            subscription: subscription.into(),
            max_records: max,
        };
        let answer = routed!(self, subscription, replay_dead_letters, request).await?;
        Ok(answer.replayed)
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
        let open = v1::StreamRequest {
            kind: Some(v1::stream_request::Kind::Open(v1::StreamOpen {
                subscription: subscription.into(),
                member_id: member_id.into(),
                credits,
                batched: self.batched,
            })),
        };
        let (sender, inbound) = self
            .routed(subscription, |mut stub| {
                let open = open.clone();
                async move {
                    let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
                    if sender.send(open).await.is_err() {
                        return Err(tonic::Status::cancelled("the stream was dropped"));
                    }
                    let outbound = coalesced(ReceiverStream::new(receiver));
                    let inbound = stub.stream(outbound).await?;
                    Ok(inbound.map(|inbound| (sender, inbound)))
                }
            })
            .await?;
        Ok(SubscriberStream::new(inbound, sender))
    }
}

mod stream;
pub use stream::SubscriberStream;
use stream::{coalesced, ids};
