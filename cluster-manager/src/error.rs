//! The cluster manager's error type: what a request or a start-up can fail with.

use std::path::PathBuf;
use std::time::Duration;

use crate::command::CommandError;

/// Result alias of the cluster-manager crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a cluster-manager operation fails; `grpc.rs` turns each into a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metadata state machine refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A request argument is invalid; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// This node does not lead the Raft group and could not hand the request on.
    #[error("{}", not_leader_message(*.leader_id, .leader_address.as_deref()))]
    NotLeader {
        /// The leader, if this node knows one.
        leader_id: Option<u64>,
        /// Its address, if known.
        leader_address: Option<String>,
    },
    /// The leader refused a forwarded request; its status is passed on unchanged.
    #[error("leader answered {}: {}", .0.code(), .0.message())]
    Forwarded(tonic::Status),
    /// A Raft membership change was refused (another is in progress, unknown node).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The node did not get there in time (no leader elected, not caught up).
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        waited: Duration,
    },
    /// Raft on this node stopped (shutdown or a storage failure).
    #[error("raft stopped: {0}")]
    RaftStopped(String),
    /// The store lost its records since it was last opened (or its id file is bad).
    #[error(transparent)]
    StoreId(#[from] pubsub_proto::store_id::StoreIdError),
    /// The sled database failed.
    #[error("raft storage in {path}: {source}")]
    Storage {
        /// The database directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// The sled database could not be made durable (the flush failed or hung).
    #[error("raft storage in {path}: {source}")]
    Flush {
        /// The database directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: pubsub_proto::flush::FlushError,
    },
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A payload could not be encoded or decoded.
    #[error("bad {what} payload: {source}")]
    Codec {
        /// What was being encoded or decoded.
        what: &'static str,
        /// The cause.
        #[source]
        source: crate::raft::codec::CodecError,
    },
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Server(#[source] tonic::transport::Error),
    /// A bug or a broken environment (poisoned lock, failed task, Raft start-up).
    #[error("internal error: {0}")]
    Internal(String),
}

fn not_leader_message(leader_id: Option<u64>, leader_address: Option<&str>) -> String {
    match (leader_id, leader_address) {
        (Some(id), Some(address)) => {
            format!("this node is not the raft leader; the leader is node {id} at {address}")
        }
        (Some(id), None) => {
            format!("this node is not the raft leader; the leader is node {id}")
        }
        _ => "no raft leader is known right now; retry shortly".into(),
    }
}
