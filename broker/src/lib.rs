//! pubsub-broker: hosts partition replicas and serves them over gRPC.
//!
//! The API is small: [`run`] / [`run_with`] with a [`BrokerConfig`], and the disk
//! space reserve every `pubsubd` role keeps ([`SpaceReserve`]); the modules are
//! internal.
//!
//! - `server`: `run(config, listener, shutdown)`, the entry point binaries and tests call.
//! - `broker`: the set of hosted topics and partitions.
//! - `partition`: one partition's log and high watermark; long-poll fetch.
//! - `service`: the Admin and Broker gRPC services.
//! - `cluster`: the link to the cluster managers; `membership`: registration,
//!   heartbeats and the metadata watch.
//! - `topic`: a hosted topic's record: its log config and retention, from its settings.
//! - `grpc`: the mapping from errors to gRPC statuses.
//! - `lease`: until when this broker is sure it has not been fenced.
//! - `join_gate`: calls wait until the broker has joined the cluster.
//! - `kafka`: the Kafka-protocol listener (Produce, Fetch, Metadata, admin APIs).

#![warn(unreachable_pub)]

mod broker;
mod cluster;
mod config;
mod disk;
mod error;
mod grpc;
mod join_gate;
mod kafka;
mod lease;
mod local_reads;
mod membership;
mod metrics;
mod partition;
mod replication;
mod server;
mod service;
mod sizes;
mod throttle;
mod topic;

pub use config::{BrokerConfig, KafkaListener};
pub use disk::{ReserveOutcome, SpaceReserve};
pub use error::{Error, Result};
pub use local_reads::LocalReads;
pub use server::{run, run_on_connections, run_with};
