//! Broker errors as Kafka error codes, chosen so that clients react as they would to a
//! Kafka broker: refresh metadata and retry on NOT_LEADER_OR_FOLLOWER, give up on
//! CORRUPT_MESSAGE, reset on OFFSET_OUT_OF_RANGE.

use kafka_protocol::ResponseError;
use pubsub_storage::Error as S;

use crate::error::Error;

/// The Kafka error code for `error`.
pub(super) fn code(error: &Error) -> i16 {
    kind(error).code()
}

fn kind(error: &Error) -> ResponseError {
    match error {
        Error::TopicNotFound(_) | Error::PartitionNotFound { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        Error::TopicExists(_) => ResponseError::TopicAlreadyExists,
        Error::InvalidConfig(_) => ResponseError::InvalidConfig,
        Error::InvalidArgument(_) => ResponseError::InvalidRequest,
        Error::ResourceExhausted(_) => ResponseError::PolicyViolation,
        Error::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        Error::Unavailable(message) if message.contains("in-sync replica") => {
            ResponseError::NotEnoughReplicas
        }
        Error::Unavailable(_) => ResponseError::RequestTimedOut,
        Error::ClusterManager(status) => match status.code() {
            tonic::Code::AlreadyExists => ResponseError::TopicAlreadyExists,
            tonic::Code::NotFound => ResponseError::UnknownTopicOrPartition,
            tonic::Code::InvalidArgument => ResponseError::InvalidRequest,
            tonic::Code::ResourceExhausted => ResponseError::PolicyViolation,
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                ResponseError::ClusterAuthorizationFailed
            }
            _ => ResponseError::RequestTimedOut,
        },
        Error::Storage(storage) => storage_kind(storage),
        Error::DataDir { .. } | Error::Listen { .. } | Error::Task(_) => {
            ResponseError::UnknownServerError
        }
    }
}

fn storage_kind(error: &S) -> ResponseError {
    match error {
        S::BatchTooLarge { .. } | S::DecompressedTooLarge { .. } => ResponseError::MessageTooLarge,
        S::UnsupportedCompression { .. } => ResponseError::UnsupportedCompressionType,
        S::MalformedBatch { .. }
        | S::CrcMismatch { .. }
        | S::Decompress(_)
        | S::Compress(_)
        | S::NonContiguousOffset { .. } => ResponseError::CorruptMessage,
        S::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        S::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        S::SegmentFull { .. } | S::InvalidConfig(_) => ResponseError::InvalidRequest,
        S::AppendLost { .. } => ResponseError::NotLeaderOrFollower,
        S::LogFailed { .. } | S::DiskFull { .. } | S::SegmentCorrupt { .. } | S::Io { .. } => {
            ResponseError::KafkaStorageError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_clients_act_on_have_their_kafka_codes() {
        let not_leader = Error::NotLeader {
            topic: "t".into(),
            partition: 0,
            broker: 1,
            leader: Some(2),
            leader_address: None,
        };
        assert_eq!(code(&not_leader), 6);
        assert_eq!(code(&Error::TopicNotFound("t".into())), 3);
        let crc = Error::Storage(S::CrcMismatch {
            stored: 1,
            computed: 2,
        });
        assert_eq!(code(&crc), 2);
        let large = Error::Storage(S::BatchTooLarge { size: 2, limit: 1 });
        assert_eq!(code(&large), 10);
        let isr = Error::Unavailable("not enough in-sync replicas: 1 < 2".into());
        assert_eq!(code(&isr), 19);
    }
}
