//! The gRPC services every cluster-manager node serves.
//!
//! - [`cluster`]: `ClusterManager`, for brokers and clients.
//! - [`raft`]: `Raft`, between cluster-manager nodes.

pub mod cluster;
pub mod raft;
