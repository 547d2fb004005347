//! The client's error type: server statuses, transport failures and bad input.

use pubsub_proto::ids::PartitionId;
use pubsub_proto::net;
use tonic::Code;

/// Result alias of the client crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client call can fail with. Cloneable, so one failed batch can fail
/// every record waiting on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The topic, partition, subscription or member does not exist (or not yet on
    /// the broker asked: metadata reaches brokers one by one).
    #[error("{message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// A topic or subscription of that name exists with other settings.
    #[error("{message}")]
    AlreadyExists {
        /// The server's message.
        message: String,
    },
    /// The broker asked does not lead the partition: send it to `leader`, or look
    /// the leader up again if the broker did not know it.
    #[error("{message}")]
    NotLeader {
        /// The leader's client address, when the broker knew it.
        leader: Option<String>,
        /// The server's message.
        message: String,
    },
    /// An offset outside the partition's log.
    #[error("{message}")]
    OutOfRange {
        /// The valid offsets `[start, end)`, when the broker sent them.
        range: Option<(u64, u64)>,
        /// The server's message.
        message: String,
    },
    /// A limit was exceeded, or the broker's disk is (almost) full: sending the same
    /// thing again does not help.
    #[error("{message}")]
    ResourceExhausted {
        /// The server's message (it names the limit).
        message: String,
    },
    /// The caller's view is stale: a group generation, a producer sequence, a record
    /// it does not hold.
    #[error("{message}")]
    FailedPrecondition {
        /// The server's message.
        message: String,
    },
    /// The call was cut short for a reason that passes (a produce stream ended behind
    /// a failed request, a stream member removed): retry at once.
    #[error("{message}")]
    Aborted {
        /// The server's message.
        message: String,
    },
    /// The server cannot serve it right now (no leader yet, not enough in-sync
    /// replicas, no answer in time): a retry may work.
    #[error("{message}")]
    Unavailable {
        /// The server's message.
        message: String,
    },
    /// The server failed (a storage error), or the link to it broke mid-stream in a
    /// way HTTP/2 reports as an internal error.
    #[error("{message}")]
    Internal {
        /// The server's message.
        message: String,
    },
    /// Any other answer (an unimplemented call, say).
    #[error("{message}")]
    Server {
        /// gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {address}: {message}")]
    Transport {
        /// The address dialled.
        address: String,
        /// What failed.
        message: String,
    },
    /// The caller passed something invalid (checked before sending).
    #[error("{0}")]
    InvalidArgument(String),
    /// An answer could not be decoded.
    #[error("cannot decode fetched records: {0}")]
    Decode(String),
    /// A stored batch cannot be decoded (written by an incompatible version, or
    /// corrupted in a way its CRC did not catch). Reading the partition does not go
    /// past it by itself: polling again meets it again, until the partition is
    /// assigned from `next_offset` (skipping it) or another position.
    #[error(
        "topic {topic:?} partition {partition}: cannot decode the batch at offset {offset}: {reason}"
    )]
    Undecodable {
        /// The topic read.
        topic: String,
        /// The partition read.
        partition: PartitionId,
        /// The first offset the batch stands for.
        offset: u64,
        /// The offset right after the batch, if its extent is known.
        next_offset: Option<u64>,
        /// Why it cannot be decoded.
        reason: String,
    },
    /// The producer was closed before the record was sent.
    #[error("producer closed before the record was acknowledged")]
    Closed,
    /// The record's batch was sent, but an earlier batch of its partition failed for
    /// good first, so whether the broker stored it is unknown; sending it again may
    /// store it twice.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

impl Error {
    /// The error a server status `code` with `message` (and, for a broker that does
    /// not lead, the `leader` it named; for OUT_OF_RANGE, the valid `range`) means.
    pub(crate) fn from_code(
        code: Code,
        message: String,
        leader: Option<String>,
        range: Option<(u64, u64)>,
    ) -> Error {
        match code {
            Code::NotFound => Error::NotFound { message },
            Code::AlreadyExists => Error::AlreadyExists { message },
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::OutOfRange => Error::OutOfRange { range, message },
            Code::ResourceExhausted => Error::ResourceExhausted { message },
            Code::FailedPrecondition => Error::FailedPrecondition { message },
            Code::Aborted => Error::Aborted { message },
            Code::Unavailable if leader.is_some() => Error::NotLeader { leader, message },
            Code::Internal => Error::Internal { message },
            code if net::is_transient(code) => Error::Unavailable { message },
            code => Error::Server { code, message },
        }
    }

    /// The gRPC code the error stands for (a server that relays it answers with it).
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::OutOfRange { .. } => Code::OutOfRange,
            Error::ResourceExhausted { .. } => Code::ResourceExhausted,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::Aborted { .. } => Code::Aborted,
            Error::NotLeader { .. } | Error::Unavailable { .. } => Code::Unavailable,
            Error::Internal { .. } => Code::Internal,
            Error::Server { code, .. } => *code,
            _ => return None,
        })
    }

    /// The partition leader's address a broker named when it refused a request it
    /// does not lead: where to send it again.
    pub(crate) fn leader_hint(&self) -> Option<&str> {
        match self {
            Error::NotLeader {
                leader: Some(address),
                ..
            } => Some(address),
            _ => None,
        }
    }

    /// True for a NOT_FOUND that may be a broker not yet knowing a new topic: worth a
    /// bounded retry against a partition leader (the metadata reaches brokers one by one).
    pub(crate) fn may_be_metadata_lag(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for errors a retry may cure: the server was unavailable, the partition
    /// moved, the call was aborted, or the link broke.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::NotLeader { .. }
                | Error::Aborted { .. }
                | Error::Transport { .. }
                | Error::OutcomeUnknown(_)
        )
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let read = |key: &str| net::metadata_u64(&status, key);
        let valid_range = match (
            read(net::keys::LOG_START_OFFSET),
            read(net::keys::LOG_END_OFFSET),
        ) {
            (Some(start), Some(end)) => Some((start, end)),
            _ => None,
        };
        let message = match status.code() {
            Code::Unavailable if net::never_sent(&status) => {
                format!("server unavailable: {}", status.message())
            }
            // tonic's own "transport error" says nothing; its cause does (a TLS alert,
            // an HTTP/2 protocol error from a TLS port spoken to in plain text).
            _ if std::error::Error::source(&status).is_some() => {
                let mut message = status.message().to_string();
                let mut source = std::error::Error::source(&status);
                while let Some(cause) = source {
                    message = format!("{message}: {cause}");
                    source = cause.source();
                }
                message
            }
            _ => status.message().to_string(),
        };
        Error::from_code(
            status.code(),
            message,
            net::leader_hint(&status),
            valid_range,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_domain_errors_and_keep_their_code() {
        let mut moved = tonic::Status::unavailable("broker 2 is not the leader of t-0");
        moved
            .metadata_mut()
            .insert(net::keys::LEADER_ADDRESS, "b1:9392".parse().unwrap());
        let moved = Error::from(moved);
        assert_eq!(moved.leader_hint(), Some("b1:9392"));
        assert!(moved.is_retriable());
        assert_eq!(moved.code(), Some(Code::Unavailable));

        let mut range = tonic::Status::out_of_range("offset 9 is out of range");
        range
            .metadata_mut()
            .insert(net::keys::LOG_START_OFFSET, "2".parse().unwrap());
        range
            .metadata_mut()
            .insert(net::keys::LOG_END_OFFSET, "5".parse().unwrap());
        assert!(matches!(
            Error::from(range),
            Error::OutOfRange {
                range: Some((2, 5)),
                ..
            }
        ));

        let cases = [
            (Code::NotFound, false),
            (Code::AlreadyExists, false),
            (Code::InvalidArgument, false),
            (Code::ResourceExhausted, false),
            (Code::FailedPrecondition, false),
            (Code::Aborted, true),
            (Code::Unavailable, true),
            (Code::Internal, false),
            (Code::Unimplemented, false),
        ];
        for (code, retriable) in cases {
            let error = Error::from(tonic::Status::new(code, "x"));
            assert_eq!(error.code(), Some(code), "{error:?}");
            assert_eq!(error.is_retriable(), retriable, "{error:?}");
        }
        // A deadline or a broken link is a transient unavailability.
        let late = Error::from(tonic::Status::deadline_exceeded("no answer"));
        assert!(matches!(late, Error::Unavailable { .. }));
        assert!(Error::from(tonic::Status::not_found("t")).may_be_metadata_lag());
    }
}
