//! The one place consumer-manager errors become gRPC statuses.
//!
//! Each variant gets its code here, and only here; the error is logged here too
//! (error level for what is the server's fault, debug for what the client can fix),
//! and the client gets the error's message, bounded in size.

use pubsub_proto::net::{keys, reasons};
use tonic::{Code, Status};

use crate::error::Error;

/// The gRPC code of each error: what a client should do about it.
fn code(error: &Error) -> Code {
    match error {
        Error::InvalidName { .. }
        | Error::InvalidOption { .. }
        | Error::OptionOutOfRange { .. }
        | Error::MissingChoice { .. }
        | Error::TooManyIds { .. }
        | Error::StreamNotOpened { .. }
        | Error::NoSuchPartition { .. }
        | Error::NeverDelivered { .. }
        | Error::CommitPastEnd { .. }
        | Error::SeekOutOfRange { .. } => Code::InvalidArgument,
        Error::SubscriptionNotFound { .. }
        | Error::SubscriptionDeleted { .. }
        | Error::WrongTopic { .. }
        | Error::TopicNotFound { .. } => Code::NotFound,
        Error::SubscriptionExists { .. } => Code::AlreadyExists,
        Error::NotAGroup { .. }
        | Error::UnknownMember { .. }
        | Error::StaleGeneration { .. }
        | Error::NotHeld { .. }
        | Error::PartitionStopped { .. }
        | Error::Undecodable { .. } => Code::FailedPrecondition,
        Error::MemberRemoved { .. } => Code::Aborted,
        Error::BrokersUnreachable { .. }
        | Error::Loading
        | Error::Reloading
        | Error::NotOwner { .. }
        | Error::LeaseLost
        | Error::Unserved { .. }
        | Error::Server(_) => Code::Unavailable,
        Error::Reflection(_) => Code::Internal,
        Error::Broker(e) => match e.code() {
            Some(code) => code,
            None if e.is_retriable() => Code::Unavailable,
            None => Code::Internal,
        },
        Error::DataDir { .. }
        | Error::StoreId(_)
        | Error::OpenDatabase { .. }
        | Error::UnreadableSubscription { .. }
        | Error::Encode(_)
        | Error::UnreadableCursor { .. }
        | Error::JournalUnreadable { .. }
        | Error::JournalLost { .. }
        | Error::Rebuild(_) => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = code(&error);
        if code == Code::Internal {
            tracing::error!(error = %error, "request failed");
        } else {
            tracing::debug!(error = %error, "request rejected");
        }
        let mut status = Status::new(code, pubsub_proto::bounded_message(error.to_string()));
        if let Some(reason) = reason(&error) {
            status.metadata_mut().insert(
                keys::REASON,
                tonic::metadata::MetadataValue::from_static(reason),
            );
        }
        if let Error::NotOwner {
            owner: Some(owner), ..
        } = &error
            && let Ok(value) = owner.parse()
        {
            status.metadata_mut().insert(keys::OWNER_ADDRESS, value);
        }
        status
    }
}

/// The reason a caller tells refusals of one code apart by.
fn reason(error: &Error) -> Option<&'static str> {
    match error {
        Error::StaleGeneration { .. } => Some(reasons::STALE_GENERATION),
        Error::UnknownMember { .. } => Some(reasons::UNKNOWN_MEMBER),
        Error::NoSuchPartition { .. } => Some(reasons::NO_SUCH_PARTITION),
        Error::CommitPastEnd { .. } => Some(reasons::COMMIT_PAST_END),
        // Not `Reloading`: the node's storage failed (a full disk, say), which a
        // caller hears of at once rather than waiting on.
        Error::Loading | Error::NotOwner { .. } | Error::LeaseLost | Error::Unserved { .. } => {
            Some(reasons::NOT_SERVING)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::Deletion;

    fn check(error: Error, expected: Code) {
        let status = Status::from(error);
        assert_eq!(status.code(), expected, "{}", status.message());
        assert!(!status.message().is_empty());
    }

    fn name(what: &'static str, name: &str) -> Error {
        Error::InvalidName {
            what,
            name: name.to_string(),
            reason: pubsub_proto::ids::TopicName::new(name.to_string()).unwrap_err(),
        }
    }

    #[test]
    fn client_mistakes_are_invalid_argument() {
        check(name("subscription name", "a b"), Code::InvalidArgument);
        check(
            Error::InvalidOption {
                option: "retention_ms",
                got: "-1".into(),
                rule: "must be positive, or 0 for no limit",
            },
            Code::InvalidArgument,
        );
        check(
            Error::OptionOutOfRange {
                option: "ack_deadline_ms",
                min: 1,
                max: 2,
                got: 3,
            },
            Code::InvalidArgument,
        );
        check(
            Error::MissingChoice {
                call: "seek",
                choices: "offset or earliest",
            },
            Code::InvalidArgument,
        );
        check(
            Error::TooManyIds { count: 2, max: 1 },
            Code::InvalidArgument,
        );
        check(
            Error::StreamNotOpened { ended: true },
            Code::InvalidArgument,
        );
        check(
            Error::StreamNotOpened { ended: false },
            Code::InvalidArgument,
        );
        check(
            Error::NoSuchPartition {
                topic: "t".into(),
                partition: 5,
                partitions: 1,
            },
            Code::InvalidArgument,
        );
        let never = Error::NeverDelivered {
            subscription: "s".into(),
            partition: 0,
            offset: 9,
        };
        check(never, Code::InvalidArgument);
        let past = Error::CommitPastEnd {
            partition: 0,
            offset: 9,
            end: 5,
        };
        check(past, Code::InvalidArgument);
        let seek = Error::SeekOutOfRange {
            partition: 0,
            offset: 9,
            start: 0,
            end: 5,
        };
        check(seek, Code::InvalidArgument);
    }

    #[test]
    fn missing_things_are_not_found_or_already_exists() {
        let name = || "s".to_string();
        check(Error::SubscriptionNotFound { name: name() }, Code::NotFound);
        for why in [
            Deletion::Unsubscribed,
            Deletion::TopicDeleted { topic: "t".into() },
            Deletion::TopicRecreated { topic: "t".into() },
        ] {
            check(
                Error::SubscriptionDeleted { name: name(), why },
                Code::NotFound,
            );
        }
        let wrong = Error::WrongTopic {
            name: name(),
            topic: "t".into(),
            asked: "u".into(),
        };
        check(wrong, Code::NotFound);
        check(Error::TopicNotFound { topic: "t".into() }, Code::NotFound);
        let exists = Error::SubscriptionExists {
            name: name(),
            topic: "t".into(),
        };
        check(exists, Code::AlreadyExists);
    }

    #[test]
    fn stale_views_are_failed_precondition_or_aborted() {
        check(
            Error::NotAGroup { name: "s".into() },
            Code::FailedPrecondition,
        );
        let unknown = Error::UnknownMember {
            member_id: "m".into(),
            group: "s".into(),
        };
        check(unknown, Code::FailedPrecondition);
        let stale = Error::StaleGeneration {
            group: "s".into(),
            given: 1,
            current: 2,
        };
        check(stale, Code::FailedPrecondition);
        let reason =
            |error: Error| pubsub_proto::net::reason(&Status::from(error)).map(String::from);
        let stale = Error::StaleGeneration {
            group: "s".into(),
            given: 1,
            current: 2,
        };
        assert_eq!(reason(stale).as_deref(), Some(reasons::STALE_GENERATION));
        let member = Error::UnknownMember {
            member_id: "m".into(),
            group: "s".into(),
        };
        assert_eq!(reason(member).as_deref(), Some(reasons::UNKNOWN_MEMBER));
        assert_eq!(reason(Error::NotAGroup { name: "s".into() }), None);
        let not_held = Error::NotHeld {
            subscription: "s".into(),
            partition: 0,
            offset: 1,
        };
        check(not_held, Code::FailedPrecondition);
        let stopped = Error::PartitionStopped {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            reason: "bad".into(),
        };
        check(stopped, Code::FailedPrecondition);
        let undecodable = Error::Undecodable {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            reason: "bad".into(),
        };
        check(undecodable, Code::FailedPrecondition);
        let removed = Error::MemberRemoved {
            member_id: "m".into(),
            subscription: "s".into(),
        };
        check(removed, Code::Aborted);
    }

    #[test]
    fn server_trouble_is_unavailable_or_internal() {
        let unreachable = Error::BrokersUnreachable {
            bootstraps: vec!["127.0.0.1:1".into()],
            last: None,
        };
        check(unreachable, Code::Unavailable);
        check(Error::Reloading, Code::Unavailable);
        let io = std::io::Error::other("read-only file system");
        let data_dir = Error::DataDir {
            path: "/data".into(),
            source: io,
        };
        check(data_dir, Code::Internal);
        let database = Error::OpenDatabase {
            path: "/data".into(),
            tree: Some("cursors"),
            source: sled::Error::Unsupported("test".into()),
        };
        check(database, Code::Internal);
        let Err(json) = serde_json::from_slice::<u32>(b"x") else {
            panic!("\"x\" decoded as a number");
        };
        let unreadable = Error::UnreadableSubscription {
            key: "s".into(),
            source: json,
        };
        check(unreadable, Code::Internal);
        let cursor = Error::UnreadableCursor {
            subscription: "s".into(),
            partition: 0,
            len: 3,
        };
        check(cursor, Code::Internal);
    }

    #[test]
    fn broker_errors_keep_their_code() {
        let broker = pubsub_client::Error::OutOfRange {
            range: Some((0, 5)),
            message: "offset 9 is out of range".into(),
        };
        check(Error::Broker(broker), Code::OutOfRange);
    }

    #[test]
    fn a_long_user_supplied_name_is_bounded() {
        let long = "x".repeat(1 << 20);
        for error in [
            Error::SubscriptionNotFound { name: long.clone() },
            name("subscription name", &format!("{long} ")),
        ] {
            let status = Status::from(error);
            assert!(
                status.message().len() <= pubsub_proto::STATUS_MESSAGE_BYTES_MAX,
                "{} bytes",
                status.message().len()
            );
            assert!(status.message().ends_with("..."));
        }
    }

    #[test]
    fn refusals_before_acting_say_so() {
        let not_owner = Error::NotOwner {
            subscription: "s".into(),
            owner: Some("10.0.0.2:9402".into()),
        };
        let unserved = Error::Unserved { partition: 3 };
        for error in [Error::Loading, Error::LeaseLost, not_owner, unserved] {
            let status = Status::from(error);
            assert_eq!(
                pubsub_proto::net::reason(&status),
                Some(reasons::NOT_SERVING)
            );
        }
        let reloading = Status::from(Error::Reloading);
        assert_eq!(pubsub_proto::net::reason(&reloading), None);
        let unreachable = Error::BrokersUnreachable {
            bootstraps: vec!["127.0.0.1:1".into()],
            last: None,
        };
        assert_eq!(pubsub_proto::net::reason(&Status::from(unreachable)), None);
    }
}
