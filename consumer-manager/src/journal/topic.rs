//! The journal topic itself: how it is created, and what its description says.

use pubsub_client::NewTopic;
use pubsub_proto::v1;

use super::{MAX_MESSAGE_BYTES, SHARDS, TOPIC};

/// The journal topic as created: kept forever (snapshots delete what is no longer
/// needed), small segments (see [`segment_bytes`]).
pub(super) fn new_topic(snapshot_after: u64) -> NewTopic {
    let segment = segment_bytes(snapshot_after);
    NewTopic {
        name: TOPIC.to_string(),
        partitions: SHARDS,
        replication_factor: 0,
        config: v1::TopicConfig {
            retention_ms: Some(pubsub_proto::topic_config::UNLIMITED),
            retention_bytes: Some(pubsub_proto::topic_config::UNLIMITED),
            segment_bytes: Some(segment),
            max_message_bytes: Some(segment.min(MAX_MESSAGE_BYTES as i64) as i32),
            ..Default::default()
        },
    }
}

/// The largest batch the journal topic takes, as created with `snapshot_after`.
pub(super) fn topic_max_message(snapshot_after: u64) -> usize {
    usize::try_from(segment_bytes(snapshot_after))
        .map_or(MAX_MESSAGE_BYTES, |s| s.min(MAX_MESSAGE_BYTES))
}

/// Segments of the journal topic: half the bytes between snapshots, so each snapshot
/// lets the segments before it go.
pub(super) fn segment_bytes(snapshot_after: u64) -> i64 {
    use pubsub_proto::topic_config::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
    let half = i64::try_from(snapshot_after / 2).unwrap_or(SEGMENT_BYTES_MAX);
    half.clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)
}

/// The largest batch a described topic takes.
pub(super) fn max_message_bytes(described: &v1::DescribeTopicResponse) -> usize {
    let set = described
        .topic
        .as_ref()
        .and_then(|t| t.config.as_ref()?.max_message_bytes);
    set.and_then(|b| usize::try_from(b).ok())
        .unwrap_or(MAX_MESSAGE_BYTES)
}

/// How many partitions a described topic has.
pub(super) fn partition_count(described: &v1::DescribeTopicResponse) -> u32 {
    described
        .topic
        .as_ref()
        .map_or(0, |t| t.partitions.len() as u32)
}

/// The addresses of a partition's replicas.
pub(super) fn replica_addresses(described: &v1::DescribeTopicResponse, shard: u32) -> Vec<String> {
    let partitions = described.topic.iter().flat_map(|t| &t.partitions);
    let Some(partition) = partitions.into_iter().find(|p| p.partition == shard) else {
        return Vec::new();
    };
    partition
        .replicas
        .iter()
        .filter_map(|id| described.brokers.iter().find(|b| b.id == *id))
        .map(|b| b.address.clone())
        .collect()
}
