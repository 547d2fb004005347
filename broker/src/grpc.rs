//! The one place broker errors become gRPC statuses.
//!
//! The full error chain is logged here; the client gets a short message it can act
//! on. An offset out of range carries the valid range in metadata too
//! (`pubsub-log-start-offset`, `pubsub-log-end-offset`), so clients can reset without
//! parsing text, and so it is never confused with tonic's own OUT_OF_RANGE for an
//! oversized message.

use tonic::{Code, Status};

use crate::error::Error;

use pubsub_proto::net::keys::{
    LEADER_ADDRESS as LEADER_ADDRESS_KEY, LOG_END_OFFSET as LOG_END_OFFSET_KEY,
    LOG_START_OFFSET as LOG_START_OFFSET_KEY,
};

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        use pubsub_storage::Error as S;
        let code = match &error {
            Error::TopicNotFound(_) | Error::PartitionNotFound { .. } => Code::NotFound,
            Error::TopicExists(_) => Code::AlreadyExists,
            Error::InvalidArgument(_) | Error::InvalidConfig(_) => Code::InvalidArgument,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Storage(storage) => match storage {
                // A size limit: RESOURCE_EXHAUSTED, as the style guide says of limits.
                S::BatchTooLarge { .. } => Code::ResourceExhausted,
                S::MalformedBatch { .. }
                | S::CrcMismatch { .. }
                | S::UnsupportedCompression { .. }
                | S::DecompressedTooLarge { .. }
                | S::Decompress(_)
                | S::Compress(_)
                | S::NonContiguousOffset { .. }
                | S::SegmentFull { .. }
                | S::InvalidConfig(_) => Code::InvalidArgument,
                S::OffsetOutOfRange { .. } => Code::OutOfRange,
                S::OutOfOrderSequence { .. } => Code::FailedPrecondition,
                S::LogFailed { .. } => Code::Internal,
                S::DiskFull { .. } => Code::ResourceExhausted,
                S::AppendLost { .. } => Code::Unavailable,
                S::SegmentCorrupt { .. } | S::Io { .. } => Code::Internal,
            },
            Error::NotLeader { .. } | Error::Unavailable(_) => Code::Unavailable,
            Error::ClusterManager(status) => status.code(),
            Error::DataDir { .. } | Error::Listen { .. } | Error::Task(_) => Code::Internal,
        };
        let transient = matches!(error, Error::NotLeader { .. } | Error::Unavailable(_));
        if code == Code::Internal || (code == Code::Unavailable && !transient) {
            tracing::error!(error = %error, "request failed");
        } else {
            tracing::debug!(error = %error, "request rejected");
        }
        let message = match &error {
            // The cluster manager's message already says what to do; don't prefix it.
            Error::ClusterManager(status) => status.message().to_string(),
            other => other.to_string(),
        };
        let mut status = Status::new(code, pubsub_proto::bounded_message(message));
        if let Error::NotLeader {
            leader_address: Some(address),
            ..
        } = &error
            && let Ok(value) = address.parse()
        {
            status.metadata_mut().insert(LEADER_ADDRESS_KEY, value);
        }
        if let Error::Storage(S::OffsetOutOfRange {
            log_start_offset,
            log_end_offset,
            ..
        }) = &error
        {
            let metadata = status.metadata_mut();
            if let Ok(v) = log_start_offset.to_string().parse() {
                metadata.insert(LOG_START_OFFSET_KEY, v);
            }
            if let Ok(v) = log_end_offset.to_string().parse() {
                metadata.insert(LOG_END_OFFSET_KEY, v);
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(error: Error, code: Code) {
        let status = Status::from(error);
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(!status.message().is_empty());
    }

    #[test]
    fn errors_map_to_the_documented_codes() {
        check(Error::TopicNotFound("t".into()), Code::NotFound);
        check(Error::TopicExists("t".into()), Code::AlreadyExists);
        check(Error::InvalidArgument("bad".into()), Code::InvalidArgument);
        check(
            Error::Storage(pubsub_storage::Error::CrcMismatch {
                stored: 1,
                computed: 2,
            }),
            Code::InvalidArgument,
        );
        check(
            Error::Storage(pubsub_storage::Error::BatchTooLarge { size: 2, limit: 1 }),
            Code::ResourceExhausted,
        );
    }

    #[test]
    fn out_of_range_carries_the_valid_range() {
        let status = Status::from(Error::Storage(pubsub_storage::Error::OffsetOutOfRange {
            offset: 50,
            log_start_offset: 10,
            log_end_offset: 20,
        }));
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.metadata().get(LOG_START_OFFSET_KEY).unwrap(), "10");
        assert_eq!(status.metadata().get(LOG_END_OFFSET_KEY).unwrap(), "20");
        assert!(status.message().contains("10..=20"));
    }
}
