//! Why a command was refused: [`CommandError`], the same on every node.

use pubsub_proto::ConfigError;
use pubsub_proto::ids::PARTITIONS_MAX;

use super::REPLICATION_FACTOR_MAX;
use serde::{Deserialize, Serialize};

/// Why a command was refused. Every node refuses the same command the same way, so the
/// error travels in the Raft response and is serializable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// The topic name breaks the naming rules.
    #[error("{reason}")]
    InvalidTopicName {
        /// Why, naming the name.
        reason: String,
    },
    /// The partition count is outside `1..=PARTITIONS_MAX`.
    #[error("partitions must be between 1 and {PARTITIONS_MAX}, got {partitions}")]
    InvalidPartitions {
        /// The requested count.
        partitions: u32,
    },
    /// A partition count that does not raise the current one.
    #[error(
        "topic {name:?} has {current} partitions; the new count must be higher (partitions are never removed), got {requested}"
    )]
    PartitionsNotRaised {
        /// Topic name.
        name: String,
        /// Its partition count.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
    /// The replication factor is above [`REPLICATION_FACTOR_MAX`].
    #[error(
        "replication factor {replication_factor} is above the limit of {REPLICATION_FACTOR_MAX}"
    )]
    InvalidReplicationFactor {
        /// The requested factor.
        replication_factor: u32,
    },
    /// Fewer live brokers than replicas per partition.
    #[error("replication factor {replication_factor} exceeds the {live_brokers} live broker(s)")]
    ReplicationFactorTooLarge {
        /// The requested factor.
        replication_factor: u32,
        /// Live (unfenced) brokers.
        live_brokers: u32,
    },
    /// A topic setting is out of range, or may not be altered.
    #[error("{reason}")]
    InvalidSetting {
        /// The setting's name, as in `TopicConfig`.
        key: String,
        /// What is wrong with it, naming the key and its allowed range.
        reason: String,
    },
    /// A broker address or rack is empty or too long.
    #[error("broker {broker}: {reason}")]
    InvalidBroker {
        /// Broker id.
        broker: u32,
        /// What is wrong.
        reason: String,
    },
    /// A consumer manager's heartbeat is malformed.
    #[error("consumer manager: {reason}")]
    InvalidConsumerManager {
        /// What is wrong.
        reason: String,
    },
    /// The proposed in-sync replicas are not acceptable.
    #[error("in-sync replicas of {topic}-{partition}: {reason}")]
    InvalidIsr {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// What is wrong.
        reason: String,
    },
    /// A replica move names lists that cannot be a move.
    #[error("move of {topic}-{partition}: {reason}")]
    InvalidMove {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// What is wrong.
        reason: String,
    },
    /// A replica move does not fit the partition's current state (another move under
    /// way, a changed replica list, a target not yet in sync).
    #[error("move of {topic}-{partition}: {reason}")]
    MoveConflict {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// What stands in the way.
        reason: String,
    },
    /// The topic is internal (`pubsub_proto::ids::is_internal_topic`): deleting it,
    /// changing its retention or re-hashing it over more partitions would lose or
    /// reorder state no other copy holds.
    #[error(
        "topic {name:?} is internal (it holds every subscription's position); it cannot be {action}"
    )]
    InternalTopic {
        /// Topic name.
        name: String,
        /// What was refused: "deleted", "given more partitions", "reconfigured".
        action: String,
    },
    /// A different topic of that name exists.
    #[error("topic {name:?} already exists with different settings")]
    TopicExists {
        /// Topic name.
        name: String,
    },
    /// No topic of that name.
    #[error("topic {name:?} does not exist")]
    TopicNotFound {
        /// Topic name.
        name: String,
    },
    /// The partition index is past the topic's partition count.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    PartitionNotFound {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// The broker never registered.
    #[error("broker {broker} is not registered")]
    BrokerNotFound {
        /// Broker id.
        broker: u32,
    },
    /// The broker's lease expired; it must register again.
    #[error("broker {broker} is fenced (its lease expired); register again")]
    BrokerFenced {
        /// Broker id.
        broker: u32,
    },
    /// The request names a leader epoch that is not the partition's current one.
    #[error(
        "leader epoch {given} of {topic}-{partition} is stale; the current leader epoch is {current}"
    )]
    StaleLeaderEpoch {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Epoch in the request.
        given: i32,
        /// The partition's epoch.
        current: i32,
    },
    /// The broker asking does not lead the partition.
    #[error("broker {broker} does not lead {topic}-{partition} (leader: {leader:?})")]
    NotPartitionLeader {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The broker asking.
        broker: u32,
        /// The current leader.
        leader: Option<u32>,
    },
    /// Another broker holds this id, at another address, and its lease has not run out.
    #[error(
        "broker id {broker} is live at {holder} (its lease holds); a broker at another address cannot take it over"
    )]
    BrokerIdInUse {
        /// Broker id.
        broker: u32,
        /// The address of the live broker.
        holder: String,
    },
    /// A token or rule request is malformed.
    #[error("{reason}")]
    InvalidAccess {
        /// What is wrong.
        reason: String,
    },
    /// No token or rule matched.
    #[error("{what}")]
    AccessNotFound {
        /// What was looked for.
        what: String,
    },
    /// A metadata limit would be exceeded.
    #[error("{what} limit of {limit} reached")]
    LimitExceeded {
        /// What is limited.
        what: String,
        /// The limit.
        limit: u64,
    },
}

impl From<ConfigError> for CommandError {
    fn from(error: ConfigError) -> Self {
        CommandError::InvalidSetting {
            key: error.key().map_or("", |k| k.name()).to_string(),
            reason: error.to_string(),
        }
    }
}
