//! History reads and dead-letter replay.

use std::time::Duration;

use pubsub_proto::ids::PartitionId;
use pubsub_proto::v1;
use v1::list_offsets_request::Spec;

use crate::error::{Error, Result};
use crate::manager::{Manager, delivered};
use crate::source::{ReadOutcome, header_pairs};
use crate::subscription::Subscription;
use crate::undecodable::{RAW_BATCH_HEADER, decodable};

/// Bytes per fetch of a history or replay read.
const FETCH_BYTES: u32 = 4 << 20;

/// Most records History returns per partition.
pub(crate) const MAX_HISTORY_RECORDS: u32 = 10_000;

impl Manager {
    /// The latest records of a topic as offset-range reads, with each partition's log
    /// start offset so a caller sees what retention removed.
    pub async fn history(&self, request: &v1::HistoryRequest) -> Result<Vec<v1::HistoryPartition>> {
        let description = self.source().describe(&request.topic).await?;
        let count = description.topic.map_or(0, |t| t.partitions.len() as u32);
        let partitions: Vec<u32> = match request.partition {
            Some(p) if p < count => vec![p],
            Some(p) => {
                return Err(Error::NoSuchPartition {
                    topic: request.topic.clone(),
                    partition: p,
                    partitions: count,
                });
            }
            None => (0..count).collect(),
        };
        let limit = match request.max_records {
            0 => MAX_HISTORY_RECORDS,
            n => n.min(MAX_HISTORY_RECORDS),
        } as usize;
        let Some(range) = request.range else {
            return Err(Error::MissingChoice {
                call: "history",
                choices: "last, since_offset or since_timestamp_ms",
            });
        };
        let mut out = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let topic = request.topic.as_str();
            out.push(self.history_of(topic, partition, range, limit).await?);
        }
        Ok(out)
    }

    /// History of one partition: up to `limit` records of `range` below its high
    /// watermark.
    async fn history_of(
        &self,
        topic: &str,
        partition: u32,
        range: v1::history_request::Range,
        limit: usize,
    ) -> Result<v1::HistoryPartition> {
        let high_watermark = self
            .source()
            .offset(topic, partition, Spec::Latest(true))
            .await?;
        let requested_from = match range {
            v1::history_request::Range::Last(n) => high_watermark.saturating_sub(n),
            v1::history_request::Range::SinceOffset(o) => o,
            v1::history_request::Range::SinceTimestampMs(ts) => {
                self.source()
                    .offset(topic, partition, Spec::TimestampMs(ts))
                    .await?
            }
        };
        let mut log_start = self
            .source()
            .offset(topic, partition, Spec::Earliest(true))
            .await?;
        let mut position = requested_from.max(log_start);
        let mut records = Vec::new();
        let mut truncated = false;
        while position < high_watermark {
            match self
                .source()
                .read(topic, partition, position, Duration::ZERO, FETCH_BYTES)
                .await?
            {
                ReadOutcome::BelowStart { log_start: start } => {
                    log_start = start;
                    position = start;
                }
                ReadOutcome::AboveEnd { .. } => break,
                ReadOutcome::Records(fetched) => {
                    let fetched = decodable(topic, partition, fetched)?;
                    log_start = fetched.log_start_offset;
                    if fetched.records.is_empty() {
                        break;
                    }
                    for record in fetched.records.iter() {
                        if record.offset >= high_watermark {
                            break;
                        }
                        if records.len() == limit {
                            truncated = true;
                            break;
                        }
                        position = record.offset + 1;
                        records.push(delivered(record.clone(), 0));
                    }
                    if truncated {
                        break;
                    }
                }
            }
        }
        Ok(v1::HistoryPartition {
            partition,
            records,
            log_start_offset: log_start,
            high_watermark,
            requested_from,
            truncated,
        })
    }

    /// Moves a subscription's dead letters back to its topic, each once: the replay
    /// position in the dead-letter topic is stored with the subscription.
    pub async fn replay_dead_letters(&self, name: &str, max: u64) -> Result<u64> {
        let subscription = self.subscription(name)?;
        // One replay of this subscription at a time, so no dead letter is moved twice.
        let _replaying = subscription.replaying.lock().await;
        let dlq = subscription.options.dead_letter_topic.clone();
        let description = match self.source().describe(&dlq).await {
            Ok(d) => d,
            Err(Error::TopicNotFound { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        let (count, created_ms) = description
            .topic
            .map_or((0, 0), |t| (t.partitions.len(), t.created_ms));
        self.replay_positions_for(&subscription, created_ms)?;
        let mut replayed = 0u64;
        let max = if max == 0 { u64::MAX } else { max };
        for partition in 0..count as u32 {
            let end = self
                .source()
                .offset(&dlq, partition, Spec::Latest(true))
                .await?;
            let mut position = replay_position(&subscription, partition, end)?;
            while position < end && replayed < max {
                let fetched = match self
                    .source()
                    .read(&dlq, partition, position, Duration::ZERO, FETCH_BYTES)
                    .await?
                {
                    ReadOutcome::BelowStart { log_start } => {
                        position = log_start;
                        continue;
                    }
                    ReadOutcome::AboveEnd { .. } => break,
                    ReadOutcome::Records(f) => match decodable(&dlq, partition, f)? {
                        f if f.records.is_empty() => break,
                        f => f,
                    },
                };
                let mut batch = Vec::new();
                for record in fetched.records.iter() {
                    if record.offset >= end || replayed + batch.len() as u64 >= max {
                        break;
                    }
                    position = record.offset + 1;
                    if record.headers.iter().any(|(k, _)| k == RAW_BATCH_HEADER) {
                        // A batch that could not be decoded is no record to publish.
                        tracing::warn!(subscription = %name, topic = %dlq, partition, offset = record.offset, "not replaying a dead-lettered undecodable batch");
                        continue;
                    }
                    batch.push(republished(record));
                }
                replayed += batch.len() as u64;
                self.source()
                    .produce(&subscription.topic, subscription.partitions(), batch)
                    .await?;
                self.write(&subscription, |state, writes| {
                    if state.replayed.len() <= partition as usize {
                        state.replayed.resize(partition as usize + 1, 0);
                    }
                    state.replayed[partition as usize] = position;
                    writes.record();
                    Ok(())
                })
                .await?;
            }
        }
        tracing::info!(subscription = %name, replayed, "dead letters replayed");
        Ok(replayed)
    }
}

/// Where replay of a dead-letter partition resumes: the stored position, or the
/// start if that lies past the partition's end `end` (the dead-letter topic lost
/// records).
fn replay_position(subscription: &Subscription, partition: u32, end: u64) -> Result<u64> {
    let position = subscription
        .lock()?
        .replayed
        .get(partition as usize)
        .copied()
        .unwrap_or(0);
    if position > end {
        let (name, dlq) = (&subscription.name, &subscription.options.dead_letter_topic);
        tracing::warn!(subscription = %name, topic = %dlq, partition, position, end, "dead-letter replay position past the end; replaying from the start");
        return Ok(0);
    }
    Ok(position)
}

/// A dead letter as published again to its topic: its own headers, its source
/// partition.
fn republished(record: &pubsub_client::ConsumerRecord) -> pubsub_client::ProducerRecord {
    let headers = header_pairs(record)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("pubsub-dlq-"))
        .collect();
    pubsub_client::ProducerRecord {
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
        partition: dlq_source_partition(record).map(PartitionId),
        // Published again now: a subscriber's retention must not age it out on its
        // way back.
        timestamp: None,
    }
}

/// The partition a dead letter came from, so replay keeps per-key order.
fn dlq_source_partition(record: &pubsub_client::ConsumerRecord) -> Option<u32> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == "pubsub-dlq-partition")
        .and_then(|(_, v)| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}
