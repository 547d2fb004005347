//! pubsub-broker: hosts partition replicas and serves them over gRPC.
//!
//! - [`server`]: `run(config, listener, shutdown)`, the entry point binaries and tests call.
//! - [`broker`]: the set of hosted topics and partitions.
//! - [`partition`]: one partition's log and high watermark; long-poll fetch.
//! - [`service`]: the Admin and Broker gRPC services.
//! - [`cluster`]: the link to the cluster managers; [`membership`]: registration,
//!   heartbeats and the metadata watch.
//! - [`topic`]: a hosted topic's record: its log config and retention, from its settings.
//! - [`grpc`]: the mapping from errors to gRPC statuses.
//! - [`lease`]: until when this broker is sure it has not been fenced.
//! - [`join_gate`]: calls wait until the broker has joined the cluster.

pub mod broker;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod error;
pub mod grpc;
pub mod join_gate;
pub mod lease;
pub mod membership;
pub mod partition;
pub mod replication;
pub mod server;
pub mod service;
pub mod topic;

pub use config::BrokerConfig;
pub use error::{Error, Result};
pub use server::{run, run_with, serve};
