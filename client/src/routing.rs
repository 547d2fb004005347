//! Which broker leads each partition of a topic, learned from DescribeTopic and
//! refreshed when a broker answers that it is not (or no longer) the leader.

use std::sync::Mutex;

use crate::admin::Admin;
use crate::connection::Client;
use crate::error::{Error, Result};

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
    pub async fn leader(&self, partition: u32) -> Result<String> {
        if let Some(address) = self.cached(partition)? {
            return Ok(address);
        }
        self.refresh().await?;
        self.cached(partition)?.ok_or_else(|| Error::Server {
            code: tonic::Code::Unavailable,
            message: format!(
                "partition {partition} of topic {:?} has no leader right now",
                self.topic
            ),
            valid_range: None,
        })
    }

    /// Forgets the cached leaders, so the next lookup asks the cluster again.
    pub fn invalidate(&self) {
        if let Ok(mut leaders) = self.leaders.lock() {
            *leaders = None;
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
