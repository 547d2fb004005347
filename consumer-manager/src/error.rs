//! The consumer manager's error type: what a request, a background task or a
//! startup can fail with. `grpc.rs` turns each variant into a status.

use std::path::PathBuf;

use crate::subscription::Deletion;

/// Result alias of the consumer manager.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a consumer-manager operation fails, each saying what happened, so the
/// one mapping in `grpc.rs` picks the code and callers match on meaning, not text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A subscription or topic name breaks the naming rules.
    #[error("{what} {name:?}: {reason}")]
    InvalidName {
        /// Which name: "subscription name", "topic name", "dead-letter topic".
        what: &'static str,
        /// The name as given.
        name: String,
        /// The rule it breaks.
        #[source]
        reason: pubsub_proto::ids::NameError,
    },
    /// A subscription option or request field holds a value it may not.
    #[error("{option} {rule}, got {got}")]
    InvalidOption {
        /// The option or field.
        option: &'static str,
        /// The value given.
        got: String,
        /// What it must be ("must be ..."), for a person to read.
        rule: &'static str,
    },
    /// A numeric option is outside its range.
    #[error("{option} must be between {min} and {max}, got {got}")]
    OptionOutOfRange {
        /// The option.
        option: &'static str,
        /// Smallest value allowed.
        min: u32,
        /// Largest value allowed.
        max: u32,
        /// The value given.
        got: u32,
    },
    /// A request leaves out a choice it must make.
    #[error("{call} needs one of {choices}")]
    MissingChoice {
        /// The request.
        call: &'static str,
        /// The fields it may set.
        choices: &'static str,
    },
    /// One Ack or Nack names more records than a call may.
    #[error("{count} record ids in one call; at most {max}")]
    TooManyIds {
        /// Record ids in the call.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A stream's first message is not its `open` message.
    #[error("{}", if *.ended {
        "the stream ended before its open message"
    } else {
        "the first message of a stream must be `open` (subscription, credits)"
    })]
    StreamNotOpened {
        /// The client ended the stream before sending anything.
        ended: bool,
    },
    /// A partition index past the topic's partition count.
    #[error("partition {partition} does not exist in topic {topic:?} ({partitions} partitions)")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// An ack names an offset the subscription never delivered.
    #[error(
        "offset {offset} of partition {partition} was never delivered to subscription \
         {subscription:?}; nothing in this call was acknowledged"
    )]
    NeverDelivered {
        /// The subscription.
        subscription: String,
        /// The partition.
        partition: u32,
        /// The offset acknowledged.
        offset: u64,
    },
    /// A commit past the end of the partition.
    #[error("cannot commit offset {offset} of partition {partition}: the partition ends at {end}")]
    CommitPastEnd {
        /// The partition.
        partition: u32,
        /// The offset committed.
        offset: u64,
        /// The partition's high watermark.
        end: u64,
    },
    /// A seek to an offset the partition does not hold.
    #[error(
        "cannot seek partition {partition} to offset {offset}: it holds offsets {start} to {end}"
    )]
    SeekOutOfRange {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The partition's log start offset.
        start: u64,
        /// The partition's log end offset.
        end: u64,
    },
    /// No subscription has that name.
    #[error("subscription {name:?} does not exist")]
    SubscriptionNotFound {
        /// The name asked for.
        name: String,
    },
    /// The subscription was deleted while the request ran (or a stream was open).
    #[error("subscription {name:?} was deleted: {why}")]
    SubscriptionDeleted {
        /// The subscription.
        name: String,
        /// Why it was deleted.
        why: Deletion,
    },
    /// The subscription exists, but on another topic than the request names.
    #[error("subscription {name:?} is on topic {topic:?}, not {asked:?}")]
    WrongTopic {
        /// The subscription.
        name: String,
        /// Its topic.
        topic: String,
        /// The topic the request named.
        asked: String,
    },
    /// The topic does not exist.
    #[error("topic {topic:?} does not exist")]
    TopicNotFound {
        /// The topic.
        topic: String,
    },
    /// A subscription of that name exists with other options or on another topic.
    #[error(
        "subscription {name:?} already exists on topic {topic:?} with other options; \
         unsubscribe it first or pick another name"
    )]
    SubscriptionExists {
        /// The subscription.
        name: String,
        /// The topic it is on.
        topic: String,
    },
    /// JoinGroup on a subscription that is not a group.
    #[error("subscription {name:?} is not a group; read it without joining")]
    NotAGroup {
        /// The subscription.
        name: String,
    },
    /// The caller is not a member of the group.
    #[error(
        "member {member_id:?} is not in group {group:?} (never joined, left, or its session \
         expired): join again"
    )]
    UnknownMember {
        /// The member id the caller gave.
        member_id: String,
        /// The group (subscription).
        group: String,
    },
    /// The caller's group generation is not the current one.
    #[error(
        "generation {given} of group {group:?} is stale; the current one is {current}: join \
         again for the new assignment"
    )]
    StaleGeneration {
        /// The group (subscription).
        group: String,
        /// The generation the caller gave.
        given: u64,
        /// The group's generation now.
        current: u64,
    },
    /// A nack of a record the caller does not hold a lease on.
    #[error(
        "record {partition}@{offset} of subscription {subscription:?} is not leased to this \
         caller (never delivered to it, acknowledged, or its ack deadline passed); nothing in \
         this call was nacked"
    )]
    NotHeld {
        /// The subscription.
        subscription: String,
        /// The record's partition.
        partition: u32,
        /// The record's offset.
        offset: u64,
    },
    /// A stream's member was removed under it (it left, or its session timed out): the
    /// client may open a new stream at once.
    #[error(
        "member {member_id:?} of subscription {subscription:?} was removed (left, or its \
         session timed out): open a new stream"
    )]
    MemberRemoved {
        /// The member.
        member_id: String,
        /// The subscription.
        subscription: String,
    },
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
    /// No bootstrap broker could be reached; a retry may find one up.
    #[error("cannot reach any broker of {bootstraps:?}: {}", match last {
        Some(e) => e.to_string(),
        None => "no broker address given".to_string(),
    })]
    BrokersUnreachable {
        /// The bootstrap addresses tried.
        bootstraps: Vec<String>,
        /// What the last one failed with.
        last: Option<pubsub_client::Error>,
    },
    /// A broker answered with an error.
    #[error("broker: {0}")]
    Broker(#[from] pubsub_client::Error),
    /// The data directory cannot be created.
    #[error("consumer manager storage: cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database lost its records since it was last opened (or its id file is bad).
    #[error(transparent)]
    StoreId(#[from] pubsub_proto::store_id::StoreIdError),
    /// The database (or one of its trees) cannot be opened.
    #[error("consumer manager storage: cannot open {}{}: {source}", path.display(),
        tree.map(|t| format!(" (tree {t})")).unwrap_or_default())]
    OpenDatabase {
        /// The database directory.
        path: PathBuf,
        /// The tree, if the database opened and a tree did not.
        tree: Option<&'static str>,
        /// Why.
        source: sled::Error,
    },
    /// A stored subscription record cannot be read back.
    #[error("consumer manager storage: subscription record {key:?} is unreadable: {source}")]
    UnreadableSubscription {
        /// The record's key (the subscription name, lossily decoded).
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A subscription record cannot be encoded.
    #[error("consumer manager storage: cannot encode subscription: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored cursor is not the 16 bytes it must be.
    #[error(
        "consumer manager storage: cursor of {subscription:?} partition {partition} is {len} \
         bytes, not 16"
    )]
    UnreadableCursor {
        /// The subscription.
        subscription: String,
        /// The partition.
        partition: u32,
        /// Its stored length.
        len: usize,
    },
    /// A record of the subscription-state journal cannot be read: the state cannot be
    /// rebuilt past it, so the consumer manager refuses to serve rather than serve less.
    #[error(
        "subscription-state journal partition {partition} offset {offset} is unreadable: {why}"
    )]
    JournalUnreadable {
        /// The journal partition.
        partition: u32,
        /// The record's offset.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The local copy of the journal cannot be written or read while it is rebuilt or
    /// snapshotted (a full disk, say); the load is retried.
    #[error("consumer manager storage: cannot rebuild from the journal: {0}")]
    Rebuild(#[source] sled::Error),
    /// The journal topic is missing while this node's copy was being rebuilt from it:
    /// the local copy is partial, and uploading it would lose subscriptions.
    #[error(
        "the subscription-state journal topic {topic:?} is gone and this node's copy of it \
         was only partly rebuilt; restore the topic or start the consumer manager on an \
         empty data directory"
    )]
    JournalLost {
        /// The journal topic.
        topic: &'static str,
    },
    /// The consumer manager is still loading its subscriptions (at startup, from the
    /// journal on the brokers); a retry shortly succeeds.
    #[error("the consumer manager is loading its subscriptions; retry shortly")]
    Loading,
    /// Another consumer manager serves this subscription (the owner of its journal
    /// partition): the client calls it instead (the SDK follows the address given).
    #[error("{}", not_owner_message(.subscription, .owner.as_deref()))]
    NotOwner {
        /// The subscription asked for.
        subscription: String,
        /// The owner's address, if one is known.
        owner: Option<String>,
    },
    /// A write reached the journal for a partition this node no longer serves (a
    /// subscription let go of while something still wrote for it): not acknowledged,
    /// and the store reloads; retry shortly.
    #[error(
        "a write for subscription-state journal partition {partition}, which this node no \
         longer serves, was refused; reloading"
    )]
    Unserved {
        /// The journal partition.
        partition: u32,
    },
    /// This node's lease from the cluster managers may have run out, so what it just
    /// wrote may not be what the next owner reads: not acknowledged; retry shortly.
    #[error("this consumer manager lost its lease from the cluster managers; retry shortly")]
    LeaseLost,
    /// The database failed (a full disk, say): memory may be ahead of the disk, so the
    /// consumer manager reloads from disk; a retry shortly succeeds. The cause is
    /// logged where it happened.
    #[error("consumer manager storage failed (disk full?); reloading from disk")]
    Reloading,
    /// The gRPC server failed (its listener, say).
    #[error("grpc server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

impl Error {
    /// Whether the subscription or topic the operation was about no longer exists:
    /// background work stops on it rather than retrying, and a stream ends with it.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Error::SubscriptionNotFound { .. }
                | Error::SubscriptionDeleted { .. }
                | Error::TopicNotFound { .. }
        )
    }
}

/// The message of [`Error::NotOwner`].
fn not_owner_message(subscription: &str, owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!(
            "subscription {subscription:?} is served by the consumer manager at {owner}; call it there"
        ),
        None => format!(
            "no consumer manager serves subscription {subscription:?} yet (its owner is being chosen); retry shortly"
        ),
    }
}
