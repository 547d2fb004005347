//! The broker's link to the cluster managers: registration, heartbeats, the metadata
//! watch, and topic writes forwarded to the Raft group.
//!
//! Any cluster-manager node answers: reads from its copy of the metadata, writes by
//! forwarding to its Raft leader. A node that is down or cannot forward is skipped and
//! the next one tried, preferring the one that answered last.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pubsub_proto::MAX_MESSAGE_BYTES;
use pubsub_proto::net::{self, Channel, ChannelPool, Disposition, Link};
use pubsub_proto::v1::cluster_manager_client::ClusterManagerClient;
use tonic::{Response, Status};

/// Deadline of one unary call to a cluster manager (a Raft write included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between rounds over all cluster managers.
const ROUND_BACKOFF: Duration = Duration::from_millis(200);
/// Rounds over all cluster managers before a call gives up.
const ROUNDS_MAX: usize = 10;

/// Connections to every cluster-manager node.
pub(crate) struct ClusterLink {
    addresses: Vec<String>,
    preferred: AtomicUsize,
    channels: ChannelPool,
}

impl ClusterLink {
    /// A link to the cluster managers at `addresses` (connected lazily), over links
    /// secured as `link` says.
    pub(crate) fn new(addresses: Vec<String>, link: Link) -> crate::Result<Self> {
        if addresses.is_empty() {
            return Err(crate::Error::InvalidArgument(
                "no cluster-manager address given".into(),
            ));
        }
        Ok(ClusterLink {
            addresses,
            preferred: AtomicUsize::new(0),
            channels: ChannelPool::new(link),
        })
    }

    /// The configured cluster-manager addresses.
    pub(crate) fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// A stub for the node at `address`.
    pub(crate) fn stub(&self, address: &str) -> Result<ClusterManagerClient<Channel>, Status> {
        let channel = self
            .channels
            .channel_with(address, |endpoint| endpoint.timeout(CALL_TIMEOUT))
            .map_err(|e| Status::invalid_argument(format!("cluster manager: {e}")))?;
        Ok(ClusterManagerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Runs `call` against the cluster managers, the last one that answered first,
    /// moving on while a node is unreachable or has no leader to forward to.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(ClusterManagerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let count = self.addresses.len();
        let mut last_error = Status::unavailable("no cluster manager answered");
        for round in 0..ROUNDS_MAX {
            if round > 0 {
                tokio::time::sleep(ROUND_BACKOFF).await;
            }
            let start = self.preferred.load(Ordering::Relaxed);
            for step in 0..count {
                let index = (start + step) % count;
                let stub = self.stub(&self.addresses[index])?;
                match call(stub).await {
                    Ok(response) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(response.into_inner());
                    }
                    Err(status) if retriable(&status) => last_error = status,
                    Err(status) => return Err(status),
                }
            }
        }
        Err(last_error)
    }
}

/// Errors that another node, or the same one a moment later, may not have.
fn retriable(status: &Status) -> bool {
    net::classify(status) == Disposition::Retriable
}
