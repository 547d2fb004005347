//! Errors of the consumer manager and the gRPC status each becomes.

use tonic::{Code, Status};

/// Result alias of the consumer manager.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a consumer-manager operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad name, option or argument.
    #[error("{0}")]
    InvalidArgument(String),
    /// An unknown subscription or topic.
    #[error("{0}")]
    NotFound(String),
    /// A subscription of that name exists with other options.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller's view is stale (group generation, unknown member).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's membership ended under it (a stream's member removed): it may
    /// open a new stream at once.
    #[error("{0}")]
    Aborted(String),
    /// Every partition the caller may read is stopped at a batch that cannot be
    /// decoded: an empty answer would look like an idle topic for ever.
    #[error(
        "topic {topic:?} partition {partition}: delivery stopped at offset {offset}, where a \
         batch cannot be decoded ({reason}); seek the partition past it, or subscribe with a \
         dead-letter policy (max_deliveries)"
    )]
    PartitionStopped {
        /// Topic of the subscription.
        topic: String,
        /// The stopped partition.
        partition: u32,
        /// First offset of the batch.
        offset: u64,
        /// Why it cannot be decoded.
        reason: String,
    },
    /// A stored batch cannot be decoded (history reads and replays report it).
    #[error(
        "topic {topic:?} partition {partition}: cannot decode the batch at offset {offset}: {reason}"
    )]
    Undecodable {
        /// Topic read.
        topic: String,
        /// Partition read.
        partition: u32,
        /// First offset of the batch.
        offset: u64,
        /// Why it cannot be decoded.
        reason: String,
    },
    /// The brokers could not be reached or refused for now.
    #[error("{0}")]
    Unavailable(String),
    /// The database could not be opened or holds something unreadable.
    #[error("consumer manager storage: {0}")]
    Storage(String),
    /// The database failed (a full disk, say): memory may be ahead of the disk, so the
    /// consumer manager reloads from disk; a retry shortly succeeds. The cause is
    /// logged where it happened.
    #[error("consumer manager storage failed (disk full?); reloading from disk")]
    Reloading,
    /// A broker answered with an error.
    #[error("broker: {0}")]
    Broker(#[from] pubsub_client::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = match &error {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_)
            | Error::PartitionStopped { .. }
            | Error::Undecodable { .. } => Code::FailedPrecondition,
            Error::Aborted(_) => Code::Aborted,
            Error::Unavailable(_) | Error::Reloading => Code::Unavailable,
            Error::Storage(_) => Code::Internal,
            Error::Broker(e) => match e.code() {
                Some(code) => code,
                None if e.is_retriable() => Code::Unavailable,
                None => Code::Internal,
            },
        };
        Status::new(code, pubsub_proto::bounded_message(error.to_string()))
    }
}
