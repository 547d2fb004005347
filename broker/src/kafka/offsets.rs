//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords, answered by the partition's
//! leader as the gRPC calls of the same names are.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use pubsub_proto::auth::Operation;
use pubsub_proto::v1;

use super::codes;
use super::conn::Ctx;
use crate::error::{Error, Result};
use crate::partition::{Partition, blocking};

/// Kafka's ListOffsets shortcuts.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

fn leader(ctx: &Ctx, topic: &str, partition: i32) -> Result<std::sync::Arc<Partition>> {
    let index = u32::try_from(partition)
        .map_err(|_| Error::TopicNotFound(format!("{topic} (partition {partition})")))?;
    ctx.broker.leader_partition(topic, index)
}

async fn offset_at(partition: &Partition, timestamp: i64) -> Result<i64> {
    let offset = match timestamp {
        LATEST => partition.high_watermark(),
        EARLIEST => partition.log().log_start_offset(),
        ts if ts >= 0 => partition.offset_for_timestamp(ts).await?,
        other => {
            return Err(Error::InvalidArgument(format!(
                "timestamp {other}: use a time in ms, -1 for latest or -2 for earliest"
            )));
        }
    };
    Ok(offset as i64)
}

/// Answers ListOffsets: the offset for each partition's timestamp (or -1, -2).
pub(super) async fn list(ctx: Ctx, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str();
        let allowed = ctx.allowed(Operation::Describe, name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1);
            let result = async {
                let partition = leader(&ctx, name, p.partition_index)?;
                let offset = offset_at(&partition, p.timestamp).await?;
                Ok::<_, Error>((offset, partition.role().leader_epoch))
            };
            let answer = match if allowed { Some(result.await) } else { None } {
                None => answer.with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                // Leader epochs are in answers from v4 on.
                Some(Ok((offset, epoch))) if ctx.version >= 4 => {
                    answer.with_offset(offset).with_leader_epoch(epoch)
                }
                Some(Ok((offset, _))) => answer.with_offset(offset),
                Some(Err(error)) => answer.with_offset(-1).with_error_code(codes::code(&error)),
            };
            partitions.push(answer);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Answers OffsetForLeaderEpoch: where each asked epoch ended in the leader's log, so a
/// client that saw a leader change can find a diverged suffix (KIP-320).
pub(super) async fn for_leader_epoch(
    ctx: Ctx,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.as_str();
        let allowed = ctx.allowed(Operation::Describe, name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer = EpochEndOffset::default().with_partition(p.partition);
            let result = async {
                let log = leader(&ctx, name, p.partition)?.log().clone();
                let epoch = p.leader_epoch;
                blocking(move || Ok(log.epoch_end_offset(epoch)?)).await
            };
            let answer = match if allowed { Some(result.await) } else { None } {
                None => answer
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
                Some(Ok((found, end))) => answer
                    .with_leader_epoch(found.unwrap_or(-1))
                    .with_end_offset(end as i64),
                Some(Err(error)) => answer
                    .with_error_code(codes::code(&error))
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            };
            partitions.push(answer);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// Has every other replica of the partition delete its segments below `before` too,
/// so a later leader does not bring them back; a replica that cannot be reached keeps
/// them until retention (logged).
async fn delete_on_followers(ctx: &Ctx, topic: &str, partition: i32, before: u64) {
    let own = ctx.broker.config().broker_id.0;
    let replicas = ctx
        .broker
        .topic(topic)
        .ok()
        .and_then(|t| {
            t.metadata
                .partitions
                .get(partition as usize)
                .map(|p| p.replicas.clone())
        })
        .unwrap_or_default();
    for replica in replicas.into_iter().filter(|r| *r != own) {
        let request = v1::DeleteRecordsRequest {
            topic: topic.to_string(),
            partition: partition as u32,
            before_offset: before,
        };
        let stub = ctx
            .broker
            .broker_address(replica)
            .and_then(|a| ctx.broker.peers().stub(&a));
        let deleted = match stub {
            Some(mut stub) => stub
                .delete_records(request)
                .await
                .map(|_| ())
                .map_err(|s| s.message().to_string()),
            None => Err("no address".to_string()),
        };
        if let Err(reason) = deleted {
            tracing::warn!(topic, partition, replica, reason = %reason, "a follower kept records that DeleteRecords removed on the leader");
        }
    }
}

/// Answers DeleteRecords: whole segments below the asked offset (-1: the high
/// watermark) go, on every replica; the answer's low watermark is the leader's new log
/// start, which may stay below the asked offset (the segment holding it is kept).
pub(super) async fn delete_records(
    ctx: Ctx,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str();
        let allowed = ctx.allowed(Operation::Admin, name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            let result = async {
                let partition = leader(&ctx, name, p.partition_index)?;
                let before = match p.offset {
                    -1 => partition.high_watermark(),
                    o => u64::try_from(o)
                        .ok()
                        .filter(|o| *o <= partition.high_watermark())
                        .ok_or_else(|| {
                            Error::InvalidArgument(format!("offset {o} is past the high watermark"))
                        })?,
                };
                let log = partition.log().clone();
                let start = blocking(move || {
                    log.delete_segments_below(before)?;
                    Ok(log.log_start_offset())
                })
                .await?;
                delete_on_followers(&ctx, name, p.partition_index, before).await;
                Ok(start)
            };
            let answer = match if allowed { Some(result.await) } else { None } {
                None => answer
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_low_watermark(-1),
                Some(Ok(start)) => answer.with_low_watermark(start as i64),
                Some(Err(Error::InvalidArgument(_))) => answer
                    .with_error_code(ResponseError::OffsetOutOfRange.code())
                    .with_low_watermark(-1),
                Some(Err(error)) => answer
                    .with_error_code(codes::code(&error))
                    .with_low_watermark(-1),
            };
            partitions.push(answer);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
