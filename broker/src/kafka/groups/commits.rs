//! OffsetCommit and OffsetFetch: a Kafka group's committed offsets are its
//! subscription's, so `pubsub groups describe` and Kafka tools see the same numbers.
//!
//! A commit moves a partition's committed offset forward only (as every commit to the
//! consumer manager does). A consumer that assigns partitions itself commits without
//! a member id; that creates the group subscription if needed and is accepted while
//! the group has no members. A partition of a group never committed to reads as the
//! subscription's position: the earliest record for a group Kafka clients created.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use pubsub_proto::net::{self, reasons};
use pubsub_proto::v1;
use tonic::Status;

use super::super::conn::Ctx;
use super::super::metadata::topic_name;
use super::{Groups, group_code};

/// The error code of one partition's commit.
fn commit_code(status: &Status) -> i16 {
    match net::reason(status) {
        Some(reasons::NO_SUCH_PARTITION) => ResponseError::UnknownTopicOrPartition.code(),
        Some(reasons::COMMIT_PAST_END) => ResponseError::OffsetOutOfRange.code(),
        _ if status.code() == tonic::Code::InvalidArgument => ResponseError::InvalidRequest.code(),
        _ => group_code(status),
    }
}

/// The subscription commits of `topic` go to, or the code every partition gets.
async fn target(
    groups: &Groups<'_>,
    group: &str,
    topic: &str,
    generation: i32,
) -> Result<v1::SubscriptionInfo, i16> {
    match groups.describe(group).await {
        Ok(Some(info)) if info.topic == topic => Ok(info),
        Ok(Some(_)) => Err(ResponseError::UnknownTopicOrPartition.code()),
        Ok(None) if generation < 0 => groups.ensure(group, topic).await,
        Ok(None) => Err(ResponseError::UnknownMemberId.code()),
        Err(status) => Err(group_code(&status)),
    }
}

/// Commits one partition's offset.
async fn commit_one(
    groups: &Groups<'_>,
    request: &OffsetCommitRequest,
    partition: i32,
    offset: i64,
) -> i16 {
    let (Ok(partition), Ok(offset)) = (u32::try_from(partition), u64::try_from(offset)) else {
        return ResponseError::OffsetOutOfRange.code();
    };
    let asked = v1::CommitRequest {
        subscription: request.group_id.0.to_string(),
        partition,
        offset,
        member_id: request.member_id.to_string(),
        generation: u64::try_from(request.generation_id_or_member_epoch).unwrap_or(0),
    };
    match groups
        .call(asked, |mut c, r| async move { c.commit(r).await })
        .await
    {
        Ok(_) => 0,
        Err(status) => commit_code(&status),
    }
}

/// Answers OffsetCommit, each partition with its own error code.
pub(in crate::kafka) async fn offset_commit(
    ctx: Ctx,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let groups = Groups::of(&ctx);
    let group = request.group_id.0.as_str();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let target = match &groups {
            Some(groups) => {
                target(groups, group, name, request.generation_id_or_member_epoch).await
            }
            None => Err(ResponseError::CoordinatorNotAvailable.code()),
        };
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let code = match (&groups, &target) {
                (Some(groups), Ok(_)) => {
                    commit_one(groups, &request, p.partition_index, p.committed_offset).await
                }
                (_, Err(code)) => *code,
                (None, Ok(_)) => ResponseError::CoordinatorNotAvailable.code(),
            };
            partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's committed offset as OffsetFetch reports it.
struct Committed {
    partition: i32,
    offset: i64,
    error: i16,
}

/// The partitions asked of one topic (`None`: all of the group's).
type Asked = Vec<(String, Option<Vec<i32>>)>;

/// A group's committed offsets for `asked`; `Err` is the group-level error.
async fn committed(
    groups: Option<&Groups<'_>>,
    group: &str,
    asked: Option<Asked>,
) -> Result<Vec<(String, Vec<Committed>)>, i16> {
    let groups = groups.ok_or(ResponseError::CoordinatorNotAvailable.code())?;
    let info = groups.describe(group).await.map_err(|s| group_code(&s))?;
    let asked = match (asked, &info) {
        (Some(asked), _) => asked,
        (None, Some(info)) => vec![(info.topic.clone(), None)],
        (None, None) => Vec::new(),
    };
    let answer = asked
        .into_iter()
        .map(|(topic, partitions)| {
            let ours = info.as_ref().filter(|i| i.topic == topic);
            let lags = ours.map(|i| i.partitions.as_slice()).unwrap_or_default();
            let partitions =
                partitions.unwrap_or_else(|| lags.iter().map(|l| l.partition as i32).collect());
            let offsets = partitions
                .into_iter()
                .map(|partition| {
                    let lag = lags.iter().find(|l| l.partition as i32 == partition);
                    let unknown = ours.is_some() && lag.is_none();
                    Committed {
                        partition,
                        offset: lag.map_or(-1, |l| l.committed_offset as i64),
                        error: if unknown {
                            ResponseError::UnknownTopicOrPartition.code()
                        } else {
                            0
                        },
                    }
                })
                .collect();
            (topic, offsets)
        })
        .collect();
    Ok(answer)
}

fn partition_v1(c: &Committed) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(c.partition)
        .with_committed_offset(c.offset)
        .with_error_code(c.error)
}

fn partition_v8(c: &Committed) -> OffsetFetchResponsePartitions {
    OffsetFetchResponsePartitions::default()
        .with_partition_index(c.partition)
        .with_committed_offset(c.offset)
        .with_error_code(c.error)
}

/// Answers OffsetFetch: one group (v2 to v7) or several (v8 on). v1, whose answer
/// cannot carry a group's error, is not served.
pub(in crate::kafka) async fn offset_fetch(
    ctx: Ctx,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let groups = Groups::of(&ctx);
    if ctx.version >= 8 {
        let mut answers = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let asked = g.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.0.to_string(), Some(t.partition_indexes)))
                    .collect()
            });
            let answer = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            answers.push(
                match committed(groups.as_ref(), g.group_id.0.as_str(), asked).await {
                    Ok(topics) => answer.with_topics(
                        topics
                            .iter()
                            .map(|(name, offsets)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(name))
                                    .with_partitions(offsets.iter().map(partition_v8).collect())
                            })
                            .collect(),
                    ),
                    Err(code) => answer.with_error_code(code),
                },
            );
        }
        return OffsetFetchResponse::default().with_groups(answers);
    }
    let asked = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes)))
            .collect()
    });
    match committed(groups.as_ref(), request.group_id.0.as_str(), asked).await {
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .iter()
                .map(|(name, offsets)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(offsets.iter().map(partition_v1).collect())
                })
                .collect(),
        ),
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
    }
}
