//! The consumer: reads assigned partitions from chosen positions and follows new data.
//!
//! Each poll fetches every assigned partition concurrently with a long poll, so an
//! idle consumer costs one outstanding request per partition and new records arrive
//! as soon as the broker has them.

use std::time::Duration;

use pubsub_proto::v1;

use crate::connection::Client;
use crate::error::{Error, Result};
use crate::record::{ConsumerRecord, decode_fetched};
use crate::routing::Router;

/// Where reading a partition starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The first offset still stored.
    Earliest,
    /// Only records produced from now on.
    Latest,
    /// A specific offset.
    Offset(u64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Soft limit of bytes per partition per fetch.
    pub fetch_max_bytes: u32,
    /// What to do when a position falls below the log start (retention removed it).
    pub reset_on_out_of_range: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_bytes: 4 << 20,
            reset_on_out_of_range: false,
        }
    }
}

/// Reads records from assigned partitions of one topic.
pub struct Consumer {
    client: Client,
    router: Router,
    topic: String,
    config: ConsumerConfig,
    positions: Vec<(u32, u64)>,
    high_watermarks: Vec<u64>,
}

impl Consumer {
    /// A consumer of `topic` with nothing assigned yet.
    pub fn new(client: Client, topic: &str, config: ConsumerConfig) -> Self {
        Consumer {
            router: Router::new(client.clone(), topic),
            client,
            topic: topic.to_string(),
            config,
            positions: Vec::new(),
            high_watermarks: Vec::new(),
        }
    }

    /// Number of partitions of the topic, from the server.
    pub async fn partition_count(&self) -> Result<u32> {
        let description = crate::admin::Admin::new(self.client.clone())
            .describe_topic(&self.topic)
            .await?;
        Ok(description.topic.map_or(0, |t| t.partitions.len() as u32))
    }

    /// Assigns every partition of the topic, each from `start`.
    pub async fn assign_all(&mut self, start: StartPosition) -> Result<()> {
        for partition in 0..self.partition_count().await? {
            self.assign(partition, start).await?;
        }
        Ok(())
    }

    /// Assigns one partition from `start` (replacing an earlier assignment of it).
    pub async fn assign(&mut self, partition: u32, start: StartPosition) -> Result<()> {
        let offset = self.resolve(partition, start).await?;
        self.positions.retain(|(p, _)| *p != partition);
        self.positions.push((partition, offset));
        self.high_watermarks.push(0);
        self.high_watermarks.truncate(self.positions.len());
        Ok(())
    }

    /// The next offset to read of each assigned partition.
    pub fn positions(&self) -> &[(u32, u64)] {
        &self.positions
    }

    /// Records left to read up to each partition's last seen high watermark.
    pub fn lag(&self) -> u64 {
        self.positions
            .iter()
            .zip(&self.high_watermarks)
            .map(|((_, o), hw)| hw.saturating_sub(*o))
            .sum()
    }

    async fn resolve(&self, partition: u32, start: StartPosition) -> Result<u64> {
        let spec = match start {
            StartPosition::Offset(offset) => return Ok(offset),
            StartPosition::Earliest => v1::list_offsets_request::Spec::Earliest(true),
            StartPosition::Latest => v1::list_offsets_request::Spec::Latest(true),
            StartPosition::Timestamp(ts) => v1::list_offsets_request::Spec::TimestampMs(ts),
        };
        let request = v1::ListOffsetsRequest {
            topic: self.topic.clone(),
            partition,
            spec: Some(spec),
        };
        Ok(self
            .client
            .broker_stub()
            .list_offsets(request)
            .await?
            .into_inner()
            .offset)
    }

    /// Fetches from every assigned partition, waiting up to `max_wait` for data;
    /// returns the records read (possibly none) in partition order.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.positions.is_empty() {
            return Err(Error::InvalidArgument("no partition assigned".into()));
        }
        let wait_ms = max_wait.as_millis().min(u128::from(u32::MAX)) as u32;
        let fetches = self.positions.iter().map(|&(partition, offset)| {
            let mut stub = self.client.broker_stub();
            let request = v1::FetchRequest {
                topic: self.topic.clone(),
                partition,
                offset,
                max_bytes: self.config.fetch_max_bytes,
                max_wait_ms: wait_ms,
            };
            async move {
                stub.fetch(request)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(Error::from)
            }
        });
        let results = futures::future::join_all(fetches).await;
        let mut records = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            let (partition, offset) = self.positions[i];
            match result {
                Ok(response) => {
                    let next = decode_fetched(partition, &response.records, offset, &mut records)?;
                    self.positions[i].1 = next;
                    self.high_watermarks[i] = response.high_watermark;
                }
                Err(Error::Server {
                    code: tonic::Code::OutOfRange,
                    valid_range: Some((start, _)),
                    ..
                }) if self.config.reset_on_out_of_range && offset < start => {
                    tracing::warn!(
                        partition,
                        offset,
                        log_start_offset = start,
                        "position below the log start; reset to it"
                    );
                    self.positions[i].1 = start;
                }
                Err(e) if e.is_retriable() => {
                    // The leader moved or is down: ask again next poll.
                    tracing::debug!(partition, error = %e, "fetch failed; refreshing the partition's leader");
                    self.router.invalidate();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }
}
