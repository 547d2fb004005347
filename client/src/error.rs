//! The client's error type: server statuses, transport failures and bad input.

use pubsub_proto::net;
use tonic::Code;

/// Result alias of the client crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client call can fail with. Cloneable, so one failed batch can fail
/// every record waiting on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{message}")]
    Server {
        /// gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
        /// For OUT_OF_RANGE fetches: the valid offsets, if the server sent them.
        valid_range: Option<(u64, u64)>,
        /// For UNAVAILABLE from a broker that does not lead the partition: the
        /// leader's address, if the broker knows it.
        leader_address: Option<String>,
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
        partition: u32,
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
    /// The gRPC code of a server error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The partition leader's address a broker named when it refused a request it
    /// does not lead: where to send it again.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            Error::Server {
                leader_address: Some(address),
                ..
            } => Some(address),
            _ => None,
        }
    }

    /// True for a NOT_FOUND that may be a broker not yet knowing a new topic: worth a
    /// bounded retry against a partition leader (the metadata reaches brokers one by one).
    pub fn may_be_metadata_lag(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// True for errors a retry may cure: the server was unavailable or the link broke.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Server { code, .. } => net::is_transient(*code),
            Error::Transport { .. } | Error::OutcomeUnknown(_) => true,
            _ => false,
        }
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
            Code::Unavailable
                if net::never_sent(&status)
                    || status.message().contains("tcp connect")
                    || status.message().contains("transport") =>
            {
                format!("server unavailable: {}", status.message())
            }
            _ => status.message().to_string(),
        };
        let leader_address = net::leader_hint(&status);
        Error::Server {
            code: status.code(),
            message,
            valid_range,
            leader_address,
        }
    }
}
