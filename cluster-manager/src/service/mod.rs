//! The gRPC services every cluster-manager node serves.
//!
//! - [`cluster`]: `ClusterManager`, for brokers and clients.
//! - [`raft`]: `Raft`, between cluster-manager nodes.

pub(crate) mod cluster;
pub(crate) mod raft;
