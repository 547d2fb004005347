//! Metadata: the brokers that serve Kafka (at their Kafka addresses) and, per topic,
//! each partition's leader, replicas and in-sync replicas, from this broker's copy of
//! the cluster metadata, so clients send each partition's requests to its leader.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use pubsub_proto::auth::Operation;
use pubsub_proto::v1;

use super::conn::Ctx;

/// What Kafka clients see as the cluster id.
pub(super) const CLUSTER_ID: &str = "pubsub";

/// `host:port` split for Kafka's broker list (an IPv6 host loses its brackets).
pub(super) fn host_port(address: &str) -> Option<(String, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

pub(super) fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub(super) fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}

fn ids(ids: &[u32]) -> Vec<BrokerId> {
    ids.iter().map(|id| BrokerId(*id as i32)).collect()
}

/// The live brokers that serve Kafka, at their Kafka addresses.
fn brokers(view: &v1::ClusterMetadata) -> Vec<MetadataResponseBroker> {
    view.brokers
        .iter()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let (host, port) = host_port(b.kafka_address.as_deref()?)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id as i32))
                    .with_host(str_bytes(&host))
                    .with_port(port)
                    .with_rack(b.rack.as_deref().map(str_bytes)),
            )
        })
        .collect()
}

fn partition(
    p: &v1::PartitionMetadata,
    serving: &[MetadataResponseBroker],
    version: i16,
) -> MetadataResponsePartition {
    let leader = p
        .leader
        .filter(|id| serving.iter().any(|b| b.node_id.0 == *id as i32));
    let answer = MetadataResponsePartition::default()
        .with_partition_index(p.partition as i32)
        // Leader epochs are in answers from v7 on.
        .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
        .with_replica_nodes(ids(&p.replicas))
        .with_isr_nodes(ids(&p.in_sync_replicas));
    match leader {
        Some(id) => answer.with_leader_id(BrokerId(id as i32)),
        None => answer
            .with_leader_id(BrokerId(-1))
            .with_error_code(ResponseError::LeaderNotAvailable.code()),
    }
}

fn topic(
    t: &v1::TopicMetadata,
    serving: &[MetadataResponseBroker],
    version: i16,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_partitions(
            t.partitions
                .iter()
                .map(|p| partition(p, serving, version))
                .collect(),
        )
}

fn missing(name: TopicName, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(name))
        .with_error_code(error.code())
}

/// Answers Metadata. Topics are never created by asking for them.
pub(super) async fn answer(ctx: Ctx, request: MetadataRequest) -> MetadataResponse {
    let view = ctx.broker.view();
    let serving = brokers(&view);
    let topics = match request.topics {
        // All topics: those the caller may see.
        None => view
            .topics
            .iter()
            .filter(|t| ctx.allowed(Operation::Describe, &t.name))
            .map(|t| topic(t, &serving, ctx.version))
            .collect(),
        Some(asked) => asked
            .into_iter()
            .filter_map(|t| t.name)
            .map(|name| {
                let found = view.topics.iter().find(|t| t.name == name.0.as_str());
                match found {
                    _ if !ctx.allowed(Operation::Describe, name.0.as_str()) => {
                        missing(name, ResponseError::TopicAuthorizationFailed)
                    }
                    Some(t) => topic(t, &serving, ctx.version),
                    None => missing(name, ResponseError::UnknownTopicOrPartition),
                }
            })
            .collect(),
    };
    let own = ctx.broker.config().broker_id.0 as i32;
    MetadataResponse::default()
        .with_brokers(serving)
        // The cluster id is in answers from v2 on.
        .with_cluster_id((ctx.version >= 2).then(|| StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(own))
        .with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            host_port("127.0.0.1:9092"),
            Some(("127.0.0.1".into(), 9092))
        );
        assert_eq!(host_port("[::1]:9092"), Some(("::1".into(), 9092)));
        assert_eq!(
            host_port("broker-0.svc:19092"),
            Some(("broker-0.svc".into(), 19092))
        );
        assert_eq!(host_port("no-port"), None);
        assert_eq!(host_port("host:notanumber"), None);
    }
}
