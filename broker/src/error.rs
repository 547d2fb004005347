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
    /// A request or limit was exceeded.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The partition log failed.
    #[error(transparent)]
    Storage(#[from] pubsub_storage::Error),
    /// The metadata file could not be read or written.
    #[error("metadata file {path}: {reason}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A blocking task died (the process is going down).
    #[error("internal task failed: {0}")]
    Task(String),
}
