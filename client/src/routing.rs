//! Which broker leads each partition of a topic, learned from DescribeTopic (asked of
//! any reachable broker) and corrected when a broker answers that it is not, or no
//! longer, the leader: its answer names the leader, and the router sends the
//! partition there without asking the cluster again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use pubsub_proto::ids::PartitionId;
use pubsub_proto::net::Channel;
use pubsub_proto::v1::broker_client::BrokerClient;

use crate::admin::Admin;
use crate::connection::Client;
use crate::error::{Error, Result};

/// How often a sender waiting out a failover asks whether its partition has a new
/// leader: small against a broker lease, large against a DescribeTopic.
const LEADER_POLL: Duration = Duration::from_millis(200);
/// Pause before a retry at a leader that named no successor.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Leader addresses of one topic's partitions, cached.
pub struct Router {
    client: Client,
    topic: String,
    leaders: Mutex<Option<Vec<Option<String>>>>,
}

impl Router {
    /// A router for `topic`; nothing is looked up until first needed.
    pub fn new(client: Client, topic: &str) -> Self {
        Router {
            client,
            topic: topic.to_string(),
            leaders: Mutex::new(None),
        }
    }

    /// The address of `partition`'s leader, from the cache or a fresh DescribeTopic.
    pub(crate) async fn leader(&self, partition: u32) -> Result<String> {
        if let Some(address) = self.cached(partition)? {
            return Ok(address);
        }
        self.refresh().await?;
        self.cached(partition)?.ok_or_else(|| Error::Unavailable {
            message: format!(
                "partition {partition} of topic {:?} has no leader right now",
                self.topic
            ),
        })
    }

    /// Runs `call` at `partition`'s leader, following a moved leader (the broker's
    /// hint at once, else a fresh lookup after a pause) and retrying what a retry may
    /// cure (see [`Error::is_retriable`], and a NOT_FOUND from a broker the new topic
    /// has not reached yet) up to `retries` times. The one leader-routed call: the
    /// consumer and the consumer manager both go through it.
    pub async fn on_leader<T, F, Fut>(
        &self,
        partition: PartitionId,
        retries: u32,
        call: F,
    ) -> Result<T>
    where
        F: Fn(BrokerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let PartitionId(partition) = partition;
        let mut attempt = 0;
        loop {
            let result = async {
                let stub = self.client.broker_stub_at(&self.leader(partition).await?)?;
                call(stub).await
            }
            .await;
            match result {
                Ok(value) => return Ok(value),
                Err(e) if (e.is_retriable() || e.may_be_metadata_lag()) && attempt < retries => {
                    attempt += 1;
                    self.learn_from(partition, &e);
                    if e.leader_hint().is_none() {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets the cached leaders, so the next lookup asks the cluster again.
    pub fn invalidate(&self) {
        if let Ok(mut leaders) = self.leaders.lock() {
            *leaders = None;
        }
    }

    /// Learns from a failed call on `partition`: a broker that named the leader sends
    /// the partition there; any other failure makes the next lookup ask the cluster.
    pub(crate) fn learn_from(&self, partition: u32, error: &Error) {
        let Some(address) = error.leader_hint() else {
            self.invalidate();
            return;
        };
        self.client.learn([address]);
        if let Ok(mut leaders) = self.leaders.lock()
            && let Some(slot) = leaders.as_mut().and_then(|l| l.get_mut(partition as usize))
        {
            *slot = Some(address.to_string());
            return;
        }
        self.invalidate();
    }

    /// Waits until the metadata names a leader of `partition` other than `failed`,
    /// or `wait` has passed: a sender backing off after its leader failed retries as
    /// soon as the partition has moved, instead of at the end of its backoff.
    pub(crate) async fn await_new_leader(&self, partition: u32, failed: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(address)) = self.cached(partition)
                && address != failed
            {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(LEADER_POLL.min(deadline - now)).await;
            // A failed lookup (every broker down, say) is retried at the next poll.
            let _ = self.refresh().await;
        }
    }

    fn cached(&self, partition: u32) -> Result<Option<String>> {
        let leaders = self.leaders.lock().map_err(|_| Error::Closed)?;
        Ok(leaders
            .as_ref()
            .and_then(|l| l.get(partition as usize).cloned().flatten()))
    }

    async fn refresh(&self) -> Result<()> {
        let description = Admin::new(self.client.clone())
            .describe_topic(&self.topic)
            .await?;
        let topic = description
            .topic
            .ok_or_else(|| Error::Decode("describe topic answered without a topic".into()))?;
        let address_of = |id: u32| {
            description
                .brokers
                .iter()
                .find(|b| b.id == id)
                .map(|b| b.address.clone())
        };
        let mut leaders = vec![None; topic.partitions.len()];
        for partition in &topic.partitions {
            if let Some(slot) = leaders.get_mut(partition.partition as usize) {
                *slot = partition.leader.and_then(address_of);
            }
        }
        *self.leaders.lock().map_err(|_| Error::Closed)? = Some(leaders);
        Ok(())
    }
}
