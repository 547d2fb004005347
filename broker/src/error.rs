//! The broker's error type: what a request or a startup can fail with.

use std::path::PathBuf;

/// Result alias of the broker crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a broker operation fails; `grpc.rs` turns each into a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topic does not exist.
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    /// The topic already exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The partition index is past the topic's partition count.
    #[error(
        "topic {topic:?} has {partitions} partitions (0..{partitions}); partition {partition} does not exist"
    )]
    PartitionNotFound {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// A request argument is invalid; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// A topic setting is unknown, out of its range or not alterable.
    #[error(transparent)]
    InvalidConfig(#[from] pubsub_proto::ConfigError),
    /// A request or limit was exceeded.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The partition log failed.
    #[error(transparent)]
    Storage(#[from] pubsub_storage::Error),
    /// The data directory is unusable.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// This broker does not lead the partition.
    #[error("broker {broker} is not the leader of {topic}-{partition}{}", match (leader, leader_address) {
        (Some(id), Some(address)) => format!("; the leader is broker {id} at {address}"),
        (Some(id), None) => format!("; the leader is broker {id}"),
        _ => "; it has no leader right now".to_string(),
    })]
    NotLeader {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// This broker.
        broker: u32,
        /// The leader, if there is one.
        leader: Option<u32>,
        /// The leader's address, if known.
        leader_address: Option<String>,
    },
    /// The cluster cannot do it right now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The cluster manager refused or failed a forwarded request.
    #[error("cluster manager: {}", .0.message())]
    ClusterManager(tonic::Status),
    /// A listener could not be opened.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A blocking task died (the process is going down).
    #[error("internal task failed: {0}")]
    Task(String),
}
