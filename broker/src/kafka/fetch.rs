//! Fetch: whole batches from each asked partition's log, below the high watermark, as
//! the log holds them (the same zero-copy read of the segment map as gRPC Fetch).
//!
//! Long poll: a first pass reads every partition without waiting; if that is less than
//! `min_bytes`, the request waits until any partition has data or `max_wait_ms` passes,
//! and answers with what the first pass and that partition hold. Fetch sessions
//! (KIP-227) are not kept: the answer's session id 0 tells clients to send full fetches.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use pubsub_proto::auth::Operation;

use super::codes;
use super::conn::Ctx;
use crate::metrics::Rpc;
use crate::service::data::{FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MAX};

/// One partition as asked for.
#[derive(Clone, Copy)]
struct Asked {
    index: i32,
    offset: i64,
    max_bytes: usize,
}

/// One asked partition and what was read for it.
struct Slot {
    topic: usize,
    asked: Asked,
    answer: PartitionData,
}

impl Slot {
    fn has_data(&self) -> bool {
        self.answer.records.as_ref().is_some_and(|r| !r.is_empty())
    }

    fn refused(&mut self, error: ResponseError) {
        self.answer.error_code = error.code();
    }
}

fn partition_max(asked: i32) -> usize {
    match usize::try_from(asked) {
        Ok(0) | Err(_) => FETCH_BYTES_DEFAULT,
        Ok(n) => n.min(FETCH_BYTES_MAX),
    }
}

/// Reads one partition, waiting until `deadline` if it has nothing yet.
async fn read(
    ctx: &Ctx,
    name: &str,
    asked: Asked,
    deadline: tokio::time::Instant,
) -> PartitionData {
    let answer = PartitionData::default()
        .with_partition_index(asked.index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(Some(Vec::new()));
    let (Ok(partition), Ok(offset)) = (u32::try_from(asked.index), u64::try_from(asked.offset))
    else {
        return answer.with_error_code(ResponseError::OffsetOutOfRange.code());
    };
    let fetched = async {
        let (partition, _) = ctx.broker.leader_replica(name, partition)?;
        let fetched = partition
            .fetch(offset, asked.max_bytes, deadline, false)
            .await?;
        partition.counters().fetched(&fetched.records);
        Ok::<_, crate::error::Error>(fetched)
    };
    match fetched.await {
        Ok(fetched) => answer
            .with_high_watermark(fetched.high_watermark as i64)
            .with_last_stable_offset(fetched.high_watermark as i64)
            // The log start is in answers from v5 on.
            .with_log_start_offset(if ctx.version >= 5 {
                fetched.log_start_offset as i64
            } else {
                -1
            })
            .with_records(Some(fetched.records)),
        Err(error) => answer.with_error_code(codes::code(&error)),
    }
}

/// The asked partitions in request order, each with its byte limit.
fn slots(ctx: &Ctx, request: &FetchRequest) -> (Vec<TopicName>, Vec<Slot>) {
    let mut names = Vec::with_capacity(request.topics.len());
    let mut slots = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        names.push(topic.topic.clone());
        let allowed = ctx.allowed(Operation::Consume, topic.topic.0.as_str());
        for p in &topic.partitions {
            let mut slot = Slot {
                topic: t,
                asked: Asked {
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: partition_max(p.partition_max_bytes),
                },
                answer: PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1),
            };
            if !allowed {
                slot.refused(ResponseError::TopicAuthorizationFailed);
            }
            slots.push(slot);
        }
    }
    (names, slots)
}

/// Answers Fetch.
pub(super) async fn answer(ctx: Ctx, request: FetchRequest) -> FetchResponse {
    let started = Instant::now();
    if request.replica_id.0 >= 0 || request.replica_state.replica_id.0 >= 0 {
        // Kafka replication between brokers is not served; only consumers fetch here.
        return FetchResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    }
    let (names, mut slots) = slots(&ctx, &request);
    let mut budget = match usize::try_from(request.max_bytes) {
        Ok(0) | Err(_) => FETCH_BYTES_MAX,
        Ok(n) => n.min(FETCH_BYTES_MAX),
    };
    let now = tokio::time::Instant::now();
    let mut total = 0usize;
    for slot in slots.iter_mut().filter(|s| s.answer.error_code == 0) {
        slot.asked.max_bytes = slot.asked.max_bytes.min(budget.max(1));
        slot.answer = read(&ctx, names[slot.topic].0.as_str(), slot.asked, now).await;
        let got = slot.answer.records.as_ref().map_or(0, Bytes::len);
        budget = budget.saturating_sub(got);
        total += got;
    }
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0).max(1);
    if total < min_bytes && !wait.is_zero() && slots.iter().all(|s| s.answer.error_code == 0) {
        wait_for_any(&ctx, &names, &mut slots, now + wait).await;
    }
    crate::metrics::request_done(Rpc::Fetch, started);
    respond(names, slots)
}

/// Waits until one partition has data (or `deadline`) and puts it in its slot.
async fn wait_for_any(
    ctx: &Ctx,
    names: &[TopicName],
    slots: &mut [Slot],
    deadline: tokio::time::Instant,
) {
    let mut waiting: FuturesUnordered<_> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.has_data())
        .map(|(i, slot)| {
            let (name, asked) = (names[slot.topic].0.as_str(), slot.asked);
            async move { (i, read(ctx, name, asked, deadline).await) }
        })
        .collect();
    while let Some((i, answer)) = waiting.next().await {
        let found =
            answer.records.as_ref().is_some_and(|r| !r.is_empty()) || answer.error_code != 0;
        slots[i].answer = answer;
        if found {
            return;
        }
    }
}

fn respond(names: Vec<TopicName>, slots: Vec<Slot>) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = names
        .into_iter()
        .map(|name| FetchableTopicResponse::default().with_topic(name))
        .collect();
    for slot in slots {
        let mut answer = slot.answer;
        if answer.error_code != 0 && answer.records.is_none() {
            answer.records = Some(Bytes::new());
        }
        if let Some(topic) = topics.get_mut(slot.topic) {
            topic.partitions.push(answer);
        }
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics)
}
