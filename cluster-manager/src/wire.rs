//! The metadata state as `pubsub.v1` messages.

use pubsub_proto::v1;

use crate::raft::state_machine::MetadataView;
use crate::state::{Broker, ClusterState, Partition, Topic};

/// One partition.
pub(crate) fn partition(index: u32, partition: &Partition) -> v1::PartitionMetadata {
    v1::PartitionMetadata {
        partition: index,
        leader: partition.leader(),
        leader_epoch: partition.leader_epoch(),
        replicas: partition.replicas().to_vec(),
        in_sync_replicas: partition.isr().to_vec(),
        adding_replicas: partition.adding(),
        removing_replicas: partition.removing(),
        size_bytes: partition.size_bytes(),
    }
}

/// One topic with its partitions.
pub(crate) fn topic(topic: &Topic) -> v1::TopicMetadata {
    v1::TopicMetadata {
        name: topic.name().to_string(),
        replication_factor: topic.replication_factor(),
        config: Some(topic.config()),
        default_keys: topic
            .default_keys()
            .into_iter()
            .map(|k| k.name().to_string())
            .collect(),
        unclean_leader_election: topic.unclean_leader_election(),
        created_ms: topic.created_ms(),
        partitions: topic
            .partitions()
            .iter()
            .enumerate()
            .map(|(i, p)| partition(i as u32, p))
            .collect(),
    }
}

/// One broker.
pub(crate) fn broker(broker: &Broker) -> v1::BrokerMetadata {
    v1::BrokerMetadata {
        id: broker.id(),
        address: broker.address().to_string(),
        rack: broker.rack().map(String::from),
        kafka_address: broker.kafka_address().map(String::from),
        fenced: broker.fenced(),
        last_heartbeat_ms: broker.last_heartbeat_ms(),
        draining: broker.draining(),
    }
}

/// The whole metadata.
pub(crate) fn cluster_metadata(view: &MetadataView, leader: Option<u64>) -> v1::ClusterMetadata {
    state_metadata(&view.state, view.applied_index, leader)
}

/// The whole metadata of `state` at `version`.
pub(crate) fn state_metadata(
    state: &ClusterState,
    version: u64,
    leader: Option<u64>,
) -> v1::ClusterMetadata {
    v1::ClusterMetadata {
        version,
        cluster_leader_id: leader,
        brokers: state.brokers().values().map(broker).collect(),
        topics: state.topics().values().map(topic).collect(),
        access: Some(state.access().to_wire(version)),
        move_rate_bytes_per_sec: state.balancing().move_rate_bytes,
    }
}
