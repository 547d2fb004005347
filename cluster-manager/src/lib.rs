//! pubsub-cluster-manager: the Raft group (openraft) that owns the cluster metadata:
//! brokers and their leases, topics, replica placement, partition leaders, leader epochs
//! and in-sync replicas.
//!
//! - `server`: `run(config, listener, shutdown)`, the entry point binaries and tests call.
//! - `embedded`: `run_embedded`, a node served on another server's address (standalone).
//! - `state`: the metadata as plain values and its deterministic `apply`.
//! - `command`: the commands `apply` takes, their responses and refusals.
//! - `placement`: where a new topic's replicas go (rack-aware, leaders balanced).
//! - `balance`: moves that drain brokers and even out replicas and leaders (pure).
//! - `raft`: openraft's type configuration, sled log store, state machine and network.
//! - `manager`: a running node: reads from its state, writes routed to the leader.
//! - `lease`: the leader's task that fences brokers whose lease expired.
//! - `service`: the `ClusterManager` and `Raft` gRPC services.
//! - `wire`: the state as `pubsub.v1` messages.
//! - `grpc`: the mapping from errors to gRPC statuses.
//!
//! **Invariant:** `state`, `placement` and `balance` do no I/O and read no clock;
//! everything that talks to disk, network or time lives in `raft`, `manager`, `lease` and
//! `server`.

#![warn(unreachable_pub)]

mod access_sync;
mod balance;
mod command;
mod config;
mod embedded;
mod error;
#[doc(hidden)]
pub mod fuzz_api;
mod gauges;
mod grpc;
mod lease;
mod manager;
mod placement;
mod raft;
mod rebalance;
mod server;
mod service;
mod state;
mod wire;

/// What `benches/metadata.rs` drives: the state machine and its wire form, without
/// Raft. Not a stable API.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::command::{Command, PartitionSize};
    pub use crate::state::ClusterState;

    /// The metadata every broker is sent on each change, as `WatchMetadata` builds it.
    pub fn cluster_metadata(state: &ClusterState) -> pubsub_proto::v1::ClusterMetadata {
        crate::wire::state_metadata(state, 1, Some(1))
    }

    /// The moves one balance check would start.
    pub fn balance_check(state: &ClusterState) -> usize {
        crate::rebalance::next_commands(state).len()
    }
}

pub use config::{ClusterManagerConfig, Member};
pub use embedded::{EmbeddedServices, Swappable, run_embedded};
pub use error::{Error, Result};
pub use raft::RaftSettings;
pub use server::{run, run_on_connections};
pub use service::access::AccessService;
pub use service::cluster::ClusterManagerService;
