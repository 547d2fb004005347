//! The consumer: reads assigned partitions from chosen positions and follows new data.
//!
//! Each poll fetches every assigned partition concurrently with a long poll, so an
//! idle consumer costs one outstanding request per partition and new records arrive
//! as soon as the broker has them.
//!
//! Fetches and offset lookups go to each partition's leader, as Kafka's consumers'
//! do: a follower's high watermark lags the leader's, so a read started after an
//! acks=all acknowledgement sees the record only at the leader. A broker that is no
//! longer the leader names the new one, and the next fetch goes there.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use pubsub_proto::ids::PartitionId;
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
///
/// Every assigned partition has at most one fetch outstanding (a long poll). A poll
/// returns as soon as any partition has records; fetches still waiting carry over to
/// the next poll, so a busy partition is never held back by idle ones.
pub struct Consumer {
    client: Client,
    router: Arc<Router>,
    topic: String,
    config: ConsumerConfig,
    partitions: Vec<PartitionState>,
    results: mpsc::Sender<FetchDone>,
    inbox: mpsc::Receiver<FetchDone>,
    next_assignment: u64,
    /// An error met after other partitions' records were already taken: it is
    /// returned by the next poll, so those records are not lost with it.
    pending_error: Option<Error>,
}

struct PartitionState {
    partition: u32,
    /// Identifies this assignment, so answers to an older one are ignored.
    assignment: u64,
    /// Next offset to read.
    position: u64,
    /// High watermark seen in the last fetch answer.
    high_watermark: u64,
    /// The outstanding fetch, if any.
    inflight: Option<JoinHandle<()>>,
}

/// A finished fetch, sent back by its task.
struct FetchDone {
    assignment: u64,
    offset: u64,
    result: Result<v1::FetchResponse>,
}

/// Answers waiting to be taken: one per assigned partition at most.
const FETCH_RESULTS_BUFFER: usize = 256;

impl Drop for Consumer {
    fn drop(&mut self) {
        for state in &mut self.partitions {
            if let Some(handle) = state.inflight.take() {
                handle.abort();
            }
        }
    }
}

/// Attempts to resolve a start position while the partition's leader is moving
/// (about 10 s with the pause below: a broker lease plus an election).
const RESOLVE_RETRIES: u32 = 50;

/// Pause after a failed fetch, so a down broker is not polled in a tight loop.
const FETCH_RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Consumer {
    /// A consumer of `topic` with nothing assigned yet.
    pub fn new(client: Client, topic: &str, config: ConsumerConfig) -> Self {
        let (results, inbox) = mpsc::channel(FETCH_RESULTS_BUFFER);
        Consumer {
            router: Arc::new(Router::new(client.clone(), topic)),
            client,
            topic: topic.to_string(),
            config,
            partitions: Vec::new(),
            results,
            inbox,
            next_assignment: 0,
            pending_error: None,
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
            self.assign(PartitionId(partition), start).await?;
        }
        Ok(())
    }

    /// Assigns one partition from `start` (replacing an earlier assignment of it).
    pub async fn assign(&mut self, partition: PartitionId, start: StartPosition) -> Result<()> {
        let PartitionId(partition) = partition;
        let position = self.resolve(partition, start).await?;
        if let Some(index) = self
            .partitions
            .iter()
            .position(|p| p.partition == partition)
        {
            let old = self.partitions.remove(index);
            if let Some(handle) = old.inflight {
                handle.abort();
            }
        }
        self.next_assignment += 1;
        let assignment = self.next_assignment;
        self.partitions.push(PartitionState {
            partition,
            assignment,
            position,
            high_watermark: 0,
            inflight: None,
        });
        Ok(())
    }

    /// The next offset to read of each assigned partition.
    pub fn positions(&self) -> Vec<(PartitionId, u64)> {
        self.partitions
            .iter()
            .map(|p| (PartitionId(p.partition), p.position))
            .collect()
    }

    /// Records left to read up to each partition's last seen high watermark.
    pub fn lag(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.high_watermark.saturating_sub(p.position))
            .sum()
    }

    /// The offset `start` names in `partition` right now (earliest, latest, by time),
    /// asked of the partition's leader.
    pub async fn offset_of(&self, partition: PartitionId, start: StartPosition) -> Result<u64> {
        self.resolve(partition.0, start).await
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
        // A leader that just moved answers UNAVAILABLE until the metadata catches up.
        self.router
            .on_leader(PartitionId(partition), RESOLVE_RETRIES, |mut stub| {
                let request = request.clone();
                async move {
                    stub.list_offsets(request)
                        .await
                        .map(|r| r.into_inner().offset)
                        .map_err(Error::from)
                }
            })
            .await
    }

    fn start_fetch(&self, state: &PartitionState, max_wait: Duration) -> JoinHandle<()> {
        let offset = state.position;
        let request = v1::FetchRequest {
            topic: self.topic.clone(),
            partition: state.partition,
            offset,
            max_bytes: self.config.fetch_max_bytes,
            max_wait_ms: max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
            replica_id: None,
            leader_epoch: 0,
        };
        let (client, router, results) = (
            self.client.clone(),
            self.router.clone(),
            self.results.clone(),
        );
        let (partition, assignment) = (state.partition, state.assignment);
        tokio::spawn(async move {
            let attempt = async {
                let mut stub = client.broker_stub_at(&router.leader(partition).await?)?;
                stub.fetch(request)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(Error::from)
            };
            let result = attempt.await;
            if let Err(error) = &result
                && error.is_retriable()
            {
                // A broker that names the new leader is followed at once.
                router.learn_from(partition, error);
                if error.leader_hint().is_none() {
                    tokio::time::sleep(FETCH_RETRY_PAUSE).await;
                }
            }
            let _ = results
                .send(FetchDone {
                    assignment,
                    offset,
                    result,
                })
                .await;
        })
    }

    /// Returns the records that have arrived, waiting up to `max_wait` for the first.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumerRecord>> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        if self.partitions.is_empty() {
            return Err(Error::InvalidArgument("no partition assigned".into()));
        }
        for index in 0..self.partitions.len() {
            if self.partitions[index].inflight.is_none() {
                let handle = self.start_fetch(&self.partitions[index], max_wait);
                self.partitions[index].inflight = Some(handle);
            }
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut records = Vec::new();
        loop {
            while let Ok(done) = self.inbox.try_recv() {
                if let Err(error) = self.take(done, &mut records) {
                    return self.fail_after(records, error);
                }
            }
            if !records.is_empty() || self.partitions.iter().all(|p| p.inflight.is_none()) {
                return Ok(records);
            }
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(done)) => {
                    if let Err(error) = self.take(done, &mut records) {
                        return self.fail_after(records, error);
                    }
                }
                Ok(None) | Err(_) => return Ok(records),
            }
        }
    }

    /// Returns the records already taken, keeping `error` for the next poll; or the
    /// error now if there are none.
    fn fail_after(
        &mut self,
        records: Vec<ConsumerRecord>,
        error: Error,
    ) -> Result<Vec<ConsumerRecord>> {
        if records.is_empty() {
            return Err(error);
        }
        self.pending_error = Some(error);
        Ok(records)
    }

    /// Applies one fetch answer: records out, position forward.
    fn take(&mut self, done: FetchDone, records: &mut Vec<ConsumerRecord>) -> Result<()> {
        let Some(state) = self
            .partitions
            .iter_mut()
            .find(|p| p.assignment == done.assignment)
        else {
            return Ok(());
        };
        state.inflight = None;
        match done.result {
            Ok(response) => {
                state.high_watermark = response.high_watermark;
                match decode_fetched(
                    PartitionId(state.partition),
                    &response.records,
                    done.offset,
                    records,
                ) {
                    Ok(next) => state.position = next,
                    Err(undecodable) => {
                        // What precedes the batch is delivered; the position stays at
                        // the batch, so every poll names it until it is skipped.
                        state.position = undecodable.offset.max(done.offset);
                        tracing::error!(topic = %self.topic, partition = state.partition, offset = state.position, reason = %undecodable.reason, "cannot decode a fetched batch");
                        return Err(Error::Undecodable {
                            topic: self.topic.clone(),
                            partition: PartitionId(state.partition),
                            offset: state.position,
                            next_offset: undecodable.next_offset,
                            reason: undecodable.reason,
                        });
                    }
                }
            }
            Err(Error::OutOfRange {
                range: Some((start, _)),
                ..
            }) if self.config.reset_on_out_of_range && done.offset < start => {
                tracing::warn!(
                    partition = state.partition,
                    offset = done.offset,
                    log_start_offset = start,
                    "position below the log start; reset to it"
                );
                state.position = start;
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!(partition = state.partition, error = %e, "fetch failed; will retry");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
