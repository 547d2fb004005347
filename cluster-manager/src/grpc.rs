//! The one place cluster-manager errors become gRPC statuses.
//!
//! The full error chain is logged here; the client gets a short message it can act on.
//! When this node is not the Raft leader and could not forward a write, the status is
//! UNAVAILABLE and carries the leader's address both in the message and in the
//! `pubsub-leader-address` metadata key (and its id in `pubsub-leader-id`), as in
//! openraft's gRPC example, so a client can retry there without parsing text.

use tonic::{Code, Status};

use crate::command::CommandError;
use crate::error::Error;

/// Metadata key carrying the Raft leader's address on UNAVAILABLE.
pub(crate) use pubsub_proto::net::keys::LEADER_ADDRESS as LEADER_ADDRESS_KEY;
/// Metadata key carrying the Raft leader's node id on UNAVAILABLE.
pub(crate) const LEADER_ID_KEY: &str = "pubsub-leader-id";

fn command_code(error: &CommandError) -> Code {
    match error {
        CommandError::InvalidTopicName { .. }
        | CommandError::InvalidPartitions { .. }
        | CommandError::PartitionsNotRaised { .. }
        | CommandError::InvalidReplicationFactor { .. }
        | CommandError::ReplicationFactorTooLarge { .. }
        | CommandError::InvalidSetting { .. }
        | CommandError::InvalidBroker { .. }
        | CommandError::InvalidConsumerManager { .. }
        | CommandError::InvalidIsr { .. }
        | CommandError::InvalidAccess { .. }
        | CommandError::InvalidMove { .. } => Code::InvalidArgument,
        CommandError::TopicExists { .. } => Code::AlreadyExists,
        CommandError::TopicNotFound { .. }
        | CommandError::PartitionNotFound { .. }
        | CommandError::BrokerNotFound { .. }
        | CommandError::AccessNotFound { .. } => Code::NotFound,
        CommandError::BrokerFenced { .. }
        | CommandError::StaleLeaderEpoch { .. }
        | CommandError::NotPartitionLeader { .. }
        | CommandError::BrokerIdInUse { .. }
        | CommandError::MoveConflict { .. }
        | CommandError::InternalTopic { .. } => Code::FailedPrecondition,
        CommandError::LimitExceeded { .. } => Code::ResourceExhausted,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = match &error {
            // The leader's own status, already built (and logged) there.
            Error::Forwarded(status) => return status.clone(),
            Error::Command(e) => command_code(e),
            Error::InvalidArgument(_) | Error::Codec { .. } => Code::InvalidArgument,
            Error::Membership(_) => Code::FailedPrecondition,
            Error::NotLeader { .. } | Error::Timeout { .. } | Error::RaftStopped(_) => {
                Code::Unavailable
            }
            Error::Storage { .. }
            | Error::StoreId(_)
            | Error::Flush { .. }
            | Error::Io { .. }
            | Error::Config(_)
            | Error::Server(_)
            | Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %chain(&error), "request failed");
        } else {
            tracing::debug!(error = %chain(&error), "request refused");
        }
        let mut status = Status::new(code, pubsub_proto::bounded_message(error.to_string()));
        if let Error::NotLeader {
            leader_id,
            leader_address,
        } = &error
        {
            let metadata = status.metadata_mut();
            if let Some(Ok(value)) = leader_address.as_deref().map(str::parse) {
                metadata.insert(LEADER_ADDRESS_KEY, value);
            }
            if let Some(Ok(value)) = leader_id.map(|id| id.to_string().parse()) {
                metadata.insert(LEADER_ID_KEY, value);
            }
        }
        status
    }
}

/// The error and its causes on one line ("a: b: c").
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
        check(
            Error::Command(CommandError::TopicNotFound { name: "t".into() }),
            Code::NotFound,
        );
        check(
            Error::Command(CommandError::TopicExists { name: "t".into() }),
            Code::AlreadyExists,
        );
        check(
            Error::Command(CommandError::StaleLeaderEpoch {
                topic: "t".into(),
                partition: 0,
                given: 1,
                current: 2,
            }),
            Code::FailedPrecondition,
        );
        check(
            Error::Command(CommandError::ReplicationFactorTooLarge {
                replication_factor: 3,
                live_brokers: 1,
            }),
            Code::InvalidArgument,
        );
        check(
            Error::Command(CommandError::LimitExceeded {
                what: "broker".into(),
                limit: 1,
            }),
            Code::ResourceExhausted,
        );
        check(Error::Internal("x".into()), Code::Internal);
    }

    #[test]
    fn not_leader_carries_the_leader_address_in_metadata() {
        let status = Status::from(Error::NotLeader {
            leader_id: Some(2),
            leader_address: Some("127.0.0.1:9000".into()),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("127.0.0.1:9000"));
        assert_eq!(
            status.metadata().get(LEADER_ADDRESS_KEY).unwrap(),
            "127.0.0.1:9000"
        );
        assert_eq!(status.metadata().get(LEADER_ID_KEY).unwrap(), "2");
    }

    #[test]
    fn forwarded_statuses_pass_through_unchanged() {
        let status = Status::from(Error::Forwarded(Status::already_exists("taken")));
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(status.message(), "taken");
    }
}
